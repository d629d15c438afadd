"""Loopback network helpers for the adapter tests: free ports, waiting for a server of a
test's own to listen, and a TCP forwarder that stands in for a server going away.

Imported as ``from _net import ...`` (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

__all__ = ["free_port", "wait_listening", "Forwarder"]


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound and closed again before returning)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_listening(port: int, what: str, deadline_s: float = 10.0) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection (a server the test started);
    fail naming ``what`` after ``deadline_s``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert loop.time() < end, f"{what} did not listen on port {port}"
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return


class Forwarder:
    """A TCP forwarder on 127.0.0.1 in front of the server on ``target_port``: what a client
    sees of a server that drops, goes down and comes back, while the shared server keeps
    running.

    * :meth:`cut` aborts every connection through it (both ends see a reset, no close
      handshake); new connections are forwarded as before.
    * ``down = True``: new connections are accepted and aborted at once, each attempt's time
      (the loop's clock) kept in :attr:`attempts`; ``down = False`` forwards again.
    * :meth:`close` stops listening (connections are refused) and cuts; :meth:`start` again
      listens on the same port.
    """

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = 0  # chosen by the first start, kept by the next ones
        self.down = False
        self.attempts: list[float] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen (on a free port the first time); returns the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.attempts.append(asyncio.get_running_loop().time())
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()  # the other side closed (or was cut): pass that on
        self._writers.discard(dst)

    def cut(self) -> None:
        """Abort every connection through the forwarder."""
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        """Stop listening and cut; wait for the pumps to end."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.cut()  # before waiting: a server may wait for its connections to end
        if server is not None:
            await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
