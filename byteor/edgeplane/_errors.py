"""EdgePlane's branch of the exception tree::

    ByteorError
    └── EdgePlaneError                  byteor.edgeplane
        ├── ConfigError                 options, the pipeline file, interpolation
        │   ├── OptionError             a flag or EDGEPLANE_* variable has a bad value
        │   ├── InterpolationError      a ${...} placeholder cannot be resolved
        │   │   └── MissingVariable     ${VAR} without a default, VAR not set
        │   └── PipelineFileError       the spec or plan cannot be read or does not validate
        ├── ObserveError                the metrics endpoint cannot start
        │   └── ObserveUnavailable      prometheus_client, starlette or uvicorn is missing
        └── RunError                    the data plane cannot start or failed (a process died
                                        past its restarts, an adapter refused, a drain ran
                                        out of time)

Every message is one line that says what is wrong and what to do, with secrets already
replaced by ``***``: these errors are printed as they are, never with a traceback.
"""

from __future__ import annotations

from byteor.errors import ByteorError

__all__ = [
    "EdgePlaneError",
    "ConfigError",
    "OptionError",
    "InterpolationError",
    "MissingVariable",
    "PipelineFileError",
    "ObserveError",
    "ObserveUnavailable",
    "RunError",
]


class EdgePlaneError(ByteorError):
    """Root of EdgePlane's errors."""


class ConfigError(EdgePlaneError):
    """The configuration of a run (options, pipeline file, variables) is wrong."""


class OptionError(ConfigError):
    """A flag or ``EDGEPLANE_*`` environment variable has a value that is not accepted.

    Attributes:
        option: where the value came from: ``--log-format`` or ``EDGEPLANE_LOG_FORMAT``.
    """

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(message)


class InterpolationError(ConfigError):
    """A ``${...}`` placeholder is malformed or its value cannot be put in the text.

    Attributes:
        path: the file (or ``<text>``).
        line: 1-based line of the placeholder's ``$``.
        variable: the variable's name ("" when the placeholder has none).
    """

    def __init__(self, path: str, line: int, variable: str, message: str) -> None:
        self.path = path
        self.line = line
        self.variable = variable
        super().__init__(f"{path}:{line}: {message}")


class MissingVariable(InterpolationError):
    """``${VAR}`` without a default, and ``VAR`` is not set."""


class PipelineFileError(ConfigError):
    """The spec or plan file cannot be read, or it has error findings.

    Attributes:
        path: the file.
        line: the line of the first error, when known.
    """

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        super().__init__(message)


class ObserveError(EdgePlaneError):
    """The metrics endpoint cannot start (address in use, say)."""


class ObserveUnavailable(ObserveError):
    """A library the metrics endpoint needs is not installed; the message has the
    ``pip install`` command."""


class RunError(EdgePlaneError):
    """The data plane cannot start, or it failed and stopped (its segments are removed).

    Attributes:
        summary: what the run did until then (the run summary's fields), when it started.
        exit_code: 1 for a failed run, 2 for something this machine cannot run (a missing
            client library, a run of the same name still going).
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.summary: dict[str, object] = {}
        self.exit_code = exit_code
