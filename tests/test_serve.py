"""`indexer serve` end to end: the real command (uvicorn on 127.0.0.1 and a free port), a real HTTP client (httpx),
real LanceDB and the real MiniLM model, on part of the demo corpus built with its topics as metadata; a real
headless Chromium for the page."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import indexer
from conftest import build_demo_topics
from indexer.cli import main
from indexer.errors import ConfigError

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.slow

TOKEN = "t0ken-that-must-never-be-logged"
TOPIC = "Physical sciences"
QUERY = "planets of the solar system"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``indexer serve`` in a subprocess; its output goes to a log file the tests read."""

    def __init__(self, db: str, log: Path, *args: str, token: str | None = TOKEN):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "INDEXER_SERVE_TOKEN": token or ""}
        cmd = [sys.executable, "-m", "indexer.cli", "serve", "--db", db, "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 180  # loading the model on a busy 2-core machine
        while time.time() < deadline:
            assert self.proc.poll() is None, f"server exited: {log.read_text()}"
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server did not start: {log.read_text()}")

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return self.log.read_text()


@pytest.fixture(scope="module")
def built(tmp_path_factory, model_path):
    return build_demo_topics(tmp_path_factory.mktemp("serve"), model_path, per_shard=60)


@pytest.fixture(scope="module")
def server(built):
    srv = Server(built["db"], built["root"] / "serve.log")
    yield srv
    log = srv.stop()
    assert TOKEN not in log


def hits_of(hits) -> list[tuple[str, float]]:
    return [(h["id"], round(h["score"], 5)) for h in hits]


def ours(hits) -> list[tuple[str, float]]:
    return [(h.id, round(h.score, 5)) for h in hits]


@pytest.mark.parametrize("mode", [None, "dense", "text", "hybrid"])
@pytest.mark.parametrize("by_doc", [False, True])
def test_results_equal_indexer_search(server, built, mode, by_doc):
    params = {"q": QUERY, "k": 7, "by_doc": by_doc, **({"mode": mode} if mode else {})}
    got = httpx.get(server.url + "/search", params=params).json()
    expected = indexer.search(QUERY, db=built["db"], k=7, by_doc=by_doc, mode=mode)
    assert hits_of(got["hits"]) == ours(expected) and len(expected) == 7
    assert (got["mode"], got["settings"], got["settings_from"]) == (
        expected.settings.mode, expected.settings.to_dict(), expected.origin)
    assert got["table"] == built["table"] and got["query"] == QUERY

    # the batch endpoint, with a structured filter, equals the API's batch with the same predicate
    queries = [QUERY, "acids and chemical elements"]
    body = {"queries": queries, "k": 5, "by_doc": by_doc, "filter": {"topic": TOPIC}, **({"mode": mode} if mode else {})}
    got = httpx.post(server.url + "/search", json=body).json()
    expected = indexer.search_batch(dict(enumerate(queries)), db=built["db"], k=5, by_doc=by_doc, mode=mode,
                                    filter=f"topic = '{TOPIC}'")
    assert [hits_of(r["hits"]) for r in got["results"]] == [ours(expected[i]) for i in range(2)]
    assert all(h["metadata"]["topic"] == TOPIC for r in got["results"] for h in r["hits"])


def test_text_and_hybrid_hits_mark_the_matching_words(server):
    def marked(mode: str) -> dict[str, set[str]]:
        hits = httpx.get(server.url + "/search", params={"q": "the Islands", "mode": mode, "k": 10}).json()["hits"]
        return {h["id"]: {h["text"][a:b].lower() for a, b in h["highlights"]} for h in hits}

    text = marked("text")  # every full-text hit holds the word, and only the word (not "the") is marked
    assert text and all(words and words <= {"island", "islands"} for words in text.values()), text
    hybrid = marked("hybrid")
    assert any(hybrid.values()) and set().union(*hybrid.values()) <= {"island", "islands"}, hybrid
    assert not any(marked("dense").values())


def test_recorded_settings_apply_when_a_request_names_no_mode(server, built):
    from indexer.retrieval import SearchSettings, record_settings
    from indexer.state import WorkDir

    work = WorkDir(Path(built["db"]) / "_indexer")
    record_settings(work, built["table"], SearchSettings(mode="hybrid", rrf_k=20), metric="test")
    try:
        deadline = time.time() + 20
        while time.time() < deadline:  # the server looks for new settings twice a second
            got = httpx.get(server.url + "/search", params={"q": QUERY, "k": 5}).json()
            if got["settings_from"] == "recorded":
                break
            time.sleep(0.2)
        expected = indexer.search(QUERY, db=built["db"], k=5)
        assert (got["mode"], got["settings"]["rrf_k"], got["settings_from"]) == ("hybrid", 20, "recorded")
        assert hits_of(got["hits"]) == ours(expected) and expected.origin == "recorded"
    finally:
        work.search_settings_file(built["table"]).unlink()
        deadline = time.time() + 20  # the other tests expect the default settings back
        while httpx.get(server.url + "/health").json()["settings_from"] != "default" and time.time() < deadline:
            time.sleep(0.2)


def test_feedback_needs_the_token_and_lands_in_the_store(server, built, capsys):
    pair = {"query": "which planet is red", "id": "Mars#0", "relevance": 2, "source": "test-serve"}
    for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                            ({"Authorization": f"Bearer {TOKEN}"}, 200), ({"Authorization": f"Bearer {TOKEN}"}, 200)):
        response = httpx.post(server.url + "/feedback", json=pair, headers=headers)
        assert response.status_code == status, response.text
    assert response.json()["added"] is False  # the second write of the same pair updates it, as feedback add does
    capsys.readouterr()
    main(["feedback", "stats", "--json", "--db", built["db"]])
    stats = json.loads(capsys.readouterr().out)
    assert stats["sources"].get("test-serve") == 1 and stats["relevance"].get("2") == 1


