"""A local OpenAI-compatible HTTP server for offline tests and benchmarks.

Pipeline position: test infrastructure. The real ``openai`` client (which sends through
``httpx2``, out of reach of respx) talks to this server over 127.0.0.1, so tests exercise the
whole backend stack — SDK, error mapping, retries, rate limits, budget, cache — without a network.

Serves ``POST /v1/chat/completions`` and ``POST /v1/embeddings`` (``/chat/completions`` and
``/embeddings`` without the ``/v1`` prefix too). Answers come from a pluggable
``responder(request_json) -> str``. Faults are consumed first-in first-out from a plan, one per
chat request::

    with LLMTestServer(responder=my_responder) as server:
        server.plan(Fault.rate_limit(retry_after=2), Fault.server_error(), Fault.malformed())
        client = AsyncOpenAI(base_url=server.base_url, api_key="dummy", max_retries=0)

``supports_json_schema=False`` makes the server reject every ``response_format`` of type
``json_schema`` with a 400, like servers that lack structured output; such a request does not
consume a planned fault. ``ignores_response_format=True`` models the other kind of server: it
accepts ``response_format`` with a 200 and silently ignores it, so a request that carries one is
answered with ``off_schema_answer`` (plain prose by default, ``OFF_SCHEMA_JSON`` for JSON that does
not follow the schema) while a request without one (schema in the prompt) gets the responder's
answer. ``latency`` adds a fixed delay (seconds) to every answer.

``litellm_headers=True`` answers like a LiteLLM proxy: the provider's headers come back prefixed
``llm_provider-`` (a 429's wait is ``llm_provider-retry-after``, with no plain ``Retry-After``) and
every answer carries ``x-litellm-*`` headers. ``Fault.rate_limit(retry_after=..., header=...)``
picks the wait header of one 429 (``retry-after``, ``retry-after-ms`` or
``llm_provider-retry-after``).

``fault_mix=FaultMix(rate_limit=0.08, server_error=0.04, retry_after=0.05, seed=0)`` adds a seeded
random fault to chat requests that have no planned fault: the n-th such request draws the n-th
number of a ``random.Random(seed)``, so the sequence of faults is reproducible (which request gets
it depends on arrival order under concurrency).
``server.requests`` lists what the server saw (path, JSON body, lower-cased headers);
``server.count(path_suffix)`` counts them.

As a pytest fixture (function scope; configure it with ``set_responder``/``plan``)::

    from llm_server import llm_server  # noqa: F401   (in a test module or conftest.py)

    async def test_x(llm_server: LLMTestServer) -> None: ...

Run it standalone (used by ``experiments/bench_llm.py`` to keep the server off the client's GIL)::

    python tests/llm_server.py --latency 0.1 --port 0 [--answer TEXT]   # prints "PORT <n>"
        [--ignore-response-format] [--litellm-headers]
        [--fault-429 0.08 --fault-500 0.04 --retry-after 1 --fault-seed 0]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest

Responder = Callable[[dict[str, Any]], str]

FaultKind = Literal[
    "rate_limit", "server_error", "delay", "malformed", "reject_format", "status", "not_completion"
]


RetryAfterHeader = Literal["retry-after", "retry-after-ms", "llm_provider-retry-after"]

OFF_SCHEMA_TEXT = (
    "Sure! Looking at this user's history, I think they would most enjoy the first candidate, "
    "and their taste seems to be shifting towards lighter films."
)
OFF_SCHEMA_JSON = '{"answer": "the first candidate", "confidence": "high"}'

LITELLM_HEADERS = {
    "x-litellm-model-id": "test-model-deployment",
    "x-litellm-version": "1.55.0",
    "x-litellm-call-id": "00000000-0000-0000-0000-000000000000",
    "llm_provider-x-ratelimit-remaining-requests": "99",
}


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, applied to the next chat request the server receives."""

    kind: FaultKind
    retry_after: str | None = None  # rate_limit: Retry-After header value (seconds or HTTP date)
    header: RetryAfterHeader | None = None  # rate_limit: which header carries it (None: default)
    seconds: float = 0.0  # delay: how long to stall before sending the (normal) answer
    status: int = 500  # status: the HTTP status to return
    text: str = "this is not JSON at all"  # malformed: the answer's content
    message: str = "injected failure"  # server_error/status: the error message in the body

    @classmethod
    def rate_limit(
        cls, retry_after: float | str | None = None, *, header: RetryAfterHeader | None = None
    ) -> Fault:
        """429 Too Many Requests, with an optional wait header.

        ``header`` names it: ``retry-after`` (seconds or HTTP date), ``retry-after-ms``
        (milliseconds: pass the value in milliseconds) or ``llm_provider-retry-after``
        (LiteLLM). None: ``Retry-After``, or LiteLLM's header when the server has
        ``litellm_headers``.
        """
        value = None if retry_after is None else str(retry_after)
        return cls("rate_limit", retry_after=value, header=header)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """A 5xx answer."""
        return cls("server_error", status=status)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Stall before answering (set it beyond the client timeout to cause a timeout)."""
        return cls("delay", seconds=seconds)

    @classmethod
    def malformed(cls, text: str = "this is not JSON at all") -> Fault:
        """A 200 whose message content is not the JSON the caller asked for."""
        return cls("malformed", text=text)

    @classmethod
    def reject_format(cls) -> Fault:
        """A 400 complaining about response_format (one request only)."""
        return cls("reject_format", status=400)

    @classmethod
    def not_completion(cls) -> Fault:
        """A 200 whose JSON body is not a chat completion at all (no ``choices``)."""
        return cls("not_completion")

    @classmethod
    def http_status(cls, status: int, message: str = "injected failure") -> Fault:
        """Any error status with an OpenAI-style error body (e.g. 400, 401, 404)."""
        return cls("status", status=status, message=message)


def default_responder(request_json: dict[str, Any]) -> str:
    """Answer with a JSON object echoing the last user message (valid JSON, schema-agnostic)."""
    messages = request_json.get("messages") or []
    last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    return json.dumps({"echo": str(last.get("content", ""))[:200]})


def fake_embedding(text: str, dim: int) -> list[float]:
    """A deterministic pseudo-embedding of ``text`` (not normalised, so clients must normalise)."""
    out: list[float] = []
    counter = 0
    while len(out) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend((b - 127.5) / 64.0 for b in digest)
        counter += 1
    return out[:dim]


@dataclass(frozen=True)
class FaultMix:
    """Random faults: each chat request without a planned fault is a 429 with probability
    ``rate_limit`` (waiting ``retry_after`` seconds; None sends no wait header), else a 500 with
    probability ``server_error``. Seeded, so the sequence of faults is reproducible."""

    rate_limit: float = 0.0
    server_error: float = 0.0
    retry_after: float | None = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rate_limit < 0.0 or self.server_error < 0.0:
            raise ValueError("fault shares must be >= 0")
        if self.rate_limit + self.server_error > 1.0:
            raise ValueError("fault shares must add up to at most 1")


@dataclass
class SeenRequest:
    """One request as the server received it."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]  # names lower-cased
    fault: str | None = None


