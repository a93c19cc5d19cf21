"""A Text Embeddings Inference server for tests: TEI's HTTP API over the real model, run in-process.

It follows TEI 1.9's OpenAPI document (tests/data/tei-openapi.json) and router behaviour:

* ``GET /info``, ``GET /health``, ``POST /tokenize``, ``POST /embed``;
* ``/embed`` takes a string, a list of token ids, or a batch mixing both; ``normalize``, ``truncate`` (default:
  ``auto_truncate``), ``truncation_direction`` (``Left``/``Right``) and ``prompt_name``; token-id
  inputs are embedded as given (no special tokens added, no prompt), as TEI does;
* errors are ``{"error", "error_type"}`` bodies with TEI's statuses: 400 Empty, 413 Validation (batch over
  ``max_client_batch_size``, input over ``max_input_length``), 422 Tokenizer, 424 Backend, 429 Overloaded,
  503 Unhealthy; a body over the payload limit gets 413 with a plain-text body, as axum's limit answers;
* ``max_concurrent_requests`` counts inputs, not requests (TEI >= 1.9): a request whose inputs do not all fit
  in the free permits is answered 429 at once.

Vectors come from sentence-transformers in fp32 on the CPU, one forward pass at a time (like one GPU); a cache keyed
by the exact model input keeps repeated runs cheap without changing any answer.

Fault injection (:class:`Faults`), for ``/embed``: scripted answers for the next requests (429 bursts, 503, 424,
slow answers, connections dropped before any answer or in the middle of the body), a latency that holds the
permits (so concurrent clients collide), a server that goes down after serving some inputs, and one that is down
for good. ``requests`` logs every
``/embed`` request with its input count and status.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAULT_KINDS = ("429", "503", "424", "drop", "cut", "slow")

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()
_VECTORS: dict[str, dict] = {}  # model path → {(model input, normalize): vector}, shared by every server


def _load_model(path: str):
    with _MODELS_LOCK:
        if path not in _MODELS:
            from sentence_transformers import SentenceTransformer

            _MODELS[path] = SentenceTransformer(path, device="cpu")
        return _MODELS[path]


@dataclass
class Faults:
    """What goes wrong, and when. Every field may be changed while the server runs."""

    script: deque = field(default_factory=deque)  # answers for the next /embed requests: a FAULT_KINDS entry or "ok"
    slow_seconds: float = 0.3  # how long a "slow" answer waits before it is computed
    latency: float = 0.0  # seconds every /embed answer takes while holding its permits (time on the GPU)
    down: bool = False  # every /embed and /health answers 503
    down_after_inputs: int | None = None  # go down for good once this many inputs were embedded

    def __post_init__(self):
        self._lock = threading.Lock()

    def plan(self, *kinds: str) -> None:
        """Append answers for the next requests, in order ("ok" or a FAULT_KINDS entry)."""
        assert all(k == "ok" or k in FAULT_KINDS for k in kinds), kinds
        self.script.extend(kinds)

    def draw(self) -> str:
        with self._lock:
            return self.script.popleft() if self.script else "ok"


@dataclass
class Logged:
    path: str
    inputs: int
    status: int | str  # an HTTP status, or "drop"/"cut" when no whole answer was sent
    authorization: str | None = None
    body: Any = None  # the parsed JSON request
    fault: str = "ok"  # what Faults.draw chose for it
    size: int = 0  # body bytes
    finished: int = 0  # order in which answers were sent


class _Reject(Exception):
    def __init__(self, status: int, error: str, error_type: str):
        super().__init__(error)
        self.status, self.error, self.error_type = status, error, error_type


class TEITestServer:
    """A TEI-speaking server on 127.0.0.1 (a free port) serving ``model_path``.

    Usage: ``with TEITestServer(path) as server: ... server.url ...``.
    """

    def __init__(
        self,
        model_path: str,
        *,
        model_id: str = "sentence-transformers/all-MiniLM-L6-v2",
        model_sha: str | None = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
        max_concurrent_requests: int = 512,
        max_client_batch_size: int = 32,
        max_batch_tokens: int = 16384,
        max_input_length: int | None = None,
        payload_limit: int = 2_000_000,
        auto_truncate: bool = False,
        length_status: int = 413,
        token: str | None = None,
        tokenize_route: bool = True,
        model_dtype: str = "float32",
        model_kind: str = "embedding",
        cache: bool = True,
    ):
        from tokenizers import Tokenizer

        self.model_path = str(model_path)
        self.model_id, self.model_sha = model_id, model_sha
        self.max_concurrent_requests = max_concurrent_requests
        self.max_client_batch_size = max_client_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.payload_limit = payload_limit
        self.auto_truncate = auto_truncate
        self.length_status = length_status  # real TEI answers 413 for over-long inputs; some proxies 422
        self.token = token
        self.tokenize_route = tokenize_route
        self.model_dtype = model_dtype
        self.model_kind = model_kind  # "embedding", or "classifier"/"reranker" to play a server of another kind
        self.faults = Faults()
        self.requests: list[Logged] = []
        self.embedded_inputs = 0
        self.finished = 0
        self._cache: dict[tuple, Any] | None = _VECTORS.setdefault(self.model_path, {}) if cache else None
        root = Path(self.model_path)
        st_config = json.loads((root / "config_sentence_transformers.json").read_text()) \
            if (root / "config_sentence_transformers.json").is_file() else {}
        self.prompts: dict[str, str] = st_config.get("prompts") or {}
        self.default_prompt_name: str | None = st_config.get("default_prompt_name")
        sbert = json.loads((root / "sentence_bert_config.json").read_text()) \
            if (root / "sentence_bert_config.json").is_file() else {}
        self.max_input_length = max_input_length or int(sbert.get("max_seq_length") or 512)
        self.pooling = _pooling(root)
        self._tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._vocab = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self._cutters: dict[str, Any] = {}
        self._state = threading.Lock()
        self._permits_used = 0
        self._forward_lock = threading.Lock()  # one forward pass at a time, like one GPU
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> "TEITestServer":
        server = self

        class Handler(_Handler):
            tei = server

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="tei-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "TEITestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def reset(self) -> None:
        """Clean slate between tests: no faults, empty request log (the vector cache stays)."""
        self.faults = Faults()
        self.requests = []
        self.embedded_inputs = 0
        self.finished = 0

    def embed_requests(self, status: int | str | None = None) -> list[Logged]:
        return [r for r in self.requests if r.path == "/embed" and (status is None or r.status == status)]

    # -- routes -------------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_sha": self.model_sha,
            "model_dtype": self.model_dtype,
            "model_type": {"embedding": {"pooling": self.pooling}} if self.model_kind == "embedding"
            else {self.model_kind: {"id2label": {"0": "LABEL"}, "label2id": {"LABEL": 0}}},
            "served_model_name": self.model_id,
            "max_concurrent_requests": self.max_concurrent_requests,
            "max_input_length": self.max_input_length,
            "max_batch_tokens": self.max_batch_tokens,
            "max_batch_requests": None,
            "max_client_batch_size": self.max_client_batch_size,
            "auto_truncate": self.auto_truncate,
            "tokenization_workers": 1,
            "version": "1.9.3",
            "sha": None,
            "docker_label": None,
        }

    def healthy(self) -> bool:
        return not self._is_down()

    def _is_down(self) -> bool:
        f = self.faults
        return f.down or (f.down_after_inputs is not None and self.embedded_inputs >= f.down_after_inputs)

    def tokenize(self, req: dict[str, Any]) -> list[list[dict[str, Any]]]:
        inputs = req.get("inputs")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise _Reject(422, "Failed to deserialize the JSON body: `inputs` must be a string or a list of strings", "")
        if not texts:
            raise _Reject(400, "`inputs` cannot be empty", "Empty")
        prompt = self._prompt(req.get("prompt_name"))
        out = []
        for text in texts:
            enc = self._tokenizer.encode(prompt + text, add_special_tokens=bool(req.get("add_special_tokens", True)))
            out.append([
                {"id": i, "text": t, "special": bool(s), "start": None if s else a, "stop": None if s else b}
                for i, t, s, (a, b) in zip(enc.ids, enc.tokens, enc.special_tokens_mask, enc.offsets)
            ])
        return out

    def _prompt(self, name: Any) -> str:
        if name is None:
            return self.prompts.get(self.default_prompt_name, "") if self.default_prompt_name else ""
        if name not in self.prompts:
            raise _Reject(413, f"`prompt_name` {name!r} is not in the model's prompts", "Validation")
        return self.prompts[name]

    def embed(self, req: dict[str, Any]) -> list[list[float]]:
        inputs = req.get("inputs")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and all(type(x) is int for x in inputs)):
            batch = [inputs]
        elif isinstance(inputs, list):
            batch = inputs
        else:
            raise _Reject(422, "Failed to deserialize the JSON body: `inputs` is missing or of the wrong type", "")
        if not batch:
            raise _Reject(400, "`inputs` cannot be empty", "Empty")
        if not all(isinstance(x, str) or (isinstance(x, list) and all(type(i) is int and i >= 0 for i in x))
                   for x in batch):
            raise _Reject(422, "Failed to deserialize the JSON body: each input is a string or a list of token ids", "")
        if len(batch) > self.max_client_batch_size:
            raise _Reject(413, f"batch size {len(batch)} > maximum allowed batch size {self.max_client_batch_size}",
                          "Validation")
        truncate = req.get("truncate")
        truncate = self.auto_truncate if truncate is None else bool(truncate)
        direction = req.get("truncation_direction", "Right")
        if direction not in ("Left", "Right"):
            raise _Reject(422, "Failed to deserialize the JSON body: truncation_direction: unknown variant", "")
        prompt = self._prompt(req.get("prompt_name"))
        rows = [self._model_input(x, prompt, truncate, direction) for x in batch]
        with self._state:  # TEI >= 1.9: one permit per input, 429 at once when they are not all free
            if self._permits_used + len(batch) > self.max_concurrent_requests:
                raise _Reject(429, "Model is overloaded", "Overloaded")
            self._permits_used += len(batch)
        try:
            time.sleep(self.faults.latency)
            vectors = self._vectors(rows, bool(req.get("normalize", True)))
        finally:
            with self._state:
                self._permits_used -= len(batch)
        with self._state:
            self.embedded_inputs += len(batch)
        return [v.tolist() for v in vectors]

    def _model_input(self, x: str | list[int], prompt: str, truncate: bool, direction: str) -> tuple[int, ...]:
        if isinstance(x, str):
            ids = self._tokenizer.encode(prompt + x, add_special_tokens=True).ids
        else:
            if any(i >= self._vocab for i in x):
                raise _Reject(422, f"token id out of the vocabulary ({self._vocab} ids)", "Tokenizer")
            ids = list(x)
        if len(ids) > self.max_input_length:
            if not truncate:
                raise _Reject(self.length_status,
                              f"`inputs` must have less than {self.max_input_length} tokens. Given: {len(ids)}",
                              "Validation" if self.length_status == 413 else "Tokenizer")
            if isinstance(x, str):  # the tokenizer cuts text and keeps the special tokens
                ids = self._truncating(direction).encode(prompt + x, add_special_tokens=True).ids
            else:
                ids = ids[: self.max_input_length] if direction == "Right" else ids[-self.max_input_length:]
        if not ids:
            raise _Reject(422, "input has no tokens", "Tokenizer")
        return tuple(ids)

    def _truncating(self, direction: str):
        if direction not in self._cutters:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self._tokenizer.to_str())
            tok.enable_truncation(self.max_input_length, direction=direction.lower())
            self._cutters[direction] = tok
        return self._cutters[direction]

    def _vectors(self, rows: list[tuple[int, ...]], normalize: bool) -> list[Any]:
        if self._cache is None:
            return self._forward(rows, normalize)
        keys = [(r, normalize) for r in rows]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            for i, v in zip(todo, self._forward([rows[i] for i in todo], normalize)):
                self._cache[keys[i]] = v
        return [self._cache[k] for k in keys]

    def _forward(self, rows: list[tuple[int, ...]], normalize: bool) -> list[Any]:
        import torch

        model = _load_model(self.model_path)
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r)
            mask[j, : len(r)] = 1
        features = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        with self._forward_lock, torch.inference_mode():
            for module in model:
                if type(module).__name__ != "Normalize":  # normalisation is the request's choice in TEI
                    features = module(features)
            vectors = features["sentence_embedding"].float()
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return list(vectors.numpy())


def _pooling(root: Path) -> str:
    for module in json.loads((root / "modules.json").read_text()) if (root / "modules.json").is_file() else []:
        if module.get("type", "").endswith("Pooling"):
            cfg = json.loads((root / module.get("path", "") / "config.json").read_text())
            mode = cfg.get("pooling_mode")
            if isinstance(mode, str):
                return {"cls_token": "cls", "mean_tokens": "mean"}.get(mode, mode)
            for key, name in (("cls_token", "cls"), ("mean_tokens", "mean"), ("lasttoken", "last_token")):
                if cfg.get(f"pooling_mode_{key}"):
                    return name
    return "cls"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out and hung up is part of the tests, not an error to print


class _Handler(BaseHTTPRequestHandler):
    tei: TEITestServer
    protocol_version = "HTTP/1.1"  # keep-alive, as a real server; every answer carries Content-Length

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, error: str, error_type: str) -> None:
        if error_type:
            self._send(status, json.dumps({"error": error, "error_type": error_type}).encode())
        else:  # axum's own rejections (unparsable JSON) are plain text
            self._send(status, error.encode(), "text/plain; charset=utf-8")

    def _authorized(self) -> bool:
        tei = self.tei
        if tei.token is None or self.headers.get("Authorization") == f"Bearer {tei.token}":
            return True
        self._send(401, b"Unauthorized", "text/plain; charset=utf-8")
        return False

    def do_GET(self) -> None:
        tei = self.tei
        tei.requests.append(Logged(self.path, 0, 0, self.headers.get("Authorization")))
        if not self._authorized():
            return
        if self.path == "/info":
            self._send(200, json.dumps(tei.info()).encode())
        elif self.path == "/health":
            if tei.healthy():
                self._send(200, b"", "text/plain")
            else:
                self._error(503, "unhealthy", "Unhealthy")
        else:
            self._send(404, b"", "text/plain")

    def do_POST(self) -> None:
        tei = self.tei
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        entry = Logged(self.path, 0, 0, self.headers.get("Authorization"), size=length)
        tei.requests.append(entry)
        if not self._authorized():
            entry.status = 401
            return
        if self.path not in ("/embed", "/tokenize") or (self.path == "/tokenize" and not tei.tokenize_route):
            entry.status = 404
            self._send(404, b"", "text/plain")
            return
        if length > tei.payload_limit:
            entry.status = 413
            self._send(413, b"Failed to buffer the request body: length limit exceeded", "text/plain; charset=utf-8")
            return
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            entry.status = 400
            self._error(400, f"Failed to parse the request body as JSON: {exc}", "")
            return
        entry.body = req
        inputs = req.get("inputs")
        entry.inputs = 1 if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and type(inputs[0]) is int) else len(inputs or [])
        try:
            if self.path == "/tokenize":
                result = tei.tokenize(req)
            else:
                fault = entry.fault = "503" if tei._is_down() else tei.faults.draw()
                if fault in ("429", "503", "424"):
                    kind = {"429": ("Model is overloaded", "Overloaded"), "503": ("unhealthy", "Unhealthy"),
                            "424": ("Inference failed", "Backend")}[fault]
                    raise _Reject(int(fault), *kind)
                if fault == "drop":
                    entry.status = "drop"
                    self.close_connection = True
                    return
                if fault == "slow":
                    time.sleep(tei.faults.slow_seconds)
                result = tei.embed(req)
                if fault == "cut":
                    payload = json.dumps(result).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    entry.status = "cut"
                    self.close_connection = True
                    return
        except _Reject as rej:
            entry.status = rej.status
            self._error(rej.status, rej.error, rej.error_type)
            return
        entry.status = 200
        self._send(200, json.dumps(result).encode())
        with tei._state:
            tei.finished += 1
            entry.finished = tei.finished
