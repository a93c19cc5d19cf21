"""The feedback loop with the real things: LanceDB feedback store, MiniLM fine-tuned by sentence-transformers, real
re-embeds into model-versioned tables, the alias, pruning, a SIGKILLed re-embed, and the Modal function's body
through ``.local()``.

The corpus is 150 demo articles cut to their first sentences (a few thousand tokens: CPU time is scarce here),
with the known-item task of the experiment: query = the article's short description, relevant = the article.
Whether a real fine-tune improves retrieval is the experiment's question (scripts/feedback_experiment.py, figures in
docs/feedback.md); these tests prove the mechanics, with a model that is worse by construction: fine-tuned on
shuffled pairs at a learning rate far too high.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import DEMO_CORPUS, SHARED, kill_during

import indexer
from indexer import api
from indexer.components import FeedbackPair
from indexer.errors import ConfigError

DBPEDIA = SHARED / "data" / "dbpedia-entity-subset"
WIKI = SHARED / "data" / "wiki-sample" / "summaries_en-us.json"
SHARDS, PER_SHARD = 6, 25


def _cli():
    from indexer.cli import cli
    from indexer.plugins import get_host

    get_host().hook.register_commands(cli=cli)
    return cli


def invoke(*args: str) -> str:
    result = CliRunner().invoke(_cli(), [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _short(text: str) -> str:
    end = text.find(". ", 80)
    return text[: end + 1] if 0 < end < 240 else text[:240]


def _articles() -> list[dict]:
    rows = [json.loads(line) for line in DEMO_CORPUS.read_text().splitlines()[: SHARDS * PER_SHARD]]
    return [dict(r, text=_short(r["text"])) for r in rows if r.get("description")]


def _rows(db: Path, table: str) -> list[tuple]:
    import lancedb

    t = lancedb.connect(str(db)).open_table(table).to_arrow().sort_by("id")
    return list(zip(t.column("id").to_pylist(), t.column("text").to_pylist(), t.column("vector").to_pylist()))


# -- the store -----------------------------------------------------------------------------------------------


def test_store_dedups_pairs_and_keeps_graded_judgements(tmp_path):
    from indexer_feedback import FeedbackLog

    log = FeedbackLog(str(tmp_path / "db.lancedb"))
    assert log.stats()["pairs"] == 0 and log.pairs() == []
    assert log.add("how do vaccines work", "Vaccine#0") is True
    assert log.add("how do vaccines work", "Vaccine#0") is False  # the same click twice is one pair
    assert log.add("how do vaccines work", "Virus", relevance=0, source="thumbs") is True
    assert log.add_many([FeedbackPair("cheap flights", "Air France#2", relevance=2, negative_ids=["Bus#0"], source="editor"),
                         FeedbackPair("cheap flights", "Air France#2", relevance=3, source="editor")]) == 1
    pairs = {(p.query, p.positive_id): p for p in log.pairs()}
    assert len(pairs) == 3
    assert pairs[("cheap flights", "Air France#2")].relevance == 3  # the latest judgement of a pair wins
    assert pairs[("how do vaccines work", "Virus")].relevance == 0 and pairs[("how do vaccines work", "Virus")].source == "thumbs"
    s = log.stats()
    assert s["pairs"] == 3 and s["queries"] == 2 and s["relevance"] == {"0": 1, "1": 1, "3": 1}
    assert s["not_relevant_pairs"] == 1 and s["sources"] == {"api": 1, "thumbs": 1, "editor": 1}
    assert s["negative_ids"] == 0  # the second judgement of the pair replaced the first, negatives included
    with pytest.raises(ValueError, match="non-empty query"):
        log.add(" ", "x")
    # the core's API logs through the same store
    assert api.log_feedback("cheap flights", "Air France#2", db=log.db, relevance=3, source="editor") is False
    assert api.log_feedback("cheap trains", "Rail#0", db=log.db) is True
    assert log.stats()["pairs"] == 4
    log.store.add([])  # nothing to write is no commit and no error
    log.add("cheap trains", "Rail#0", relevance=0)
    log.compact()
    assert log.stats()["relevance"] == {"0": 2, "1": 1, "3": 1}

    # jsonl and BEIR round trips
    log.export_jsonl(tmp_path / "out.jsonl")
    log.export_qrels(tmp_path / "qrels.tsv", tmp_path / "queries.jsonl")
    again = FeedbackLog(str(tmp_path / "again.lancedb"))
    assert again.import_jsonl(tmp_path / "out.jsonl").added == 4
    assert {(p.query, p.positive_id, p.relevance, tuple(p.negative_ids), p.source) for p in again.pairs()} == \
           {(p.query, p.positive_id, p.relevance, tuple(p.negative_ids), p.source) for p in log.pairs()}
    beir = FeedbackLog(str(tmp_path / "beir.lancedb"))
    report = beir.import_qrels(tmp_path / "qrels.tsv", tmp_path / "queries.jsonl")
    assert report.added == 4 and report.skipped == []
    assert {(p.query, p.positive_id, p.relevance) for p in beir.pairs()} == {(p.query, p.positive_id, p.relevance) for p in log.pairs()}


def test_bad_import_lines_are_reported_not_fatal(tmp_path):
    from indexer_feedback import FeedbackLog

    src = tmp_path / "pairs.jsonl"
    src.write_text("\n".join([
        json.dumps({"query": "q1", "positive_id": "d1"}),
        "{not json",
        json.dumps({"query": "", "positive_id": "d2"}),
        json.dumps({"query": "q3"}),
        json.dumps({"query": "q4", "doc_id": "d4", "relevance": -1}),
        json.dumps(["a list"]),
        json.dumps({"query": "q5", "doc_id": "d5", "relevance": 2, "negative_ids": ["d6"]}),
    ]) + "\n")
    report = FeedbackLog(str(tmp_path / "db.lancedb")).import_jsonl(src)
    assert report.read == 7 and report.added == 2 and len(report.skipped) == 5
    assert [s.split(":")[0] for s in report.skipped] == [f"pairs.jsonl line {n}" for n in (2, 3, 4, 5, 6)]
    assert "relevance must be a number >= 0" in report.render()


@pytest.mark.skipif(not DBPEDIA.is_dir(), reason="../shared/data/dbpedia-entity-subset is not here")
def test_beir_qrels_import_on_dbpedia_subset_and_stats(tmp_path):
    db = tmp_path / "db.lancedb"
    invoke("feedback", "import", "--qrels", DBPEDIA / "qrels" / "test.tsv", "--queries", DBPEDIA / "queries.jsonl",
           "--db", db)
    stats = json.loads(invoke("feedback", "stats", "--db", db, "--json"))
    # SOURCE.md: 3,709 judgements (0: 2,829, 1: 614, 2: 266) on 40 queries, each with a relevant document
    assert stats["pairs"] == 3709 and stats["relevance"] == {"0": 2829, "1": 614, "2": 266}
    assert stats["queries"] == 40 and stats["queries_with_a_positive"] == 40
    assert stats["sources"] == {"beir:test.tsv": 3709}
    text = invoke("feedback", "stats", "--db", db)
    assert "3,709 (880 relevant, 2,829 judged not relevant)" in text
    # importing again adds nothing
    again = CliRunner().invoke(_cli(), ["feedback", "import", "--qrels", str(DBPEDIA / "qrels" / "test.tsv"),
                                        "--queries", str(DBPEDIA / "queries.jsonl"), "--db", str(db)])
    assert "0 new pairs, 3,709 already stored" in again.output
    # and exports the same judgements back
    invoke("feedback", "export", "--qrels", tmp_path / "q.tsv", "--queries", tmp_path / "q.jsonl", "--db", db)
    from indexer.metrics import read_qrels

    assert read_qrels(tmp_path / "q.tsv") == read_qrels(DBPEDIA / "qrels" / "test.tsv")
    invoke("feedback", "export", tmp_path / "all.jsonl", "--db", db)
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == 3709


# -- an index with feedback ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory, model_path):
    """A built index (table of MiniLM) over 150 short articles in 6 shards, with true (description → article) pairs
    for the held-out documents and shuffled ones for the rest. Tests copy it before changing it."""
    from indexer_feedback import FeedbackLog
    from indexer_feedback.judgements import is_heldout

    root = tmp_path_factory.mktemp("feedback")
    corpus = root / "corpus"
    corpus.mkdir()
    articles = _articles()
    for s in range(SHARDS):
        part = articles[s * PER_SHARD : (s + 1) * PER_SHARD]
        (corpus / f"part-{s}.jsonl").write_text("".join(json.dumps(a) + "\n" for a in part))
    db = root / "base.lancedb"
    summary = indexer.build(str(corpus), db=str(db), title_field="title", model=model_path, progress=False)
    train = [a for a in articles if not is_heldout(a["id"], 0, 0.2)]
    wrong = {a["id"]: train[(i + 1) % len(train)]["id"] for i, a in enumerate(train)}  # a derangement
    FeedbackLog(str(db)).add_many(FeedbackPair(a["description"], wrong.get(a["id"], a["id"]), source="test") for a in articles)
    return {"root": root, "corpus": corpus, "db": db, "table": summary.table, "articles": articles, "model": model_path}


def _copy(base, name: str) -> Path:
    dst = base["root"] / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(base["db"], dst)
    return dst


def test_prepare_holds_out_documents_and_mines_negatives_from_the_index(base):
    from indexer_feedback import FeedbackLog
    from indexer_feedback.finetune import FinetuneSettings, prepare
    from indexer_feedback.judgements import is_heldout

    db = _copy(base, "prepare.lancedb")
    train_ids = [a["id"] for a in base["articles"] if not is_heldout(a["id"], 0, 0.2)]
    stored = {p.positive_id: p for p in FeedbackLog(str(db)).pairs()}
    # a thumbs-down on a training document: that query's first negative, never a positive
    first = stored[train_ids[1]]
    FeedbackLog(str(db)).add(first.query, train_ids[5], relevance=0)
    payload = prepare(FinetuneSettings(db=str(db), negatives=2, progress=False))
    by_anchor = {r["anchor"]: r for r in payload["train"]}
    text5 = next(a["title"] + "\n\n" + a["text"] for a in base["articles"] if a["id"] == train_ids[5])
    assert by_anchor[first.query]["negatives"][0] == text5 and payload["data"]["explicit_negatives"] == 1
    held = {j["doc_id"] for j in payload["heldout"]}
    assert held == {a["id"] for a in base["articles"] if is_heldout(a["id"], 0, 0.2)} and 15 < len(held) < 50
    held_texts = {a["title"] + "\n\n" + a["text"] for a in base["articles"] if a["id"] in held}
    train = payload["train"]
    assert len(train) == len(base["articles"]) - len(held)
    assert all(len(r["negatives"]) == 2 for r in train)
    # a held-out document is never trained on, not even as a negative
    assert not held_texts & {t for r in train for t in [r["positive"], *r["negatives"]]}
    assert all(r["positive"] not in r["negatives"] for r in train)
    assert payload["data"]["mined_negatives"] == 2 * len(train) - 1
    ev = payload["eval"]
    assert ev["scope"] == "the whole table" and len(ev["corpus"]) >= len(base["articles"])
    assert 0.5 < ev["before"]["recall@10"] <= 1.0 and ev["before"]["queries"] == len(held)


def test_a_judged_chunk_is_trained_on_itself_not_its_documents_best_chunk(tmp_path):
    from indexer_feedback import FeedbackLog
    from indexer_feedback.finetune import FinetuneSettings, prepare

    import lancedb

    docs = [json.loads(line) for line in DEMO_CORPUS.read_text().splitlines()[:12]]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs))
    db = tmp_path / "db.lancedb"
    summary = api.build(str(source), db=str(db), title_field="title", max_tokens=64, progress=False)
    rows = lancedb.connect(str(db)).open_table(summary.table).to_arrow().to_pylist()
    last = {}
    for r in rows:  # each multi-chunk document's last chunk: not the one that starts with the title
        if r["chunk_index"] > last.get(r["doc_id"], {"chunk_index": 0})["chunk_index"]:
            last[r["doc_id"]] = r
    assert len(last) >= 3
    log = FeedbackLog(str(db))
    for doc_id, r in last.items():  # the title as the query favours the document's first chunk
        log.add(doc_id, r["id"])
    payload = prepare(FinetuneSettings(db=str(db), holdout=0.0, negatives=1, progress=False))
    positives = {r["anchor"]: r["positive"] for r in payload["train"]}
    assert positives == {doc_id: r["text"] for doc_id, r in last.items()}


def test_finetune_needs_pairs(tmp_path, base):
    db = _copy(base, "empty.lancedb")
    shutil.rmtree(db / "_feedback.lance")
    with pytest.raises(ConfigError, match="no feedback pairs"):
        from indexer_feedback.finetune import FinetuneSettings, finetune

        finetune(FinetuneSettings(db=str(db)))


@pytest.fixture(scope="module")
def worse_model(base):
    """MiniLM fine-tuned on the shuffled pairs with a learning rate far too high: worse by construction."""
    out = base["root"] / "worse-model"
    text = invoke("finetune", "--db", base["db"], "--output", out, "--max-steps", 6, "--batch-size", 16,
                  "--learning-rate", 3e-4, "--warmup", 0, "--max-seq-length", 48, "--no-progress")
    assert f"→ {out}" in text and "recall@10" in text
    return out


def test_finetune_saves_the_model_with_its_card_and_record(base, worse_model):
    record = json.loads((worse_model / "indexer_finetune.json").read_text())
    assert record["base_model"]["name"] == base["model"]
    assert record["training"]["steps"] == 6 and record["settings"]["loss"] == "mnrl"
    assert record["split"] == {"by": "document", "heldout_fraction": 0.2, "seed": 0}
    assert record["data"]["sources"] == {"test": len(base["articles"])}
    assert len(record["heldout"]) == record["data"]["heldout_pairs"] > 0
    ev = record["eval"]
    assert ev["after"]["recall@10"] < ev["before"]["recall@10"]  # shuffled pairs taught it nonsense
    card = (worse_model / "README.md").read_text()
    assert "MultipleNegativesRankingLoss" in card and "no_duplicates" in card.lower()  # sentence-transformers' card
    assert "## indexer fine-tune record" in card and f"`{base['model']}`" in card  # and our note
    assert (worse_model / "model.safetensors").is_file()


def test_reembed_promotes_only_when_the_heldout_metric_improves(base, worse_model, tmp_path):
    from indexer.retrieval import SearchSettings, record_settings
    from indexer.state import WorkDir

    db = _copy(base, "versions.lancedb")
    a = base["table"]
    # Models are compared in the way the table is searched; dense shows the model's part alone (the default hybrid
    # finds every held-out article of this small set by its words with either model).
    record_settings(WorkDir(db / "_indexer"), a, SearchSettings("dense"))
    # 1. the worse model: a new table, the alias stays where searches went
    invoke("reembed", "--model", worse_model, "--db", db, "--promote-if-better", "--no-progress",
           "--summary-json", tmp_path / "worse.json")
    worse = json.loads((tmp_path / "worse.json").read_text())
    b = worse["table"]
    assert b != a and worse["from_table"] == a
    assert worse["summary"]["source_reads"] == 0 and worse["summary"]["chunked_documents"] == 0
    assert worse["summary"]["embedded_chunks"] == worse["summary"]["chunks"] > 0
    assert worse["after"]["recall@10"] < worse["before"]["recall@10"]
    assert worse["promoted"] is False and worse["alias_after"] == a
    aliases = json.loads((db / "_indexer" / "aliases.json").read_text())
    assert aliases == {"current": a}
    # both versions stay queryable
    assert api.search("Sprint race", db=str(db), k=3)
    assert api.search("Sprint race", db=str(db), table=b, k=3)
    listed = json.loads(invoke("alias", "list", "--db", db, "--json"))
    assert {r["table"]: r["aliases"] for r in listed} == {a: ["current"], b: []}

    # 2. serve the worse table, then "re-embed" with the original model: its table is already complete (nothing is
    #    embedded again) and is better on the held-out pairs, so the alias moves to it
    invoke("alias", "set", "current", b, "--db", db)
    record = json.loads((worse_model / "indexer_finetune.json").read_text())
    qrels, queries = tmp_path / "heldout.tsv", tmp_path / "heldout.jsonl"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{j['query_id']}\t{j['doc_id']}\t1\n" for j in record["heldout"]))
    queries.write_text("".join(json.dumps({"_id": j["query_id"], "text": j["query"]}) + "\n" for j in record["heldout"]))
    invoke("reembed", "--model", base["model"], "--db", db, "--from-table", "current", "--promote-if-better",
           "--qrels", qrels, "--queries", queries, "--no-progress", "--summary-json", tmp_path / "back.json")
    back = json.loads((tmp_path / "back.json").read_text())
    assert back["table"] == a and back["from_table"] == b and back["summary"]["embedded_chunks"] == 0
    assert back["after"]["recall@10"] > back["before"]["recall@10"] and back["promoted"] is True
    assert json.loads((db / "_indexer" / "aliases.json").read_text()) == {"current": a}

    # 3. prune drops the version nobody points at, and its vectors
    assert f"would drop 1 table(s): {b}" in invoke("prune", "--db", db, "--dry-run")
    assert f"dropped 1 table(s): {b}" in invoke("prune", "--db", db)
    assert [t["table"] for t in indexer.info(str(db))] == [a]
    assert not (db / "_indexer" / "tables" / b).exists()
    assert api.search("Sprint race", db=str(db), k=3)


def test_tune_search_scores_the_grid_records_the_best_and_reembed_inherits_it(base, worse_model, tmp_path):
    from indexer.retrieval import SearchSettings, recorded_settings
    from indexer.state import WorkDir
    from indexer_feedback.judgements import is_heldout
    from indexer_feedback.tuning import GRID

    db = _copy(base, "tuned.lancedb")
    heldout = [a for a in base["articles"] if is_heldout(a["id"], 0, 0.2)]
    out = json.loads(invoke("tune-search", "--db", db, "--pairs", "heldout", "--json"))
    assert out["judgements"] == "held-out" and out["queries"] == len({a["description"] for a in heldout})
    assert [SearchSettings.from_dict(r["settings"]) for r in out["scores"]] == GRID
    best = max(out["scores"], key=lambda r: r["ndcg@10"])
    assert out["best"] == best["settings"] and out["recorded"] is True
    work = WorkDir(db / "_indexer")
    record = recorded_settings(work, base["table"])
    assert record["settings"] == best["settings"] and record["scores"]["ndcg@10"] == best["ndcg@10"]
    # the base model was never fine-tuned, so by default every pair counts; the training side's are shuffled here,
    # so every setting does worse on them
    everything = json.loads(invoke("tune-search", "--db", db, "--json", "--dry-run"))
    assert everything["judgements"] == "all" and not everything["recorded"]
    assert everything["queries"] == len({a["description"] for a in base["articles"]})
    assert max(r["ndcg@10"] for r in everything["scores"]) < best["ndcg@10"]
    assert recorded_settings(work, base["table"])["settings"] == best["settings"]

    hits = api.search("Sprint race", db=str(db), k=3)
    assert hits.origin == "recorded" and hits.settings.to_dict() == best["settings"]
    # a re-embedded table is searched as the table it came from, and both are scored that way
    invoke("reembed", "--model", worse_model, "--db", db, "--no-progress", "--summary-json", tmp_path / "r.json")
    outcome = json.loads((tmp_path / "r.json").read_text())
    inherited = recorded_settings(work, outcome["table"])
    assert inherited["settings"] == best["settings"] and inherited["inherited_from"] == base["table"]
    described = SearchSettings.from_dict(best["settings"]).describe()
    assert outcome["before"]["search"] == outcome["after"]["search"] == described
    assert api.search("Sprint race", db=str(db), table=outcome["table"], mode="text", k=3)  # its full-text index
    # its model was fine-tuned on this feedback: only the fine-tune's held-out side counts
    again = json.loads(invoke("tune-search", "--db", db, "--table", outcome["table"], "--json", "--dry-run"))
    assert again["judgements"] == "held-out" and again["queries"] == out["queries"]


def test_finetune_measures_held_out_pairs_in_the_tables_search_settings():
    from indexer.retrieval import SearchSettings
    from indexer_feedback.finetune import heldout_metrics

    evaluation = {"qrels": {"q": {"b": 1.0}}, "text": {"q": [("b", 5.0)]}}
    dense = [[("a", 0.9), ("b", 0.8)]]
    for mode, ndcg in (("dense", 1 / math.log2(3)), ("text", 1.0), ("hybrid", 1.0)):
        evaluation["search"] = SearchSettings(mode, fusion="rrf", text_weight=1.0).to_dict()
        assert heldout_metrics(evaluation, ["q"], dense)["ndcg@10"] == pytest.approx(ndcg), mode


def test_alias_and_prune_refuse_what_would_lose_data(base):
    from indexer.versions import prune, set_alias

    db = _copy(base, "refuse.lancedb")
    with pytest.raises(ConfigError, match="no alias is set"):
        prune(str(db))
    with pytest.raises(ConfigError, match="no table 'nope'"):
        set_alias(str(db), "current", "nope")
    set_alias(str(db), "current", base["table"])
    with pytest.raises(ConfigError, match="target of an alias"):
        prune(str(db), [base["table"]])
    assert prune(str(db), dry_run=True) == []


# -- a killed re-embed ---------------------------------------------------------------------------------------


def _renamed_model(base) -> Path:
    """The same weights under another fingerprint: a "new model" whose re-embed costs what MiniLM's costs."""
    dst = base["root"] / "minilm-copy"
    if not dst.exists():
        shutil.copytree(base["model"], dst)
        cfg = dst / "config_sentence_transformers.json"
        data = json.loads(cfg.read_text())
        data["indexer_test"] = "another fingerprint"
        cfg.write_text(json.dumps(data))
    return dst


