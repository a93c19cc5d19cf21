"""What runs inside the Modal containers, as plain Python (no ``modal`` import), so that the app's functions stay
thin and each body also runs in this process through Modal's ``.local()``.

* :func:`run_shard` — the chunking container: runs the pipeline's shard job against the work directory on the
  Volume (inputs the executor staged there are linked in at their original paths first; the files of the work
  directory the job reads were sent there by the pipeline).
* :class:`TEIRouter` — the GPU container: starts ``text-embeddings-router``, waits until it is healthy, and embeds
  batches through the ``tei`` embedder's client.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from indexer.errors import ConfigError
from indexer.types import Chunk

SHARD_ATTRIBUTE = "indexer_shard"  # set on an exception raised by a shard's work: the shard's key


def link_inputs(links: dict[str, str], volume_root: Path, root: Path = Path("/")) -> int:
    """Make every staged input file appear at the path it has on the machine that planned the run (under
    ``root``), as a link to its copy on the Volume; the source then reads exactly the files, paths and shard keys
    it planned with. Paths that already exist are left alone. Returns how many links were made."""
    made = 0
    for original, rel in links.items():
        place = root / original.lstrip("/")
        if os.path.lexists(place):
            continue
        place.parent.mkdir(parents=True, exist_ok=True)
        place.symlink_to(volume_root / rel)
        made += 1
    return made


def run_shard(fn: Callable[[Any], Any], job: Any, links_file: str | None, volume_root: Path,
              reload: Callable[[], None], commit: Callable[[], None]) -> Any:
    """Run one shard job in a chunking container and commit what it wrote to the Volume. The job carries the chunk
    set and vector set keys its run planned (``job.expected``) and stops when the container plans otherwise
    (another version of the input or of the tokenizer), as it would write files the run never reads.
    """
    try:
        reload()  # see what the pipeline staged since this container started
        if links_file:
            link_inputs(json.loads((volume_root / links_file).read_text()), volume_root)
        result = fn(job)
        commit()
        return result
    except Exception as exc:
        # Results come back in the order shards finish; the error says which shard it belongs to (an attribute
        # pickles with the exception).
        try:
            setattr(exc, SHARD_ATTRIBUTE, job.shard.key)
        except AttributeError:  # an exception type that takes no attributes: the executor pairs it by elimination
            pass
        raise


def describe_source(config: Any) -> list[tuple[str, str]]:
    """Shard keys and fingerprints of ``config``'s source as a container sees it. For a Hub dataset this also
    downloads its files into the Volume's cache once, before the chunking containers each need them."""
    from indexer.pipeline import make_source
    from indexer.plugins import get_host

    source = make_source(config, get_host())
    return [(s.key, s.fingerprint) for s in source.shards()]


class TEIRouter:
    """One ``text-embeddings-router`` process serving ``model`` on 127.0.0.1, and the ``tei`` embedder that talks
    to it (request sizing, retries, alignment are the embedder's).

    :param command: the router command and its fixed arguments; ``--model-id``, ``--port`` (and ``--revision``)
        are added.
    :param concurrency: batches this container embeds at once; each gets an equal share of TEI's input budget so
        that together they stay under it instead of meeting 429s.
    """

    def __init__(self, command: list[str], model: str, *, revision: str = "", port: int = 8000,
                 tokenizer: str = "", concurrency: int = 1):
        self.command = [*command, "--model-id", model, "--port", str(port)]
        if revision:
            self.command += ["--revision", revision]
        self.tokenizer, self.concurrency = tokenizer, concurrency
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        self.embedder: Any = None
        self._log: Any = None

    def start(self, timeout: float) -> None:
        """Start the router and wait until ``/health`` answers 200; fail with the router's last output when it
        exits or does not get healthy within ``timeout`` seconds."""
        from indexer_tei import TEIEmbedder

        self._log = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)
        except FileNotFoundError:
            missing = self.command[0]
            raise ConfigError(f"cannot start the TEI router: {missing!r} is not installed in this image") from None
        atexit.register(self.stop)  # .local() runs never call the exit hook
        self.embedder = TEIEmbedder(self.url, tokenizer=self.tokenizer or None)
        client = self.embedder.client
        deadline = time.monotonic() + timeout
        while not client.health():
            status = self.process.poll()
            if status is not None or time.monotonic() > deadline:
                output = self._tail()
                self.stop()
                why = f"exited with status {status}" if status is not None else f"was not healthy after {timeout:.0f} s"
                raise RuntimeError(f"the TEI router {why}:\n{output}")
            time.sleep(0.5)
        # this container's batches share TEI's input budget (it answers 429 beyond it)
        budget = max(1, client.limits.max_concurrent_requests // self.concurrency)
        self.embedder.max_concurrent_inputs = client.max_concurrent_inputs = budget
        self.embedder.check()

    def _tail(self, lines: int = 30) -> str:
        self._log.seek(0)
        return "\n".join(self._log.read().decode("utf-8", "replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def describe(self) -> dict[str, Any]:
        """What the planning machine needs to chunk for this model and to name its vector set."""
        e = self.embedder
        return {
            "info": dataclasses.asdict(e.info),
            "tokenizer_json": e.tokenizer().to_str(),
            "tokenizer_key": e.tokenizer_key(),
            "content_token_limit": e.content_token_limit(),
        }

    def embed(self, batch: dict[str, Any]) -> tuple[list[int], Any]:
        """Vectors for one batch; its ``keys`` come back with them, so batches may finish in any order."""
        chunks = [
            Chunk(id=label, doc_id="", chunk_index=0, text=text, token_count=count, char_start=0, char_end=len(text),
                  content_hash="", token_ids=ids)
            for label, text, count, ids in zip(batch["labels"], batch["texts"], batch["token_counts"],
                                               batch["token_ids"])
        ]
        return list(batch["keys"]), self.embedder.embed(chunks)

    def embed_queries(self, queries: list[str]) -> Any:
        return self.embedder.embed_queries(queries)
