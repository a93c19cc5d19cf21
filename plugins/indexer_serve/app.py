"""The HTTP layer: a FastAPI app over :mod:`indexer_serve.service`.

    GET  /search?q=...&k=10&mode=hybrid&by_doc=true&filter=topic:People     one query
    POST /search  {"queries": [...], "k": 10, "filter": {"topic": "People"}}  a batch
    POST /feedback {"query", "id", "relevance", "source"}  (bearer token)     -> the database's feedback store
    GET  /tables   what `indexer info` shows, and which table is served
    GET  /health   ready once the model is loaded
    GET  /         the search page;   GET /docs  the OpenAPI docs

Every error is JSON, ``{"error": "..."}`` naming the problem, with a 4xx status for a bad request; an unexpected
failure is a 500 for that request alone.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Literal, Union

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer.errors import ConfigError
from indexer.log import get_logger
from indexer_serve import query as q
from indexer_serve.service import Batcher, Follower, Ranking

log = get_logger("serve.app")

MAX_K = 1000
MAX_QUERY_CHARS = 1000
MAX_BATCH_QUERIES = 256
MAX_BODY_BYTES = 1 << 20  # a batch of 256 queries of 1,000 characters, with room to spare

QueryText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS)]
FilterValue = Union[str, int, float, bool]


@dataclass
class ServeConfig:
    db: str
    table: str | None = None
    work_dir: str | None = None
    host: str = "127.0.0.1"
    token: str | None = None
    batch_wait_ms: float = 2.0
    max_batch: int = 64
    follow_every_s: float = 0.5

    def __repr__(self) -> str:  # the token must never reach a log line or a traceback
        return f"ServeConfig(db={self.db!r}, table={self.table!r}, host={self.host!r}, token={'set' if self.token else None})"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def check(self) -> None:
        if not self.loopback and not self.token:
            raise ConfigError(f"--host {self.host} is not a loopback address: anyone who can reach it could read the "
                              "index and write feedback. Set a token (INDEXER_SERVE_TOKEN, or --token) to serve there")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


# --------------------------------------------------------------------------------------------------------------
# Requests


class Ranked(BaseModel):
    """How to rank; what is not given comes from the table's recorded settings (tune-search), as in the CLI."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1, le=MAX_K, description="Results per query.")
    by_doc: bool = Field(False, description="Rank documents by their best chunk instead of chunks.")
    mode: Literal["dense", "text", "hybrid"] | None = None
    fusion: Literal["rrf", "convex"] | None = None
    rrf_k: int | None = Field(None, ge=1, le=10_000)
    text_weight: float | None = Field(None, ge=0, le=100)
    fuse: Literal["doc", "chunk"] | None = None


class SearchParams(Ranked):
    q: QueryText = Field(description="The query.")
    filter: list[str] = Field([], description="FIELD:VALUE on a filterable column (repeat: the values of one "
                                              "field are ORed, fields ANDed).")


class BatchSearch(Ranked):
    queries: list[QueryText] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)
    filter: dict[str, Union[FilterValue, list[FilterValue]]] = Field(
        {}, description='{"field": value} or {"field": [values]} on filterable columns.')


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: QueryText
    id: Annotated[str, StringConstraints(min_length=1, max_length=1000)] = Field(
        description="The chunk id (Vaccine#0) or document id judged.")
    relevance: float = Field(1.0, ge=0, le=100, description="Graded relevance; 0 = judged not relevant.")
    source: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "serve"


# --------------------------------------------------------------------------------------------------------------


