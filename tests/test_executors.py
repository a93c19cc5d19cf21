"""The ``processes`` executor (same rows as one process; a failing worker fails the run clearly and leaves finished
shards done), a third-party executor registered by a plugin (same rows as ``local``; a ``remote`` one refuses an
embedder that is not portable), and the arithmetic of ``indexer estimate``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import DEMO_CORPUS, split_demo, table_rows

import indexer
from indexer import pipeline
from indexer.components import Executor, shard_failure
from indexer.config import BuildConfig
from indexer.errors import ConfigError
from indexer.hookspecs import hookimpl
from indexer.plugins import Host, make_plugin_manager, set_host
from indexer.state import LocalFolder
from indexer_local_executor import ProcessExecutor
from indexer_modal.estimate import GPUS, PriceTable, estimate, load_prices

SHARDS = 4
PER_SHARD = 15
SETTINGS = dict(title_field="title", table="t", progress=False, max_tokens=64, overlap=8, precision="exact")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return split_demo(tmp_path_factory.mktemp("corpus"), SHARDS, PER_SHARD)


@pytest.fixture(scope="module")
def single_process_rows(corpus, model_path, tmp_path_factory):
    db = tmp_path_factory.mktemp("single") / "db.lancedb"
    indexer.build(str(corpus), db=str(db), model=model_path, executor="local", **SETTINGS)
    return table_rows(db)


def _assert_same_rows(got, want):
    assert got[0] == want[0], "chunk ids differ"
    assert got[1] == want[1], "chunk texts differ"
    worst = max(abs(a - b) for u, v in zip(got[2], want[2]) for a, b in zip(u, v))
    assert worst <= 1e-5, f"vectors differ by up to {worst}"


def test_processes_executor_builds_the_same_rows_as_one_process(corpus, model_path, single_process_rows, tmp_path):
    summary = indexer.build(str(corpus), db=str(tmp_path / "db.lancedb"), model=model_path, executor="processes",
                            workers=2, **SETTINGS)
    assert summary.shards == SHARDS and summary.documents == SHARDS * PER_SHARD
    _assert_same_rows(table_rows(tmp_path / "db.lancedb"), single_process_rows)


# -- a third-party executor -----------------------------------------------------------------------------------


class ThreadPoolShardExecutor(Executor):
    """What a third-party executor needs: schedule ``fn(job)`` on threads of this process, yield results as they
    finish, and on a failure yield what finished before raising. Nothing about what a job does."""

    description = "threads of this process (a test plugin)"

    def map(self, fn, jobs):
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        jobs = list(jobs)
        failed, finished = None, 0
        with ThreadPoolExecutor(max_workers=self.workers or 2) as pool:
            running = {pool.submit(fn, job): job for job in jobs}
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    if future.exception() is None:
                        finished += 1
                        yield future.result()
                    elif failed is None:
                        failed = (job, future.exception())
        if failed:
            raise shard_failure(*failed, finished, len(jobs), "a thread")


class RemoteThreadPoolShardExecutor(ThreadPoolShardExecutor):
    remote = True  # as if its threads ran in containers without this machine's files


class ElsewhereThreadPoolShardExecutor(ThreadPoolShardExecutor):
    """Its workers keep the work directory in a folder of their own (as on a cluster's disk): it says where, and the
    pipeline sends and fetches the files; the executor still only schedules."""

    folder: Path  # set by the test

    def work_location(self):
        return LocalFolder(self.folder)


class ThreadsPlugin:
    """Registers the executors through the same hook as the built-ins, as an installed plugin would."""

    @hookimpl
    def register_executors(self, register):
        register("threads", ThreadPoolShardExecutor)
        register("remote-threads", RemoteThreadPoolShardExecutor)
        register("threads-elsewhere", ElsewhereThreadPoolShardExecutor)


@pytest.fixture
def threads_host():
    host = Host(make_plugin_manager(extra_plugins=[ThreadsPlugin()]))
    set_host(host)  # shard jobs plan through the process-wide host
    yield host
    set_host(None)


@pytest.mark.parametrize("name", ["threads", "threads-elsewhere"])
def test_a_third_party_executor_builds_the_rows_of_the_local_executor(name, threads_host, corpus, model_path,
                                                                       single_process_rows, tmp_path, monkeypatch):
    assert threads_host.component("executor", name).__module__ == __name__
    monkeypatch.setattr(ElsewhereThreadPoolShardExecutor, "folder", tmp_path / "elsewhere", raising=False)
    db = tmp_path / "db.lancedb"
    config = BuildConfig(source=str(corpus), db=str(db), model=model_path, executor=name, workers=3, **SETTINGS)
    summary = pipeline.build(config, threads_host)
    assert summary.shards == SHARDS and summary.documents == SHARDS * PER_SHARD and summary.embedded_chunks > 0
    _assert_same_rows(table_rows(db), single_process_rows)
    elsewhere = sorted(p.name for p in (tmp_path / "elsewhere" / "vectors").rglob("*.parquet"))
    assert elsewhere == ([f"part-{s:02d}.jsonl.parquet" for s in range(SHARDS)] if name == "threads-elsewhere" else [])
    again = pipeline.build(config, threads_host)
    assert again.shards_skipped == SHARDS and again.embedded_chunks == 0


def test_a_remote_executor_refuses_an_embedder_that_needs_this_machines_files(threads_host, corpus, model_path,
                                                                               tmp_path):
    config = BuildConfig(source=str(corpus), db=str(tmp_path / "db"), model=model_path, executor="remote-threads",
                         **SETTINGS)
    with pytest.raises(ConfigError, match=r"the local embedder cannot run where the remote-threads executor") as e:
        pipeline.build(config, threads_host)
    assert "--embedder tei" in str(e.value)  # the portable embedders installed are named
    assert not (tmp_path / "db").exists(), "work started before the configuration was refused"


def test_a_shard_job_refuses_a_plan_other_than_the_one_its_run_made(corpus, model_path, tmp_path):
    config = BuildConfig(source=str(corpus), db=str(tmp_path / "db"), model=model_path, **SETTINGS)
    shard = pipeline.plan_build(config).source.shards()[0]
    job = pipeline.ShardJob(config, shard, expected={"chunkset": "x", "model": "y"})
    with pytest.raises(ConfigError, match=f"shard {shard.key}: this worker planned .* but this run expects x / y"):
        pipeline.prepare_shard(job)
    assert not (tmp_path / "db").exists(), "the job wrote files before it stopped"


_prepare_shard = pipeline.prepare_shard


def prepare_or_fail(job):
    """``prepare_shard`` that fails on one shard (runs in the worker processes, so it lives at module level)."""
    if job.shard.key.startswith("part-02"):
        raise ValueError("disk on fire")
    return _prepare_shard(job)


def test_workers_elsewhere_plan_without_this_runs_executor_options(tmp_path):
    """Their executor is "local": the options meant for this run's executor would fail their option check."""
    config = BuildConfig(source="x.jsonl", executor="processes",
                         options={"executor": {"containers": 4}, "embedder": {"max_batch_size": 64}})
    theirs = pipeline.worker_config(config, LocalFolder(tmp_path))
    assert theirs.executor == "local" and theirs.options == {"embedder": {"max_batch_size": 64}}
    pipeline.check_options(theirs, Host(make_plugin_manager()), with_source=False)


def test_a_bad_shard_size_fails_before_the_embedder_is_checked(corpus, model_path, monkeypatch):
    def never(*args):
        raise AssertionError("the embedder was made (and checked: for TEI, a call to the server) before --shard-size")

    monkeypatch.setattr(pipeline, "make_embedder", never)
    with pytest.raises(ConfigError, match="--shard-size"):
        pipeline.plan_build(BuildConfig(source=str(corpus), model=model_path, shard_size="lots"))


def test_a_failing_worker_fails_the_run_clearly_and_finished_shards_stay_done(corpus, model_path, single_process_rows,
                                                                               tmp_path, monkeypatch):
    db = tmp_path / "db.lancedb"
    real = pipeline.prepare_shard
    monkeypatch.setattr(pipeline, "prepare_shard", prepare_or_fail)
    with pytest.raises(RuntimeError) as failure:
        indexer.build(str(corpus), db=str(db), model=model_path, executor="processes", workers=2, **SETTINGS)
    message = str(failure.value)
    assert "shard part-02" in message and "ValueError: disk on fire" in message
    assert "run the same command again" in message
    done = sorted(p.stem for p in (db / "_indexer" / "tables" / "t" / "done").glob("*.json"))
    assert "part-02.jsonl" not in done and done, "the shards that finished must be recorded"

    monkeypatch.setattr(pipeline, "prepare_shard", real)
    again = indexer.build(str(corpus), db=str(db), model=model_path, executor="processes", workers=2, **SETTINGS)
    assert again.shards_skipped == len(done) and again.shards_skipped + 1 <= SHARDS
    assert again.source_reads == SHARDS - len(done)
    _assert_same_rows(table_rows(db), single_process_rows)


def record_and_maybe_fail(job):
    """Leaves a marker per job it runs; job 1 fails."""
    folder, n = job
    Path(folder, f"ran-{n}").touch()
    if n == 1:
        raise KeyError("job one")
    return n


def exit_abruptly(job):
    os._exit(3)


def test_after_a_failure_no_new_jobs_start_and_running_ones_are_kept(tmp_path):
    jobs = [(str(tmp_path), n) for n in range(8)]
    results = []
    with ProcessExecutor(workers=1) as executor, pytest.raises(RuntimeError, match=r"KeyError: 'job one'") as failure:
        for r in executor.map(record_and_maybe_fail, jobs):
            results.append(r)
    ran = {int(p.name.split("-")[1]) for p in tmp_path.glob("ran-*")}
    assert 0 in results and 1 not in results
    assert set(results) == ran - {1}, "every job that ran and succeeded was yielded"
    assert len(ran) < len(jobs), "jobs were still started after the failure"
    assert ran == {0, 1}, "with one worker, one job at a time: nothing after the failing job 1 may start"
    assert f"{len(results)} of 8 shard(s) finished" in str(failure.value)


def test_a_dead_worker_is_reported_and_the_executor_recovers(tmp_path):
    with ProcessExecutor(workers=2) as executor:
        with pytest.raises(RuntimeError, match="worker process died"):
            list(executor.map(exit_abruptly, [1, 2]))
        assert sorted(executor.map(abs, [-1, -2, 3])) == [1, 2, 3]


def test_processes_executor_checks_its_settings():
    with pytest.raises(ConfigError, match="--workers"):
        ProcessExecutor(workers=0).check()
    with pytest.raises(ConfigError, match="no options"):
        ProcessExecutor(threads=2).check()


# -- indexer estimate ------------------------------------------------------------------------------------------


def test_estimate_arithmetic_for_a_fineweb_edu_sized_corpus():
    e = estimate(10.5e9, "A10G", 50)
    gpu_seconds = 10.5e9 / 150_000  # 70,000 s of A10G time at the table's 150k tokens/s
    assert e.gpu_hours == pytest.approx(gpu_seconds / 3600) == pytest.approx(19.4444, abs=1e-4)
    assert e.billed_gpu_hours == pytest.approx((gpu_seconds + 50 * 60) / 3600)  # plus a 60 s start per container
    assert e.wall_seconds == pytest.approx(gpu_seconds / 50 + 60) == pytest.approx(1460)
    assert e.gpu_dollars == pytest.approx(73_000 / 3600 * 1.1016) == pytest.approx(22.338, abs=1e-3)
    assert e.chunk_core_hours == pytest.approx(10.5e9 / 700_000 / 3600)
    assert e.chunk_dollars == pytest.approx(e.chunk_core_hours * 0.0000131 * 3600)
    assert e.dollars == pytest.approx(22.338 + 0.1965, abs=1e-3)

    out = CliRunner().invoke(_cli(), ["estimate", "--tokens", "10.5e9", "--gpu", "A10G", "--containers", "50"])
    assert out.exit_code == 0, out.output
    assert "10,500,000,000 (as described)" in out.output
    assert "19.44 embedding, 20.28 billed" in out.output and "24.3 min on 50 container(s)" in out.output
    assert "$22.34 GPU + $0.197 chunking" in out.output and "= $22.53" in out.output


def test_estimate_counts_the_demo_corpus_with_the_build_chunker(model_path):
    from indexer.config import BuildConfig
    from indexer.types import BadRecord

    out = CliRunner().invoke(_cli(), ["estimate", str(DEMO_CORPUS), "--model", model_path, "--title-field", "title",
                                      "--gpu", "H100", "--containers", "2", "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    plan = pipeline.plan_build(BuildConfig(source=str(DEMO_CORPUS), model=model_path, title_field="title", sinks=[]))
    docs = [d for s in plan.source.shards() for d in plan.source.read(s) if not isinstance(d, BadRecord)]
    tokens = sum(c.token_count for c in plan.chunker.chunk_many(docs))
    assert len(docs) == 2000 and got["tokens"] == tokens and got["tokens_counted"].startswith("counted")
    assert got["gpu"] == "H100" and got["tokens_per_second_per_gpu"] == 700_000
    assert got["gpu_hours"] == pytest.approx(tokens / 700_000 / 3600)
    assert got["wall_seconds"] == pytest.approx(tokens / 700_000 / 2 + 60)
    assert got["gpu_dollars"] == pytest.approx((tokens / 700_000 + 2 * 60) / 3600 * 3.9492)
    assert got["dollars"] == pytest.approx(got["gpu_dollars"] + got["chunk_dollars"])


def test_estimate_extrapolates_from_a_sample_of_shards(tmp_path, model_path):
    lines = DEMO_CORPUS.read_text().splitlines()
    for s in range(12):
        (tmp_path / f"f{s:02d}.jsonl").write_text("\n".join(lines[s * 10 : s * 10 + 10]) + "\n")
    args = ["estimate", str(tmp_path), "--model", model_path, "--json", "--tokens-per-second-per-gpu", "1000"]
    exact = json.loads(CliRunner().invoke(_cli(), args + ["--sample-shards", "0"]).output)
    sampled = json.loads(CliRunner().invoke(_cli(), args + ["--sample-shards", "3"]).output)
    assert exact["tokens_counted"].startswith("counted")
    assert sampled["tokens_counted"].startswith("extrapolated: 3 of 12 shards")
    counted = int(sampled["tokens_counted"].split("(")[1].split(" ")[0].replace(",", ""))
    assert sampled["tokens"] == round(counted * 12 / 3)
    assert abs(sampled["tokens"] - exact["tokens"]) < 0.35 * exact["tokens"]
    assert exact["gpu_hours"] == pytest.approx(exact["tokens"] / 1000 / 3600)


def test_price_file_overrides_the_table(tmp_path):
    toml = tmp_path / "prices.toml"
    toml.write_text("startup_seconds = 0\n[gpus.A10G]\ntokens_per_second = 300000\n"
                    "[gpus.RTX6000]\nprice_per_hour = 0.5\ntokens_per_second = 100000\n")
    prices = load_prices(toml)
    e = estimate(3e9, "a10g", 10, prices)
    assert e.tokens_per_second_per_gpu == 300_000 and e.price_per_gpu_hour == GPUS["A10G"].price_per_hour
    assert e.wall_seconds == pytest.approx(1000) and e.gpu_dollars == pytest.approx(10_000 / 3600 * 1.1016)
    assert estimate(3.6e8, "RTX6000", 1, prices).gpu_dollars == pytest.approx(0.5)
    (tmp_path / "p.json").write_text(json.dumps({"gpus": {"A10G": {"price_per_hour": 2.0}}}))
    assert estimate(1e9, "A10G", 1, load_prices(tmp_path / "p.json")).price_per_gpu_hour == 2.0
    for bad in ({"gpus": {"NEW": {"price_per_hour": 1}}}, {"gpus": {"A10G": {"price_per_hour": -1}}}, {"speed": 1}):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match="price file"):
            load_prices(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="no price for GPU 'V100'"):
        estimate(1, "V100", 1, PriceTable(GPUS))


def _cli():
    from indexer.cli import cli
    from indexer.plugins import get_host

    if "estimate" not in cli.commands:
        get_host().hook.register_commands(cli=cli)
    return cli
