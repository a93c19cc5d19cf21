"""ColBERT indexing on a Modal A100, for corpora too big for a CPU: the corpus and the index live on a Volume.

    modal volume put indexer-colbert corpus.jsonl /corpus.jsonl
    modal run -m indexer_colbert.modal_app --source /index/corpus.jsonl --db /index/corpus.lancedb
    modal volume get indexer-colbert /corpus.lancedb ./corpus.lancedb

``build_index`` runs ``indexer build SOURCE --late-interaction colbert`` inside a CUDA image with this plugin's
pinned stack; the model's weights are downloaded into the image when it is built (``Image.run_function``), so no
container downloads them, and nothing runs unless the index's estimated memory fits the container and its GPU.

Settings (read when the app is imported, i.e. at deploy/run time): ``INDEXER_COLBERT_MODEL`` (default
colbert-ir/colbertv2.0), ``INDEXER_COLBERT_GPU`` (A100; A100-80GB for the larger card), ``INDEXER_COLBERT_VOLUME``
(indexer-colbert), ``INDEXER_COLBERT_MEMORY`` (MiB of container memory, 65536), ``INDEXER_COLBERT_TIMEOUT``
(seconds, 86400). A Hub token, when the model needs one, comes from the Modal secret named in
``INDEXER_COLBERT_SECRET``; no value is in this file.
"""

# No "from __future__ import annotations": Modal reads the functions' annotations at runtime.
import os
from pathlib import Path

import modal

MODEL = os.environ.get("INDEXER_COLBERT_MODEL", "colbert-ir/colbertv2.0")
GPU = os.environ.get("INDEXER_COLBERT_GPU", "A100")
VOLUME = os.environ.get("INDEXER_COLBERT_VOLUME", "indexer-colbert")
MEMORY_MIB = int(os.environ.get("INDEXER_COLBERT_MEMORY", "65536"))
TIMEOUT = int(os.environ.get("INDEXER_COLBERT_TIMEOUT", str(24 * 3600)))
SECRET = os.environ.get("INDEXER_COLBERT_SECRET", "")
MOUNT = "/index"
MODELS = "/models"  # HF_HOME inside the image: where the baked weights live

# The plugin's environment, as .ci/constraints-colbert.txt pins it; torch from PyPI is the CUDA build.
PACKAGES = ["torch==2.13.0", "ragatouille==0.0.9.post2", "colbert-ai==0.2.22", "langchain<0.4", "psutil>=5",
            "transformers>=4.41,<5", "huggingface_hub>=0.23,<1", "datasets>=2.19,<5", "sentence-transformers<6",
            "lancedb>=0.13", "pluggy>=1.5", "click>=8.1", "tqdm>=4.66", "numpy>=1.26", "pyarrow>=15",
            "tokenizers>=0.19", "ninja"]
_PROJECT = Path(__file__).resolve().parents[3]  # the checkout holding pyproject.toml, when there is one
_IGNORE = [".git", ".venv*", "**/__pycache__", "*.egg-info", "data", "docs", "tests", "scripts", "*.lancedb", ".ci"]


def download_weights(model: str) -> None:
    """Runs once, while the image is built: the model's files into the image's Hugging Face cache."""
    from huggingface_hub import snapshot_download

    snapshot_download(model)


def _image() -> modal.Image:
    # colbert-ai compiles its CUDA kernels (torch C++ extensions) on first use: the devel image has nvcc.
    image = (modal.Image.from_registry("nvidia/cuda:12.8.1-devel-ubuntu22.04", add_python="3.11")
             .apt_install("build-essential")
             .env({"HF_HOME": MODELS})
             .pip_install(*PACKAGES))
    if (_PROJECT / "pyproject.toml").is_file():
        image = (image.add_local_dir(_PROJECT, "/opt/indexer", copy=True, ignore=_IGNORE)
                 .run_commands("pip install --no-deps /opt/indexer /opt/indexer/plugins/indexer_colbert"))
    else:
        from importlib.metadata import version

        image = image.run_commands(f"pip install --no-deps indexer=={version('indexer')} "
                                   f"indexer-colbert=={version('indexer-colbert')}")
    secrets = [modal.Secret.from_name(SECRET)] if SECRET else []
    return (image.run_function(download_weights, kwargs={"model": MODEL}, secrets=secrets)
            .env({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}))


app = modal.App("indexer-colbert", include_source=False)
volume = modal.Volume.from_name(VOLUME, create_if_missing=True)
image = _image()


@app.function(image=image, gpu=GPU, volumes={MOUNT: volume}, memory=MEMORY_MIB, timeout=TIMEOUT, cpu=8.0)
def build_index(source: str, db: str, model: str = MODEL, settings: dict | None = None) -> dict:
    """Estimate, then build (or bring up to date) the ColBERT index of ``source`` into ``db``; both paths on the
    Volume. Returns the run summary and the estimate."""
    if not modal.is_local():
        volume.reload()
    result = build_body(source, db, model, settings or {})
    if not modal.is_local():
        volume.commit()
    return result


def build_body(source: str, db: str, model: str, settings: dict) -> dict:
    """What ``build_index`` runs wherever it runs: refuse a corpus that will not fit, then build."""
    from indexer import api
    from indexer.config import BuildConfig
    from indexer_colbert.estimate import available_memory, estimate_source

    config = BuildConfig.load(None, source=source, db=db, model=model, late_interaction="colbert",
                              progress=False, **settings)
    est = estimate_source(config)
    ram, gpu = available_memory()
    if not modal.is_local():  # what the function asked Modal for, not the host's free memory
        ram = min(ram, MEMORY_MIB * 1024**2)
    est.check_fits(ram, gpu, where=f"this container ({GPU})" if not modal.is_local() else "this machine")
    summary = api.build(source, db=db, model=model, late_interaction="colbert", progress=False, **settings)
    return {"summary": summary.to_dict(), "estimate": est.__dict__}


@app.local_entrypoint()
def main(source: str, db: str, model: str = MODEL) -> None:
    result = build_index.remote(source, db, model)
    print(result["summary"])

