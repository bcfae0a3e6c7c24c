"""The HTTP endpoint of ``rqworker --metrics-port``: a socket bound up front, served two ways.

One worker process serves it from a daemon thread. Under ``--processes`` it is served by a
process of its own that the supervisor forks and restarts like a worker, because a thread in the
supervisor would make every fork of a worker a fork of a multi-threaded process: a child forked
while a scrape held a lock (an import lock, say) hangs for ever on its first use of it. The
socket is bound in the supervisor, before any fork, so a port in use stops the command at once
and a restarted server process takes over the same listening socket without a gap.
"""

from __future__ import annotations

import os
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

#: How often the server process checks that its supervisor is still alive (seconds).
ORPHAN_CHECK_INTERVAL = 1.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one line per scrape would drown the worker's own log."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class MetricsServer:
    """A listening socket on ``addr:port`` and the WSGI ``app`` to answer it with."""

    def __init__(self, port: int, addr: str, app: Any) -> None:
        family, kind, proto, _, address = socket.getaddrinfo(
            addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self.socket = socket.socket(family, kind, proto)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(64)
        except OSError:
            self.socket.close()
            raise
        self.app = app

    def _server(self) -> _Server:
        server = _Server(self.socket.getsockname()[:2], _QuietHandler, bind_and_activate=False)
        server.socket.close()  # the one the constructor made: ours is already bound
        server.socket = self.socket
        server.server_name, server.server_port = self.socket.getsockname()[:2]
        server.setup_environ()
        server.set_app(self.app)
        return server

    def serve_in_thread(self) -> threading.Thread:
        """Serve from a daemon thread of this process (one worker process, no forks)."""
        thread = threading.Thread(target=self._server().serve_forever, daemon=True,
                                  name="redisq-metrics")
        thread.start()
        return thread

    def serve_while_parent(self, parent: int) -> None:
        """Serve in this (forked) process until its parent ``parent`` is gone, so that a
        supervisor killed with SIGKILL does not leave the port held by an orphan."""
        server = self._server()
        server.timeout = ORPHAN_CHECK_INTERVAL
        while os.getppid() == parent:
            server.handle_request()

    def close(self) -> None:
        """Close this process's copy of the listening socket (a forked worker's, say)."""
        self.socket.close()
