"""Model folders: finding one in the local Hugging Face cache, and fingerprinting what in it decides the vectors.

Shared by the embedders that run a model from files (``local``, ``colbert``). Light at import: the Hub library is
imported only by :func:`from_hf_cache`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

HUGE_FILE = 2 << 30  # files larger than this are fingerprinted by size and their ends
EDGE = 64 << 20


def from_hf_cache(repo_id: str) -> tuple[Path, str] | None:
    """(snapshot folder, commit) of a Hub model id already in the local cache; None when it is not there (no
    download happens)."""
    if repo_id.startswith((".", "/", "~")) or repo_id.count("/") > 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, not a valid repo id, hub library missing: all mean "not here"
        return None
    return path, path.name


def affects_vectors(rel: Path) -> bool:
    """Whether a file of a model folder (``rel``: its path inside the folder) takes part in the fingerprint:
    weights, configs and tokenizer files; not hidden files, ONNX/OpenVINO exports, training state, and not
    ``indexer_*.json`` (indexer's own records beside a model, such as the fine-tune record, which holds a
    timestamp)."""
    name = rel.name
    if name.startswith("indexer_") and rel.suffix == ".json":
        return False
    if name.startswith(".") or any(part.startswith(".") for part in rel.parts):
        return False
    if "onnx" in rel.parts or "openvino" in rel.parts:
        return False
    if rel.suffix in (".safetensors", ".bin", ".pt", ".pth"):
        return not name.startswith(("optimizer", "scheduler", "training_args", "rng_state"))
    return rel.suffix in (".json", ".txt", ".model") and name not in ("data_config.json", "README.md")


def hash_files(files: Iterable[Path], root: Path | None = None, h=None) -> str:
    """sha256 over the files' names (relative to ``root``), sizes and contents, in the order given (``h``: a
    hash object to continue). Files over :data:`HUGE_FILE` contribute their size and ends only: hashing tens of
    GB would take minutes, and size + ends still tell a new checkpoint."""
    h = h or hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update((str(f.relative_to(root)) if root else f.name).encode() + b"\x00" + str(size).encode() + b"\x00")
        with open(f, "rb") as fh:
            if size > HUGE_FILE:
                h.update(fh.read(EDGE))
                fh.seek(size - EDGE)
                h.update(fh.read(EDGE))
            else:
                while block := fh.read(8 << 20):
                    h.update(block)
    return h.hexdigest()
