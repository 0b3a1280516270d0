"""What every HTTP server of the offline stack owes its other clients: a client that dribbles
its request is cut off, the number of connections is capped, the listen backlog absorbs a
burst, and a connection that fails mid-request is dropped quietly.

The gateway, the Lambda Invoke API and the iot-data endpoint build on these two classes.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

READ_TIMEOUT = 10.0  # seconds a server waits for a client's next bytes
REQUEST_READ_LIMIT = 30.0  # seconds a client has to send one whole request (headers and body)
MAX_CONNECTIONS = 128  # connections served at once; more are closed at once
CONTENT_LENGTH = re.compile(r"[0-9]{1,16}", re.ASCII)  # "²".isdigit() is True; this is not


class BoundedRequestHandler(BaseHTTPRequestHandler):
    """A handler whose client must send each whole request within the server's
    ``request_read_limit``; call ``request_read()`` once the request is in, so that the work it
    asks for (an integration of up to 29 s) is never cut short."""

    server: BoundedHTTPServer
    timeout = READ_TIMEOUT  # StreamRequestHandler applies it to the socket: per read

    def handle_one_request(self) -> None:
        self._cut_off = threading.Timer(self.server.request_read_limit, self._cut)
        self._cut_off.daemon = True
        self._cut_off.start()
        try:
            super().handle_one_request()
        finally:
            self._cut_off.cancel()

    def request_read(self) -> None:
        self._cut_off.cancel()

    def _cut(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def send_json(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Answer with ``body`` (JSON, or empty) and its length, plus ``headers``."""
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # each server logs what it decides, not every request line


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, up to ``max_connections``; past that a connection is closed at
    once, so a flood of idle connections cannot exhaust the machine."""

    daemon_threads = True
    request_queue_size = 128  # socketserver's default of 5 resets a burst of connections
    thread_name = "http"  # the serving thread's name, each server's own

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BoundedRequestHandler],
        *,
        request_read_limit: float = REQUEST_READ_LIMIT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.request_read_limit = request_read_limit
        self._connections = threading.BoundedSemaphore(max_connections)
        self._thread: threading.Thread | None = None
        super().__init__(address, handler)

    def start(self) -> Self:
        """Serve on a daemon thread of its own; ``stop()`` ends it."""
        self._thread = threading.Thread(
            target=self.serve_forever, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connections.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed mid-request is dropped quietly (no traceback on stderr)."""
