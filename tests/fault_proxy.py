"""An HTTP proxy for tests that puts storage faults in front of the GCS emulator: a seeded share of requests is
answered 503 or 429 without reaching it, and a few downloads are cut off mid-body (the connection reset).

Only GET responses are cut: a write the emulator has already applied, retried after its response was lost,
gets 404 from the emulator's resumable-upload sessions where GCS would answer with the finished object.

Clients must get through on their own retry policies (google-cloud-storage's, under Beam's gcsio), so a run
through the proxy writes what a run without it writes.
"""
from __future__ import annotations

import http.client
import http.server
import random
import socket
import threading
from typing import Dict, Tuple

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    """Forwards to `upstream` (host, port); `faults` maps 503 / 429 / "reset" to the share of requests they get."""

    def __init__(self, upstream: Tuple[str, int], faults: Dict, seed: int = 0):
        self.upstream, self.faults, self.random = upstream, dict(faults), random.Random(seed)
        self.lock, self.counts = threading.Lock(), {"requests": 0, 503: 0, 429: 0, "reset": 0}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                proxy.handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _draw(self):
        with self.lock:
            self.counts["requests"] += 1
            roll, edge = self.random.random(), 0.0
            for fault, share in self.faults.items():
                edge += share
                if roll < edge:
                    self.counts[fault] += 1
                    return fault
        return None

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        fault = self._draw()
        if fault in (503, 429):
            request.send_response(fault)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream.request(request.command, request.path, body=body, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        upstream.close()
        request.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                request.send_header(key, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if fault == "reset" and request.command == "GET" and len(payload) > 1:
            request.wfile.write(payload[:len(payload) // 2])
            request.wfile.flush()
            request.connection.shutdown(socket.SHUT_RDWR)  # cut off mid-body
            request.close_connection = True
            return
        if request.command != "HEAD":
            request.wfile.write(payload)
