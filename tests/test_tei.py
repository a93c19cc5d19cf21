"""The TEI embedder against a TEI-speaking test server (tests/tei_server.py) that runs the real MiniLM model and
follows TEI's OpenAPI document (tests/data/tei-openapi.json), with faults injected on the server side."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

import indexer
from conftest import DEMO_CORPUS, SHARED, split_demo, table_rows
from indexer.errors import ConfigError, IndexerError
from indexer.types import Chunk
from indexer_tei import TEIEmbedder
from indexer_tei.client import TEIClient, TEIError, token_from_env
from tei_server import FAULT_KINDS, TEITestServer

pytestmark = pytest.mark.slow

SPEC = Path(__file__).parent / "data" / "tei-openapi.json"
TOKEN = "hf_planted_SECRET_token_0123456789abcdef"
SHARDS, PER_SHARD = 4, 25


# ---------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _token():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INDEXER_TEI_TOKEN", TOKEN)
        mp.delenv("HF_TOKEN", raising=False)
        mp.delenv("INDEXER_TEI_URL", raising=False)
        yield


@pytest.fixture(scope="module")
def server(model_path):
    """The shared server: needs the bearer token, takes at most 8 inputs per request (many requests per build)."""
    with TEITestServer(model_path, max_client_batch_size=8, token=TOKEN) as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh_server(server):
    server.reset()
    yield
    server.reset()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """100 Wikipedia summaries in 4 files: 4 shards."""
    return split_demo(tmp_path_factory.mktemp("corpus"), SHARDS, PER_SHARD)


def _options(model_path, **extra):
    return {"embedder": {"tokenizer": model_path, "backoff_base": 0.02, "backoff_max": 0.2, "max_retry_seconds": 30,
                         **extra}}


def _build_tei(corpus, db, server, model_path, **extra):
    return indexer.build(str(corpus), db=str(db), table="t", embedder="tei", model=server.url, title_field="title",
                         max_tokens=64, overlap=8, progress=False, options=_options(model_path, **extra))


def _rows(db):
    ids, texts, vectors = table_rows(db)
    return ids, texts, np.array(vectors, dtype=np.float32)


def _row_cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _same_rows(got, want):
    ids, texts, vectors = got
    assert len(ids) == len(set(ids)), "duplicate rows"
    assert ids == want[0] and texts == want[1]
    assert np.abs(vectors - want[2]).max() < 1e-6


@pytest.fixture(scope="module")
def clean(corpus, server, model_path, tmp_path_factory):
    """Rows of a TEI build with no faults."""
    server.reset()
    db = tmp_path_factory.mktemp("clean") / "db"
    summary = _build_tei(corpus, db, server, model_path)
    assert summary.shards == SHARDS and summary.chunks > 200 and not summary.bad
    return _rows(db)


@pytest.fixture(scope="module")
def local_rows(corpus, model_path, tmp_path_factory):
    """Rows of the same build with the local embedder in fp32."""
    db = tmp_path_factory.mktemp("local") / "db"
    indexer.build(str(corpus), db=str(db), table="t", model=model_path, precision="exact", device="cpu",
                  title_field="title", max_tokens=64, overlap=8, progress=False)
    return _rows(db)


def _embedder(server, model_path, **options):
    embedder = TEIEmbedder(server.url, tokenizer=model_path, backoff_base=0.02, backoff_max=0.2, **options)
    embedder.check()
    return embedder


def _chunks(embedder, texts, with_ids=True):
    tok = embedder.tokenizer()
    out = []
    for i, text in enumerate(texts):
        ids = tok.encode(text, add_special_tokens=False).ids
        out.append(Chunk(f"doc{i}#0", f"doc{i}", 0, text, len(ids), 0, len(text), "h", token_ids=ids if with_ids else None))
    return out


def _texts(n):
    return [json.loads(line)["text"][:300] for line in DEMO_CORPUS.read_text().splitlines()[:n]]


def _http(url, body=None, token=TOKEN):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, raw.decode()


# ---------------------------------------------------------------------------------------------------------------
# The test server and the client follow TEI's OpenAPI document
# ---------------------------------------------------------------------------------------------------------------


def _openapi_to_jsonschema(node):
    """OpenAPI 3.0 schemas → JSON Schema: ``nullable: true`` becomes "or null"; refs point into the document."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if k not in ("nullable", "example")}
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


