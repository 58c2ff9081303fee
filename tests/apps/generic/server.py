"""A generic app (passenger_app_start_command) for the tests: a small HTTP/1.1 server on
127.0.0.1:$PORT. GET answers JSON with its pid, port, the request path and headers, and
the environment variables named in the query (GET /?GREETING&PORT); X-Pid carries the pid."""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlsplit(self.path)
        names = [n for n in url.query.split("&") if n]
        body = json.dumps(
            {
                "pid": os.getpid(),
                "port": self.server.server_address[1],
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "env": {n: os.environ.get(n) for n in names},
                "cwd": os.getcwd(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Pid", str(os.getpid()))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


port = int(os.environ["PORT"])
server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(f"generic app {os.getpid()} listening on port {port}", flush=True)
print(f"generic app {os.getpid()} says hello on stderr", file=sys.stderr, flush=True)
server.serve_forever()
