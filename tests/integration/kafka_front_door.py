"""A Kafka front door for the tests: TLS and/or SASL SCRAM in front of a plaintext Tansu.

Tansu 0.6.0 cannot do either itself here:
- TLS: its ``--cert`` and ``--key`` options sit in one exclusive argument group, so
  ``tansu broker --cert C --key K`` refuses to start ("the argument '--cert <CERT>' cannot
  be used with '--key <KEY>'"), and either one alone leaves the listener in plaintext.
- SASL: with ``--authentication`` it runs the SCRAM exchange, but its storage engines in
  this build (memory, S3) keep no SCRAM credentials (``user_scram_credential`` always
  answers "unknown user"), and it offers no PLAIN: no login can succeed.

So the tests put this front door before a Tansu that advertises the door's port. The
clients under test speak real TLS (certificate chain, hostname, client certificate) to a
real TLS server (Python ``ssl``), and real SCRAM-SHA-256/512 (RFC 5802/7677) whose
server side is ``scramp``'s: the door answers ``SaslHandshake`` and ``SaslAuthenticate``
itself, checks the client's proof against the stored credentials (a wrong password fails
there), refuses any other request before a successful login (as a broker does), and then
passes the bytes through to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import threading

from scramp import ScramException, ScramMechanism

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM = 58, 33


class KafkaFrontDoor:
    def __init__(self, backend_port: int, port: int, *, tls: ssl.SSLContext | None = None,
                 scram: tuple[str, dict[str, str]] | None = None) -> None:
        """``scram``: (mechanism, {user: password}) to require a SCRAM login."""
        self.tls = tls
        self.backend_port = backend_port
        self.port = port
        self.logins: list[tuple[str, bool]] = []  # (user, accepted)
        self._mechanism: ScramMechanism | None = None
        self._users: dict[str, tuple[bytes, bytes, bytes, int]] = {}
        if scram is not None:
            self._mechanism = ScramMechanism(scram[0])
            self._users = {u: self._mechanism.make_auth_info(pw, iteration_count=4096)
                           for u, pw in scram[1].items()}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> KafkaFrontDoor:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._loop.set_exception_handler(_quiet_tls_errors)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  ssl=self.tls)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            writer.close()
            return
        try:
            if self._mechanism is not None and not await self._login(
                    reader, writer, b_reader, b_writer):
                return
            await asyncio.gather(_pipe(reader, b_writer), _pipe(b_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            for w in (writer, b_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> bool:
        """The SASL part of the conversation; True once the client has logged in."""
        assert self._mechanism is not None
        names: list[str] = []  # the user the client logs in as

        def credentials(name: str) -> tuple[bytes, bytes, bytes, int]:
            names.append(name)
            return self._users[name]

        server = self._mechanism.make_server(credentials)
        started = False
        while True:
            frame = await _read_frame(reader)
            api_key, version, corr = struct.unpack(">hhi", frame[:8])
            (id_len,) = struct.unpack(">h", frame[8:10])
            body = frame[10 + max(id_len, 0):]
            if api_key == API_VERSIONS:  # the broker answers this one
                b_writer.write(struct.pack(">i", len(frame)) + frame)
                await b_writer.drain()
                reply = await _read_frame(b_reader)
                writer.write(struct.pack(">i", len(reply)) + reply)
            elif api_key == SASL_HANDSHAKE:
                (n,) = struct.unpack(">h", body[:2])
                asked = body[2:2 + n].decode()
                ok = asked == self._mechanism.name
                writer.write(_frame(corr, struct.pack(">h", 0 if ok else UNSUPPORTED_SASL_MECHANISM)
                                    + struct.pack(">i", 1) + _string(self._mechanism.name)))
                if not ok:
                    await writer.drain()
                    return False
            elif api_key == SASL_AUTHENTICATE:
                (n,) = struct.unpack(">i", body[:4])
                token = body[4:4 + n].decode()
                try:
                    if not started:
                        started = True
                        server.set_client_first(token)
                        answer = server.get_server_first()
                        done = False
                    else:
                        server.set_client_final(token)
                        answer = server.get_server_final()
                        done = True
                except (ScramException, KeyError) as exc:
                    self.logins.append((names[-1] if names else "?", False))
                    writer.write(_auth_reply(corr, version, SASL_AUTHENTICATION_FAILED,
                                             f"authentication failed: {exc}", b""))
                    await writer.drain()
                    return False
                writer.write(_auth_reply(corr, version, 0, None, answer.encode()))
                await writer.drain()
                if done:
                    self.logins.append((names[-1], True))
                    return True
            else:  # a broker that requires SASL drops anything else before the login
                return False
            await writer.drain()


def _quiet_tls_errors(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    if not isinstance(context.get("exception"), ssl.SSLError | ConnectionError):
        loop.default_exception_handler(context)  # refused handshakes are expected


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(n)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _frame(corr: int, body: bytes) -> bytes:
    payload = struct.pack(">i", corr) + body
    return struct.pack(">i", len(payload)) + payload


def _auth_reply(corr: int, version: int, error: int, message: str | None, data: bytes) -> bytes:
    body = struct.pack(">h", error) + (_string(message) if message is not None
                                       else struct.pack(">h", -1))
    body += struct.pack(">i", len(data)) + data
    if version >= 1:
        body += struct.pack(">q", 0)  # session_lifetime_ms: no re-authentication
    return _frame(corr, body)


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
