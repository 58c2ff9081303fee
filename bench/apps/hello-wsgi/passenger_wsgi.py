# Hello-world WSGI app for bench/compare: the same file runs under passenger-rs, Phusion
# Passenger and gunicorn (`gunicorn passenger_wsgi:application`). X-Pid names the process.
#   /       "hello world\n"
#   /100k   a 100 KB body
#   /sleep  answers after 50 ms
import os
import time

HELLO = b"hello world\n"
BODY_100K = b"x" * 102399 + b"\n"


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    body = BODY_100K if path == "/100k" else HELLO
    if path == "/sleep":
        time.sleep(0.05)
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("X-Pid", str(os.getpid())),
    ])
    return [body]
