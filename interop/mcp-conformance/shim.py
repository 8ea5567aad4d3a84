"""A forwarding shim for clients that take only a URL (the MCP conformance
suite's server mode): every request to it goes on to one URL with a tool
token added, and every answer comes back as it arrives, chunk by chunk, so
the shim itself never buffers a stream.

Not a reverse proxy for production: stdlib only, one thread a request.
"""

import http.client
import http.server
import select
import socket
import threading
import urllib.parse

HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
       "trailer", "transfer-encoding", "upgrade", "host", "authorization", "content-length"}


class Shim:
    """Serves on 127.0.0.1:<free port> at `url` (path /mcp), forwarding to
    `target`; set `token` before the first request."""

    def __init__(self, target):
        self.token = None
        self.srv = _serve(urllib.parse.urlsplit(target), self)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/mcp"
        self.origin = f"http://127.0.0.1:{self.srv.server_address[1]}"

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def _close_when_gone(client, upstream):
    """Shuts the upstream connection once the client has closed its end
    (the client sends nothing more on an HTTP/1.0 exchange, so readable
    means gone), or once the upstream connection is closed."""
    while upstream.sock is not None:
        try:
            ready, _, _ = select.select([client], [], [], 0.2)
            if ready and not client.recv(1, socket.MSG_PEEK):
                break
        except (OSError, ValueError):
            break
    sock = upstream.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _serve(t, shim):
    class Handler(http.server.BaseHTTPRequestHandler):
        # HTTP/1.0 towards the client: the answer's end is the connection's
        # end, so a stream needs no framing of the shim's own.
        protocol_version = "HTTP/1.0"

        def forward(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            headers["Authorization"] = f"Bearer {shim.token}"
            path = t.path.rstrip("/") + self.path[len("/mcp"):] if self.path.startswith("/mcp") else self.path
            conn = http.client.HTTPConnection(t.hostname, t.port, timeout=300)
            try:
                conn.request(self.command, path, body=body, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.send_header("Connection", "close")
                self.end_headers()
                # A client that goes away ends the request upstream too, as
                # a proxy's would: an idle stream otherwise stays open.
                threading.Thread(target=_close_when_gone, args=(self.connection, conn), daemon=True).start()
                while True:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            finally:
                conn.close()

        do_GET = do_POST = do_DELETE = do_PUT = forward

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv
