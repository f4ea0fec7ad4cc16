"""The HTTP front of the service: routes, the server, signals and ``serve``.

A raw ASGI app on uvicorn (httptools parser, the standard asyncio loop: uvloop
measured no faster here; HTTP/1.1 keep-alive, TCP_NODELAY, a listen backlog of
``BACKLOG``): one event loop answers every connection, with no thread per
connection or request. The old ``http.server`` front (backlog 5, HTTP/1.0, a
thread per connection) stalled for a second under eight clients and burnt about
1.5 ms of CPU per request
(docs/service.md, benchmarks/bench_http.py).

``/regime`` is answered on the loop itself when it cannot wait (a model loaded
and its feature row cached: a dict lookup and about 0.1 ms of inference);
anything that may block (the first market load, a row to compute after a
refresh, ``/healthz`` and ``/metrics``, which take the market's and the
holder's locks) runs on a small thread pool, and explanations
(``?explain=1``: milliseconds, the first one seconds) on a pool of their own,
so neither holds up the others.

SIGHUP reloads the model on its own thread (a signal handler must return quickly
and requests keep being answered by the current model); SIGTERM and SIGINT shut
down gracefully (requests in flight finish) and the prediction log is written
before the process exits. uvicorn is imported only by ``build_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from quantshift_ml import defaults
from quantshift_ml.data.sources import DataSource
from quantshift_ml.errors import QuantshiftError, UsageError
from quantshift_ml.serving.service.app import RegimeService

log = logging.getLogger(__name__)

BACKLOG = 1024
"""Listen backlog: connections the kernel queues before the loop accepts them (the
old server's 5 filled under eight clients, and each refused SYN cost a second)."""
GRACE_SECONDS = 10
"""SIGTERM: how long requests in flight may take to finish (systemd waits 90 s)."""

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Answer = tuple[int, bytes, bytes]
"""(status, body, content type)."""

JSON = b"application/json"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


def _json(status: int, obj: dict[str, Any]) -> Answer:
    return status, (json.dumps(obj) + "\n").encode(), JSON


class RegimeApp:
    """The ASGI application: ``GET /healthz``, ``/regime``, ``/metrics`` (raw ASGI:
    a framework's routing and middleware would cost more than the answer)."""

    def __init__(self, service: RegimeService) -> None:
        self.service = service
        self.blocking = ThreadPoolExecutor(4, thread_name_prefix="http-blocking")
        self.explaining = ThreadPoolExecutor(2, thread_name_prefix="http-explain")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        if scope["method"] != "GET":
            status, body, ctype = _json(405, {"error": f"{scope['method']} is not allowed"})
        else:
            status, body, ctype = await self.answer(scope["path"],
                                                    scope["query_string"].decode("latin-1"))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype),
                                (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})

    async def answer(self, path: str, query_string: str) -> Answer:
        """Route, on the loop or off it (see the module docstring)."""
        if path == "/regime":
            query = parse_qs(query_string)
            symbol = query.get("symbol", [self.service.symbol])[0]
            explain = query.get("explain", ["0"])[0].lower() in ("1", "true", "yes")
            client = query.get("client", [""])[0][:64]
            if explain:
                return await self._off_loop(self.explaining, path, self._regime, symbol,
                                            True, client)
            if self.service.regime_is_quick():
                return self._guarded(path, self._regime, symbol, False, client)
            return await self._off_loop(self.blocking, path, self._regime, symbol, False,
                                        client)
        if path == "/healthz":
            return await self._off_loop(self.blocking, path, lambda: _json(*self.service.health()))
        if path == "/metrics":
            return await self._off_loop(self.blocking, path,
                                        lambda: (200, self.service.metrics.render(), PROMETHEUS))
        return _json(404, {"error": f"no such endpoint {path}"})

    def _regime(self, symbol: str, explain: bool, client: str) -> Answer:
        return _json(*self.service.regime(symbol, explain=explain, client=client))

    async def _off_loop(self, pool: ThreadPoolExecutor, path: str,
                        fn: Callable[..., Answer], *args: Any) -> Answer:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, self._guarded, path, fn, *args)

    @staticmethod
    def _guarded(path: str, fn: Callable[..., Answer], *args: Any) -> Answer:
        """503 for a refusal the service explains (no verified model, no data), 500
        with the exception's name for anything else (logged with its traceback)."""
        try:
            return fn(*args)
        except QuantshiftError as exc:
            return _json(503, {"error": str(exc)})
        except Exception as exc:
            log.exception("%s failed", path)
            return _json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def close(self) -> None:
        """Let running explanations and health checks finish; drop queued ones."""
        for pool in (self.explaining, self.blocking):
            pool.shutdown(wait=True, cancel_futures=True)


