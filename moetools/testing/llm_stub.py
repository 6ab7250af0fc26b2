"""A real OpenAI-compatible chat-completions server on 127.0.0.1, in a thread, for tests and benchmarks.

    with LLMStub(latency=0.2) as stub:
        ... POST f"{stub.url}/chat/completions" ...
    stub.requests        # every request body (dict) and its headers, in arrival order
    stub.max_in_flight   # most requests being handled at the same time

Faults: ``stub.faults`` is a list consumed one per request (``None`` = answer
normally), and ``stub.rule(body) -> fault | None`` decides per request after it.
A fault is ``"401"`` (echoing the key), ``"429"`` (with ``Retry-After: stub.retry_after``), ``"500"``,
``"timeout"`` (sleep ``stub.hang`` seconds, then answer), ``"drop"`` (close the
connection without a response), ``"malformed"`` (200 with a body that is not
JSON), ``"bad_answer"`` (a valid completion without the expected sentence) or
``"length"`` (the normal answer going on and cut mid-sentence, ``finish_reason: "length"``).
The normal answer is ``stub.answer(body)``: by default "This expert specializes
in <a word taken from the prompt's first marked span>".

``LLMStub(slots=1)`` makes it a server that works on one request at a time (the
others wait, as llama.cpp's server does). ``GET /v1/models`` lists ``stub.models``.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self  # Python >= 3.11, as the tests


def default_answer(body: dict) -> str:
    user = body["messages"][-1]["content"] if body.get("messages") else ""
    match = re.search(r"<<(.*?)>>", user)
    word = match.group(1).strip() if match else "nothing"
    return f"This expert specializes in {word or 'spaces'} tokens."


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms per response
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format, *args):  # keep test output clean
        pass

    def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        stub = self.server.stub
        with stub.lock:
            stub.gets.append(self.path)
        if self.path.rstrip("/").endswith("/models") and stub.models is not None:
            self._send(200, json.dumps({"object": "list", "data": [{"id": name, "object": "model"}
                                                                   for name in stub.models]}).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self):
        stub = self.server.stub
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        body = json.loads(raw)
        with stub.lock:
            stub.requests.append({"path": self.path, "body": body, "headers": dict(self.headers.items()),
                                  "time": time.monotonic()})
            stub.in_flight += 1
            stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
            fault = stub.faults.pop(0) if stub.faults else None
        try:
            if fault is None and stub.rule is not None:
                fault = stub.rule(body)
            if stub.latency:
                if stub.slot is not None:
                    with stub.slot:  # one request at a time: the others queue
                        time.sleep(stub.latency)
                else:
                    time.sleep(stub.latency)
            if fault == "429":
                self._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": str(stub.retry_after)})
            elif fault == "401":  # echoes the key like some hosted APIs do: it must not reach any output
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                self._send(401, json.dumps({"error": {"message": f"Incorrect API key provided: {key}"}}).encode())
            elif fault == "500":
                self._send(500, b'{"error": {"message": "server error"}}')
            elif fault == "timeout":
                time.sleep(stub.hang)
                self._send(504, b'{"error": {"message": "too late"}}')
            elif fault == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif fault == "malformed":
                self._send(200, b'{"choices": [{"message": {"content": "This expert spec')
            else:
                text = "I think it is about many things." if fault == "bad_answer" else stub.answer(body)
                if fault == "length":  # the answer going on past max_tokens, cut mid-sentence
                    text = text.rstrip(".") + " and the words that usually come right after"
                prompt_tokens = sum(len(m["content"].split()) for m in body.get("messages", []))
                payload = {"id": f"stub-{len(stub.requests)}", "object": "chat.completion",
                           "model": body.get("model"),
                           "choices": [{"index": 0, "finish_reason": "length" if fault == "length" else "stop",
                                        "message": {"role": "assistant", "content": text}}],
                           "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                                     "total_tokens": prompt_tokens + len(text.split())}}
                self._send(200, json.dumps(payload).encode())
        finally:
            with stub.lock:
                stub.in_flight -= 1


class _Server(ThreadingHTTPServer):
    # handler threads are joined on close, so none outlives its test (a sleeping "timeout" handler included)
    daemon_threads = False
    block_on_close = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        # a client that gave up (timeout, cancelled run) is part of the tests, not an error of the stub
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class LLMStub:
    """The server; a context manager that starts and stops it (see the module docstring)."""

    def __init__(self, latency: float = 0.0, *, retry_after: float = 0.1, hang: float = 2.0, slots: int | None = None,
                 models: list[str] | None = ("stub-model",)):
        self.latency = latency
        self.slot = threading.Semaphore(slots) if slots else None
        self.models = list(models) if models is not None else None
        self.gets: list[str] = []
        self.retry_after = retry_after
        self.hang = hang
        self.faults: list[str | None] = []
        self.rule = None
        self.answer = default_answer
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.max_in_flight = 0

    def start(self) -> LLMStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- synthetic samples streams (formats/samples.md) for the moe-explain tests and benchmark ----------

DOMAIN_WORDS = {
    "medical": ["patient", "fever", "dose", "tumor", "insulin", "artery", "biopsy", "sepsis"],
    "legal": ["plaintiff", "statute", "clause", "tort", "appeal", "verdict", "contract", "court"],
    "code": ["def", "return", "import", "lambda", "yield", "class", "self", "None"],
}
FILLER = ["the", "a", "of", "and", "to", "in", "is", "was", "for", "with"]


def synthetic_expert(layer: int, expert: int, *, contexts: int = 4, length: int = 12, logit_lens: bool = True,
                     empty: bool = False) -> dict:
    """One ``expert`` record whose expert fires on one word of one domain (deterministic)."""
    import numpy as np

    domains = sorted(DOMAIN_WORDS)
    domain = domains[(layer * 7 + expert) % len(domains)]
    words = DOMAIN_WORDS[domain]
    target = words[(expert * 3 + layer) % len(words)]

    def context(kind: str, number: int, active: bool) -> dict:
        pieces, activation = [], []
        for position in range(length):
            if position == 0:  # names the expert, so no two experts are shown the same prompt
                pieces.append(f" doc{layer}x{expert}")
                activation.append(0.0)
            elif active and position in (3 + number % 4, 8):
                pieces.append(" " + target)
                activation.append(round(1.0 + 0.25 * (contexts - number) + 0.01 * position, 3))
            else:
                pool = words if position % 3 == 0 else FILLER
                word = pool[(position * 5 + number * 3 + expert) % len(pool)]
                pieces.append(" " + (word if word != target else "the"))
                activation.append(0.0)
        doc = f"{domain}-{layer}-{expert}-{kind}-{number}"
        values = np.asarray(activation, dtype=np.float32)
        return {"id": f"{doc}@0", "doc_id": doc, "offset": 0, "mark": int(np.argmax(values)), "pieces": pieces,
                "activation": values, "score": float(values.max()), "meta": {"domain": domain}}

    # top in shuffled order (the explainer must sort by activation), weighted below, negatives inactive
    top = [] if empty else [context("top", number, True) for number in (2, 0, 3, 1)[:contexts]]
    weighted = [] if empty else [context("weighted", number, True) for number in range(contexts, contexts + 2)]
    negative = [context("negative", number, False) for number in range(2)]
    record = {"type": "expert", "layer": layer, "expert": expert,
              "stats": {"firing_tokens": 0 if empty else 2 * contexts, "tokens_seen": 1000, "sequences": 10,
                        "max_activation": 0.0 if empty else max(c["score"] for c in top)},
              "wanted": {"top": contexts, "weighted": 2, "negative": 2},
              "found": {"top": len(top), "weighted": len(weighted), "negative": 2, "short": empty},
              "explain": {"top": top, "weighted": weighted, "negative": negative},
              "holdout": {"positive": [context("holdout", 9, True)] if not empty else [],
                          "negative": [context("holdout-negative", 9, False)]}}
    if logit_lens:
        record["logit_lens"] = [{"piece": f" {target}s", "count": 9}, {"piece": f" {domain}", "count": 7},
                                {"piece": " and", "count": 3}, {"piece": " of", "count": 1}]
    return record


def write_samples(path, experts: int = 8, layers: int = 1, *, encoding: str = "msgpack", logit_lens: bool = True,
                  empty: tuple = ()) -> list[tuple[int, int]]:
    """A complete samples stream at ``path`` with ``layers × experts`` records; returns their (layer, expert)."""
    from moetools.streams import StreamWriter

    model = {"name": "tiny-moe", "model_type": "olmoe", "num_layers": layers, "num_experts": experts, "top_k": 2,
             "fingerprint": "sha256:" + "0" * 64}
    keys = []
    with open(path, "wb") as handle:
        writer = StreamWriter(handle, "samples", tool={"name": "test"}, model=model, encoding=encoding)
        for layer in range(layers):
            for expert in range(experts):
                writer.write(synthetic_expert(layer, expert, logit_lens=logit_lens, empty=(layer, expert) in empty))
                keys.append((layer, expert))
        writer.close()
    return keys
