#!/usr/bin/env python3
"""Faultline demo: a load generator (stdlib only).

Sends GET requests to --target at a fixed --rate, each with --timeout, and counts their
outcomes: ok (HTTP 200), error (another status or a connection error) and timeout. Prometheus
scrapes the counters from --metrics (GET /metrics):

    demo_requests_total{outcome="ok"|"error"|"timeout"}
    demo_requests_in_flight
"""
import argparse
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUTCOMES = ("ok", "error", "timeout")
counts = {o: 0 for o in OUTCOMES}
in_flight = 0
lock = threading.Lock()


def is_timeout(exc):
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return True
    reason = getattr(exc, "reason", None)
    return isinstance(reason, (socket.timeout, TimeoutError))


def one(target, timeout):
    global in_flight
    with lock:
        in_flight += 1
    try:
        with urllib.request.urlopen(target, timeout=timeout) as r:
            r.read()
            outcome = "ok" if r.status == 200 else "error"
    except urllib.error.HTTPError:
        outcome = "error"
    except Exception as exc:  # URLError, socket errors, timeouts while reading
        outcome = "timeout" if is_timeout(exc) else "error"
    with lock:
        counts[outcome] += 1
        in_flight -= 1


class Metrics(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/metrics":
            self.send_error(404)
            return
        with lock:
            lines = [
                "# HELP demo_requests_total Requests sent to the demo service, by outcome.",
                "# TYPE demo_requests_total counter",
            ]
            lines += [f'demo_requests_total{{outcome="{o}"}} {counts[o]}' for o in OUTCOMES]
            lines += [
                "# HELP demo_requests_in_flight Requests waiting for an answer.",
                "# TYPE demo_requests_in_flight gauge",
                f"demo_requests_in_flight {in_flight}",
            ]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="URL to GET, e.g. http://10.77.0.11:8080/")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    p.add_argument("--timeout", type=float, default=0.5, help="seconds per request (default 0.5)")
    p.add_argument("--metrics", required=True, help="HOST:PORT for /metrics")
    a = p.parse_args()
    if not (0 < a.rate <= 1000) or not (0 < a.timeout <= 30):
        sys.exit("--rate must be in (0, 1000] and --timeout in (0, 30]")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, port = a.metrics.rsplit(":", 1)
    server = Server((host, int(port)), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    workers = int(a.rate * a.timeout * 4) + 8
    pool = ThreadPoolExecutor(max_workers=workers)
    print(f"fl_demo_loadgen: {a.rate:g} req/s to {a.target}, timeout {a.timeout:g}s, "
          f"metrics on {a.metrics}", flush=True)
    period = 1.0 / a.rate
    next_at = time.monotonic()
    last_report = next_at
    while True:
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        pool.submit(one, a.target, a.timeout)
        next_at += period
        if now - last_report >= 5:
            last_report = now
            with lock:
                print(" ".join(f"{o}={counts[o]}" for o in OUTCOMES), flush=True)


if __name__ == "__main__":
    main()
