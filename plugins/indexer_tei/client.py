"""An asyncio client for Hugging Face Text Embeddings Inference (TEI) servers.

It speaks TEI's HTTP API (``/info``, ``/health``, ``/tokenize``, ``/embed``) as its OpenAPI document describes it,
and is written for throughput against servers that push back:

* requests are sized from ``/info``: at most ``max_client_batch_size`` inputs, ``max_batch_tokens`` tokens and the
  server's payload limit in bytes per request;
* inputs in flight stay under ``max_concurrent_requests``, which TEI >= 1.9 counts per input and enforces with an
  immediate 429; the budget halves on a 429 and grows back with each success, so several clients can share one
  server;
* 429, 503, 424, other 5xx, timeouts and dropped connections are retried with exponential backoff and full jitter;
  the client gives up once the server has failed for ``max_retry_seconds`` without a single success in between;
* 413 and 422 are never retried as they are: the batch is split in halves down to single inputs, and a single
  input that is still refused is reported by its label (the chunk id);
* vectors come back aligned with the inputs whatever order the responses arrive in.

The bearer token comes from the environment only (``INDEXER_TEI_TOKEN``; ``HF_TOKEN`` for Hugging Face hosts) and
appears in no message, log line, exception or repr.

Synchronous methods run their own event loop (on a private thread when the caller already runs one), so the
client works the same from the pipeline, from a notebook and from an async Modal method.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from indexer.errors import ConfigError, IndexerError

log = logging.getLogger("indexer.tei")

#: Statuses that say "not now": retried with backoff.
RETRY_STATUSES = frozenset({408, 424, 425, 429, 500, 502, 503, 504})
#: Statuses that say "not this batch": split, never retried as they are.
SPLIT_STATUSES = frozenset({413, 422})
#: TEI's own default for ``--payload-limit``.
DEFAULT_PAYLOAD_LIMIT = 2_000_000
# Room for '{"inputs":[...],"normalize":true,"truncate":false,"prompt_name":"..."}' around the inputs.
_ENVELOPE_BYTES = 512
_HF_HOSTS = ("huggingface.cloud", "huggingface.co", "hf.co", "hf.space")

Input = str | Sequence[int]
T = TypeVar("T")


class TEIError(IndexerError):
    """A TEI server failed in a way that retrying did not (or cannot) fix."""


@dataclass(frozen=True)
class ServerLimits:
    """What a TEI server accepts, from its ``/info``."""

    max_client_batch_size: int
    max_batch_tokens: int
    max_input_length: int
    max_concurrent_requests: int

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> "ServerLimits":
        return cls(
            max_client_batch_size=max(1, int(info["max_client_batch_size"])),
            max_batch_tokens=max(1, int(info["max_batch_tokens"])),
            max_input_length=max(1, int(info["max_input_length"])),
            max_concurrent_requests=max(1, int(info["max_concurrent_requests"])),
        )


class _Token:
    """The bearer token, kept out of every repr and message."""

    __slots__ = ("value", "source")

    def __init__(self, value: str, source: str):
        self.value = value
        self.source = source

    def __repr__(self) -> str:
        return f"<token from ${self.source}>"


def token_from_env(url: str) -> _Token | None:
    """``INDEXER_TEI_TOKEN``; else ``HF_TOKEN``, but only for Hugging Face hosts (Inference Endpoints), so a
    Hub token is never sent to a server the user did not mean to give it to."""
    value = os.environ.get("INDEXER_TEI_TOKEN", "").strip()
    if value:
        return _Token(value, "INDEXER_TEI_TOKEN")
    host = (urlsplit(url).hostname or "").lower()
    if any(host == h or host.endswith("." + h) for h in _HF_HOSTS):
        value = os.environ.get("HF_TOKEN", "").strip()
        if value:
            return _Token(value, "HF_TOKEN")
    return None


def display_url(url: str) -> str:
    """``url`` without user:password, query or fragment: safe for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def _aiohttp():
    try:
        import aiohttp
    except ImportError:
        raise ConfigError("the tei embedder needs aiohttp: pip install 'indexer[tei]' (or pip install aiohttp)") from None
    return aiohttp


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, even when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name="indexer-tei", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass
class _Request:
    """Positions (into the caller's inputs) sent together, and how often they were tried."""

    positions: list[int]
    attempt: int = 0


