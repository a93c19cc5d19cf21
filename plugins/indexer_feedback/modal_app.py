"""``indexer finetune --remote modal``: the training step on a Modal GPU.

Only the middle step of a fine-tune travels: this machine reads the feedback, mines hard negatives from its own
index and measures "before" (:func:`indexer_feedback.finetune.prepare`); the container receives that payload and
the base model's files, runs :func:`indexer_feedback.finetune.train` on its GPU, and returns the new model's
files and the "after" figures. Nothing in the container needs the index, the Hub or a secret.

Settings, read when this module is imported (Modal fixes a function's resources at definition):
``INDEXER_FINETUNE_GPU`` (default ``L4``; ``--gpu`` overrides it per run), ``INDEXER_FINETUNE_TIMEOUT`` (seconds,
default 4 hours), ``INDEXER_FINETUNE_APP`` (the app's name, default ``indexer-finetune``).
``INDEXER_FINETUNE_RUN=local`` calls the function body with ``.local()`` on this machine — how it is tested
offline.
"""

# No "from __future__ import annotations": Modal inspects the function's signature at runtime.
import io
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import modal

GPU = os.environ.get("INDEXER_FINETUNE_GPU", "L4")
TIMEOUT = int(os.environ.get("INDEXER_FINETUNE_TIMEOUT", str(4 * 3600)))
APP_NAME = os.environ.get("INDEXER_FINETUNE_APP", "indexer-finetune")
# What train() imports: the core's light modules, this plugin, and the training stack (CUDA torch from PyPI).
PACKAGES = ["torch>=2.2", "transformers>=4.41", "sentence-transformers>=5", "accelerate>=1.1", "datasets>=2.19",
            "numpy>=1.26", "pyarrow>=15", "pluggy>=1.5", "click>=8.1"]

app = modal.App(APP_NAME, include_source=False)
image = (modal.Image.debian_slim(python_version="3.11").pip_install(*PACKAGES)
         .add_local_python_source("indexer", "indexer_feedback"))


def pack(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:  # weights barely compress: be quick
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
                tar.add(path, arcname=str(path.relative_to(folder)))
    return buf.getvalue()


def unpack(data: bytes, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")


@app.function(image=image, gpu=GPU, timeout=TIMEOUT, retries=0)
def finetune_remote(payload: dict, base_model: bytes) -> dict:
    """Train on the container's GPU; returns train()'s outcome plus the saved model as a tar.gz (``model``)."""
    from indexer_feedback.finetune import train

    with tempfile.TemporaryDirectory() as scratch:
        base, out = Path(scratch) / "base", Path(scratch) / "out"
        unpack(base_model, base)
        outcome = train(payload, base, out)
        outcome["model"] = pack(out)
    return outcome


def train_on_modal(payload: dict[str, Any], base_path: Path, output: Path, gpu: str | None = None) -> dict[str, Any]:
    """Run :func:`finetune_remote` on Modal (or, with ``INDEXER_FINETUNE_RUN=local``, here) and unpack the model
    into ``output``."""
    fn = finetune_remote.with_options(gpu=gpu) if gpu else finetune_remote
    if os.environ.get("INDEXER_FINETUNE_RUN") == "local":
        outcome = fn.local(payload, pack(base_path))
    else:
        with modal.enable_output(), app.run():
            outcome = fn.remote(payload, pack(base_path))
    unpack(outcome.pop("model"), Path(output))
    return outcome
