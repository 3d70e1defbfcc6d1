"""Loopback HTTP servers that speak ConceptNet's and OpenAI's wire formats, scripted per test."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Optional, Tuple

Reply = Tuple[int, dict, bytes]  # status, headers, body


def json_reply(obj, status: int = 200, headers: Optional[dict] = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


def html_reply(status: int = 502) -> Reply:
    page = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    return status, {"Content-Type": "text/html"}, page


def conceptnet_answer(term: str, edges: list) -> dict:
    return {"@id": f"/c/en/{term}", "edges": edges, "version": "5.8.1"}


def conceptnet_404(term: str) -> dict:
    return {"@id": f"/c/en/{term}", "edges": [],
            "error": {"details": f"'/c/en/{term}' is not a node in ConceptNet.", "status": 404}, "version": "5.8.1"}


def edge(rel: str, start: str, end: str, weight: float = 1.0, start_lang: str = "en", end_lang: str = "en") -> dict:
    def node(term: str, lang: str) -> dict:
        return {"@id": f"/c/{lang}/{term}", "@type": "Node", "label": term.replace("_", " "), "language": lang,
                "term": f"/c/{lang}/{term}"}
    return {"@id": f"/a/[/r/{rel}/,/c/{start_lang}/{start}/,/c/{end_lang}/{end}/]", "@type": "Edge",
            "rel": {"@id": f"/r/{rel}", "@type": "Relation", "label": rel}, "start": node(start, start_lang),
            "end": node(end, end_lang), "weight": weight, "surfaceText": None, "dataset": "/d/test"}


def chat_answer(content: str, model: str = "fake-model") -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


class FakeServer:
    """``responder(method, path, body, headers) -> Reply`` answers every request; ``requests`` records them.
    A responder may return ``("sleep", seconds, reply)`` to answer late."""

    def __init__(self, responder: Callable):
        self.responder = responder
        self.requests: List[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {"method": self.command, "path": self.path, "body": body, "headers": dict(self.headers)}
                outer.requests.append(record)
                reply = outer.responder(self.command, self.path, json.loads(body) if body else None,
                                        dict(self.headers))
                if reply[0] == "sleep":
                    time.sleep(reply[1])
                    reply = reply[2]
                status, headers, payload = reply
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