@dataclass
class _Outcome:
    status: int | None  # None: no HTTP answer (timeout, refused or dropped connection)
    vectors: Any = None
    error: str = ""
    retry_after: float | None = None


@dataclass
class _InFlight:
    """Inputs in flight at once. Starts at the server's limit, halves on a 429 (the server is shared or smaller
    than it says), and grows back by each successful batch. A request always goes out when nothing is in flight,
    so a batch larger than the shrunken budget cannot wait forever."""

    ceiling: int
    limit: int = 0
    used: int = 0

    def __post_init__(self) -> None:
        self.limit = self.ceiling

    def fits(self, n: int) -> bool:
        return self.used == 0 or self.used + n <= self.limit

    def shrink(self) -> None:
        self.limit = max(1, self.limit // 2)

    def grow(self, n: int) -> None:
        self.limit = min(self.ceiling, self.limit + n)


@dataclass
class _Run:
    """State of one ``aembed`` call."""

    bodies: list[bytes]
    labels: Sequence[str]
    out: Any
    progress: Callable[[int], None] | None
    failing_since: float | None = None
    last_error: str = ""
    warned: bool = False
    pending: deque = field(default_factory=deque)


class TEIClient:
    """A client for one TEI server.

    :param url: the server's base URL (``http://localhost:8080``, an Inference Endpoint URL).
    :param timeout: seconds one request may take before it counts as failed (and is retried).
    :param max_retry_seconds: give up once the server has failed this long without one success in between.
    :param payload_limit: most bytes in one request body (TEI's ``--payload-limit``, 2 MB by default).
    :param max_concurrent_inputs: inputs in flight at once; ``None`` takes the server's ``max_concurrent_requests``.
    :param max_batch_size: most inputs per request, below the server's ``max_client_batch_size``.
    :param backoff_base, backoff_max: the first and the largest backoff ceiling in seconds (full jitter draws a
        delay between 0 and the ceiling, which doubles per attempt).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 120.0,
        max_retry_seconds: float = 600.0,
        payload_limit: int = DEFAULT_PAYLOAD_LIMIT,
        max_concurrent_inputs: int | None = None,
        max_batch_size: int | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"TEI server URL must look like http://host:port or https://host (got {display_url(url)!r})")
        self.url = url.rstrip("/")
        self.display_url = display_url(url)
        self.timeout = float(timeout)
        self.max_retry_seconds = float(max_retry_seconds)
        self.payload_limit = int(payload_limit)
        self.max_concurrent_inputs = max_concurrent_inputs
        self.max_batch_size = max_batch_size
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self._token = token_from_env(url)
        self._info: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"TEIClient({self.display_url!r})"

    # ----------------------------------------------------------------------------------------------------------
    # Plumbing
    # ----------------------------------------------------------------------------------------------------------

    def _session(self):
        aiohttp = _aiohttp()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.value}"
        return aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=min(10.0, self.timeout)),
            connector=aiohttp.TCPConnector(limit=0),  # _InFlight bounds concurrency, not the pool
            trust_env=True,
        )

    def _redact(self, text: str) -> str:
        if self._token is not None and self._token.value:
            text = text.replace(self._token.value, "***")
        return text

    def _describe(self, status: int | None, body: bytes) -> str:
        """A short, token-free description of an error answer: TEI's ``{"error", "error_type"}`` or the text."""
        if status is None:
            return body.decode("utf-8", "replace")
        text = body.decode("utf-8", "replace").strip()
        try:
            data = json.loads(text)
            if isinstance(data, dict) and "error" in data:
                text = f"{data.get('error_type', 'error')}: {data['error']}"
        except ValueError:
            pass
        text = " ".join(text.split())
        return self._redact(f"HTTP {status}" + (f" ({text[:300]})" if text else ""))

    @staticmethod
    def _connection_failure(exc: BaseException) -> str:
        if isinstance(exc, asyncio.TimeoutError):
            return "no answer within the timeout"
        return f"connection failed ({type(exc).__name__})"

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        delay = random.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    async def _get(self, session, path: str) -> tuple[int | None, bytes]:
        aiohttp = _aiohttp()
        try:
            async with session.get(self.url + path) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return None, self._connection_failure(exc).encode()

    # ----------------------------------------------------------------------------------------------------------
    # Server metadata
    # ----------------------------------------------------------------------------------------------------------

    def server_info(self) -> dict[str, Any]:
        """The server's ``/info`` (fetched once). Raises :class:`ConfigError` when the server cannot be reached,
        refuses the token, or is not a TEI server; waits, within ``max_retry_seconds``, while it answers 503
        (an Inference Endpoint waking from scale-to-zero answers so for minutes)."""
        if self._info is None:
            self._info = run_sync(self._fetch_info)
        return self._info

    @property
    def limits(self) -> ServerLimits:
        return ServerLimits.from_info(self.server_info())

    async def _fetch_info(self) -> dict[str, Any]:
        started = time.monotonic()
        attempt = 0
        async with self._session() as session:
            while True:
                status, body = await self._get(session, "/info")
                if status is None:
                    raise ConfigError(
                        f"cannot reach the TEI server at {self.display_url}: {body.decode()}; is it running, and is "
                        "the URL right (--model URL, --option embedder.url=URL or INDEXER_TEI_URL)?"
                    )
                if status in (401, 403):
                    who = f"the token from ${self._token.source}" if self._token else "a request without a token"
                    raise ConfigError(
                        f"the TEI server at {self.display_url} refused {who} (HTTP {status}); set INDEXER_TEI_TOKEN "
                        "(or HF_TOKEN for a Hugging Face Inference Endpoint) to a token that may use it"
                    )
                if status in RETRY_STATUSES and time.monotonic() - started < self.max_retry_seconds:
                    delay = self._backoff(attempt, None)
                    log.warning("TEI server %s answered %s to /info; asking again in %.1fs",
                                self.display_url, self._describe(status, body), delay)
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                if status != 200:
                    raise ConfigError(f"the TEI server at {self.display_url} answered /info with {self._describe(status, body)}")
                try:
                    info = json.loads(body)
                except ValueError:
                    info = None
                needed = ("model_id", "max_input_length", "max_client_batch_size", "max_batch_tokens",
                          "max_concurrent_requests")
                if not isinstance(info, dict) or any(k not in info for k in needed):
                    raise ConfigError(
                        f"{self.display_url} does not look like a Text Embeddings Inference server: its /info lacks "
                        f"{', '.join(k for k in needed if not isinstance(info, dict) or k not in info)}"
                    )
                return info

    def health(self) -> bool:
        """Whether ``/health`` answers 200 now."""

        async def check() -> bool:
            async with self._session() as session:
                status, _ = await self._get(session, "/health")
                return status == 200

        return run_sync(check)

    def wait_until_healthy(self, timeout: float = 600.0, interval: float = 1.0) -> None:
        """Poll ``/health`` until it answers 200 (a TEI process starting up refuses connections, then answers
        503 while it loads the model). Raises :class:`TEIError` after ``timeout`` seconds."""

        async def poll() -> None:
            deadline = time.monotonic() + timeout
            last = ""
            async with self._session() as session:
                while time.monotonic() < deadline:
                    status, body = await self._get(session, "/health")
                    if status == 200:
                        return
                    last = self._describe(status, body)
                    await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            raise TEIError(f"the TEI server at {self.display_url} was not healthy within {timeout:.0f}s (last: {last})")

        run_sync(poll)

    def tokenize(self, text: str, *, prompt_name: str | None = None) -> list[int] | None:
        """Token ids (special tokens included) the server makes of ``text``; ``None`` when it has no
        ``/tokenize`` (an old TEI, or a proxy that only forwards ``/embed``)."""

        async def ask() -> list[int] | None:
            aiohttp = _aiohttp()
            payload: dict[str, Any] = {"inputs": text, "add_special_tokens": True}
            if prompt_name is not None:
                payload["prompt_name"] = prompt_name
            async with self._session() as session:
                try:
                    async with session.post(self.url + "/tokenize", data=json.dumps(payload).encode()) as resp:
                        status, body = resp.status, await resp.read()
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    raise ConfigError(f"TEI server {self.display_url}: /tokenize failed: {self._connection_failure(exc)}") from None
            if status in (404, 405):
                return None
            if status != 200:
                raise ConfigError(f"TEI server {self.display_url} answered /tokenize with {self._describe(status, body)}")
            return [int(t["id"]) for t in json.loads(body)[0]]

        return run_sync(ask)

    # ----------------------------------------------------------------------------------------------------------
    # Embedding
    # ----------------------------------------------------------------------------------------------------------

    def embed(self, inputs: Sequence[Input], **kwargs: Any) -> Any:
        """Synchronous :meth:`aembed`."""
        return run_sync(lambda: self.aembed(inputs, **kwargs))

    async def aembed(
        self,
        inputs: Sequence[Input],
        *,
        labels: Sequence[str] | None = None,
        tokens: Sequence[int] | None = None,
        normalize: bool = True,
        truncate: bool = False,
        prompt_name: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        """Vectors (``numpy.ndarray``, float32, one row per input, in input order).

        :param inputs: texts, or token ids with the model's special tokens already in place.
        :param labels: names for the inputs in error messages (chunk ids); default their positions.
        :param tokens: token counts per input, for sizing requests; default the ids' length or a text estimate.
        :param truncate: let the server cut inputs longer than its ``max_input_length``.
        :param prompt_name: a prompt from the model's sentence-transformers config, for text inputs.
        :param progress: called with the number of inputs each time a request succeeds.
        """
        import numpy as np

        if not inputs:
            return np.zeros((0, 0), dtype=np.float32)
        limits = ServerLimits.from_info(self._info) if self._info is not None else None
        if limits is None:
            self._info = await self._fetch_info()
            limits = ServerLimits.from_info(self._info)
        encoded = [json.dumps(x if isinstance(x, str) else [int(i) for i in x], ensure_ascii=False,
                              separators=(",", ":")).encode() for x in inputs]
        if tokens is None:
            tokens = [len(x) // 3 + 2 if isinstance(x, str) else len(x) for x in inputs]
        options: dict[str, Any] = {"normalize": normalize, "truncate": truncate}
        if prompt_name is not None:
            options["prompt_name"] = prompt_name
        tail = json.dumps(options, separators=(",", ":")).encode()[1:]  # '"normalize":true,...}'
        run = _Run(bodies=encoded, labels=labels or [f"input {i}" for i in range(len(inputs))], out=None,
                   progress=progress)
        cap = min(limits.max_client_batch_size, self.max_concurrent_inputs or limits.max_concurrent_requests,
                  limits.max_concurrent_requests, self.max_batch_size or limits.max_client_batch_size)
        for positions in _pack(tokens, [len(b) for b in encoded], cap, limits.max_batch_tokens,
                               self.payload_limit - _ENVELOPE_BYTES - len(tail)):
            run.pending.append(_Request(positions))
        budget = _InFlight(min(self.max_concurrent_inputs or limits.max_concurrent_requests, limits.max_concurrent_requests))
        async with self._session() as session:
            await self._drive(session, run, budget, tail)
        return run.out

    async def _drive(self, session, run: _Run, budget: _InFlight, tail: bytes) -> None:
        import numpy as np

        running: dict[asyncio.Task, _Request] = {}
        sleeping: set[asyncio.Task] = set()
        try:
            while run.pending or running or sleeping:
                while run.pending and budget.fits(len(run.pending[0].positions)):
                    req = run.pending.popleft()
                    budget.used += len(req.positions)
                    body = b'{"inputs":[' + b",".join(run.bodies[i] for i in req.positions) + b"]," + tail
                    running[asyncio.create_task(self._post(session, body))] = req
                done, _ = await asyncio.wait({*running, *sleeping}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task in sleeping:
                        sleeping.discard(task)
                        run.pending.appendleft(task.result())
                        continue
                    req = running.pop(task)
                    budget.used -= len(req.positions)
                    outcome: _Outcome = task.result()
                    if outcome.vectors is not None:
                        vectors = np.asarray(outcome.vectors, dtype=np.float32)
                        if vectors.ndim != 2 or vectors.shape[0] != len(req.positions):
                            raise TEIError(f"TEI server {self.display_url} answered {len(outcome.vectors)} vectors "
                                           f"for {len(req.positions)} inputs")
                        if run.out is None:
                            run.out = np.empty((len(run.bodies), vectors.shape[1]), dtype=np.float32)
                        elif vectors.shape[1] != run.out.shape[1]:
                            raise TEIError(f"TEI server {self.display_url} answered vectors of {vectors.shape[1]} and "
                                           f"of {run.out.shape[1]} dimensions: is it several servers with other models?")
                        run.out[req.positions] = vectors
                        run.failing_since = None
                        budget.grow(len(req.positions))
                        if run.progress:
                            run.progress(len(req.positions))
                    elif outcome.status in SPLIT_STATUSES:
                        self._split(run, req, outcome)
                    elif outcome.status is None or outcome.status in RETRY_STATUSES:
                        sleeping.add(asyncio.create_task(self._retry_later(run, req, outcome, budget)))
                    else:
                        raise TEIError(f"TEI server {self.display_url} refused a request: {outcome.error}"
                                       + _hint(outcome.status))
        finally:
            for task in (*running, *sleeping):
                task.cancel()
            if running or sleeping:
                await asyncio.gather(*running, *sleeping, return_exceptions=True)

    def _split(self, run: _Run, req: _Request, outcome: _Outcome) -> None:
        if len(req.positions) == 1:
            label = run.labels[req.positions[0]]
            raise TEIError(
                f"TEI server {self.display_url} refused {label} on its own: {outcome.error}. "
                "If it is too long for the model, let the server cut it with --option embedder.truncate=true"
            )
        half = len(req.positions) // 2
        log.debug("TEI server %s answered %s to %d inputs; splitting them in two",
                  self.display_url, outcome.error, len(req.positions))
        # Halves go to the front: they hold the oldest work, and the next loop turn sends them.
        run.pending.appendleft(_Request(req.positions[half:]))
        run.pending.appendleft(_Request(req.positions[:half]))

    async def _retry_later(self, run: _Run, req: _Request, outcome: _Outcome, budget: _InFlight) -> _Request:
        now = time.monotonic()
        if run.failing_since is None:
            run.failing_since = now
        run.last_error = outcome.error
        failing = now - run.failing_since
        if failing >= self.max_retry_seconds:
            raise TEIError(
                f"TEI server {self.display_url} kept failing for {failing:.0f}s without one success "
                f"(max_retry_seconds={self.max_retry_seconds:g}); last error: {run.last_error}. Finished shards are "
                "kept: run the same command again once the server is back and it resumes from them"
            )
        if outcome.status == 429:
            budget.shrink()
        delay = min(self._backoff(req.attempt, outcome.retry_after), self.max_retry_seconds - failing)
        (log.warning if not run.warned else log.debug)(
            "TEI server %s: %s; retrying %d inputs in %.2fs", self.display_url, outcome.error, len(req.positions), delay)
        run.warned = True
        await asyncio.sleep(max(0.0, delay))
        req.attempt += 1
        return req

    async def _post(self, session, body: bytes) -> _Outcome:
        aiohttp = _aiohttp()
        try:
            async with session.post(self.url + "/embed", data=body) as resp:
                data = await resp.read()
                if resp.status == 200:
                    return _Outcome(200, vectors=json.loads(data))
                return _Outcome(resp.status, error=self._describe(resp.status, data),
                                retry_after=_seconds(resp.headers.get("Retry-After")))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return _Outcome(None, error=self._connection_failure(exc))
        except ValueError:  # a 200 whose body is not JSON: a proxy's error page, a body cut short
            return _Outcome(None, error="answer was not JSON")


def _pack(tokens: Sequence[int], sizes: Sequence[int], max_inputs: int, max_tokens: int, max_bytes: int) -> list[list[int]]:
    """Positions grouped into requests, longest first (similar lengths together waste least padding on the
    server), each under the input, token and byte limits; an input over a limit on its own goes alone."""
    order = sorted(range(len(tokens)), key=lambda i: -tokens[i])
    out: list[list[int]] = []
    current: list[int] = []
    n_tokens = n_bytes = 0
    for i in order:
        if current and (len(current) >= max_inputs or n_tokens + tokens[i] > max_tokens
                        or n_bytes + sizes[i] + 1 > max_bytes):
            out.append(current)
            current, n_tokens, n_bytes = [], 0, 0
        current.append(i)
        n_tokens += tokens[i]
        n_bytes += sizes[i] + 1
    if current:
        out.append(current)
    return out


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: rare from TEI and its proxies, and the backoff covers it
        return None


def _hint(status: int | None) -> str:
    if status in (401, 403):
        return "; set INDEXER_TEI_TOKEN (or HF_TOKEN for a Hugging Face Inference Endpoint) to a token that may use it"
    if status == 404:
        return "; is the URL the server's base URL (without /embed)?"
    return ""