@dataclass
class _State:
    responder: Responder
    latency: float
    supports_json_schema: bool
    embedding_dim: int
    ignores_response_format: bool = False
    off_schema_answer: str = OFF_SCHEMA_TEXT
    litellm_headers: bool = False
    fault_mix: FaultMix | None = None
    mix_rng: random.Random | None = None
    faults: deque[Fault] = field(default_factory=deque)
    requests: list[SeenRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send_json(400, _error_body("request body is not JSON", "invalid_request_error"))
            return
        path = self.path.split("?", 1)[0]
        if path.endswith("/chat/completions"):
            self._chat(path, body)
        elif path.endswith("/embeddings"):
            self._embeddings(path, body)
        else:
            self._send_json(404, _error_body(f"unknown path {path}", "not_found"))

    # -- endpoints -------------------------------------------------------------------------

    def _chat(self, path: str, body: dict[str, Any]) -> None:
        state = self.server.state
        response_format = body.get("response_format") or {}
        unsupported = response_format.get("type") == "json_schema" and not (
            state.supports_json_schema
        )
        with state.lock:
            # A request the server cannot accept anyway does not consume a planned fault.
            fault = state.faults.popleft() if state.faults and not unsupported else None
            if fault is None and not unsupported and state.fault_mix is not None:
                fault = _draw_fault(state.fault_mix, state.mix_rng)
            state.requests.append(
                SeenRequest(path, body, _headers(self), fault.kind if fault else None)
            )
        if state.latency:
            time.sleep(state.latency)
        stall = 0.0
        if fault is not None and fault.kind == "delay":
            # answered when it arrives, sent after the stall: a client that gives up meanwhile
            # must not have the responder count (and spend its planned answer faults on) a
            # request it never reads, which under load once cost a test one expected repair
            stall, fault = fault.seconds, None
        if fault is not None and fault.kind == "rate_limit":
            header = fault.header or (
                "llm_provider-retry-after" if state.litellm_headers else "Retry-After"
            )
            headers = {header: fault.retry_after} if fault.retry_after else {}
            self._send_json(429, _error_body("Rate limit reached", "rate_limit_exceeded"), headers)
            return
        if fault is not None and fault.kind in ("server_error", "status"):
            self._send_json(fault.status, _error_body(fault.message, "server_error"))
            return
        if unsupported or (fault is not None and fault.kind == "reject_format"):
            self._send_json(
                400,
                _error_body(
                    "response_format of type json_schema is not supported by this server",
                    "invalid_request_error",
                    param="response_format",
                ),
            )
            return
        if fault is not None and fault.kind == "not_completion":
            self._send_json(200, {"object": "list", "data": []})
            return
        if fault is not None and fault.kind == "malformed":
            text = fault.text
        elif state.ignores_response_format and response_format:
            text = state.off_schema_answer  # accepted with a 200, then ignored
        else:
            try:
                text = state.responder(body)
            except Exception as exc:  # a responder bug becomes a visible 500, not a hang
                self._send_json(500, _error_body(f"responder failed: {exc!r}", "server_error"))
                return
        if stall:
            time.sleep(stall)
        prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages") or [])
        tokens_in = max(1, prompt_chars // 4)
        tokens_out = max(1, len(text) // 4)
        self._send_json(
            200,
            {
                "id": f"chatcmpl-{len(state.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "test-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": tokens_in,
                    "completion_tokens": tokens_out,
                    "total_tokens": tokens_in + tokens_out,
                },
            },
        )

    def _embeddings(self, path: str, body: dict[str, Any]) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append(SeenRequest(path, body, _headers(self)))
        if state.latency:
            time.sleep(state.latency)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dim = int(body.get("dimensions") or state.embedding_dim)
        data = []
        for index, text in enumerate(texts):
            vector = fake_embedding(str(text), dim)
            if body.get("encoding_format") == "base64":
                packed = struct.pack(f"<{dim}f", *vector)
                embedding: Any = base64.b64encode(packed).decode("ascii")
            else:
                embedding = vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        n_tokens = sum(max(1, len(str(t)) // 4) for t in texts)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "test-embedder"),
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
            },
        )

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        extra = dict(LITELLM_HEADERS) if self.server.state.litellm_headers else {}
        extra.update(headers or {})
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client gave up
            self.wfile.write(data)


def _draw_fault(mix: FaultMix, rng: random.Random | None) -> Fault | None:
    draw = (rng or random.Random(mix.seed)).random()
    if draw < mix.rate_limit:
        return Fault.rate_limit(mix.retry_after)
    if draw < mix.rate_limit + mix.server_error:
        return Fault.server_error()
    return None


def _headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    return {name.lower(): value for name, value in handler.headers.items()}


def _error_body(message: str, kind: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": kind}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        super().__init__(address, _Handler)
        self.state = state


class LLMTestServer:
    """An OpenAI-compatible server on 127.0.0.1 (a free port) running in a background thread."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency: float = 0.0,
        supports_json_schema: bool = True,
        ignores_response_format: bool = False,
        off_schema_answer: str = OFF_SCHEMA_TEXT,
        litellm_headers: bool = False,
        fault_mix: FaultMix | None = None,
        embedding_dim: int = 16,
        port: int = 0,
    ) -> None:
        self._state = _State(
            responder=responder or default_responder,
            latency=latency,
            supports_json_schema=supports_json_schema,
            embedding_dim=embedding_dim,
            ignores_response_format=ignores_response_format,
            off_schema_answer=off_schema_answer,
            litellm_headers=litellm_headers,
        )
        self.set_fault_mix(fault_mix)
        self._httpd = _Server(("127.0.0.1", port), self._state)
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LLMTestServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LLMTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def plan(self, *faults: Fault) -> None:
        """Queue faults; each is applied to one subsequent chat request, in order."""
        with self._state.lock:
            self._state.faults.extend(faults)

    def set_responder(self, responder: Responder) -> None:
        self._state.responder = responder

    def set_latency(self, seconds: float) -> None:
        self._state.latency = seconds

    def set_supports_json_schema(self, value: bool) -> None:
        self._state.supports_json_schema = value

    def set_ignores_response_format(self, value: bool, answer: str | None = None) -> None:
        """Accept ``response_format`` and ignore it, answering such requests with ``answer``."""
        self._state.ignores_response_format = value
        if answer is not None:
            self._state.off_schema_answer = answer

    def set_litellm_headers(self, value: bool) -> None:
        self._state.litellm_headers = value

    def set_fault_mix(self, mix: FaultMix | None) -> None:
        """Random 429/500 faults (None: off). Restarts the mix's random sequence."""
        with self._state.lock:
            self._state.fault_mix = mix
            self._state.mix_rng = random.Random(mix.seed) if mix is not None else None

    def faults_served(self) -> dict[str, int]:
        """How many requests got each kind of fault (planned or drawn)."""
        out: dict[str, int] = {}
        for request in self.requests:
            if request.fault is not None:
                out[request.fault] = out.get(request.fault, 0) + 1
        return out

    # -- observation -----------------------------------------------------------------------

    @property
    def requests(self) -> list[SeenRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def count(self, path_suffix: str = "/chat/completions") -> int:
        """Requests seen whose path ends with ``path_suffix``."""
        return sum(1 for r in self.requests if r.path.endswith(path_suffix))

    @property
    def pending_faults(self) -> int:
        with self._state.lock:
            return len(self._state.faults)

    def reset(self) -> None:
        """Forget seen requests and pending faults."""
        with self._state.lock:
            self._state.requests.clear()
            self._state.faults.clear()


@pytest.fixture
def llm_server() -> Iterator[LLMTestServer]:
    """A fresh server (default responder, no latency) for one test."""
    with LLMTestServer() as server:
        yield server


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the OpenAI-compatible test server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="Added seconds per answer.")
    parser.add_argument("--answer", default=None, help="Answer every chat request with this text.")
    parser.add_argument(
        "--ignore-response-format",
        action="store_true",
        help="Accept response_format and ignore it (answer off-schema prose).",
    )
    parser.add_argument(
        "--litellm-headers", action="store_true", help="Answer with LiteLLM proxy headers."
    )
    parser.add_argument("--fault-429", type=float, default=0.0, help="Share of requests → 429.")
    parser.add_argument("--fault-500", type=float, default=0.0, help="Share of requests → 500.")
    parser.add_argument("--retry-after", type=float, default=1.0, help="429 wait, seconds.")
    parser.add_argument("--fault-seed", type=int, default=0)
    args = parser.parse_args()
    responder = None if args.answer is None else (lambda _body: args.answer)
    mix = None
    if args.fault_429 or args.fault_500:
        mix = FaultMix(args.fault_429, args.fault_500, args.retry_after, args.fault_seed)
    server = LLMTestServer(
        responder,
        latency=args.latency,
        port=args.port,
        ignores_response_format=args.ignore_response_format,
        litellm_headers=args.litellm_headers,
        fault_mix=mix,
    )
    print(f"PORT {server.port}", flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