@pytest.fixture(scope="module")
def validate():
    jsonschema = pytest.importorskip("jsonschema")
    spec = json.loads(SPEC.read_text())
    components = _openapi_to_jsonschema(spec["components"])

    def check(instance, name):
        jsonschema.validate(instance, {"$ref": f"#/components/schemas/{name}", "components": components})

    check.spec = spec
    return check


def test_spec_copy_is_teis_document():
    spec = json.loads(SPEC.read_text())
    assert spec["info"]["title"] == "Text Embeddings Inference" and spec["info"]["license"]["name"] == "Apache 2.0"
    shared = SHARED / "specs" / "tei-openapi.json"
    if shared.is_file():
        assert json.loads(shared.read_text()) == spec, "tests/data/tei-openapi.json differs from ../shared/specs"


def test_server_answers_follow_the_openapi_document(server, validate):
    u = server.url
    status, info = _http(u + "/info")
    assert status == 200
    validate(info, "Info")
    for inputs in ("one text", ["a", "b c"], [101, 7592, 102], [[101, 7592, 102], "mixed"]):
        status, body = _http(u + "/embed", {"inputs": inputs})
        assert status == 200, body
        validate(body, "EmbedResponse")
        n = 1 if isinstance(inputs, str) or isinstance(inputs[0], int) else len(inputs)
        assert len(body) == n and len(body[0]) == 384
    status, body = _http(u + "/embed", {"inputs": "x", "normalize": False, "truncate": True,
                                        "truncation_direction": "Left"})
    assert status == 200 and abs(np.linalg.norm(body[0]) - 1) > 1e-3  # MiniLM's pooled output is not unit length
    validate({"inputs": "x", "normalize": False, "truncate": True, "truncation_direction": "Left"}, "EmbedRequest")
    status, body = _http(u + "/tokenize", {"inputs": "Hello world"})
    assert status == 200
    validate(body, "TokenizeResponse")
    assert [t["id"] for t in body[0]] == [101, 7592, 2088, 102]

    documented = {int(code) for code in validate.spec["paths"]["/embed"]["post"]["responses"]}
    long_text = "word " * 400
    for payload, want, kind in (
        ({"inputs": []}, 400, "Empty"),
        ({"inputs": ["x"] * 9}, 413, "Validation"),  # over max_client_batch_size
        ({"inputs": long_text}, 413, "Validation"),  # over max_input_length, no truncate
        ({"inputs": [10**6]}, 422, "Tokenizer"),  # not a token id of this model
    ):
        status, body = _http(u + "/embed", payload)
        assert (status, body["error_type"]) == (want, kind), body
        validate(body, "ErrorResponse")
        assert status in documented
    assert _http(u + "/embed", {"inputs": long_text, "truncate": True})[0] == 200
    for kind in ("429", "503", "424"):
        server.faults.plan(kind)
        status, body = _http(u + "/embed", {"inputs": "x"})
        # TEI documents 429 and 424 for /embed; 503 comes from what stands in front of it (an Inference
        # Endpoint scaling up, a load balancer) and is played here with TEI's Unhealthy body.
        assert status == int(kind) and (status in documented or status == 503)
        validate(body, "ErrorResponse")
    server.faults.down = True
    status, body = _http(u + "/health")
    assert status == 503
    validate(body, "ErrorResponse")
    server.faults.down = False
    assert _http(u + "/health")[0] == 200
    assert _http(u + "/info", token="wrong")[0] == 401


def test_client_requests_follow_the_openapi_document(server, model_path, validate):
    embedder = _embedder(server, model_path, truncate=True)
    embedder.embed(_chunks(embedder, _texts(12)))
    embedder.embed(_chunks(embedder, _texts(3), with_ids=False))
    embedder.embed_queries(["who wrote it?"])
    bodies = [r.body for r in server.embed_requests()]
    assert len(bodies) >= 4
    for body in bodies:
        validate(body, "EmbedRequest")
    assert all(r.authorization == f"Bearer {TOKEN}" for r in server.requests)


