#!/usr/bin/env python3
"""Faultline demo: a tiny HTTP service (stdlib only) that answers GET / with 200 "ok".

It runs inside one demo node's network namespace; the demo's experiment pauses it (SIGSTOP),
so requests time out and the load generator's error ratio rises. /metrics exposes how many
requests it served (demo_service_requests_total).
"""
import argparse
import signal
import sys
import threading
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

served = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        global served
        if self.path == "/metrics":
            with lock:
                n = served
            body = (
                "# HELP demo_service_requests_total Requests the demo service answered.\n"
                "# TYPE demo_service_requests_total counter\n"
                f"demo_service_requests_total {n}\n"
            ).encode()
            ctype = "text/plain; version=0.0.4"
        else:
            with lock:
                served += 1
            body = b"ok\n"
            ctype = "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # keep the log quiet
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # http.server resolves the bind address with getfqdn(): a reverse DNS lookup that can
        # hang for seconds in a network namespace. The name is not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        # A client that gave up (the load generator's timeout) is not worth a traceback.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", required=True, help="HOST:PORT")
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    server = Server((host, int(port)), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"fl_demo_service listening on {a.listen}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
