# The WSGI example app: `passenger start examples/hello-wsgi` serves it.
def application(environ, start_response):
    body = "Hello from passenger-rs (WSGI)! You asked for {}\n".format(environ["PATH_INFO"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
