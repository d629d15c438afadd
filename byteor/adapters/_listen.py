"""The socket a source's own server listens on (the HTTP and WebSocket sources).

Binding it here, before the server library sees it, gives the source the port it got (``port =
0`` picks a free one) and turns a bad host or a taken port into an :class:`AdapterError` that
names the address, instead of the library's own error from inside its start-up.
"""

from __future__ import annotations

import socket

from byteor.adapters._errors import AdapterError

__all__ = ["bound_socket"]


def bound_socket(adapter: str, host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket bound to ``host:port`` (``SO_REUSEADDR``), for a server to
    listen on; ``adapter`` names the adapter in errors."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise AdapterError(
            f"{adapter}: cannot listen on {host}:{port} ({exc}); check the host config",
            adapter=adapter,
            address=f"{host}:{port}",
        ) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise AdapterError(
            f"{adapter}: cannot listen on {host}:{port} ({exc}); is another server using "
            f"that port? (port = 0 picks a free one)",
            adapter=adapter,
            address=f"{host}:{port}",
        ) from exc
    sock.setblocking(False)
    return sock
