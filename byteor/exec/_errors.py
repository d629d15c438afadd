"""Errors of the executors (a branch of :class:`byteor.errors.ByteorError`)::

ExecError
├── OpNotFound           an op names no built-in, importable function or entry point
├── StageConfigError     an op's parameters or a stage's error policy do not fit
├── AdapterUnavailable   a source or sink adapter this executor cannot run (yet)
├── StageFailed          a stage could not process a record under ``on_error = fail``
├── PipelineStalled      no node can make progress and the pipeline is not finished
│   └── StageStalled     a stage made no progress for too long with work waiting (MP)
└── WorkerDied           a process of a multi-process run exited early (and could not
                         be restarted)
"""

from __future__ import annotations

from byteor.errors import ByteorError

__all__ = [
    "ExecError",
    "OpNotFound",
    "StageConfigError",
    "AdapterUnavailable",
    "StageFailed",
    "PipelineStalled",
    "StageStalled",
    "WorkerDied",
]


class ExecError(ByteorError):
    """Root of the executor errors.

    Attributes:
        report: what the run had done when it failed (a ``RunReport``), when it had started.
    """

    report: object | None = None


class OpNotFound(ExecError):
    """``op`` resolves to nothing runnable."""


class StageConfigError(ExecError):
    """A stage's parameters do not fit its op, or its error policy is wrong."""


class AdapterUnavailable(ExecError):
    """The executor cannot run this adapter."""


class StageFailed(ExecError):
    """A stage could not process a record and its policy is ``fail``.

    Attributes:
        stage: the stage's name.
        index: the position of the record among those the stage received (from 0).
        code: the :class:`byteor.kernel.StageError` code.
    """

    def __init__(self, stage: str, index: int, code: str, message: str) -> None:
        super().__init__(
            f"stage {stage!r} failed on its record #{index} ({code}): {message}; set "
            f"stage.{stage}.param.on_error = skip (or route with an error_lane) to go on"
        )
        self.stage = stage
        self.index = index
        self.code = code


class PipelineStalled(ExecError):
    """Every node waits on another: a round-robin merge starved, or lanes too small."""


class StageStalled(PipelineStalled):
    """A stage took no record for ``stall_timeout`` seconds while records waited for it:
    stuck inside its op (user code), or a round-robin merge waiting for its turn input.

    Attributes:
        stage: the stage's name.
        process: the process it runs in.
        seconds: how long it made no progress (by the supervisor's clock).
        in_op: whether it was inside its op the whole time.
    """

    stage: str = ""
    process: str = ""
    seconds: float = 0.0
    in_op: bool = False


class WorkerDied(ExecError):
    """A worker process of a multi-process run exited before the pipeline finished, and its
    crash policy is ``fail`` or its restarts are used up.

    Attributes:
        process: the spec's process name of the worker.
        stages: the stages it ran.
        exitcode: its exit status (negative: the signal that killed it).
        restarts: how many times it had been restarted before this death.
    """

    process: str = ""
    stages: tuple[str, ...] = ()
    exitcode: int | None = None
    restarts: int = 0
