"""A TLS terminator for the tests: TLS on one loopback port, plaintext to another.

Tansu 0.6.0 cannot serve TLS itself: its ``--cert`` and ``--key`` options sit in one
exclusive argument group, so ``tansu broker --cert C --key K`` refuses to start ("the
argument '--cert <CERT>' cannot be used with '--key <KEY>'"), and either one alone leaves
the listener in plaintext. The tests therefore put this terminator in front of a Tansu
whose advertised listener is the terminator's port: the Kafka clients under test speak
real TLS (certificate chain, hostname, client certificates) to a real TLS server, and the
broker behind it sees the plaintext Kafka protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading


class TlsTerminator:
    def __init__(self, context: ssl.SSLContext, backend_port: int, port: int) -> None:
        self.context = context
        self.backend_port = backend_port
        self.port = port
        self.handshake_failures = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> TlsTerminator:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._loop.set_exception_handler(self._on_error)  # failed handshakes are expected
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  ssl=self.context)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    def _on_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if isinstance(context.get("exception"), ssl.SSLError | ConnectionError):
            self.handshake_failures += 1
        else:
            loop.default_exception_handler(context)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, b_writer), _pipe(b_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