class RegimeServer:
    """uvicorn on a socket bound and listening from construction (so ``port=0`` has
    its port at once and early connections wait in the backlog), with the
    ``socketserver``-like surface the tests and benchmarks drive:
    ``server_address``, ``serve_forever`` (any thread), ``shutdown`` (another
    thread; blocks until ``serve_forever`` has returned) and ``server_close``."""

    def __init__(self, service: RegimeService, host: str, port: int) -> None:
        try:
            import uvicorn
        except ImportError as exc:
            raise UsageError("the service needs uvicorn: install quantshift-ml[serve]") from exc
        self.app = RegimeApp(service)
        self.socket = listening_socket(host, port)
        config = uvicorn.Config(
            self.app, loop="asyncio", http="httptools", ws="none", lifespan="off",
            interface="asgi3", log_config=None, access_log=False, proxy_headers=False,
            server_header=False, date_header=False, backlog=BACKLOG,
            timeout_graceful_shutdown=GRACE_SECONDS)
        self._server = _uvicorn_server_class()(config)
        self._stopped = threading.Event()
        self._stopped.set()

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    def serve_forever(self, on_started: Callable[[], object] | None = None) -> None:
        """Serve until ``shutdown``; ``on_started`` runs once the loop accepts."""
        self._stopped.clear()
        self._server.on_started = on_started
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop accepting, let requests in flight finish, wait for ``serve_forever``."""
        self._server.should_exit = True
        self._stopped.wait()

    def server_close(self) -> None:
        self.socket.close()
        self.app.close()


@functools.cache
def _uvicorn_server_class() -> type[Any]:
    """uvicorn's ``Server`` with the signals left to ``install_signal_handlers`` and a
    hook once it accepts (defined on first use: uvicorn is imported only to serve).

    uvicorn's own handlers would take SIGTERM and SIGINT only, and re-raise the
    signal once it has shut down, killing the process before the prediction log
    is written out.
    """
    import uvicorn

    class Server(uvicorn.Server):  # type: ignore[misc]
        on_started: Callable[[], object] | None = None

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.on_started is not None:
                self.on_started()

    return Server


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), listening with ``BACKLOG``, TCP_NODELAY.

    uvicorn writes a response's headers and its body in two writes: with Nagle's
    algorithm on, the body waits for the client's delayed ACK (40 ms here).
    Accepted connections inherit TCP_NODELAY from the listening socket on Linux;
    the explicit IPPROTO_TCP also lets asyncio set it per connection, which it
    skips on a socket made with protocol 0 (``socket.create_server``).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def build_server(service: RegimeService, host: str = "127.0.0.1",
                 port: int = defaults.SERVICE_PORT) -> RegimeServer:
    """The HTTP server, already listening; ``port=0`` picks a free port."""
    return RegimeServer(service, host, port)


def install_signal_handlers(service: RegimeService, stop: Callable[[], None]
                            ) -> Callable[[], None]:
    """SIGHUP reloads the model, SIGTERM and SIGINT call ``stop`` (``server.shutdown``);
    returns a function that puts the previous handlers back. Call from the main thread.

    The reload runs in its own thread: a signal handler must return quickly, and the
    server keeps answering with the current model until the new one is ready.
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM,
                                                       signal.SIGINT)}

    def _hup(signum: int, frame: Any) -> None:
        log.info("SIGHUP: reloading the model")
        threading.Thread(target=service.reload, name="reload", daemon=True).start()

    def _stop(signum: int, frame: Any) -> None:
        log.info("%s: shutting down", signal.Signals(signum).name)
        threading.Thread(target=stop, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGHUP, _hup)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def notify_ready() -> bool:
    """Tell systemd (``Type=notify``) that the service answers and handles SIGHUP.

    Until then systemd holds back a reload (``ExecReload`` sends SIGHUP): a SIGHUP
    during start-up, before the handler exists, would kill the process, and
    ``Restart=on-failure`` does not restart a service killed by SIGHUP. Without
    ``$NOTIFY_SOCKET`` (run by hand) there is nobody to tell.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(b"READY=1")
    return True


def serve(root: Path, source: DataSource, *, host: str = "127.0.0.1",
          port: int = defaults.SERVICE_PORT, symbol: str = defaults.SYMBOL,
          refresh_seconds: float = 300.0) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the model.

    READY=1 goes out once the signal handlers are installed and the loop accepts;
    only then does the market cache start filling (pandas, the bars, the features:
    about half the start's CPU), on its own thread, so a restart is ready sooner
    and a ``/regime`` asked before the bars are in waits for them off the loop.
    """
    service = RegimeService(root, source, symbol, refresh_seconds)
    service.reload()
    server = build_server(service, host, port)
    restore = install_signal_handlers(service, server.shutdown)
    def started() -> None:  # the warm thread exists when READY=1 goes out
        threading.Thread(target=service.warm, name="warm", daemon=True).start()
        notify_ready()

    try:
        log.info("listening on http://%s:%d (root %s)", host, server.server_address[1], root)
        server.serve_forever(on_started=started)
    finally:
        server.server_close()
        service.close()
        restore()