# ---------------------------------------------------------------------------------------------------------------
# Acceptance 1: the vectors are the local embedder's, in chunk-id order
# ---------------------------------------------------------------------------------------------------------------


def test_vectors_equal_the_local_embedders_in_input_order_whatever_order_answers_come_in(server, model_path):
    from indexer_local import LocalEmbedder

    local = LocalEmbedder(model_path, precision="exact", device="cpu")
    tei = _embedder(server, model_path)
    chunks = _chunks(tei, _texts(40))
    server.reset()
    server.faults.plan("slow", "slow")  # the first requests answer last
    server.faults.slow_seconds = 0.5
    got = tei.embed(chunks)
    order = [r.finished for r in server.embed_requests(200)]
    assert order != sorted(order), "answers came back in request order: the test proves nothing"
    want = local.embed(chunks)
    assert got.shape == want.shape and got.dtype == np.float32
    assert _row_cos(got, want).min() >= 0.9999
    # Chunks without token ids (stored chunks, queries) go as text; the server tokenises them the same way.
    text_chunks = [Chunk(c.id, c.doc_id, 0, c.text, c.token_count, 0, len(c.text), "h") for c in chunks]
    assert _row_cos(tei.embed(text_chunks), local.embed(text_chunks)).min() >= 0.9999
    assert _row_cos(tei.embed_queries(_texts(5)), local.embed_queries(_texts(5))).min() >= 0.9999