def test_sigkill_during_reembed_then_rerun_matches_a_clean_run(base):
    model = _renamed_model(base)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def cmd(db):
        return [sys.executable, "-m", "indexer.cli", "reembed", "--model", str(model), "--db", str(db), "--table", "new",
                "--from-table", base["table"], "--no-progress", "--batch-tokens", "512"]

    clean_db = _copy(base, "clean.lancedb")
    t0 = time.monotonic()
    clean = subprocess.run(cmd(clean_db), env=env, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    assert clean.returncode == 0, clean.stderr

    db = _copy(base, "killed.lancedb")
    kills = kill_during(cmd(db), env, wall, (0.5, 0.7, 0.9))
    assert kills >= 2, "the re-embed finished before it could be killed: the test proves nothing"
    final = subprocess.run(cmd(db) + ["--summary-json", str(db / "s.json")], env=env, capture_output=True, text=True,
                           timeout=600)
    assert final.returncode == 0, final.stderr
    summary = json.loads((db / "s.json").read_text())["summary"]
    assert summary["source_reads"] == 0 and summary["chunked_documents"] == 0

    want, got = _rows(clean_db, "new"), _rows(db, "new")
    assert len({r[0] for r in got}) == len(got), "duplicate rows after resume"
    assert [r[:2] for r in got] == [r[:2] for r in want]
    for (_, _, a), (_, _, b) in zip(want, got):
        assert sum(x * y for x, y in zip(a, b)) == pytest.approx(1.0, abs=1e-3)


# -- Modal ---------------------------------------------------------------------------------------------------


def test_modal_function_configuration_and_body_through_local(monkeypatch, base, tmp_path):
    modal = pytest.importorskip("modal", reason="the modal package is not installed (pip install modal)")
    from indexer_feedback import modal_app

    info = modal_app.finetune_remote.info()
    assert info.gpus == [("L4", 1)] and info.timeout == 4 * 3600 and info.max_retries == 0
    assert modal_app.app.name == "indexer-finetune"
    assert modal_app.finetune_remote.with_options(gpu="H100").info().gpus == [("H100", 1)]
    assert isinstance(modal_app.image, modal.Image)

    payload = {
        "settings": {"max_steps": 1, "batch_size": 4, "max_seq_length": 32, "progress": False, "device": "cpu"},
        "base_model": "sentence-transformers/all-MiniLM-L6-v2", "table": "t",
        "data": {"train_relevant_pairs": 4},
        "train": [{"anchor": a["description"], "positive": a["text"], "negatives": []} for a in base["articles"][:4]],
        "eval": None,
    }
    monkeypatch.setenv("INDEXER_FINETUNE_RUN", "local")
    outcome = modal_app.train_on_modal(payload, Path(base["model"]), tmp_path / "out", gpu="A100")
    assert outcome["steps"] == 1 and outcome["device"] == "cpu" and outcome["after"] is None
    from indexer_local import LocalEmbedder

    vectors = LocalEmbedder(str(tmp_path / "out")).embed_queries(["a query"])
    assert vectors.shape == (1, 384)


# -- the experiment's data -------------------------------------------------------------------------------------


@pytest.mark.skipif(not WIKI.is_file(), reason="../shared/data/wiki-sample is not here")
def test_experiment_subset_and_shuffled_feedback_on_wiki_sample(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import feedback_experiment as exp
    from indexer_feedback.judgements import is_heldout

    articles = exp.load_articles(WIKI, 300)
    assert len(articles) == 300 and all(a["description"].strip() for a in articles)
    assert articles == exp.load_articles(WIKI, 300)  # deterministic
    _, pairs = exp.write_inputs(articles, tmp_path)
    bad = exp.shuffled_pairs(pairs, tmp_path / "bad.jsonl", 0, 0.2, seed=0)
    true = [json.loads(line) for line in pairs.read_text().splitlines()]
    shuffled = [json.loads(line) for line in bad.read_text().splitlines()]
    for t, s in zip(true, shuffled):
        if is_heldout(t["positive_id"], 0, 0.2):
            assert s == t  # held-out pairs stay true: they measure real quality
        else:
            assert s["positive_id"] != t["positive_id"] and not is_heldout(s["positive_id"], 0, 0.2)
