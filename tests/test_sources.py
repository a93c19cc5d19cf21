"""The built-in sources, on real files written to tmp_path (and a real Hugging Face cache layout for the Hub)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.components import FieldMapping
from indexer.errors import ConfigError
from indexer.plugins import get_host
from indexer.types import BadRecord, Document

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
DBPEDIA = SHARED / "data" / "dbpedia-entity-subset"

ROWS = [
    {"id": "a", "title": "Alpha", "text": "first text", "url": "https://x/a"},
    {"id": "b", "title": "Beta", "text": "second text", "url": "https://x/b"},
    {"id": "c", "title": "", "text": "third text", "url": "https://x/c"},
]
COMMIT = hashlib.sha1(b"snapshot").hexdigest()


def source(name: str, uri, **kwargs):
    return get_host().component("source", name)(str(uri), **kwargs)


def read_all(src) -> tuple[list[Document], list[BadRecord]]:
    docs, bad = [], []
    for shard in src.shards():
        for item in src.read(shard):
            (docs if isinstance(item, Document) else bad).append(item)
    return docs, bad


def claimants(uri) -> list[str]:
    registry = get_host().registry("source")
    return [name for name in registry.names() if registry.get(name).can_read(str(uri))]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_parquet(path: Path, rows: list[dict], row_group_size: int | None = None) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def hub_cache(root: Path, repo: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """The layout huggingface_hub keeps: refs/main → commit; snapshot files are symlinks to content-named blobs."""
    storage = root / f"datasets--{repo.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    (storage / "blobs").mkdir(exist_ok=True)
    for rel, data in files.items():
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = storage / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return storage


def parquet_bytes(tmp_path: Path, rows: list[dict]) -> bytes:
    path = tmp_path / "tmp.parquet"
    write_parquet(path, rows)
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def make_input(fmt: str, tmp_path: Path, rows: list[dict] = ROWS) -> tuple[str, str]:
    """Write ``rows`` in format ``fmt``; return (source name, uri)."""
    if fmt == "jsonl":
        write_jsonl(tmp_path / "data.jsonl", rows)
        return "jsonl", str(tmp_path / "data.jsonl")
    if fmt == "jsonl.gz":
        with gzip.open(tmp_path / "data.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        return "jsonl", str(tmp_path / "data.jsonl.gz")
    if fmt == "parquet":
        write_parquet(tmp_path / "data.parquet", rows)
        return "parquet", str(tmp_path / "data.parquet")
    if fmt == "csv":
        write_csv(tmp_path / "data.csv", rows)
        return "csv", str(tmp_path / "data.csv")
    if fmt == "tsv":
        write_csv(tmp_path / "data.tsv", rows, delimiter="\t")
        return "csv", str(tmp_path / "data.tsv")
    if fmt == "hf-disk":
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
        return "hf-disk", str(tmp_path / "ds")
    if fmt == "hub":
        files = {"data/train-00000.parquet": parquet_bytes(tmp_path, rows)}
        hub_cache(Path(os.environ["HF_HUB_CACHE"]), "owner/name", files)
        return "hub", "owner/name"
    raise ValueError(fmt)


FORMATS = ["jsonl", "jsonl.gz", "parquet", "csv", "tsv", "hf-disk", "hub"]


# --------------------------------------------------------------------------------------------------------------
# Every format
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_ids_texts_titles_and_metadata(fmt, tmp_path, offline_hub):
    name, uri = make_input(fmt, tmp_path)
    src = source(name, uri, mapping=FieldMapping(title_field="title", metadata_fields=["url"]))
    src.check()
    docs, bad = read_all(src)
    assert bad == []
    assert [d.id for d in docs] == ["a", "b", "c"]
    assert [d.text for d in docs] == ["Alpha\n\nfirst text", "Beta\n\nsecond text", "third text"]
    assert [d.metadata for d in docs] == [{"url": r["url"]} for r in ROWS]


@pytest.mark.parametrize("fmt", FORMATS)
def test_auto_detection_picks_exactly_one_source(fmt, tmp_path, offline_hub):
    name, uri = make_input(fmt, tmp_path)
    assert claimants(uri) == [name]


@pytest.mark.parametrize("fmt", FORMATS)
def test_all_columns_as_metadata(fmt, tmp_path, offline_hub):
    name, uri = make_input(fmt, tmp_path)
    docs, _ = read_all(source(name, uri, mapping=FieldMapping(metadata_fields=["*"])))
    assert docs[0].metadata == {"title": "Alpha", "url": "https://x/a"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_shard_keys_are_stable_and_file_name_safe(fmt, tmp_path, offline_hub):
    name, uri = make_input(fmt, tmp_path)
    first, second = source(name, uri).shards(), source(name, uri).shards()
    assert first == second
    for shard in first:
        assert "/" not in shard.key and shard.key.strip()
        json.dumps(shard.spec)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv", "hf-disk"])
def test_fingerprint_changes_when_a_file_is_edited(fmt, tmp_path, offline_hub):
    name, uri = make_input(fmt, tmp_path)
    before = source(name, uri).shards()
    for shard in before:
        st = os.stat(shard.spec["path"])
        os.utime(shard.spec["path"], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = source(name, uri).shards()
    assert [s.key for s in after] == [s.key for s in before]
    assert all(a.fingerprint != b.fingerprint for a, b in zip(after, before))


def test_folder_is_read_recursively_in_order_and_hidden_files_are_skipped(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".cache").mkdir()
    write_jsonl(tmp_path / "sub" / "b.jsonl", ROWS[1:])
    write_jsonl(tmp_path / "a.jsonl", ROWS[:1])
    write_jsonl(tmp_path / ".cache" / "x.jsonl", [{"id": "hidden", "text": "no"}])
    (tmp_path / "README.md").write_text("# about the data\n")
    src = source("jsonl", tmp_path)
    assert [s.key for s in src.shards()] == ["a.jsonl", "sub__b.jsonl"]
    assert [d.id for d in read_all(src)[0]] == ["a", "b", "c"]
    assert claimants(tmp_path) == ["jsonl"]


def test_glob_selects_files_and_keys_are_relative_to_its_fixed_part(tmp_path):
    for part in ("en", "fr"):
        (tmp_path / part).mkdir()
        write_parquet(tmp_path / part / "train.parquet", [{"id": part, "text": part}])
        write_parquet(tmp_path / part / "test.parquet", [{"id": part + "-t", "text": part}])
    uri = str(tmp_path / "*" / "train.parquet")
    src = source("parquet", uri)
    assert [s.key for s in src.shards()] == ["en__train.parquet", "fr__train.parquet"]
    assert [d.id for d in read_all(src)[0]] == ["en", "fr"]
    assert claimants(uri) == ["parquet"]


def test_parquet_file_is_cut_into_row_group_ranges(tmp_path):
    rows = [{"id": f"d{i}", "text": f"text {i}"} for i in range(35)]
    write_parquet(tmp_path / "big.parquet", rows, row_group_size=10)
    src = source("parquet", tmp_path / "big.parquet", rows_per_shard=20)
    shards = src.shards()
    assert [s.key for s in shards] == ["big.parquet@rows0-19", "big.parquet@rows20-34"]
    assert [s.spec["row_groups"] for s in shards] == [[0, 1], [2, 3]]
    docs, bad = read_all(src)
    assert [d.id for d in docs] == [r["id"] for r in rows] and bad == []
    assert [loc for loc, _ in src.records(shards[1])][:2] == ["row 20", "row 21"]
    assert [s.key for s in source("parquet", tmp_path / "big.parquet").shards()] == ["big.parquet"]


def _varied_rows(n: int) -> list[dict]:
    return [{"id": f"d{i}", "text": f"document {i} " + "word " * (i * 7 % 50)} for i in range(n)]


def test_big_jsonl_file_is_cut_into_line_aligned_byte_ranges(tmp_path):
    rows = _varied_rows(500)
    write_jsonl(tmp_path / "big.jsonl", rows)
    whole, _ = read_all(source("jsonl", tmp_path / "big.jsonl"))
    src = source("jsonl", tmp_path / "big.jsonl", shard_size="2kB")
    shards = src.shards()
    data = (tmp_path / "big.jsonl").read_bytes()
    assert len(shards) > 10 and sum(s.size for s in shards) == len(data)
    assert [s.key for s in shards[:3]] == ["big.jsonl", "big.jsonl@part00001", "big.jsonl@part00002"]
    for k, s in enumerate(shards[:-1], 1):
        # range k-1 ends where the line holding byte k * 2000 ends
        cut = s.spec["end"]
        assert data[cut - 1 : cut] == b"\n" and b"\n" not in data[k * 2000 - 1 : cut - 1], "not cut at the line end"
    docs, bad = read_all(src)
    assert not bad and docs == whole, "the ranges together hold every record once, in order"
    # a record of a later range says where it is without counting the lines before the range
    later = shards[1]
    assert next(iter(src.records(later)))[0] == f"line 1 from byte {later.spec['start']}"
    # the same file gives the same shards again, and the keys outlive an edit that moves the byte ranges
    assert source("jsonl", tmp_path / "big.jsonl", shard_size="2kB").shards() == shards
    write_jsonl(tmp_path / "big.jsonl", rows[:100] + [{"id": "new", "text": "inserted"}] + rows[100:])
    moved = source("jsonl", tmp_path / "big.jsonl", shard_size="2kB").shards()
    assert [s.key for s in moved[: len(shards)]] == [s.key for s in shards]


def test_big_csv_file_is_cut_between_records_even_inside_quoted_line_breaks(tmp_path):
    rows = [{"id": f"r{i}", "text": f"cell {i}\nspans \"lines\", " * (i % 4 + 1)} for i in range(400)]
    write_csv(tmp_path / "big.csv", rows)
    whole, _ = read_all(source("csv", tmp_path / "big.csv"))
    src = source("csv", tmp_path / "big.csv", shard_size=1500)
    assert len(src.shards()) > 10
    docs, bad = read_all(src)
    assert not bad and docs == whole and [d.text for d in docs] == [r["text"] for r in rows]


def test_compressed_and_small_files_stay_one_shard_and_rows_set_the_size(tmp_path):
    rows = _varied_rows(300)
    with gzip.open(tmp_path / "big.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    assert len(source("jsonl", tmp_path / "big.jsonl.gz", shard_size="1kB").shards()) == 1
    write_jsonl(tmp_path / "big.jsonl", rows)
    assert len(source("jsonl", tmp_path / "big.jsonl").shards()) == 1  # far under the default shard size
    by_rows = source("jsonl", tmp_path / "big.jsonl", shard_size="100rows").shards()
    assert 2 <= len(by_rows) <= 4, "100 rows of a 300-row file: about three shards"
    write_parquet(tmp_path / "big.parquet", rows, row_group_size=10)
    size = (tmp_path / "big.parquet").stat().st_size
    assert len(source("parquet", tmp_path / "big.parquet", shard_size=size // 3 + 1).shards()) == 3
    assert len(source("parquet", tmp_path / "big.parquet", shard_size="150 rows").shards()) == 2


@pytest.mark.parametrize("size", ["64 furlongs", "0", "-5MB", "MB", "1.5rows x"])
def test_a_shard_size_that_is_no_size_is_a_config_error(size, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS)
    with pytest.raises(ConfigError, match="--shard-size .*64MB"):
        source("jsonl", tmp_path / "a.jsonl", shard_size=size)


def test_hf_disk_file_is_cut_into_row_ranges_and_splits_are_read(tmp_path):
    import datasets

    rows = [{"id": f"d{i}", "text": f"text {i}"} for i in range(25)]
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:2])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert claimants(tmp_path / "dd") == ["hf-disk"]
    src = source("hf-disk", tmp_path / "dd", split="train", rows_per_shard=10)
    src.check()
    assert [s.key for s in src.shards()] == [
        "train__data-00000-of-00001.arrow@rows0-9",
        "train__data-00000-of-00001.arrow@rows10-19",
        "train__data-00000-of-00001.arrow@rows20-24",
    ]
    docs, bad = read_all(src)
    assert [d.id for d in docs] == [r["id"] for r in rows] and bad == []
    everything = source("hf-disk", tmp_path / "dd")
    assert [s.key for s in everything.shards()] == [
        "train__data-00000-of-00001.arrow",
        "test__data-00000-of-00001.arrow",
    ]
    with pytest.raises(ConfigError, match="no split 'dev'; its splits are: train, test"):
        source("hf-disk", tmp_path / "dd", split="dev").check()


def test_text_folder(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "guide.md").write_text("intro\n```sh\n# not a title\n```\n# The Guide #\n\nBody text.\n")
    (tmp_path / "a.txt").write_text("plain text file")
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert claimants(tmp_path) == ["text"]
    src = source("text", tmp_path, mapping=FieldMapping(metadata_fields=["path", "title"]))
    src.check()
    assert [s.key for s in src.shards()] == ["a.txt", "empty.txt", "latin1.txt", "notes__guide.md"]
    docs, bad = read_all(src)
    assert [(d.id, d.metadata) for d in docs] == [
        ("a.txt", {"path": "a.txt"}),
        ("notes/guide.md", {"path": "notes/guide.md", "title": "The Guide"}),
    ]
    assert docs[1].text.startswith("intro\n")
    # The record names start with the file's path (the base may add the locator, which is that path too).
    assert [(b.record.split(" ")[0], b.reason) for b in bad] == [
        ("empty.txt", "text is only whitespace"),
        ("latin1.txt", "not valid UTF-8 at byte 3"),
    ]


def test_text_file_over_the_size_limit_is_reported_without_reading_it(tmp_path):
    (tmp_path / "big.txt").write_text("x" * 1000)
    docs, bad = read_all(source("text", tmp_path, mapping=FieldMapping(max_doc_chars=100)))
    assert docs == [] and "too long" in bad[0].reason and bad[0].record == "big.txt"


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------


def test_jsonl_bad_records_are_reported_and_good_ones_come_through(tmp_path):
    lines = [
        b'{"id": "good1", "text": "hello"}',  # 1
        b'{"id": "missing"}',  # 2
        b'{"id": "empty", "text": ""}',  # 3
        b'{"id": "ws", "text": "  \\n\\t "}',  # 4
        b'{"id": "int", "text": 42}',  # 5
        b'{"id": "list", "text": ["a", "b"]}',  # 6
        b'{"id": "broken", "text": ',  # 7
        b"[1, 2]",  # 8
        b"7",  # 9
        b"",  # 10: blank, skipped silently
        b'{"id": "huge", "text": "' + b"x" * 200 + b'"}',  # 11
        b'{"id": "latin", "text": "caf\xe9"}',  # 12
        b'{"id": "good1", "text": "again"}',  # 13
        b'{"id": "good2", "text": "world"}',  # 14
        b'{"id": "longline", "text": "' + b"y" * (2 << 20) + b'"}',  # 15: over the line limit, never parsed
        b'{"text": "no id at all"}',  # 16
        b'   ',  # 17: whitespace only, skipped silently
        b'{"id": "good3", "text": "last"}',  # 18
    ]
    (tmp_path / "data.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    src = source("jsonl", tmp_path / "data.jsonl", mapping=FieldMapping(max_doc_chars=100))
    docs, bad = read_all(src)
    assert [(d.id, d.text) for d in docs] == [
        ("good1", "hello"),
        ("good2", "world"),
        ("data.jsonl:line 16", "no id at all"),
        ("good3", "last"),
    ]
    reasons = {b.record: b.reason for b in bad}
    assert all(b.shard == "data.jsonl" for b in bad)
    assert reasons == {
        "missing (line 2)": "missing text field 'text'",
        "empty (line 3)": "empty text",
        "ws (line 4)": "text is only whitespace",
        "int (line 5)": "text field 'text' is int, not a string",
        "list (line 6)": "text field 'text' is list, not a string",
        "line 7": reasons["line 7"],
        "line 8": "record is a list, not an object",
        "line 9": "record is a int, not an object",
        "huge (line 11)": "document has 200 characters, over the limit of 100 (raise it with --max-doc-chars)",
        "line 12": f"not valid UTF-8 at byte {lines[11].index(0xE9)}",
        "good1 (line 13)": "duplicate id 'good1' (first at line 1); kept the first",
        "line 15": reasons["line 15"],
    }
    assert reasons["line 7"].startswith("invalid JSON: ")
    assert reasons["line 15"].startswith("line is 2,097,") and "--max-doc-chars" in reasons["line 15"]


def test_jsonl_with_byte_order_mark(tmp_path):
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "x"}\n')
    assert [d.id for d in read_all(source("jsonl", tmp_path / "bom.jsonl"))[0]] == ["a"]


def test_truncated_gzip_keeps_the_records_before_the_damage(tmp_path):
    rows = [{"id": f"d{i}", "text": os.urandom(64).hex()} for i in range(2000)]
    path = tmp_path / "data.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    docs, bad = read_all(source("jsonl", path))
    assert 0 < len(docs) < len(rows)
    assert [d.id for d in docs] == [r["id"] for r in rows[: len(docs)]]
    assert len(bad) == 1 and bad[0].record.startswith("after line ") and "could not be read further" in bad[0].reason


def test_corrupt_parquet_file_among_good_ones_is_reported_not_raised(tmp_path):
    write_parquet(tmp_path / "a.parquet", ROWS)
    (tmp_path / "z.parquet").write_bytes(b"PAR1 but not really")
    src = source("parquet", tmp_path)
    src.check()
    docs, bad = read_all(src)
    assert [d.id for d in docs] == ["a", "b", "c"]
    assert [(b.shard, b.record) for b in bad] == [("z.parquet", "start of file")]
    assert "could not be read further" in bad[0].reason


def test_csv_bad_rows_and_line_locators(tmp_path):
    (tmp_path / "data.csv").write_bytes(
        b'id,text\n'
        b'a,"spans\ntwo lines"\n'
        b'b,too,many\n'
        b'c,caf\xe9\n'
        b'\n'
        b'd,fine\n'
    )
    src = source("csv", tmp_path / "data.csv")
    assert [loc for loc, _ in src.records(src.shards()[0])] == ["line 2", "line 4", "line 5", "line 7"]
    docs, bad = read_all(src)
    assert [(d.id, d.text) for d in docs] == [("a", "spans\ntwo lines"), ("d", "fine")]
    assert {b.record: b.reason for b in bad} == {
        "line 4": "row has 3 fields, the header has 2",
        "line 5": "not valid UTF-8 in column 'text'",
    }


def test_csv_cell_over_the_csv_module_default_limit(tmp_path):
    write_csv(tmp_path / "big.csv", [{"id": "a", "text": "z" * 200_000}])
    docs, bad = read_all(source("csv", tmp_path / "big.csv"))
    assert bad == [] and len(docs[0].text) == 200_000


# --------------------------------------------------------------------------------------------------------------
# Configuration errors, before any work
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["jsonl", "parquet", "csv", "text", "hf-disk", "beir"])
def test_missing_path_is_a_config_error(name, tmp_path):
    with pytest.raises(ConfigError, match="does not exist|no corpus.jsonl"):
        source(name, tmp_path / "nope").check()


@pytest.mark.parametrize("name", ["jsonl", "parquet", "csv", "text"])
def test_folder_without_files_of_the_format_is_a_config_error(name, tmp_path):
    (tmp_path / "other.bin").write_bytes(b"\0")
    with pytest.raises(ConfigError, match=f"no .* files in {tmp_path}"):
        source(name, tmp_path).check()


def test_glob_without_matches_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no files match"):
        source("jsonl", tmp_path / "*.jsonl").check()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "hf-disk", "hub"])
def test_wrong_text_field_is_a_config_error(fmt, tmp_path, offline_hub):
    name, uri = make_input(fmt, tmp_path)
    with pytest.raises(ConfigError) as err:
        source(name, uri, mapping=FieldMapping(text_field="body")).check()
    assert "column 'body' not found in " in str(err.value)
    assert "columns are: id, title, text, url; set --text-field" in str(err.value)


def test_wrong_metadata_field_is_a_config_error(tmp_path):
    name, uri = make_input("parquet", tmp_path)
    with pytest.raises(ConfigError, match="column 'lang' not found in data.parquet.*set --metadata-field"):
        source(name, uri, mapping=FieldMapping(metadata_fields=["lang"])).check()


def test_unreadable_parquet_is_a_config_error(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ConfigError, match="not a readable parquet file"):
        source("parquet", tmp_path).check()


def test_folder_that_is_not_a_saved_dataset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a folder saved with save_to_disk"):
        source("hf-disk", tmp_path).check()


# --------------------------------------------------------------------------------------------------------------
# Auto-detection
# --------------------------------------------------------------------------------------------------------------


def test_detection_of_layouts(tmp_path):
    beir = tmp_path / "beir"
    beir.mkdir()
    write_jsonl(beir / "corpus.jsonl", [{"_id": "1", "title": "t", "text": "x"}])
    write_jsonl(beir / "queries.jsonl", [{"_id": "q", "text": "?"}])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_jsonl(mixed / "a.jsonl", ROWS)
    write_parquet(mixed / "b.parquet", ROWS)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n")
    (docs / "b.txt").write_text("b")
    assert claimants(beir) == ["beir"]
    assert claimants(mixed) == []
    assert claimants(docs) == ["text"]
    assert claimants(docs / "a.md") == ["text"]
    assert claimants("HuggingFaceFW/fineweb-edu") == ["hub"]
    assert claimants("wikimedia/wikipedia") == ["hub"]
    assert claimants(tmp_path / "missing.jsonl") == []
    assert claimants("data/missing.jsonl") == []
    assert claimants(tmp_path / "empty-folder-that-does-not-exist") == []


# --------------------------------------------------------------------------------------------------------------
# BEIR
# --------------------------------------------------------------------------------------------------------------


def test_beir_joins_title_unless_told_otherwise(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "body", "metadata": {"url": "u"}}])
    docs, _ = read_all(source("beir", tmp_path, mapping=FieldMapping(metadata_fields=["metadata"])))
    assert docs == [Document("d1", "T\n\nbody", {"metadata": {"url": "u"}})]
    docs, _ = read_all(source("beir", tmp_path, mapping=FieldMapping(title_field="")))
    assert docs[0].text == "body"


@pytest.mark.skipif(not (DBPEDIA / "corpus.jsonl").is_file(), reason="needs the shared dbpedia-entity subset")
def test_beir_dbpedia_subset():
    assert claimants(DBPEDIA) == ["beir"]
    src = source("beir", DBPEDIA)
    src.check()
    assert [s.key for s in src.shards()] == ["corpus.jsonl"]
    docs, bad = read_all(src)
    assert len(docs) == 5000 and bad == []
    assert len({d.id for d in docs}) == 5000
    assert docs[0].id == "<dbpedia:Oceanic_Airlines>"
    assert docs[0].text.startswith("Oceanic Airlines\n\nOceanic Airlines and less frequently")


# --------------------------------------------------------------------------------------------------------------
# Hugging Face Hub, offline against a real cache layout
# --------------------------------------------------------------------------------------------------------------


def test_snapshot_download_resolves_the_constructed_cache(tmp_path, offline_hub):
    from huggingface_hub import snapshot_download

    make_input("hub", tmp_path)
    folder = snapshot_download("owner/name", repo_type="dataset", cache_dir=str(offline_hub), local_files_only=True)
    assert Path(folder).name == COMMIT
    assert (Path(folder) / "data" / "train-00000.parquet").is_file()


def test_hub_records_the_commit_and_fingerprints_by_blob(tmp_path, offline_hub):
    name, uri = make_input("hub", tmp_path)
    src = source(name, uri)
    src.check()
    assert src.identity() == f"hub:owner/name@{COMMIT}"
    [shard] = src.shards()
    assert shard.key == "data__train-00000.parquet"
    assert shard.spec["revision"] == COMMIT and shard.spec["repo_id"] == "owner/name"
    assert shard.fingerprint == hashlib.sha256(parquet_bytes(tmp_path, ROWS)).hexdigest()


CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
- config_name: sample-10BT
  data_files:
  - split: train
    path: sample/10BT/*
---
# A dataset
"""