def test_build_and_search_through_the_command_line_match_the_local_embedder(
        server, corpus, model_path, local_rows, clean, tmp_path):
    db = tmp_path / "db"
    cmd = [sys.executable, "-m", "indexer.cli", "build", str(corpus), "--embedder", "tei", "--model", server.url,
           "--option", f"embedder.tokenizer={model_path}", "--db", str(db), "--table", "t", "--title-field", "title",
           "--max-tokens", "64", "--overlap", "8", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    ids, texts, vectors = _rows(db)
    assert ids == local_rows[0] and texts == local_rows[1]
    assert _row_cos(vectors, local_rows[2]).min() >= 0.9999
    _same_rows((ids, texts, vectors), clean)
    info = indexer.info(str(db))[0]
    assert info["meta"]["model"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert info["meta"]["model"]["dimension"] == 384 and info["meta"]["model"]["precision"] == "fp32"
    first = json.loads(DEMO_CORPUS.read_text().splitlines()[0])
    hits = indexer.search(first["text"][:200], db=str(db), k=3)
    assert hits[0].doc_id == first["id"]
    assert not any(TOKEN.encode() in p.read_bytes() for p in db.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------------------------
# Acceptance 2: faults
# ---------------------------------------------------------------------------------------------------------------


FAULTS = {  # the answers to the next requests, in order; "ok" is a normal answer
    "429": ["429"] * 6 + ["ok", "429"] * 6,  # a burst, then every other request
    "503": ["503"] * 4 + ["ok", "503"] * 6,
    "424": ["424", "ok"] * 8,
    "drop": ["drop", "ok"] * 8,  # connection closed before any answer
    "cut": ["cut", "ok"] * 8,  # connection closed in the middle of the body
    "slow": ["slow", "ok"] * 8,  # slower than the client's timeout
    "mix": ["429"] * 3 + [k for kind in FAULT_KINDS for k in (kind, "ok")] * 2,
}


@pytest.mark.parametrize("kind", list(FAULTS))
def test_a_build_under_faults_has_exactly_the_rows_of_a_clean_run(kind, server, corpus, model_path, clean, tmp_path,
                                                                  caplog):
    caplog.set_level(logging.DEBUG, logger="indexer.tei")
    server.faults.slow_seconds = 1.0
    server.faults.plan(*FAULTS[kind])
    summary = _build_tei(corpus, tmp_path / "db", server, model_path, timeout=0.6)
    _same_rows(_rows(tmp_path / "db"), clean)
    assert summary.embedded_chunks == len(clean[0])
    assert not server.faults.script, "the build ended before every planned fault was served"
    injected = Counter(r.fault for r in server.embed_requests() if r.fault != "ok")
    assert set(injected) == (set(FAULT_KINDS) if kind == "mix" else {kind}) and sum(injected.values()) >= 8
    assert "retrying" in caplog.text
    assert TOKEN not in caplog.text


def test_413_and_422_batches_are_split_not_retried(model_path, corpus, clean, tmp_path):
    # A server with a 6 kB payload limit: the client, told 2 MB, learns by 413s and splits.
    with TEITestServer(model_path, max_client_batch_size=32, payload_limit=6000, token=TOKEN) as small:
        _build_tei(corpus, tmp_path / "a", small, model_path)
        _same_rows(_rows(tmp_path / "a"), clean)
        refused = small.embed_requests(413)
        ok = small.embed_requests(200)
        assert refused and all(r.size > 6000 for r in refused) and all(r.size <= 6000 for r in ok)
        assert len(refused) < len(ok), "more refusals than successes: batches were retried, not split"
        # Told the server's limit, the client keeps every body under it and is never refused.
        small.reset()
        _build_tei(corpus, tmp_path / "b", small, model_path, payload_limit=6000)
        _same_rows(_rows(tmp_path / "b"), clean)
        assert not small.embed_requests(413)


@pytest.mark.parametrize("status", [413, 422])
def test_an_input_the_server_refuses_is_isolated_and_named(status, model_path):
    with TEITestServer(model_path, max_client_batch_size=32, max_input_length=48, length_status=status,
                       token=TOKEN) as srv:
        embedder = _embedder(srv, model_path, max_retry_seconds=30)
        texts = _texts(31)
        chunks = _chunks(embedder, [t[:60] for t in texts[:30]] + [texts[30] * 2])  # the last one is too long
        srv.reset()
        with pytest.raises(TEIError) as err:
            embedder.embed(chunks)
        assert "chunk doc30#0" in str(err.value) and f"HTTP {status}" in str(err.value)
        assert "embedder.truncate=true" in str(err.value) and TOKEN not in str(err.value)
        refused = srv.embed_requests(status)
        assert 1 <= len(refused) <= 6, f"{len(refused)} refusals for a batch of 31: retried, not halved"
        assert refused[-1].inputs == 1
        # Allowed to truncate, the client cuts the ids to fit and nothing is refused.
        srv.reset()
        cut = TEIEmbedder(srv.url, tokenizer=model_path, truncate=True)
        cut.check()
        vectors = cut.embed(chunks)
        assert vectors.shape == (31, 384) and not srv.embed_requests(status)
        # Text goes to the server with truncate=true, and the server cuts it.
        as_text = TEIEmbedder(srv.url, tokenizer=model_path, truncate=True, token_ids=False)
        as_text.check()
        again = as_text.embed(chunks)
        assert _row_cos(again, vectors).min() > 0.999


def test_inputs_in_flight_stay_under_the_servers_per_input_limit(model_path):
    with TEITestServer(model_path, max_client_batch_size=32, max_concurrent_requests=6, token=TOKEN) as srv:
        solo = _embedder(srv, model_path)
        chunks = _chunks(solo, _texts(40))
        srv.reset()
        want = solo.embed(chunks)
        assert max(r.inputs for r in srv.embed_requests()) <= 6 and not srv.embed_requests(429)
        # Two clients sharing the server go over its limit together: 429s at once, backoff, all vectors right.
        srv.reset()
        srv.faults.latency = 0.1
        results: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def work(i):
            try:
                results[i] = _embedder(srv, model_path).embed(chunks)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(results) == 2
        assert srv.embed_requests(429), "the clients never exceeded the limit together: the test proves nothing"
        for v in results.values():
            assert np.abs(v - want).max() < 1e-6


def test_a_server_that_never_recovers_fails_the_run_in_bounded_time_and_a_rerun_resumes(
        server, corpus, model_path, clean, tmp_path):
    db = tmp_path / "db"
    cmd = [sys.executable, "-m", "indexer.cli", "build", str(corpus), "--embedder", "tei", "--model", server.url,
           "--option", f"embedder.tokenizer={model_path}", "--option", "embedder.max_retry_seconds=2",
           "--option", "embedder.backoff_base=0.05", "--db", str(db), "--table", "t", "--title-field", "title",
           "--max-tokens", "64", "--overlap", "8", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server.faults.down_after_inputs = 1 + len(clean[0]) // 2  # the dimension probe, then about two shards
    t0 = time.monotonic()
    failed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert failed.returncode != 0
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("indexer: error: TEI server http://127.0.0.1:") and "HTTP 503" in message, failed.stderr
    assert "max_retry_seconds=2" in message and TOKEN not in failed.stdout + failed.stderr
    assert time.monotonic() - t0 < 60
    work = db / "_indexer" / "tables" / "t" / "done"
    finished = sorted(p.stem for p in work.glob("*.json"))
    assert 1 <= len(finished) < SHARDS, finished

    server.reset()  # the server is back
    again = subprocess.run(cmd + ["--summary-json", str(tmp_path / "s.json")], capture_output=True, text=True,
                           timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["shards_skipped"] == len(finished)
    done_chunks = sum(json.loads((work / f"{k}.json").read_text())["chunks"] for k in finished)
    assert summary["embedded_chunks"] == len(clean[0]) - done_chunks
    _same_rows(_rows(db), clean)


# ---------------------------------------------------------------------------------------------------------------
# Configuration, the token, tokenizers
# ---------------------------------------------------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_configuration_errors_say_what_to_change(server, model_path):
    with pytest.raises(ConfigError, match="needs the server's URL"):
        TEIEmbedder("sentence-transformers/all-MiniLM-L6-v2").check()
    with pytest.raises(ConfigError, match="http://host:port"):
        TEIEmbedder("x", url="ftp://example.org").check()
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="cannot reach the TEI server at http://127.0.0.1:"):
        TEIEmbedder(f"http://127.0.0.1:{_free_port()}").check()
    assert time.monotonic() - t0 < 15
    with pytest.raises(ConfigError, match="unknown tei embedder option"):
        TEIEmbedder(server.url, max_retry_second=5).check()
    with pytest.raises(ConfigError, match="max_retry_seconds must be a positive"):
        TEIEmbedder(server.url, max_retry_seconds=0).check()
    with pytest.raises(ConfigError, match="answered /info with HTTP 404"):
        TEIEmbedder(server.url + "/v2").check()
    with pytest.raises(ConfigError, match="--option embedder.tokenizer=PATH"):
        TEIEmbedder(server.url).check()  # the served model is not in this machine's Hugging Face cache
    with pytest.raises(ConfigError, match="no tokenizer.json"):
        TEIEmbedder(server.url, tokenizer=str(Path(model_path) / "1_Pooling")).check()
    # The URL may come from an option or the environment when --model names the model.
    assert TEIEmbedder("all-MiniLM-L6-v2", url=server.url).server_url() == server.url
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INDEXER_TEI_URL", server.url)
        assert TEIEmbedder("all-MiniLM-L6-v2").server_url() == server.url

    class NotTEI(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"name": "some other service"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    other = HTTPServer(("127.0.0.1", 0), NotTEI)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ConfigError, match="does not look like a Text Embeddings Inference server"):
            TEIEmbedder(f"http://127.0.0.1:{other.server_address[1]}").check()
    finally:
        other.shutdown()
        other.server_close()

    with TEITestServer(model_path, model_kind="reranker") as rr, pytest.raises(ConfigError, match="serves a reranker"):
        TEIEmbedder(rr.url, tokenizer=model_path).check()
    with TEITestServer(model_path, model_dtype="float16") as half:
        with pytest.raises(ConfigError, match="runs float16; start it with --dtype float32"):
            TEIEmbedder(half.url, tokenizer=model_path, precision="exact").check()
        assert _embedder(half, model_path).info.precision == "fp16"


def test_the_token_comes_from_the_environment_and_is_never_shown(server, model_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="indexer.tei")
    embedder = _embedder(server, model_path, max_retry_seconds=0.5)
    assert TOKEN not in repr(embedder) + repr(embedder.client) + repr(vars(embedder.client))
    server.faults.down = True
    with pytest.raises(TEIError) as err:
        embedder.embed(_chunks(embedder, ["a text"]))
    assert TOKEN not in str(err.value) + repr(err.value) + repr(err.value.__cause__) + repr(err.value.__context__)
    assert TOKEN not in caplog.text and "retrying" in caplog.text
    server.faults.down = False

    monkeypatch.setenv("INDEXER_TEI_TOKEN", "wrong-" + TOKEN)
    with pytest.raises(ConfigError, match=r"refused the token from \$INDEXER_TEI_TOKEN \(HTTP 401\)") as err:
        TEIEmbedder(server.url, tokenizer=model_path).check()
    assert TOKEN not in str(err.value)
    # HF_TOKEN is for Hugging Face hosts only: it is not sent to this server.
    monkeypatch.delenv("INDEXER_TEI_TOKEN")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    server.reset()
    with pytest.raises(ConfigError, match="refused a request without a token"):
        TEIEmbedder(server.url, tokenizer=model_path).check()
    assert [r.authorization for r in server.requests] == [None]
    assert token_from_env("https://abc123.us-east-1.aws.endpoints.huggingface.cloud").value == TOKEN
    assert token_from_env("http://127.0.0.1:8080") is None


def test_tokenizer_is_checked_against_the_servers(server, model_path, tmp_path, monkeypatch, caplog):
    from tokenizers import Tokenizer, models, pre_tokenizers

    other = Tokenizer(models.WordLevel({"[UNK]": 0, "indexer": 1}, unk_token="[UNK]"))
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    other.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ConfigError, match="does not tokenise like the TEI server"):
        TEIEmbedder(server.url, tokenizer=str(tmp_path / "tokenizer.json")).check()
    caplog.set_level(logging.WARNING, logger="indexer.tei")
    as_text = TEIEmbedder(server.url, tokenizer=str(tmp_path / "tokenizer.json"), token_ids=False)
    as_text.check()
    assert "sending text" in caplog.text and as_text._send_ids is False

    # Without /tokenize the local tokenizer cannot be checked: chunks go as text, vectors stay right.
    with TEITestServer(model_path, tokenize_route=False, token=TOKEN) as old:
        embedder = _embedder(old, model_path)
        chunks = _chunks(embedder, _texts(4))
        assert embedder._send_ids is False
        assert _row_cos(embedder.embed(chunks), _embedder(server, model_path).embed(chunks)).min() > 0.9999

    # The served model's id, found in the local Hugging Face cache, needs no option.
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    snapshot = repo / "snapshots" / server.model_sha
    snapshot.mkdir(parents=True)
    (snapshot / "tokenizer.json").write_bytes((Path(model_path) / "tokenizer.json").read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    found = TEIEmbedder(server.url)
    found.check()
    assert found._tokenizer_file == snapshot / "tokenizer.json" and found._send_ids is True
    assert found.content_token_limit() == 254


def test_client_waits_for_health_and_is_usable_from_a_running_event_loop(server, model_path):
    import asyncio

    client = TEIClient(server.url, backoff_base=0.02)
    server.faults.down = True
    assert client.health() is False
    threading.Timer(0.5, lambda: setattr(server.faults, "down", False)).start()
    client.wait_until_healthy(timeout=30, interval=0.1)
    assert client.health() is True

    async def inside_a_loop():
        return client.embed(["from a coroutine", "another"]), await client.aembed(["awaited"])

    sync_vectors, async_vectors = asyncio.run(inside_a_loop())
    assert sync_vectors.shape == (2, 384) and async_vectors.shape == (1, 384)
    server.faults.down = True
    with pytest.raises(TEIError, match="not healthy within 1s"):
        client.wait_until_healthy(timeout=1, interval=0.1)


def test_plugin_is_registered_as_tei():
    from indexer.plugins import get_host

    assert get_host().component("embedder", "tei") is TEIEmbedder
    with pytest.raises(IndexerError):
        TEIEmbedder("").server_url()
