"""The Modal app: chunking containers and TEI GPU containers. Deploy it once, then build with ``--executor modal``::

    INDEXER_MODAL_GPU=A10G INDEXER_MODAL_GPU_CONTAINERS=20 modal deploy -m indexer_modal.app

* ``run_shard`` (CPU): one shard per container at a time — reads the input (staged on the Volume, or from the
  Hub into the Volume's cache), chunks it, embeds it and writes the shard's files into the work directory on the
  Volume, in the core's layout;
* ``describe_source`` (CPU): lists a source's shards as the containers see it (and fills the Volume's Hub cache);
* ``TEIServer`` (GPU): starts ``text-embeddings-router`` for a model when the container starts and embeds
  token-budget batches; the ``modal-tei`` embedder ``.map``-s a shard's batches over it, keys travelling with
  every batch.

Every setting comes from ``INDEXER_MODAL_*`` variables (:mod:`indexer_modal.settings`), read here at import and
handed to the containers. Secrets are Modal secrets named in ``INDEXER_MODAL_SECRETS``; no value is in this file.
"""

# No "from __future__ import annotations": Modal reads the class parameters' types at runtime.
from pathlib import Path
from typing import Any

import modal

from indexer_modal import worker
from indexer_modal.settings import ModalSettings

settings = ModalSettings.from_env()

# What the containers need of indexer's dependencies: no torch, transformers, lancedb or datasets (the chunking
# and TEI containers load no model in Python, and sinks are written by the machine that runs the build).
CONTAINER_PACKAGES = ["pluggy>=1.5", "click>=8.1", "tqdm>=4.66", "numpy>=1.26", "pyarrow>=15", "tokenizers>=0.19",
                      "huggingface_hub>=0.23", "aiohttp>=3.9"]
_PROJECT = Path(__file__).resolve().parent.parent.parent  # the checkout holding pyproject.toml, when there is one
_IGNORE = [".git", ".venv", "**/__pycache__", "*.egg-info", "data", "docs", "tests", "scripts", "*.lancedb", ".ci"]


def _with_indexer(image: modal.Image) -> modal.Image:
    """Install indexer itself (for its plugins' entry points) from this checkout, or else from the package index."""
    image = image.pip_install(*CONTAINER_PACKAGES)
    if (_PROJECT / "pyproject.toml").is_file():
        return (image.add_local_dir(_PROJECT, "/opt/indexer", copy=True, ignore=_IGNORE)
                .run_commands("pip install --no-deps /opt/indexer"))
    from importlib.metadata import version

    return image.run_commands(f"pip install --no-deps indexer=={version('indexer')}")


app = modal.App(settings.app_name, include_source=False)
volume = modal.Volume.from_name(settings.volume, create_if_missing=True)
secrets = [modal.Secret.from_name(name) for name in settings.secrets]
cpu_image = _with_indexer(modal.Image.debian_slim(python_version="3.11"))
# TEI's image has no Python and starts the router as its entrypoint; Modal needs both the other way round.
tei_image = _with_indexer(
    modal.Image.from_registry(settings.tei_image_ref(), add_python="3.11").dockerfile_commands("ENTRYPOINT []")
)
volumes = {settings.mount: volume}


def _in_container() -> bool:
    return not modal.is_local()


def _reload() -> None:
    if _in_container():
        volume.reload()


def _commit() -> None:
    if _in_container():
        volume.commit()


@app.function(image=cpu_image, volumes=volumes, secrets=secrets, env=settings.container_env(), cpu=settings.cpu,
              memory=settings.memory, timeout=settings.shard_timeout, max_containers=settings.cpu_containers,
              retries=settings.retries)
def run_shard(fn: Any, job: Any, links_file: str | None) -> Any:
    """One shard job (``fn(job)``, the pipeline's ``prepare_shard``) against the work directory on the Volume."""
    return worker.run_shard(fn, job, links_file, settings.volume_root(), _reload, _commit)


@app.function(image=cpu_image, volumes=volumes, secrets=secrets, env=settings.container_env(), cpu=settings.cpu,
              memory=settings.memory, timeout=settings.shard_timeout, retries=settings.retries)
def describe_source(config: Any) -> list[tuple[str, str]]:
    """The source's shards (key, fingerprint) as the containers see it; fills the Volume's Hub cache."""
    _reload()
    shards = worker.describe_source(config)
    _commit()
    return shards


@app.cls(image=tei_image, gpu=settings.gpu, volumes=volumes, secrets=secrets, env=settings.container_env(),
         timeout=settings.gpu_timeout, startup_timeout=settings.gpu_startup_timeout,
         max_containers=settings.gpu_containers, scaledown_window=settings.gpu_idle_seconds, retries=settings.retries)
@modal.concurrent(max_inputs=settings.gpu_concurrency)
class TEIServer:
    """TEI for one model (a container pool per model), embedding batches sent by the ``modal-tei`` embedder."""

    model: str = modal.parameter()
    revision: str = modal.parameter(default="")

    @modal.enter()
    def start(self) -> None:
        self.router = worker.TEIRouter(settings.router_command(), self.model, revision=self.revision,
                                       port=settings.port, tokenizer=settings.tokenizer,
                                       concurrency=settings.gpu_concurrency)
        try:
            self.router.start(timeout=settings.gpu_startup_timeout)
        except BaseException:
            self.router.stop()
            raise
        _commit()  # the weights TEI downloaded into the Volume's cache, for the next containers

    @modal.method()
    def describe(self) -> dict[str, Any]:
        return self.router.describe()

    @modal.method()
    def embed(self, batch: dict[str, Any]) -> tuple[list[int], Any]:
        return self.router.embed(batch)

    @modal.method()
    def embed_queries(self, queries: list[str]) -> Any:
        return self.router.embed_queries(queries)

    @modal.exit()
    def stop(self) -> None:
        self.router.stop()