def create_app(config: ServeConfig) -> FastAPI:
    config.check()
    state: dict = {}
    feedback_lock = threading.Lock()  # one feedback commit at a time: concurrent merge_inserts would conflict

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The model loads here, before uvicorn accepts a connection: /health answering means ready.
        state["follower"] = await asyncio.to_thread(Follower, config.db, config.table, config.work_dir)
        state["batcher"] = Batcher(config.max_batch, config.batch_wait_ms / 1000)
        tasks = [asyncio.create_task(state["batcher"].run()),
                 asyncio.create_task(state["follower"].follow(config.follow_every_s))]
        log.info("serving table %s of %s", state["follower"].index.table, config.db)
        yield
        for task in tasks:
            task.cancel()

    def token_given(request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return bool(config.token) and scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), config.token.encode())

    def require_token(request: Request) -> None:
        if not config.token:
            raise HTTPException(403, "feedback writes need a token: start the server with INDEXER_SERVE_TOKEN "
                                     "(or --token) and send it as 'Authorization: Bearer TOKEN'")
        if not token_given(request):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="indexer", summary="Search an indexer table; record what people judge relevant.",
                  lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    if not config.loopback:
        # Away from loopback every request needs the token: a middleware, so that the framework's own routes
        # (/docs, /openapi.json) are covered too, which route dependencies would not be.
        @app.middleware("http")
        async def every_request_needs_the_token(request: Request, call_next):
            if not token_given(request):
                return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return await call_next(request)

    install_error_handlers(app)
    page = resources.files("indexer_serve").joinpath("page.html").read_text(encoding="utf-8")

    async def filter_kinds(index) -> dict[str, str]:
        """The filterable columns of the served table and their kinds, read once per table."""
        kinds = state.setdefault("kinds", {})
        if index.table not in kinds:
            kinds[index.table] = await asyncio.to_thread(index.sink.filterable_types)
        return kinds[index.table]

    async def run_search(queries: list[str], ranked: Ranked, conditions: dict) -> dict:
        follower: Follower = state["follower"]
        index = follower.index  # this request's table, whatever the alias does meanwhile
        settings, origin = index.resolve(mode=ranked.mode, fusion=ranked.fusion, rrf_k=ranked.rrf_k,
                                         text_weight=ranked.text_weight, fuse=ranked.fuse)
        predicate = q.sql_predicate(conditions, await filter_kinds(index)) if conditions else None
        ranking = Ranking(ranked.k, ranked.by_doc, settings, predicate)
        results = await state["batcher"].search(index, ranking, queries)
        mark = settings.mode != "dense"  # the words that matched: text and hybrid rank by them
        answers = []
        for text, hits in zip(queries, results):
            stems = q.query_stems(text) if mark else set()
            answers.append({"query": text, "hits": [hit_json(h, stems) for h in hits]})
        return {"table": index.table, "mode": settings.mode, "settings": settings.to_dict(), "settings_from": origin,
                "results": answers}

    # The search answers are plain JSON already: returned as a JSONResponse, they skip FastAPI's generic encoder
    # (jsonable_encoder), which would walk every value of every hit once more.
    @app.get("/search", summary="Search one query", response_class=JSONResponse)
    async def search_one(params: Annotated[SearchParams, Query()]) -> JSONResponse:
        out = await run_search([params.q], params, q.parse_pairs(params.filter))
        first = out.pop("results")[0]
        return JSONResponse({"query": first["query"], **out, "hits": first["hits"]})

    @app.post("/search", summary="Search a batch of queries", response_class=JSONResponse)
    async def search_batch(body: BatchSearch) -> JSONResponse:
        return JSONResponse(await run_search(body.queries, body, body.filter))

    @app.post("/feedback", summary="Record a judgement", dependencies=[Depends(require_token)])
    async def feedback(body: Feedback) -> dict:
        def add() -> bool:
            with feedback_lock:
                if "log" not in state:
                    from indexer_feedback.store import FeedbackLog

                    state["log"] = FeedbackLog(config.db)
                return state["log"].add(body.query, body.id, relevance=body.relevance, source=body.source)

        added = await asyncio.to_thread(add)
        return {"added": added, "query": body.query, "id": body.id, "relevance": body.relevance}

    @app.get("/tables", summary="The database's tables, as `indexer info` shows them")
    async def tables() -> dict:
        from indexer import api

        return {"serving": state["follower"].index.table, "tables": await asyncio.to_thread(api.info, config.db)}

    @app.get("/health", summary="Ready once the model is loaded")
    async def health() -> dict:
        index = state["follower"].index
        return {"status": "ok", "table": index.table, "model": index.meta["model"].get("name"),
                "settings": index.settings.to_dict(), "settings_from": index.origin,
                "batches": state["batcher"].batches, "queries": state["batcher"].queries}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index_page() -> str:
        return page

    return app


def hit_json(hit, stems: set[str]) -> dict:
    return {**hit.__dict__, "highlights": q.highlights(hit.text, stems)}


# --------------------------------------------------------------------------------------------------------------
# Errors and limits


def error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":  # FastAPI reports where the JSON broke, in characters
                return error(400, f"the body is not valid JSON (at character {e['loc'][-1]}: "
                                  f"{(e.get('ctx') or {}).get('error', 'decode error')})")
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return error(422, "; ".join(problems) or "invalid request")

    # Starlette's HTTPException: the router raises it (404 for an unknown path, 405 for a wrong method), and
    # FastAPI's, raised above, is a subclass: every HTTP error answers {"error": ...}.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(q.BadFilter)
    async def bad_filter(request: Request, exc: q.BadFilter) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(ConfigError)
    async def not_possible(request: Request, exc: ConfigError) -> JSONResponse:  # e.g. text mode without an FTS index
        return error(400, str(exc))

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body over {limit:,} bytes")


class BodyLimit:
    """Refuses bodies over ``limit`` bytes: by their Content-Length before reading, and while reading a body sent
    without one (chunked), so a client cannot make the server buffer an unbounded body."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            response = error(413, str(BodyTooLarge(self.limit).detail)) if length.isdigit() else error(
                400, "invalid Content-Length")
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # FastAPI passes an HTTPException raised while reading the body on to the handlers above
                raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)
