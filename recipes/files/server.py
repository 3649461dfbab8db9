"""A tiny status service: GET / answers {"status": "ok"}."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("STATUS_PORT", "9000"))), Status).serve_forever()
