"""The HTTP side shared by the test servers that speak OpenAI's wire format
(`completions_server.CompletionsServer`, `chat_server.ChatServer`): a threaded
server on 127.0.0.1, `GET /v1/models`, one `POST` route, JSON answers, and a
way to drop a connection unanswered. A subclass says its route, its model
card and how it answers a body."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OpenAIServer:
    """`with Server(...) as server:` → `server.url` ("http://127.0.0.1:PORT/v1")."""

    route = ""  # the one POST path, e.g. "/v1/completions"

    def __init__(self, name: str):
        self.name = name
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [server.model_card()]})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path != server.route:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                status, answer = server.answer(body)
                if status is None:  # drop: close the socket with no answer at all
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self._json(status, answer)

            def _json(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def model_card(self) -> dict:
        return {"id": self.name, "object": "model"}

    def answer(self, body: dict) -> tuple[int | None, dict | None]:
        """(status, JSON answer) for a POST body; status None drops the connection."""
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
