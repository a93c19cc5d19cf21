"""Publishing to the Hub and importing back, with the real MiniLM, real LanceDB, real parquet and real `datasets`.

The Hub's servers are out of reach here, so the upload path runs the real code up to the network: `HfApi`'s
network methods are replaced by a fake Hub that keeps what each commit uploaded, as the Hub would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest

import indexer
from conftest import DEMO_CORPUS
from indexer.errors import ConfigError

PLANTED_TOKEN = "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0123456789"
DOCS = 200
# Resolves to the model_path fixture's files (the local embedder knows the package that ships them), so the card
# names the model by its Hub id, as a real publish would.
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


# --------------------------------------------------------------------------------------------------------------
# A fake Hub behind HfApi's network methods
# --------------------------------------------------------------------------------------------------------------


class FakeHub:
    """Keeps repositories, branches and file contents; records every call and the files of every commit."""

    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo_id -> {"private": bool, "branches": {name: {path: bytes}}}
        self.calls: list[tuple[str, dict]] = []
        self.commits: list[dict] = []
        self.fail_at_commit: int | None = None  # the n-th create_commit call (1-based) raises

    def install(self, monkeypatch):
        from huggingface_hub import HfApi

        for name in ("create_repo", "create_branch", "get_paths_info", "list_repo_tree", "create_commit"):
            monkeypatch.setattr(HfApi, name, lambda _self, *a, _name=name, **k: getattr(self, _name)(*a, **k))
        return self

    def _files(self, repo_id, revision):
        return self.repos[repo_id]["branches"][revision or "main"]

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kw):
        assert repo_type == "dataset"
        self.calls.append(("create_repo", {"repo_id": repo_id, "private": private, "exist_ok": exist_ok}))
        if repo_id not in self.repos:
            self.repos[repo_id] = {"private": bool(private), "branches": {"main": {}}}
        from huggingface_hub.hf_api import RepoUrl

        return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

    def create_branch(self, repo_id, *, branch, repo_type=None, exist_ok=False, **kw):
        self.calls.append(("create_branch", {"repo_id": repo_id, "branch": branch}))
        branches = self.repos[repo_id]["branches"]
        branches.setdefault(branch, dict(branches["main"]))

    def _info(self, path, content):
        from huggingface_hub.hf_api import RepoFile

        sha1 = hashlib.sha1(f"blob {len(content)}\0".encode() + content).hexdigest()
        lfs = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134} \
            if path.endswith(".parquet") else None
        return RepoFile(path=path, size=len(content), oid=sha1, lfs=lfs, type="file")

    def get_paths_info(self, repo_id, paths, *, repo_type=None, revision=None, **kw):
        self.calls.append(("get_paths_info", {"paths": list(paths), "revision": revision}))
        files = self._files(repo_id, revision)
        return [self._info(p, files[p]) for p in paths if p in files]

    def list_repo_tree(self, repo_id, path_in_repo=None, *, recursive=False, repo_type=None, revision=None, **kw):
        from huggingface_hub.utils import EntryNotFoundError

        self.calls.append(("list_repo_tree", {"path": path_in_repo, "revision": revision}))
        found = [self._info(p, c) for p, c in sorted(self._files(repo_id, revision).items())
                 if p.startswith(f"{path_in_repo}/")]
        if not found:
            raise EntryNotFoundError(f"404: {path_in_repo} not found")
        return iter(found)

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, revision=None, **kw):
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        self.calls.append(("create_commit", {"message": commit_message, "revision": revision}))
        if self.fail_at_commit is not None and sum(c == "create_commit" for c, _ in self.calls) >= self.fail_at_commit:
            raise ConnectionError("connection reset by peer")
        files = self._files(repo_id, revision)
        added, deleted = [], []
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                files[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
                added.append(op.path_in_repo)
            else:
                assert isinstance(op, CommitOperationDelete)
                del files[op.path_in_repo]
                deleted.append(op.path_in_repo)
        self.commits.append({"message": commit_message, "added": added, "deleted": deleted, "revision": revision})

    def uploads_per_file(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.commits:
            for p in c["added"]:
                out[p] = out.get(p, 0) + 1
        return out


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)
    return FakeHub().install(monkeypatch)


# --------------------------------------------------------------------------------------------------------------
# One real build: 200 demo documents, real MiniLM, LanceDB + the hub sink (dry run)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory, model_path):
    root = tmp_path_factory.mktemp("hub")
    corpus = root / "wiki-200.jsonl"
    corpus.write_text("\n".join(DEMO_CORPUS.read_text().splitlines()[:DOCS]) + "\n")
    db = root / "db.lancedb"
    sink_out = root / "sink-out"
    summary = indexer.build(
        str(corpus), db=str(db), model=MODEL_ID, title_field="title", metadata_fields=["topic"], progress=False,
        sinks=["lancedb", "hub"],
        options={"hub": {"repo_id": "me/wiki-demo-minilm", "dry_run": True, "out": str(sink_out),
                         "license": "cc-by-sa-4.0", "max_shard_mb": 0.15}},
    )
    assert summary.documents == DOCS and not summary.bad
    from indexer_hub.publish import PublishSettings, publish_table

    published = root / "published"
    folder, stats, report = publish_table(str(db), None, PublishSettings(
        repo_id="me/wiki-demo-minilm", dry_run=True, out=str(published), license="cc-by-sa-4.0", max_shard_mb=0.15))
    assert report is None and folder == published
    return {"root": root, "db": str(db), "summary": summary, "sink_out": sink_out, "published": published,
            "corpus": corpus, "model_path": model_path}


def _lancedb_rows(db, table):
    import lancedb

    return lancedb.connect(db).open_table(table).to_arrow().sort_by("id")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_features(dim):
    from datasets import Features, List, Value

    return Features({
        "id": Value("string"), "doc_id": Value("string"), "chunk_index": Value("int32"), "text": Value("string"),
        "token_count": Value("int32"), "offsets": {"start": Value("int64"), "end": Value("int64")},
        "metadata": Value("string"), "content_hash": Value("string"), "shard": Value("string"),
        "embedding": List(Value("float32"), length=dim),
    })


# --------------------------------------------------------------------------------------------------------------
# 1. The folder loads with `datasets`: declared features, all rows, vectors byte-identical to LanceDB's
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["sink_out", "published"])
def test_published_folder_loads_with_datasets(built, which, tmp_path):
    import numpy as np
    from datasets import load_dataset

    folder = built[which]
    summary = built["summary"]
    files = sorted(str(p) for p in (folder / "data").glob("train-*-of-*.parquet"))
    assert len(files) >= 2, "max_shard_mb was set so that the 200 documents need several files"
    assert [Path(f).name for f in files] == [f"train-{i:05d}-of-{len(files):05d}.parquet" for i in range(len(files))]
    by_builder = load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "c1"))
    by_folder = load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "c2"))
    stored = _lancedb_rows(built["db"], summary.table)
    for ds in (by_builder, by_folder):
        assert ds.features == _expected_features(384)
        assert ds.num_rows == summary.chunks == stored.num_rows
        rows = ds.data.table.sort_by("id")
        assert rows.column("id").to_pylist() == stored.column("id").to_pylist()
        mine = rows.column("embedding").combine_chunks().flatten().to_numpy()
        theirs = stored.column("vector").combine_chunks().flatten().to_numpy()
        assert mine.dtype == theirs.dtype == np.float32 and mine.tobytes() == theirs.tobytes()
        assert rows.column("text").to_pylist() == stored.column("text").to_pylist()
        offsets = rows.column("offsets").combine_chunks()
        assert offsets.field("start").to_pylist() == stored.column("char_start").to_pylist()
        assert offsets.field("end").to_pylist() == stored.column("char_end").to_pylist()
        assert json.loads(rows.column("metadata")[0].as_py()).keys() == {"topic"}


def test_files_are_bounded_deterministic_and_split_into_folders_past_the_hub_limit(tmp_path, monkeypatch):
    import numpy as np
    import pyarrow as pa
    from datasets import load_dataset

    from indexer.rows import embedded_schema
    from indexer_hub import layout

    n, dim = 300, 16
    rng = np.random.default_rng(0)
    batch = pa.RecordBatch.from_pydict({
        "id": [f"d{i // 3}#{i % 3}" for i in range(n)], "doc_id": [f"d{i // 3}" for i in range(n)],
        "chunk_index": [i % 3 for i in range(n)], "text": ["word " * int(rng.integers(1, 200)) for _ in range(n)],
        "token_count": [7] * n, "char_start": [0] * n, "char_end": [5] * n, "content_hash": ["h"] * n,
        "metadata": [None] * n, "shard": ["s"] * n,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * dim, dtype=np.float32)), dim),
    }, schema=embedded_schema(dim))
    rows = layout.to_published(batch, dim)
    max_bytes = 20_000

    def write(folder, pieces):
        w = layout.DataFileWriter(folder, dim, max_file_bytes=max_bytes)
        for piece in pieces:
            w.write(piece)
        return w.close()

    one = write(tmp_path / "a", [rows])
    many = write(tmp_path / "b", [rows.slice(i, 7) for i in range(0, n, 7)])
    assert one.rows == many.rows == n and one.documents == 100 and one.tokens == 7 * n
    assert len(one.files) > 3
    sizes = layout.row_bytes(rows)
    assert sizes.sum() == one.num_bytes
    for name in one.files:  # same rows, other batching: byte-identical files
        assert _sha256(tmp_path / "a" / name) == _sha256(tmp_path / "b" / name)
        assert (tmp_path / "a" / name).stat().st_size <= max_bytes

    monkeypatch.setattr(layout, "MAX_FILES_PER_FOLDER", 2)
    nested = write(tmp_path / "a", [rows])  # rewriting a folder removes the flat files of the last write
    assert all(name.count("/") == 2 for name in nested.files) and nested.files[0].startswith("data/000/")
    assert sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*.parquet")) == nested.files
    (tmp_path / "a" / "README.md").write_text(
        f"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: "
        f"{layout.data_files_pattern(len(nested.files))}\n---\n")
    assert load_dataset(str(tmp_path / "a"), split="train", cache_dir=str(tmp_path / "c")).num_rows == n


# --------------------------------------------------------------------------------------------------------------
# 2. The card parses, its YAML validates, and every number in it matches the run
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["sink_out", "published"])
def test_card_parses_and_its_numbers_match_the_run(built, which):
    import yaml
    from huggingface_hub import DatasetCard, DatasetCardData

    from indexer_lancedb import LanceDBSink

    folder, summary = built[which], built["summary"]
    text = (folder / "README.md").read_text()
    card = DatasetCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert yaml.safe_load(text.split("---\n")[1]) == data  # the header is plain YAML
    assert DatasetCardData(**data).to_dict() == data  # and round-trips through the card data class
    assert data["license"] == "cc-by-sa-4.0"
    assert data["size_categories"] == ["n<1K"]
    assert {"feature-extraction", "sentence-similarity"} <= set(data["task_categories"])
    assert {"embeddings", "indexer", "all-MiniLM-L6-v2"} <= set(data["tags"])
    assert data["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]
    files = sorted((folder / "data").glob("*.parquet"))
    info = data["dataset_info"]
    assert info["splits"] == [{"name": "train", "num_bytes": info["dataset_size"], "num_examples": summary.chunks}]
    assert info["download_size"] == sum(p.stat().st_size for p in files)
    assert [f["name"] for f in info["features"]] == list(_expected_features(384))

    section = data["indexer"]
    meta = LanceDBSink.read_meta(built["db"], summary.table)
    assert section["stats"]["rows"] == summary.chunks
    assert section["stats"]["documents"] == summary.documents == DOCS
    assert section["stats"]["tokens"] == summary.tokens
    assert section["stats"]["files"] == len(files)
    assert section["model"] == meta["model"] and section["model"]["dimension"] == 384
    assert section["chunking"] == meta["chunking"] and section["table"] == summary.table
    assert section["source"]["name"] == "wiki-200.jsonl"
    body = card.text
    for number in (summary.chunks, summary.documents, summary.tokens):
        assert f"{number:,}" in body
    for fact in (meta["model"]["fingerprint"], "| Dimension | 384 |", "| Pooling | mean |", "| Normalised | yes",
                 f"| Precision | {meta['model']['precision']} ", f"| Max tokens per chunk | {meta['chunking']['max_tokens']} |",
                 f"| Overlap | {meta['chunking']['overlap']} tokens |", 'load_dataset("me/wiki-demo-minilm"',
                 "indexer import me/wiki-demo-minilm", "import lancedb", "np.argsort"):
        assert fact in body, fact
    assert str(built["root"]) not in text and built["model_path"] not in text  # no local paths on a public card


def test_the_cards_code_runs(built, tmp_path, monkeypatch):
    """The card's Python snippets, run as written, against the local folder instead of the Hub (offline)."""
    import re

    import datasets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    body = (built["published"] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", body, re.S)
    assert len(blocks) == 3
    first_hit = {}
    for code in blocks:
        code = code.replace('"me/wiki-demo-minilm"', json.dumps(str(built["published"])))
        code = code.replace(json.dumps(MODEL_ID), json.dumps(built["model_path"]))
        code = code.replace('"your question"', '"a famous painter"')
        scope: dict = {}
        exec(compile(code, "card", "exec"), scope)
        if "scores" in scope:
            first_hit["numpy"] = scope["ds"][int(scope["np"].argmax(scope["scores"]))]["id"]
        if "hits" in scope:
            first_hit["lancedb"] = scope["hits"][0]["id"]
    assert scope["hits"] and first_hit["numpy"] == first_hit["lancedb"]


# --------------------------------------------------------------------------------------------------------------
# 3. The upload path up to the network, and resuming an interrupted publish
# --------------------------------------------------------------------------------------------------------------


def test_upload_commits_the_exact_files_and_resumes_without_reuploading(built, hub):
    from indexer_hub.upload import UploadError, folder_files, upload_in_commits

    folder = built["published"]
    local = {f.path_in_repo: f for f in folder_files(folder)}
    data = sorted(p for p in local if p.startswith("data/"))
    assert len(data) >= 2
    hub.fail_at_commit = 2
    with pytest.raises(UploadError, match="(?s)stopped at commit 2/.*run the same command again"):
        upload_in_commits(folder, "me/wiki", revision="v1", private=True, commit_files=1, say=lambda m: None)
    assert hub.commits == [{"message": f"indexer: {data[0]} (1/{len(data) + 1})", "added": [data[0]], "deleted": [],
                            "revision": "v1"}]

    hub.fail_at_commit = None
    report = upload_in_commits(folder, "me/wiki", revision="v1", private=True, commit_files=1, say=lambda m: None)
    assert report.skipped == [data[0]] and report.uploaded == [*data[1:], "README.md"]
    assert [c["added"] for c in hub.commits] == [[p] for p in [*data, "README.md"]]
    assert hub.uploads_per_file() == {p: 1 for p in local}  # nothing uploaded twice
    assert ("create_repo", {"repo_id": "me/wiki", "private": True, "exist_ok": True}) in hub.calls
    assert ("create_branch", {"repo_id": "me/wiki", "branch": "v1"}) in hub.calls
    remote = hub.repos["me/wiki"]["branches"]["v1"]
    assert {p: hashlib.sha256(c).hexdigest() for p, c in remote.items()} == {p: f.sha256 for p, f in local.items()}
    assert hub.repos["me/wiki"]["branches"]["main"] == {}  # everything went to the branch

    again = upload_in_commits(folder, "me/wiki", revision="v1", commit_files=1, say=lambda m: None)
    assert again.commits_made == 0 and sorted(again.skipped) == sorted(local)


def test_commits_are_bounded_and_the_card_commit_removes_stale_files(built, hub, tmp_path):
    from indexer_hub.upload import folder_files, plan_commits, upload_in_commits

    folder = built["published"]
    files = folder_files(folder)
    plan = plan_commits(files, commit_files=2, commit_bytes=10**9)
    assert [len(c.files) for c in plan[:-1]] == [min(2, len(files) - 1 - i) for i in range(0, len(files) - 1, 2)]
    assert [f.path_in_repo for f in plan[-1].files] == ["README.md"]
    by_bytes = plan_commits(files, commit_files=50, commit_bytes=1)  # every file over the limit goes alone
    assert [len(c.files) for c in by_bytes] == [1] * len(files)

    hub.create_repo("me/old", repo_type="dataset")
    hub.repos["me/old"]["branches"]["main"]["data/train-00000-of-00009.parquet"] = b"old"
    upload_in_commits(folder, "me/old", say=lambda m: None)
    assert hub.commits[-1]["added"] == ["README.md"]
    assert hub.commits[-1]["deleted"] == ["data/train-00000-of-00009.parquet"]
    assert all(not c["deleted"] for c in hub.commits[:-1])


def test_dry_run_prints_the_plan_and_touches_no_network(built, hub, capsys):
    from indexer.cli import main

    out = built["root"] / "dry"
    main(["publish", "--db", built["db"], "--repo-id", "me/wiki", "--dry-run", "--out", str(out),
          "--max-shard-mb", "0.15", "--commit-files", "2", "--license", "cc-by-sa-4.0"])
    err = capsys.readouterr().err
    n = len(list((out / "data").glob("*.parquet")))
    commits = (n + 1) // 2 + 1
    assert f"{commits} commit(s), {n + 1} file(s)" in err and "dry run: nothing was uploaded" in err
    assert f"commit {commits}/{commits}: 1 file(s)" in err and "README.md" in err
    assert hub.calls == []
    for p in (out / "data").glob("*.parquet"):  # the exact folder: the same files as the Python API wrote
        assert _sha256(p) == _sha256(built["published"] / "data" / p.name)


# --------------------------------------------------------------------------------------------------------------
# 4. Import -> search gives the same results as the original index
# --------------------------------------------------------------------------------------------------------------


def _queries(corpus: Path) -> list[str]:
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    return [docs[i]["title"] for i in range(0, DOCS, 20)] + [
        "a famous painter", "rivers of Europe", "ancient Greek philosophy", "how vaccines work",
        "the French Revolution", "programming languages", "volcanoes and earthquakes", "Olympic games",
        "the planets of the solar system", "jazz musicians"]


def test_import_then_search_matches_the_original_index(built, tmp_path, capsys):
    from indexer.cli import main
    from indexer.retrieval import open_index

    db = str(tmp_path / "imported.lancedb")
    main(["import", str(built["published"]), "--db", db, "--model", built["model_path"]])
    assert f"imported {built['summary'].chunks:,} rows" in capsys.readouterr().err
    queries = _queries(built["corpus"])
    assert len(queries) == 20
    original = open_index(built["db"]).search(queries, k=10)
    imported = open_index(db).search(queries, k=10)
    assert [[(h.id, h.doc_id, h.text, h.metadata) for h in hits] for hits in imported] == \
           [[(h.id, h.doc_id, h.text, h.metadata) for h in hits] for hits in original]
    assert [[h.score for h in hits] for hits in imported] == [[h.score for h in hits] for hits in original]
    table = built["summary"].table
    assert _lancedb_rows(db, table).equals(_lancedb_rows(built["db"], table))  # every column, every row

    with pytest.raises(ConfigError, match="already exists.*--replace"):
        indexer_hub_import(str(built["published"]), db, model=built["model_path"])
    assert indexer_hub_import(str(built["published"]), db, model=built["model_path"], replace=True)["rows"] == built["summary"].chunks


def indexer_hub_import(*args, **kwargs):
    from indexer_hub.publish import import_dataset

    return import_dataset(*args, say=lambda m: None, **kwargs)


def test_import_from_the_hub_cache_offline(built, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "datasets--me--wiki-demo-minilm"
    shutil.copytree(built["sink_out"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = indexer_hub_import("me/wiki-demo-minilm", str(tmp_path / "db"))  # the model the card names
    assert result["rows"] == built["summary"].chunks and result["meta"]["imported_from"] == "me/wiki-demo-minilm"
    with pytest.raises(ConfigError, match="not in the Hugging Face cache"):
        indexer_hub_import("me/not-cached", str(tmp_path / "db2"), model=built["model_path"])


def test_import_refuses_a_model_with_another_fingerprint(built, tmp_path):
    other = tmp_path / "other-model"
    other.mkdir()
    for p in Path(built["model_path"]).iterdir():
        if p.name != "config.json":
            (other / p.name).symlink_to(p)
    config = json.loads((Path(built["model_path"]) / "config.json").read_text())
    config["layer_norm_eps"] = config.get("layer_norm_eps", 1e-12) * 10  # another model, as far as vectors go
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="fingerprint.*would not match"):
        indexer_hub_import(str(built["published"]), str(tmp_path / "db"), model=str(other))
    with pytest.raises(ConfigError, match="cannot be loaded here.*--model"):
        indexer_hub_import(str(built["published"]), str(tmp_path / "db"), model=str(tmp_path))
    assert not (tmp_path / "db").exists()  # refused before writing anything


# --------------------------------------------------------------------------------------------------------------
# The sink: reruns, configuration errors
# --------------------------------------------------------------------------------------------------------------


def test_sink_added_to_a_built_index_publishes_all_of_it(built, tmp_path):
    out = tmp_path / "later"
    shutil.rmtree(Path(built["db"]) / "_indexer" / "hub" / built["summary"].table / "shards")
    summary = indexer.build(
        str(built["corpus"]), db=built["db"], model=MODEL_ID, title_field="title", metadata_fields=["topic"],
        progress=False, sinks=["hub"],
        options={"hub": {"repo_id": "me/wiki-demo-minilm", "dry_run": "true", "out": str(out),
                         "license": "cc-by-sa-4.0", "max_shard_mb": 0.15}},
    )
    # another set of sinks redoes the shards, but every vector is reused from the work directory by content hash
    assert summary.embedded_chunks == 0 and summary.reused_chunks == summary.chunks > 0
    names = sorted(p.name for p in (built["sink_out"] / "data").glob("*.parquet"))
    assert names == sorted(p.name for p in (out / "data").glob("*.parquet"))
    for name in names:
        assert _sha256(out / "data" / name) == _sha256(built["sink_out"] / "data" / name)


@pytest.mark.parametrize("options, message", [
    ({"dry_run": True}, "repository id user/name"),
    ({"repo_id": "bad id/with space", "dry_run": True}, "not valid"),
    ({"repo_id": "me/x", "dry_run": True, "licence": "mit"}, "unknown hub option"),
    ({"repo_id": "me/x", "dry_run": True, "license": "CC BY SA"}, "license"),
    ({"repo_id": "me/x"}, "no Hugging Face token"),
])
def test_bad_hub_settings_fail_before_any_work(built, tmp_path, monkeypatch, options, message):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(ConfigError, match=message):
        indexer.build(str(built["corpus"]), db=str(tmp_path / "db"), model=built["model_path"], progress=False,
                      sinks=["lancedb", "hub"], options={"hub": options})
    assert not (tmp_path / "db").exists()


# --------------------------------------------------------------------------------------------------------------
# 5. A token never appears in output or logs
# --------------------------------------------------------------------------------------------------------------


def test_token_never_printed_or_logged(built, hub, capsys, caplog):
    from indexer.cli import main

    caplog.set_level(logging.DEBUG)
    logging.getLogger("huggingface_hub").setLevel(logging.DEBUG)
    args = ["publish", "--db", built["db"], "--repo-id", "me/wiki", "--out", str(built["root"] / "tok"),
            "--max-shard-mb", "0.15", "--commit-files", "1", "--private"]
    hub.fail_at_commit = 2
    with pytest.raises(SystemExit):
        main(args)  # an interrupted upload reports the error
    first = capsys.readouterr()
    hub.fail_at_commit = None
    main(args)
    second = capsys.readouterr()
    assert "stopped at commit 2/" in first.err and "published https://huggingface.co/datasets/me/wiki" in second.err
    assert len(hub.commits) > 2
    everything = first.out + first.err + second.out + second.err + caplog.text + json.dumps(hub.calls, default=str)
    assert PLANTED_TOKEN not in everything and PLANTED_TOKEN[3:20] not in everything


@pytest.mark.parametrize("identity, override, expected", [
    ("hub:wikimedia/wikipedia@4a5b6c:config=20231101.simple,split=train", None,
     {"name": "wikimedia/wikipedia", "revision": "4a5b6c", "selection": "config=20231101.simple,split=train"}),
    ("jsonl:/home/me/private/wiki-demo.jsonl", None,
     {"name": "wiki-demo.jsonl", "revision": None, "selection": None, "format": "jsonl"}),
    ("jsonl:/home/me/wiki-demo.jsonl", "wikimedia/wikipedia@20231101", {"name": "wikimedia/wikipedia", "revision": "20231101", "selection": None}),
])
def test_card_names_the_source_without_local_paths(identity, override, expected):
    from indexer_hub.card import describe_source, public_model_name

    assert describe_source(identity, override) == expected
    assert public_model_name("/home/me/models/my-finetune/") == "my-finetune"
    assert public_model_name("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"


def test_sink_refuses_per_token_vectors(tmp_path):
    from indexer.types import ModelInfo
    from indexer_hub import HubSink

    sink = HubSink(db=str(tmp_path), table="t", repo_id="me/x", dry_run=True)
    colbert = ModelInfo("colbert-ir/colbertv2.0", "local", "f" * 64, 128, "colbert", True, 512, kind="multivector")
    with pytest.raises(ConfigError, match="multivector vectors"):
        sink.open(colbert, {"work_dir": str(tmp_path)})
