"""ByteOr: bounded shared-memory lanes, canonical pipeline specs and deterministic executors.

Start here: :mod:`byteor.lanes` is the IndexBus transport.
"""

from __future__ import annotations

from byteor.errors import ByteorError

__all__ = ["ByteorError", "__version__"]

__version__ = "0.1.0"