def test_hub_config_and_split_from_the_dataset_card(tmp_path, offline_hub):
    def rows(tag: str) -> bytes:
        return parquet_bytes(tmp_path, [{"id": tag, "text": tag}])

    hub_cache(
        offline_hub,
        "org/corpus",
        {
            "README.md": CARD.encode(),
            "data/train-00000.parquet": rows("train"),
            "data/test-00000.parquet": rows("test"),
            "sample/10BT/000_00000.parquet": rows("sample"),
            "sample/10BT/notes.txt": b"not data",
        },
    )

    def ids(**kwargs) -> list[str]:
        return [d.id for d in read_all(source("hub", "org/corpus", **kwargs))[0]]

    assert ids() == ["test", "train"]
    assert ids(split="train") == ["train"]
    assert ids(config="sample-10BT") == ["sample"]
    assert ids(data_files="sample/*/*.parquet") == ["sample"]
    with pytest.raises(ConfigError, match="no config 'nope'; its configs are: default, sample-10BT"):
        source("hub", "org/corpus", config="nope").check()
    with pytest.raises(ConfigError, match="no split 'dev'; its splits are: test, train"):
        source("hub", "org/corpus", split="dev").check()


def test_hub_without_a_card_filters_split_by_file_name(tmp_path, offline_hub):
    hub_cache(
        offline_hub,
        "org/plain",
        {
            "train-00000.jsonl": b'{"id": "t", "text": "x"}\n',
            "pretrain.jsonl": b'{"id": "p", "text": "x"}\n',
            "validation/part-0.jsonl": b'{"id": "v", "text": "x"}\n',
        },
    )
    assert [d.id for d in read_all(source("hub", "org/plain", split="train"))[0]] == ["t"]
    assert [d.id for d in read_all(source("hub", "org/plain", split="validation"))[0]] == ["v"]


def test_hub_dataset_not_in_the_cache_offline_is_a_config_error(offline_hub):
    with pytest.raises(ConfigError) as err:
        source("hub", "someone/absent").check()
    assert "dataset someone/absent is not in the local Hugging Face cache (HF_HUB_OFFLINE is set)" in str(err.value)
    assert "huggingface-cli download --repo-type dataset someone/absent" in str(err.value)
