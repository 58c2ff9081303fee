# Test app for WSGI through nginx: hello, an echo of the body, the environment, and output.
import os
import sys

print("wsgi app: loading", flush=True)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        body = b"hello from wsgi\n"
        headers = [("Content-Type", "text/plain"), ("X-Pid", str(os.getpid()))]
    elif path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        headers = [("Content-Type", "application/octet-stream"), ("X-Received-Length", str(len(body)))]
    elif path == "/env":
        body = os.environ.get(environ["QUERY_STRING"], "(unset)").encode()
        headers = [("Content-Type", "text/plain")]
    elif path == "/log":
        print("wsgi app %d says hello on stdout" % os.getpid())
        sys.stderr.write("wsgi app %d says hello on stderr\n" % os.getpid())
        body = b"logged"
        headers = [("Content-Type", "text/plain")]
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"unknown path " + path.encode("latin-1") + b"\n"]
    start_response("200 OK", headers)
    return [body]
