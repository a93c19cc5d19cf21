"""Options declared once (indexer.options): parsing, bounds, secrets, environment variables; a build checks every
--option table before any work; `indexer plugins --options` and the Hub card read the declarations."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

import indexer
from indexer.cli import cli
from indexer.errors import ConfigError
from indexer.options import Options, option


@dataclass(frozen=True)
class Demo(Options):
    env_prefix = "DEMO_"

    count: int = option(3, "how many", ge=1, le=10)
    ratio: float = option(0.5, "a share", gt=0)
    on: bool = option(False, "a switch")
    label: str | None = option(None, "a name")
    limit: int | None = option(None, "a cap; auto: none", ge=1)
    tags: tuple[str, ...] = option((), "a list")
    mode: str = option("fast", "how", choices=("fast", "exact"))
    key: str = option("", "a credential", secret=True, env=("DEMO_KEY", "OTHER_KEY"))


def test_values_are_converted_to_their_declared_types():
    o = Demo.parse({"count": "1_0", "ratio": "0.25", "on": "yes", "label": 7, "limit": "auto", "tags": "a, b,",
                    "mode": "exact"}, owner="demo", environ={})
    assert (o.count, o.ratio, o.on, o.label, o.limit, o.tags, o.mode) == (10, 0.25, True, "7", None, ("a", "b"), "exact")
    assert Demo.parse({"tags": ["x", 1], "limit": 4, "on": 0}, owner="demo", environ={}).tags == ("x", "1")
    assert Demo.parse({}, owner="demo", environ={}) == Demo()
    assert o["count"] == o.get("count") == 10 and o.get("nope", 1) == 1


@pytest.mark.parametrize("raw, message", [
    ({"cuont": 2}, r"unknown demo option\(s\) cuont; known: count, ratio, on, label, limit, tags, mode, key"),
    ({"count": "lots"}, r"demo option count='lots' is not a valid int: give a whole number; known demo options: count, "),
    ({"count": 2.5}, "is not a valid int"),
    ({"on": "maybe"}, "is not a valid bool: give true or false"),
    ({"count": 0}, r"demo option count must be at least 1 \(got 0\)"),
    ({"count": 11}, "must be at most 10"),
    ({"ratio": 0}, "must be a positive number"),
    ({"mode": "slow"}, "must be one of fast, exact"),
    ({"tags": {"a": 1}}, "is not a valid list"),
])
def test_a_bad_value_names_the_owner_the_option_the_reason_and_the_known_options(raw, message):
    with pytest.raises(ConfigError, match=message):
        Demo.parse(raw, owner="demo", environ={})


def test_the_environment_fills_what_the_caller_left_out():
    env = {"DEMO_COUNT": "4", "OTHER_KEY": "s3cret", "DEMO_ON": ""}
    o = Demo.parse({"ratio": 2}, owner="demo", environ=env)
    assert (o.count, o.key, o.on, o.ratio) == (4, "s3cret", False, 2.0)  # an empty variable counts as unset
    assert Demo.parse({"count": 5}, owner="demo", environ=env).count == 5  # the caller wins
    with pytest.raises(ConfigError, match=r"^DEMO_COUNT must be at least 1 \(got '0'\)$"):
        Demo.parse({}, owner="demo", environ={"DEMO_COUNT": "0"})
    assert Demo.env_names("count") == ("DEMO_COUNT",) and Demo.env_names("key") == ("DEMO_KEY", "OTHER_KEY")


def test_secret_values_are_never_shown():
    @dataclass(frozen=True)
    class Creds(Options):
        pin: int = option(0, "a secret number", secret=True, ge=1)

    with pytest.raises(ConfigError) as err:
        Creds.parse({"pin": "hunter2"}, owner="vault", environ={})
    assert "hunter2" not in str(err.value) and "vault option pin" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Creds.parse({}, owner="vault", environ={})  # the default breaks the bound: no value shown either
    assert "(got a value)" in str(err.value)
    o = Demo.parse({"key": "s3cret"}, owner="demo", environ={})
    assert "s3cret" not in repr(o) and "key" not in o.as_dict(public=True) and o.as_dict()["key"] == "s3cret"
    assert Demo.secret_names() == {"key"}


def test_bounds_hold_for_values_given_in_code():
    with pytest.raises(ConfigError, match="Demo count must be at least 1"):
        Demo(count=0)


def test_components_parse_their_options_at_construction():
    from indexer_lancedb import LanceDBSink
    from indexer_local_executor import ProcessExecutor
    from indexer_tei import TEIEmbedder

    sink = LanceDBSink(db="db", table="t", ann_min_rows="1,000", fts="false", scalar_index="topic,year:BITMAP")
    assert (sink.ann_min_rows, sink.fts, sink.scalar_indexes) == (1000, False, {"topic": "BTREE", "year": "BITMAP"})
    with pytest.raises(ConfigError, match="unknown lancedb option.*known: ann_min_rows, index_type"):
        LanceDBSink(db="db", table="t", ann_min_row=5)
    with pytest.raises(ConfigError, match=r"^unknown tei embedder option\(s\) timout; known: max_batch_size, url, "):
        TEIEmbedder("http://127.0.0.1:1", timout=5)
    assert TEIEmbedder("http://127.0.0.1:1", timeout="5", max_batch_size="64").max_batch_size == 64
    with pytest.raises(ConfigError, match="the processes executor has no options.*--workers"):
        ProcessExecutor(threads=2)


# -- a build checks every --option table before any work ---------------------------------------------------------


@pytest.fixture
def unread_corpus(tmp_path, monkeypatch):
    """A real JSON-lines file whose source fails the test if anything lists, checks or reads it."""
    from indexer_sources.files import FileSource

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"id": "a", "text": "hello world"}\n')

    def touched(self, *args, **kwargs):
        raise AssertionError("the source was read before the options were checked")

    for method in ("check", "files", "shards", "records"):
        monkeypatch.setattr(FileSource, method, touched)
    return corpus


@pytest.mark.parametrize("options, message", [
    ({"lancedb": {"ann_min_rows": "lots"}},
     r"lancedb option ann_min_rows='lots' is not a valid int.*known lancedb options: ann_min_rows, index_type"),
    ({"lancedb": {"fts_stemming": True}}, r"unknown lancedb option\(s\) fts_stemming; known: ann_min_rows, "),
    ({"source": {"delimiter": ","}}, r"unknown jsonl source option\(s\) delimiter; known: shard_size"),
    ({"embedder": {"max_batch_size": 0}}, "local embedder option max_batch_size must be at least 1"),
    ({"chunker": {"batch_docs": "many"}}, "token chunker option batch_docs='many' is not a valid int"),
    ({"executor": {"workers": 2}}, "the local executor has no options"),
    ({"lancdb": {"fts": False}}, "no component of this build is called 'lancdb'; options go to embedder, chunker, "
                                 "executor, lancedb, source"),
])
def test_a_bad_option_fails_the_build_before_the_source_is_read(unread_corpus, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        indexer.build(str(unread_corpus), db=str(tmp_path / "db"), progress=False, options=options)
    assert not (tmp_path / "db").exists()


def test_a_bad_option_in_the_toml_file_fails_the_same_way(unread_corpus, tmp_path):
    config = tmp_path / "indexer.toml"
    config.write_text('[options.source]\nshard_size = 64\nrows = 5\n')
    with pytest.raises(ConfigError, match=r"unknown jsonl source option\(s\) rows; known: shard_size"):
        indexer.build(str(unread_corpus), config=str(config), db=str(tmp_path / "db"), progress=False)
    assert not (tmp_path / "db").exists()


def test_a_bad_option_fails_the_cli_build_with_exit_2(unread_corpus, tmp_path, capsys):
    from indexer.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["build", str(unread_corpus), "--db", str(tmp_path / "db"), "--no-progress",
              "--option", "lancedb.refine_factor=0"])
    assert exit_.value.code == 2
    assert "lancedb option refine_factor must be at least 1 (got 0)" in capsys.readouterr().err


# -- what reads the declarations ----------------------------------------------------------------------------------


def test_plugins_options_lists_every_component_from_its_declaration():
    result = CliRunner().invoke(cli, ["plugins", "--options", "--json"])
    assert result.exit_code == 0, result.output
    table = {(c["kind"], c["name"]): c for c in json.loads(result.output)}
    lancedb = {o["name"]: o for o in table["sink", "lancedb"]["options"]}
    assert lancedb["ann_min_rows"] == {"name": "ann_min_rows", "type": "int", "default": 100_000, "bounds": ">= 1",
                                       "secret": False, "env": [],
                                       "description": lancedb["ann_min_rows"]["description"]}
    assert lancedb["ann_min_rows"]["description"].startswith("rows from which close() builds an ANN index")
    tei = {o["name"]: o for o in table["embedder", "tei"]["options"]}
    assert tei["url"]["secret"] and not tei["tokenizer"]["secret"] and tei["timeout"]["bounds"] == "> 0"
    assert table["executor", "processes"]["options"] == []
    modal_env = {o["name"]: o for o in table["executor", "modal"]["environment"]}
    assert modal_env["gpu_containers"]["env"] == ["INDEXER_MODAL_GPU_CONTAINERS"]
    assert {("source", "hub"), ("chunker", "token"), ("feedback_store", "lancedb"), ("sink", "hub")} <= set(table)

    text = CliRunner().invoke(cli, ["plugins", "--options"]).output
    assert "sink lancedb  (plugin lancedb; --option lancedb.NAME=VALUE)" in text
    line = next(x for x in text.splitlines() if x.split()[:1] == ["url"])
    assert "secret" in line.split() and "str or none" in line
    assert "INDEXER_MODAL_GPU_IDLE_SECONDS" in text and ">= 2, <= 3600" in text


def test_the_card_leaves_out_what_the_embedder_declares_secret():
    from indexer_hub.card import public_meta

    meta = {"model": {"name": "m", "dimension": 4}, "source": "jsonl:/x/docs.jsonl",
            "embedder": {"name": "tei", "model": "m", "options": {
                "url": "https://private-endpoint.example/abc", "token_ids": False, "tokenizer": "m",
                "timeout": 5, "precision": "auto"}}}
    options = public_meta(meta, "t")["embedder"]["options"]
    # token_ids is not a credential (a regex on the name took it out); url is declared secret.
    assert options == {"precision": "auto", "timeout": 5, "token_ids": False, "tokenizer": "m"}
    # An embedder not installed here cannot say which options are secret: only the build's own settings stay.
    meta["embedder"] = {"name": "not-installed", "model": "m", "options": {"api_base": "https://x", "precision": "auto"}}
    assert public_meta(meta, "t")["embedder"]["options"] == {"precision": "auto"}


def test_modal_settings_come_from_the_environment_through_the_declaration():
    from indexer_modal.settings import ModalSettings

    s = ModalSettings.from_env({"INDEXER_MODAL_SECRETS": "a, b", "INDEXER_MODAL_CPU": "0.5", "INDEXER_MODAL_GPU": "L4"})
    assert (s.secrets, s.cpu, s.gpu, s.port) == (("a", "b"), 0.5, "L4", 8000)
    with pytest.raises(ConfigError, match="INDEXER_MODAL_GPU_IDLE_SECONDS must be at most 3600"):
        ModalSettings.from_env({"INDEXER_MODAL_GPU_IDLE_SECONDS": "4000"})
    with pytest.raises(ConfigError, match="INDEXER_MODAL_RUN must be one of modal, local"):
        ModalSettings.from_env({"INDEXER_MODAL_RUN": "cloud"})


def test_every_declared_option_is_described_once():
    """Each built-in component's options carry a description, and its docstring does not describe them again."""
    from indexer.plugins import get_host

    host = get_host()
    for kind, registry in host.registries.items():
        for name in registry.names():
            cls = registry.get(name)
            for row in cls.Options.describe() + (cls.environment.describe() if cls.environment else []):
                assert row["description"], f"{kind} {name}: option {row['name']} has no description"
                assert f":param {row['name']}:" not in (cls.__doc__ or ""), \
                    f"{kind} {name}: option {row['name']} is described in the docstring too; keep the declaration's"


def test_indexer_info_leaves_out_what_the_embedder_declares_secret(tmp_path):
    """The table keeps a secret option (search needs it to rebuild the embedder); `indexer info` does not show it."""
    from dataclasses import asdict

    import indexer
    from indexer.plugins import get_host
    from indexer.types import ModelInfo

    model = ModelInfo(name="m", revision="r", fingerprint="f" * 16, dimension=4, pooling="mean", normalize=True,
                      max_tokens=32)
    options = {"url": "https://private-endpoint.example/abc", "timeout": 5, "precision": "auto"}
    meta = {"model": asdict(model), "embedder": {"name": "tei", "model": "m", "options": options}}
    with get_host().component("sink", "lancedb")(db=str(tmp_path / "db"), table="t") as sink:
        sink.open(model, meta)
    assert get_host().component("sink", "lancedb").read_meta(str(tmp_path / "db"), "t")["embedder"]["options"] == options
    shown = indexer.info(str(tmp_path / "db"))[0]["meta"]["embedder"]["options"]
    assert shown == {"precision": "auto", "timeout": 5}
