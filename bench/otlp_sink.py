"""An OTLP/HTTP trace receiver for bench/overhead.sh: decodes each export
with the OpenTelemetry project's protobuf definitions (`opentelemetry-proto`)
and counts the spans; `GET /count` answers the count."""

import http.server
import sys
import threading

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

spans = 0
lock = threading.Lock()


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global spans
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(self.rfile.read(int(self.headers.get("content-length") or 0)))
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with lock:
            spans += n
        out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        out = str(spans).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
