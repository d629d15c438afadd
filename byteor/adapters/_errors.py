"""The adapter branch of the error tree, and the boundary where client errors are translated.

::

    ByteorError
    └── AdapterError                  retriable: bool, adapter, address
        ├── AdapterUnreachable        the server did not answer (retriable)
        ├── AdapterAuthError          credentials refused (not retriable)
        ├── AdapterNotFound           unknown topic / stream / queue (not retriable)
        ├── AdapterConfigError        the adapter's config has error findings
        ├── AdapterUnavailable        no such adapter, or its client library is missing
        └── AckError                  an acknowledgement was settled twice

Client-library exceptions never cross the adapter boundary: wrap calls in
:func:`map_errors`, which turns them into one of the classes above, naming the adapter,
the address and what to check.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from byteor.errors import ByteorError

__all__ = [
    "AdapterError",
    "AdapterUnreachable",
    "AdapterAuthError",
    "AdapterNotFound",
    "AdapterConfigError",
    "AdapterUnavailable",
    "AckError",
    "map_errors",
]


class AdapterError(ByteorError):
    """An adapter failed. ``retriable`` says whether reconnecting may help."""

    retriable: bool = False

    def __init__(
        self,
        message: str,
        *,
        adapter: str = "",
        address: str = "",
        retriable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.adapter = adapter
        self.address = address
        if retriable is not None:
            self.retriable = retriable


class AdapterUnreachable(AdapterError):
    retriable = True

    def __init__(self, adapter: str, address: str, detail: str = "") -> None:
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"{adapter}: cannot reach {address}{why}; check that the server is running and "
            f"listening there (scripts/services.sh starts the test servers)",
            adapter=adapter,
            address=address,
        )


class AdapterAuthError(AdapterError):
    retriable = False

    def __init__(self, adapter: str, address: str, detail: str = "") -> None:
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"{adapter}: {address} refused the credentials{why}; check the user, password "
            f"and permissions in the adapter config",
            adapter=adapter,
            address=address,
        )


class AdapterNotFound(AdapterError):
    retriable = False

    def __init__(self, adapter: str, address: str, what: str, detail: str = "") -> None:
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"{adapter}: {what} does not exist on {address}{why}; check its name, or create "
            f"it first",
            adapter=adapter,
            address=address,
        )
        self.what = what


class AdapterConfigError(AdapterError):
    retriable = False


class AdapterUnavailable(AdapterError):
    retriable = False


class AckError(AdapterError):
    retriable = False


@contextmanager
def map_errors(
    adapter: str,
    address: str,
    mapping: Mapping[type[BaseException], type[AdapterError]],
    *,
    what: str = "",
) -> Iterator[None]:
    """Translate client-library exceptions raised inside the block.

    ``mapping`` goes from a client exception class to one of our classes; the first entry
    the exception is an instance of wins (put subclasses first). Our own errors and
    unmapped exceptions pass through unchanged. ``what`` names the topic, stream or queue
    for :class:`AdapterNotFound`.
    """
    try:
        yield
    except AdapterError:
        raise
    except Exception as exc:
        for client_cls, ours in mapping.items():
            if isinstance(exc, client_cls):
                detail = f"{type(exc).__name__}: {exc}"
                err: AdapterError
                if ours is AdapterNotFound:
                    err = AdapterNotFound(adapter, address, what or "the target", detail)
                elif ours in (AdapterUnreachable, AdapterAuthError):
                    err = ours(adapter, address, detail)
                else:
                    err = ours(f"{adapter}: {detail}", adapter=adapter, address=address)
                raise err from exc
        raise
