"""The Modal app, offline: its configuration read back from the Modal objects, every function body run through
``.local()`` (the GPU class's enter hook starts a stand-in ``text-embeddings-router``: the TEI test server on the
port it is told), and a ``--executor modal`` build that yields the same rows as the local executor.

Modal's cloud is out of reach here; ``INDEXER_MODAL_RUN=local`` makes the executor and the embedder call the app's
functions with ``.local()`` and use a folder as the Volume, so everything but Modal's own scheduling is real.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

modal = pytest.importorskip("modal")

from conftest import DEMO_CORPUS, split_demo, table_rows  # noqa: E402

import indexer  # noqa: E402
from indexer import pipeline  # noqa: E402
from indexer.config import BuildConfig  # noqa: E402
from indexer.errors import ConfigError  # noqa: E402
from indexer.state import LocalFolder  # noqa: E402
from indexer.types import Chunk  # noqa: E402
from indexer_modal import embedder as modal_embedder  # noqa: E402
from indexer_modal import executor as modal_executor  # noqa: E402
from indexer_modal import worker  # noqa: E402
from indexer_modal.settings import ModalSettings  # noqa: E402

TESTS = Path(__file__).resolve().parent
APP = TESTS.parent / "plugins" / "indexer_modal" / "app.py"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

# What text-embeddings-router does for the app, played by the TEI test server: serve --model-id on --port.
FAKE_ROUTER = '''
import argparse, sys
sys.path.insert(0, sys.argv[1])
import tei_server

parser = argparse.ArgumentParser()
parser.add_argument("tests")
parser.add_argument("model_path")
parser.add_argument("--model-id", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--revision")
args, _ = parser.parse_known_args()
print("fake router: serving", args.model_id, "on", args.port, flush=True)
server = tei_server.TEITestServer(args.model_path, model_id=args.model_id)


class Handler(tei_server._Handler):
    tei = server


tei_server._QuietServer(("127.0.0.1", args.port), Handler).serve_forever()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _modal_config(fn) -> dict:
    """What Modal keeps only in a function's loader closure (max_containers, scaledown_window, image): modal 1.x
    has no public accessor for these on an undeployed function, so read the closure its ``_from_local`` built."""
    from modal._utils.async_utils import synchronizer

    load = synchronizer._translate_in(fn)._load
    return dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__ or ())))


def _same(a, b) -> bool:
    from modal._utils.async_utils import synchronizer

    return synchronizer._translate_in(a) is synchronizer._translate_in(b)


def _service(cls):
    return cls._get_class_service_function()  # the function serving every method of a Modal class


def _load_app(monkeypatch, **env):
    """A fresh copy of the app module under ``INDEXER_MODAL_*`` settings (the deploy-time environment)."""
    for key, value in env.items():
        monkeypatch.setenv(f"INDEXER_MODAL_{key.upper()}", str(value))
    spec = importlib.util.spec_from_file_location(f"indexer_modal_app_{uuid.uuid4().hex}", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- configuration ---------------------------------------------------------------------------------------------


def test_app_configuration_with_default_settings(monkeypatch):
    for var in [v for v in os.environ if v.startswith("INDEXER_MODAL_")]:
        monkeypatch.delenv(var)
    app = _load_app(monkeypatch)
    assert app.app.name == "indexer"

    for fn, containers in ((app.run_shard, 50), (app.describe_source, None)):
        info = fn.info()
        assert info.gpus == [] and info.cpu == 2.0 and info.memory_mib == 4096
        assert info.timeout == 3600 and info.max_retries == 2 and info.concurrency_info is None
        assert {p: v.name for p, v in info.volumes.items()} == {"/data": "indexer-data"}
        assert "modal.Secret.from_name('huggingface')" in info.secrets
        config = _modal_config(fn)
        assert config["max_containers"] == containers
        assert _same(config["image"], app.cpu_image)

    server = _service(app.TEIServer)
    info = server.info()
    assert info.gpus == [("A10G", 1)]
    assert info.timeout == 600 and info.startup_timeout == 1200 and info.max_retries == 2
    assert info.concurrency_info.max_inputs == 8
    assert sorted(info.method_names) == ["describe", "embed", "embed_queries"]
    assert {p: v.name for p, v in info.volumes.items()} == {"/data": "indexer-data"}
    assert "modal.Secret.from_name('huggingface')" in info.secrets
    config = _modal_config(server)
    assert config["max_containers"] == 10 and config["scaledown_window"] == 120
    assert _same(config["image"], app.tei_image)
    assert app.settings.tei_image_ref() == "ghcr.io/huggingface/text-embeddings-inference:86-1.9"


def test_app_configuration_follows_the_deploy_environment(monkeypatch):
    app = _load_app(monkeypatch, gpu="H100", gpu_containers=32, gpu_concurrency=16, tei_version="1.8",
                    cpu_containers=200, cpu=4, memory=8192, shard_timeout=7200, gpu_timeout=900,
                    secrets="hf-token,tei-token", volume="corpus-vol", mount="/vol", app_name="embedder")
    assert app.app.name == "embedder"
    server = _service(app.TEIServer)
    info = server.info()
    assert info.gpus == [("H100", 1)] and info.timeout == 900 and info.concurrency_info.max_inputs == 16
    assert {p: v.name for p, v in info.volumes.items()} == {"/vol": "corpus-vol"}
    assert {"modal.Secret.from_name('hf-token')", "modal.Secret.from_name('tei-token')"} <= set(info.secrets)
    assert _modal_config(server)["max_containers"] == 32
    assert app.settings.tei_image_ref() == "ghcr.io/huggingface/text-embeddings-inference:hopper-1.8"
    shard = app.run_shard.info()
    assert shard.cpu == 4.0 and shard.memory_mib == 8192 and shard.timeout == 7200
    assert _modal_config(app.run_shard)["max_containers"] == 200


def test_containers_get_settings_and_cache_paths_but_no_secret_values(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    env = ModalSettings(gpu="L4", mount="/vol").container_env()
    assert env["INDEXER_MODAL_GPU"] == "L4" and env["INDEXER_MODAL_RUN"] == "modal"
    assert env["HF_HUB_CACHE"] == env["HUGGINGFACE_HUB_CACHE"] == "/vol/hf/hub"
    assert "hf_secret_value" not in repr(env) and "HF_TOKEN" not in env
    assert ModalSettings.from_env(env) == ModalSettings(gpu="L4", mount="/vol")


@pytest.mark.parametrize("gpu, tag", [("T4", "turing-1.9"), ("A100", "1.9"), ("A100-80GB", "1.9"), ("A10G", "86-1.9"),
                                      ("L4", "89-1.9"), ("L40S", "89-1.9"), ("H100", "hopper-1.9"),
                                      ("h200", "hopper-1.9"), ("B200", "100-1.9")])
def test_tei_image_follows_the_gpu_architecture(gpu, tag):
    assert ModalSettings(gpu=gpu).tei_image_ref() == f"ghcr.io/huggingface/text-embeddings-inference:{tag}"


def test_bad_settings_fail_with_what_to_change():
    with pytest.raises(ConfigError, match="INDEXER_MODAL_TEI_IMAGE"):
        ModalSettings(gpu="V100").check()
    assert ModalSettings(gpu="V100", tei_image="my/tei:70").tei_image_ref() == "my/tei:70"
    with pytest.raises(ConfigError, match="INDEXER_MODAL_GPU_CONTAINERS"):
        ModalSettings.from_env({"INDEXER_MODAL_GPU_CONTAINERS": "0"})
    with pytest.raises(ConfigError, match="not a valid int"):
        ModalSettings.from_env({"INDEXER_MODAL_CPU_CONTAINERS": "many"})
    with pytest.raises(ConfigError, match="takes no --option"):
        modal_executor.ModalExecutor(gpu="H100").check()


# -- function bodies through .local() --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_modal(tmp_path_factory, model_path):
    """Settings for local runs: the stand-in router, a folder as the Volume; the app module loaded under them."""
    tmp = tmp_path_factory.mktemp("modal")
    script = tmp / "fake_router.py"
    script.write_text(FAKE_ROUTER)
    env = {
        "INDEXER_MODAL_RUN": "local",
        "INDEXER_MODAL_LOCAL_VOLUME": str(tmp / "volume"),
        "INDEXER_MODAL_ROUTER": f"{sys.executable} {script} {TESTS} {model_path}",
        "INDEXER_MODAL_ROUTER_ARGS": "--max-client-batch-size 64",
        "INDEXER_MODAL_PORT": str(_free_port()),
        "INDEXER_MODAL_TOKENIZER": model_path,
        "INDEXER_MODAL_GPU_CONCURRENCY": "4",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        import indexer_modal.app as app

        app = importlib.reload(app)
        server = app.TEIServer(model=MODEL_ID)
        modal_embedder._LOCAL_SERVERS.clear()
        modal_embedder._LOCAL_SERVERS[(MODEL_ID, "")] = server  # one router, shared with the embedder
        yield app, server, tmp
        modal_embedder._LOCAL_SERVERS.clear()


@pytest.fixture(scope="module")
def reference(model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device="cpu")


def test_gpu_class_starts_the_router_and_embeds_batches_in_any_order(local_modal, reference, model_path):
    app, server, _ = local_modal
    described = server.describe.local()
    assert described["info"]["name"] == MODEL_ID and described["info"]["dimension"] == 384
    assert described["content_token_limit"] == 254
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(described["tokenizer_json"])
    texts = ["A short one.", "Paris is the capital of France. " * 12, "x", "Ünïcode façade, naïve café 東京"]
    ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    batch = {"keys": [7, 3, 11, 5], "labels": [f"c{i}" for i in range(4)], "texts": texts,
             "token_counts": [len(i) for i in ids], "token_ids": [ids[0], None, ids[2], ids[3]]}
    keys, vectors = server.embed.local(batch)
    assert keys == [7, 3, 11, 5]
    want = reference.encode(texts, normalize_embeddings=True)
    assert (want * vectors).sum(1).min() >= 0.9999
    queries = server.embed_queries.local(["capital of France"])
    assert float(queries[0] @ reference.encode(["capital of France"], normalize_embeddings=True)[0]) >= 0.9999


def test_router_that_exits_or_never_gets_healthy_fails_with_its_output():
    router = worker.TEIRouter([sys.executable, "-c", "import sys; print('no GPU found'); sys.exit(3)"], MODEL_ID,
                              port=_free_port())
    with pytest.raises(RuntimeError, match=r"(?s)exited with status 3.*no GPU found"):
        router.start(timeout=60)
    router = worker.TEIRouter([sys.executable, "-c", "import time; print('loading'); time.sleep(60)"], MODEL_ID,
                              port=_free_port())
    with pytest.raises(RuntimeError, match=r"(?s)not healthy after 2 s.*loading"):
        router.start(timeout=2)
    assert router.process.poll() is not None, "the router was left running"
    with pytest.raises(ConfigError, match="not installed"):
        worker.TEIRouter(["no-such-router-binary"], MODEL_ID).start(timeout=1)


def test_embedder_maps_batches_and_keeps_every_vector_on_its_chunk(local_modal, reference):
    # small batches: many of them, finishing out of order
    e = modal_embedder.ModalTEIEmbedder(MODEL_ID, batch_tokens=128)
    e.check()
    tok = e.tokenizer()
    texts = [f"Document {i}: " + "word " * (i * 7 % 50 + 1) for i in range(24)]
    chunks = [Chunk(f"d{i}#0", f"d{i}", 0, t, len(ids), 0, len(t), "", token_ids=ids)
              for i, t in enumerate(texts) for ids in [tok.encode(t, add_special_tokens=False).ids]]
    assert len(e.batches(chunks)) > 4
    seen = []
    vectors = e.embed(chunks, progress=seen.append)
    assert sum(seen) == 24
    assert (reference.encode(texts, normalize_embeddings=True) * vectors).sum(1).min() >= 0.9999


def test_shard_body_refuses_a_plan_other_than_the_run_expects(local_modal, model_path):
    app, _, tmp = local_modal
    config = BuildConfig(source=str(DEMO_CORPUS), model=MODEL_ID, embedder="modal-tei", work_dir=str(tmp / "w"),
                         sinks=[], progress=False)
    shard = app.describe_source.local(config)
    assert [k for k, _ in shard] == ["wiki-demo.jsonl"]
    job = pipeline.ShardJob(config, pipeline.plan_build(config).source.shards()[0],
                            expected={"chunkset": "x", "model": "y"})
    with pytest.raises(ConfigError, match="expects x / y") as raised:
        app.run_shard.local(pipeline.prepare_shard, job, None)
    # the error names its shard, also once pickled (how it travels back from a container)
    import pickle

    assert getattr(pickle.loads(pickle.dumps(raised.value)), worker.SHARD_ATTRIBUTE) == "wiki-demo.jsonl"


def test_staged_inputs_are_linked_back_at_their_original_paths(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.jsonl").write_text('{"id": 1, "text": "a"}\n')
    (corpus / "sub" / "b.jsonl").write_text('{"id": 2, "text": "b"}\n')
    (corpus / ".hidden").write_text("x")
    files = modal_executor.local_input_files(str(corpus))
    assert [f.relative_to(corpus).as_posix() for f in files] == ["a.jsonl", "sub/b.jsonl"]
    volume = LocalFolder(tmp_path / "volume")
    links_rel = modal_executor.stage_inputs(volume, files)
    before = volume.listing("inputs")
    uploads = []
    upload = volume.upload
    volume.upload = lambda todo: (uploads.append([rel for _, rel in todo]), upload(todo))
    assert modal_executor.stage_inputs(volume, files) == links_rel and volume.listing("inputs") == before
    assert uploads == [[]], "an unchanged input was uploaded again"
    os.utime(files[0], ns=(files[0].stat().st_atime_ns, files[0].stat().st_mtime_ns + 10**9))
    modal_executor.stage_inputs(volume, files)
    assert len(uploads[1]) == 2 and uploads[1][0].endswith("/a.jsonl")  # the edited file, and a new link table
    links_rel = modal_executor.stage_inputs(volume, files)
    import json

    links = json.loads((tmp_path / "volume" / links_rel).read_text())
    container = tmp_path / "container-root"  # a container's file system: nothing at the original paths yet
    assert worker.link_inputs(links, tmp_path / "volume", root=container) == 2
    for f in files:
        assert (container / str(f).lstrip("/")).read_text() == f.read_text()
    assert worker.link_inputs(links, tmp_path / "volume", root=container) == 0


# -- a whole build --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return split_demo(tmp_path_factory.mktemp("corpus"), 4, 50)


BUILD = dict(embedder="modal-tei", model=MODEL_ID, title_field="title", table="t", progress=False, max_tokens=64,
             overlap=8, batch_tokens=512)  # several batches per shard, mapped over the GPU class


def test_modal_executor_build_gives_the_rows_of_the_local_executor(local_modal, corpus, tmp_path, model_path):
    app, _, tmp = local_modal
    here = indexer.build(str(corpus), db=str(tmp_path / "local.lancedb"), executor="local", **BUILD)
    there = indexer.build(str(corpus), db=str(tmp_path / "modal.lancedb"), executor="modal", **BUILD)
    assert there.shards == 4 and there.documents == 200 and there.chunks == here.chunks > 200
    local_rows, modal_rows = table_rows(tmp_path / "local.lancedb"), table_rows(tmp_path / "modal.lancedb")
    assert modal_rows[0] == local_rows[0] and modal_rows[1] == local_rows[1]
    assert max(abs(a - b) for u, v in zip(modal_rows[2], local_rows[2]) for a, b in zip(u, v)) <= 1e-5
    # the inputs travelled through the Volume folder, and the results came back into this machine's work dir
    assert len(list((tmp / "volume" / "inputs").glob("*/part-*.jsonl"))) == 4
    assert len(list((tmp_path / "modal.lancedb" / "_indexer" / "vectors").rglob("*.parquet"))) == 4

    # and the same rows as this machine's own embedder (ids, texts; vectors to cosine 0.9999)
    own = dict(BUILD, embedder="local", model=model_path, precision="exact")
    indexer.build(str(corpus), db=str(tmp_path / "own.lancedb"), executor="local", **own)
    own_rows = table_rows(tmp_path / "own.lancedb")
    assert own_rows[0] == modal_rows[0] and own_rows[1] == modal_rows[1]
    assert min(sum(a * b for a, b in zip(u, v)) for u, v in zip(own_rows[2], modal_rows[2])) >= 0.9999

    again = indexer.build(str(corpus), db=str(tmp_path / "modal.lancedb"), executor="modal", **BUILD)
    assert again.shards_skipped == 4 and again.embedded_chunks == 0
    # a search embeds its query through the same GPU class
    hits = indexer.search(modal_rows[1][7], db=str(tmp_path / "modal.lancedb"), table="t", k=1)
    assert hits[0].id == modal_rows[0][7]


_prepare_shard = pipeline.prepare_shard


def fail_on_part_2(job):
    if job.shard.key.startswith("part-02"):
        raise OSError("volume full")
    return _prepare_shard(job)


def test_a_failed_container_fails_the_run_and_a_rerun_redoes_only_it(local_modal, corpus, tmp_path, monkeypatch):
    db = tmp_path / "db.lancedb"
    monkeypatch.setattr(pipeline, "prepare_shard", fail_on_part_2)
    with pytest.raises(RuntimeError, match=r"shard part-02.jsonl failed in a Modal container: OSError: volume full\. "
                                           r"3 of 4 shard\(s\) finished"):
        indexer.build(str(corpus), db=str(db), executor="modal", **BUILD)
    monkeypatch.undo()
    again = indexer.build(str(corpus), db=str(db), executor="modal", **BUILD)
    assert again.shards_skipped == 3 and again.source_reads == 1


def finishing_in_reverse(unname=()):
    """The local runner's outcomes in the reverse order, as Modal's unordered map hands back shards that finish
    before earlier ones; errors of the shards in ``unname`` lose the mark that names their shard (as an error of
    Modal's own, a lost container, carries none)."""
    run_shards = modal_executor._LocalRunner.run_shards

    def reversed_run_shards(self, fn, jobs, links_file):
        outcomes = list(run_shards(self, fn, jobs, links_file))
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and getattr(outcome, worker.SHARD_ATTRIBUTE, "").startswith(unname):
                delattr(outcome, worker.SHARD_ATTRIBUTE)
        yield from reversed(outcomes)

    return reversed_run_shards


def test_shards_are_written_as_they_finish_in_any_order(local_modal, corpus, tmp_path, monkeypatch):
    in_order = indexer.build(str(corpus), db=str(tmp_path / "in-order.lancedb"), executor="modal", **BUILD)
    monkeypatch.setattr(modal_executor._LocalRunner, "run_shards", finishing_in_reverse())
    written = []
    monkeypatch.setattr(pipeline, "fetch_results",
                        lambda volume, plan, job, fetch=pipeline.fetch_results: (written.append(job.shard.key),
                                                                                 fetch(volume, plan, job)))
    reverse = indexer.build(str(corpus), db=str(tmp_path / "reverse.lancedb"), executor="modal", **BUILD)
    assert written == sorted(written, reverse=True) and len(written) == 4
    assert reverse.chunks == in_order.chunks and reverse.shards == 4
    assert table_rows(tmp_path / "reverse.lancedb") == table_rows(tmp_path / "in-order.lancedb")


def fail_on_parts_1_and_2(job):
    if job.shard.key.startswith(("part-01", "part-02")):
        raise OSError(f"volume full at {job.shard.key}")
    return _prepare_shard(job)


def test_a_failed_shard_is_named_whatever_order_the_outcomes_arrive_in(local_modal, corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "prepare_shard", fail_on_part_2)
    monkeypatch.setattr(modal_executor._LocalRunner, "run_shards", finishing_in_reverse())
    with pytest.raises(RuntimeError, match=r"shard part-02.jsonl failed in a Modal container: OSError: volume full\. "
                                           r"3 of 4 shard\(s\) finished"):
        indexer.build(str(corpus), db=str(tmp_path / "a.lancedb"), executor="modal", **BUILD)
    # An error that does not name its shard belongs to the one shard that neither finished nor failed by name.
    monkeypatch.setattr(modal_executor._LocalRunner, "run_shards", finishing_in_reverse(unname=("part-02",)))
    with pytest.raises(RuntimeError, match=r"shard part-02.jsonl failed in a Modal container: OSError: volume full"):
        indexer.build(str(corpus), db=str(tmp_path / "b.lancedb"), executor="modal", **BUILD)
    # Two such errors: the message names both candidates.
    monkeypatch.setattr(pipeline, "prepare_shard", fail_on_parts_1_and_2)
    monkeypatch.setattr(modal_executor._LocalRunner, "run_shards", finishing_in_reverse(unname=("part-01", "part-02")))
    with pytest.raises(RuntimeError, match=r"shard one of part-01.jsonl, part-02.jsonl failed in a Modal container: "
                                           r"OSError: volume full at part-0[12]"):
        indexer.build(str(corpus), db=str(tmp_path / "c.lancedb"), executor="modal", **BUILD)


def test_the_local_embedder_is_refused_before_any_container_runs(local_modal, corpus, tmp_path, model_path):
    with pytest.raises(ConfigError, match="--embedder modal-tei"):
        indexer.build(str(corpus), db=str(tmp_path / "db"), executor="modal", model=model_path, table="t",
                      progress=False)