def test_feedback_is_refused_when_the_server_has_no_token(built, tmp_path):
    db = str(tmp_path / "db")
    shutil.copytree(built["db"], db)
    srv = Server(db, tmp_path / "serve.log", token=None)
    try:
        response = httpx.post(srv.url + "/feedback", json={"query": "q", "id": "Mars#0"},
                              headers={"Authorization": "Bearer anything"})
        assert response.status_code == 403 and "token" in response.json()["error"]
    finally:
        srv.stop()


def chunked(size: int):
    for _ in range(size // 65536 + 1):
        yield b" " * 65536


BIG = 10 * 1024 * 1024
BAD_REQUESTS = {
    "k=0": ("GET", {"params": {"q": QUERY, "k": 0}}, 422, "k:"),
    "k=10^6": ("GET", {"params": {"q": QUERY, "k": 10**6}}, 422, "k:"),
    "missing query": ("GET", {"params": {"k": 3}}, 422, "q:"),
    "empty batch": ("POST", {"json": {"queries": []}}, 422, "queries"),
    "query too long": ("GET", {"params": {"q": "word " * 1000}}, 422, "q:"),
    "10 MB body": ("POST", {"content": b"{" + b" " * BIG + b"}", "headers": {"content-type": "application/json"}},
                   413, "body over"),
    "10 MB chunked body": ("POST", {"content": chunked(BIG), "headers": {"content-type": "application/json"}},
                           413, "body over"),
    "invalid JSON": ("POST", {"content": b'{"queries": ["a"', "headers": {"content-type": "application/json"}},
                     400, "not valid JSON"),
    "unknown field in body": ("POST", {"json": {"queries": ["a"], "kk": 3}}, 422, "kk"),
    "unknown filter field": ("GET", {"params": {"q": QUERY, "filter": "colour:red"}}, 400, "unknown filter field 'colour'"),
    "filter value holding SQL": ("GET", {"params": {"q": QUERY, "filter": f"topic:{TOPIC}' OR '1'='1"}}, 400,
                                 "not SQL"),
    "SQL in a batch filter": ("POST", {"json": {"queries": ["a"], "filter": {"topic": "x'; DROP TABLE t; --"}}}, 400,
                              "not SQL"),
    "number for a text field": ("POST", {"json": {"queries": ["a"], "filter": {"topic": {"$ne": 1}}}}, 422, "filter"),
    "filter without a colon": ("GET", {"params": {"q": QUERY, "filter": "topic"}}, 400, "FIELD:VALUE"),
    "unknown mode": ("GET", {"params": {"q": QUERY, "mode": "sql"}}, 422, "mode"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_json_error_and_the_server_keeps_answering(server, case):
    method, kwargs, status, words = BAD_REQUESTS[case]
    response = httpx.request(method, server.url + "/search", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    after = httpx.get(server.url + "/search", params={"q": QUERY, "k": 2})
    assert after.status_code == 200 and len(after.json()["hits"]) == 2


def test_an_unknown_path_and_a_wrong_method_get_a_json_error_too(server):
    missing = httpx.get(server.url + "/nope")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    wrong = httpx.delete(server.url + "/search")
    assert wrong.status_code == 405 and wrong.json() == {"error": "Method Not Allowed"}


def test_concurrent_requests_share_embedding_calls(server, built):
    queries = [f"{QUERY} {i}" for i in range(24)]
    before = httpx.get(server.url + "/health").json()
    results: dict[str, list] = {}

    def ask(q: str) -> None:
        results[q] = httpx.get(server.url + "/search", params={"q": q, "k": 3}, timeout=120).json()["hits"]

    threads = [threading.Thread(target=ask, args=(q,)) for q in queries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = httpx.get(server.url + "/health").json()
    assert after["queries"] - before["queries"] == len(queries)
    assert after["batches"] - before["batches"] < len(queries)  # some requests were searched together
    expected = indexer.search_batch(dict(enumerate(queries)), db=built["db"], k=3)
    assert [[h["id"] for h in results[q]] for q in queries] == [[h.id for h in expected[i]] for i in range(len(queries))]


def test_tables_and_openapi(server, built):
    tables = httpx.get(server.url + "/tables").json()
    assert tables["serving"] == built["table"] and [t["table"] for t in tables["tables"]] == [built["table"]]
    assert tables["tables"][0]["rows"] == indexer.info(built["db"])[0]["rows"]
    spec = httpx.get(server.url + "/openapi.json").json()
    assert {"/search", "/feedback", "/tables", "/health"} <= set(spec["paths"])
    assert httpx.get(server.url + "/docs").status_code == 200


def test_off_loopback_a_token_is_required_to_start_and_for_every_request(built, tmp_path):
    out = subprocess.run([sys.executable, "-m", "indexer.cli", "serve", "--db", built["db"], "--host", "0.0.0.0"],
                         env={**os.environ, "INDEXER_SERVE_TOKEN": ""}, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "not a loopback address" in out.stderr

    # An app configured for 0.0.0.0, served here on 127.0.0.1 only (tests talk to nothing else).
    import uvicorn

    from indexer_serve.app import ServeConfig, create_app

    with pytest.raises(ConfigError):
        create_app(ServeConfig(db=built["db"], host="10.0.0.1"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ServeConfig(db=built["db"], host="0.0.0.0", token=TOKEN)),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while not server.started and time.time() < deadline:
            time.sleep(0.2)
        for path in ("/health", "/", "/docs", "/openapi.json", f"/search?q={QUERY}"):
            assert httpx.get(url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
        ok = httpx.get(url + "/search", params={"q": QUERY}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["hits"]
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_server_follows_a_promoted_table_without_failing_a_request(built, tmp_path, model_path):
    from indexer.versions import set_alias

    db = str(tmp_path / "db")
    shutil.copytree(built["db"], db)
    # The new version: the same corpus in shorter chunks, so its results differ visibly.
    new = indexer.build(str(built["corpus"]), db=db, model=model_path, title_field="title", table="v2",
                        max_tokens=48, overlap=8, metadata_fields=["topic"], progress=False).table
    set_alias(db, "current", built["table"])
    srv = Server(db, tmp_path / "serve.log")
    seen: list[tuple[int, str | None, list]] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=srv.url, timeout=120) as client:
            while not stop.is_set():
                r = client.get("/search", params={"q": QUERY, "k": 5})
                body = r.json()
                seen.append((r.status_code, body.get("table"), hits_of(body.get("hits", []))))

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        while len(seen) < 5:
            time.sleep(0.05)
        main(["alias", "set", "current", new, "--db", db])
        deadline = time.time() + 180
        while not any(t == new for _, t, _ in seen[-3:]) and time.time() < deadline:
            time.sleep(0.1)
        n = len(seen)
        while len(seen) < n + 5:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=120)
        srv.stop()
    assert {status for status, _, _ in seen} == {200}
    tables = [t for _, t, _ in seen]
    switch = tables.index(new)
    assert set(tables[:switch]) == {built["table"]} and set(tables[switch:]) == {new}  # one switch, never back
    assert seen[-1][2] == ours(indexer.search(QUERY, db=db, table=new, k=5))
    assert seen[0][2] != seen[-1][2]


# --------------------------------------------------------------------------------------------------------------
# The page, in a real headless Chromium


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium and chromium-driver (apt-get install -y "
                                                "chromium chromium-driver; .ci/run installs them)")
def test_the_page_searches_and_a_thumbs_up_becomes_feedback(server, built):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    from indexer_feedback.store import FeedbackLog

    browser, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    query = "islands in the ocean"
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(server.url + "/")
        # every control is labelled for a screen reader
        for control in driver.find_elements(By.CSS_SELECTOR, "input, select"):
            assert driver.find_element(By.CSS_SELECTOR, f"label[for='{control.get_attribute('id')}']")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        Select(driver.find_element(By.ID, "mode")).select_by_value("hybrid")
        box = driver.find_element(By.ID, "q")
        box.send_keys(query, Keys.ENTER)  # the keyboard submits the form
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "li.hit")) >= 2)
        hits = driver.find_elements(By.CSS_SELECTOR, "li.hit")
        second = hits[1].get_attribute("data-id")
        assert driver.find_elements(By.CSS_SELECTOR, "li.hit mark")  # matched words highlighted in hybrid mode
        up = hits[1].find_element(By.CSS_SELECTOR, "button[data-judge='up']")
        assert up.get_attribute("aria-label").startswith("Relevant: result 2")
        up.send_keys(Keys.ENTER)  # a focused button, pressed from the keyboard
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Recorded"))
        assert up.get_attribute("aria-pressed") == "true"
        if os.environ.get("INDEXER_SCREENSHOT"):
            driver.save_screenshot(os.environ["INDEXER_SCREENSHOT"])
    finally:
        driver.quit()
    pairs = [(p.query, p.positive_id, p.relevance, p.source) for p in FeedbackLog(built["db"]).pairs()]
    assert (query, second, 1.0, "serve-page") in pairs


def test_recorded_text_settings_fall_back_to_dense_on_a_table_without_a_full_text_index(built, tmp_path):
    """A table built before full-text indexes were kept (here: its index dropped) serves dense, also when settings
    that name text search are recorded for it while the server runs."""
    import lancedb

    from indexer.retrieval import SearchSettings, record_settings
    from indexer.state import WorkDir
    from indexer_serve.service import Follower

    db = str(tmp_path / "db")
    shutil.copytree(built["db"], db)
    tbl = lancedb.connect(db).open_table(built["table"])
    for index in tbl.list_indices():
        if index.index_type == "FTS":
            tbl.drop_index(index.name)
    follower = Follower(db, built["table"])
    assert follower.index.settings.mode == "dense"
    record_settings(WorkDir(Path(db) / "_indexer"), built["table"], SearchSettings(mode="text"), metric="test")
    assert follower.refresh()
    assert (follower.index.settings.mode, follower.index.origin) == ("dense", "default")
    assert follower.index.search([QUERY], k=3)[0]  # and it answers
