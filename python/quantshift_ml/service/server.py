"""The HTTP front of the service: routes, the threaded server, signals and ``serve``.

SIGHUP reloads the model on its own thread (a signal handler must return quickly
and requests keep being answered by the current model); SIGTERM shuts down after
the prediction log is written.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from quantshift_ml import defaults
from quantshift_ml.data.sources import DataSource
from quantshift_ml.errors import QuantshiftError
from quantshift_ml.service.app import RegimeService

log = logging.getLogger(__name__)


def make_handler(service: RegimeService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "quantshift-regime"

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict[str, Any]) -> None:
            self._send(status, (json.dumps(obj) + "\n").encode(), "application/json")

        def do_GET(self) -> None:
            url = urlparse(self.path)
            try:
                if url.path == "/healthz":
                    self._json(*service.health())
                elif url.path == "/regime":
                    query = parse_qs(url.query)
                    symbol = query.get("symbol", [service.symbol])[0]
                    explain = query.get("explain", ["0"])[0].lower() in ("1", "true", "yes")
                    client = query.get("client", [""])[0][:64]
                    self._json(*service.regime(symbol, explain=explain, client=client))
                elif url.path == "/metrics":
                    self._send(200, service.metrics.render(),
                               "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._json(404, {"error": f"no such endpoint {url.path}"})
            except QuantshiftError as exc:
                self._json(503, {"error": str(exc)})
            except Exception as exc:
                log.exception("%s failed", url.path)
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s - %s", self.address_string(), fmt % args)

    return Handler


def build_server(service: RegimeService, host: str = "127.0.0.1", port: int = defaults.SERVICE_PORT
                 ) -> ThreadingHTTPServer:
    """The HTTP server (one thread per request); ``port=0`` picks a free port."""
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    return server


def install_signal_handlers(service: RegimeService, stop: Callable[[], None]
                            ) -> Callable[[], None]:
    """SIGHUP reloads the model, SIGTERM calls ``stop`` (``server.shutdown``); returns a
    function that puts the previous handlers back. Call from the main thread.

    The reload runs in its own thread: a signal handler must return quickly, and the
    server keeps answering with the current model until the new one is ready.
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM)}

    def _hup(signum: int, frame: Any) -> None:
        log.info("SIGHUP: reloading the model")
        threading.Thread(target=service.reload, name="reload", daemon=True).start()

    def _stop(signum: int, frame: Any) -> None:
        threading.Thread(target=stop, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGHUP, _hup)
    signal.signal(signal.SIGTERM, _stop)

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
    """Run until SIGTERM/SIGINT; SIGHUP reloads the model."""
    service = RegimeService(root, source, symbol, refresh_seconds)
    service.reload()
    server = build_server(service, host, port)
    restore = install_signal_handlers(service, server.shutdown)
    threading.Thread(target=service.warm, name="warm", daemon=True).start()
    log.info("listening on http://%s:%d (root %s)", host, server.server_address[1], root)
    notify_ready()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        service.predictions.close()
        restore()
