"""Uploading a published folder to the Hub in commits it accepts, resuming where an interrupted upload stopped.

huggingface_hub removed ``multi_commits``, and 2.x has no ``upload_large_folder``; ``upload_folder`` makes one
commit of everything, which the Hub refuses or times out on past a few hundred files. So the split is ours:

* data files in name order, at most ``commit_files`` files (the Hub recommends fewer than 100 per commit) and
  ``commit_bytes`` bytes per commit (what an interruption can cost), then the card alone in a last commit, so
  the card never describes data that is not there yet; that commit also deletes the data files an earlier
  publish left and this one does not have;
* before each commit, the Hub is asked which of its files it already holds with the same content (the LFS
  sha256 of a parquet file, the git blob sha1 of a small file); those are left out, and a commit with nothing
  left is skipped. A rerun after an interruption uploads only what is missing.

The token is never passed around: ``HfApi`` finds it (``HF_TOKEN`` or the user's login) on each request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.errors import ConfigError, IndexerError
from indexer.log import get_logger

from .layout import DATA_DIR

log = get_logger("hub")

REPO_TYPE = "dataset"
CARD = "README.md"
DEFAULT_COMMIT_FILES = 50
DEFAULT_COMMIT_BYTES = 10 << 30


class UploadError(IndexerError):
    """The Hub refused or the network failed; rerunning resumes."""


@dataclass(frozen=True)
class LocalFile:
    path_in_repo: str
    local: Path
    size: int
    sha256: str
    git_sha1: str  # what the Hub reports as blob id for a file kept in git rather than LFS


@dataclass
class Commit:
    files: list[LocalFile]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass
class UploadReport:
    commits_planned: int = 0
    commits_made: int = 0
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already on the Hub with the same content
    deleted: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0


def hash_file(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, read once."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {size}\0".encode())
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            sha256.update(block)
            sha1.update(block)
    return sha256.hexdigest(), sha1.hexdigest()


def folder_files(folder: str | Path) -> list[LocalFile]:
    """The files a publish uploads: the data files in name order, then the card."""
    root = Path(folder)
    paths = sorted(p for p in (root / DATA_DIR).rglob("*.parquet") if p.is_file())
    card = root / CARD
    if not paths or not card.is_file():
        raise ConfigError(f"{root} is not a published folder (it needs {DATA_DIR}/*.parquet and {CARD})")
    out = []
    for p in [*paths, card]:
        sha256, sha1 = hash_file(p)
        out.append(LocalFile(p.relative_to(root).as_posix(), p, p.stat().st_size, sha256, sha1))
    return out


def plan_commits(files: list[LocalFile], *, commit_files: int = DEFAULT_COMMIT_FILES,
                 commit_bytes: int = DEFAULT_COMMIT_BYTES) -> list[Commit]:
    """Data files packed into commits of bounded files and bytes (a file over ``commit_bytes`` goes alone),
    then the card alone."""
    *data, card = files
    commits: list[Commit] = []
    current: list[LocalFile] = []
    size = 0
    for f in data:
        if current and (len(current) >= commit_files or size + f.size > commit_bytes):
            commits.append(Commit(current))
            current, size = [], 0
        current.append(f)
        size += f.size
    if current:
        commits.append(Commit(current))
    commits.append(Commit([card]))
    return commits


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable: the loop returns at TB


def render_plan(commits: list[Commit], *, repo_id: str, revision: str, private: bool) -> str:
    files = sum(len(c.files) for c in commits)
    total = sum(c.size for c in commits)
    lines = [f"plan: datasets/{repo_id} (branch {revision}{', private' if private else ''}): "
             f"{len(commits)} commit(s), {files} file(s), {human_bytes(total)}"]
    for i, c in enumerate(commits, 1):
        what = "the dataset card; deletes data files a previous publish left" if c.files[0].path_in_repo == CARD else "data"
        lines.append(f"  commit {i}/{len(commits)}: {len(c.files)} file(s), {human_bytes(c.size)} ({what})")
        lines.extend(f"    {f.path_in_repo}  {human_bytes(f.size)}  sha256 {f.sha256[:16]}" for f in c.files)
    return "\n".join(lines)


def require_token() -> None:
    """Fail before any work when no token can be found (the token itself is never read into our code)."""
    from huggingface_hub import get_token

    if not get_token():
        raise ConfigError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login` (--dry-run needs none)")


def _network_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.utils import HfHubHTTPError

    return (HfHubHTTPError, OSError)


def _same_content(local: LocalFile, remote: Any) -> bool:
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return lfs.sha256 == local.sha256  # BlobLfsInfo.sha256 is the hex oid
    return getattr(remote, "blob_id", None) == local.git_sha1


def upload_in_commits(folder: str | Path, repo_id: str, *, revision: str = "main", private: bool = False,
                  commit_files: int = DEFAULT_COMMIT_FILES, commit_bytes: int = DEFAULT_COMMIT_BYTES,
                  say: Callable[[str], None] = log.info) -> UploadReport:
    """Upload ``folder`` (data files and card) to the dataset repo ``repo_id`` at branch ``revision``, creating
    both when missing; skip files the Hub already holds. Raises :class:`UploadError` on a network or Hub error."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.utils import EntryNotFoundError

    api = HfApi()
    commits = plan_commits(folder_files(folder), commit_files=commit_files, commit_bytes=commit_bytes)
    report = UploadReport(commits_planned=len(commits))
    local_data = {f.path_in_repo for c in commits[:-1] for f in c.files}
    step = "creating the repository"
    try:
        # Without --private the Hub's default visibility applies (an organisation may make new repos private).
        url = api.create_repo(repo_id, repo_type=REPO_TYPE, private=True if private else None, exist_ok=True)
        say(f"repository {getattr(url, 'url', url)}")
        if revision != "main":
            step = f"creating branch {revision}"
            api.create_branch(repo_id, repo_type=REPO_TYPE, branch=revision, exist_ok=True)
        for i, commit in enumerate(commits, 1):
            step = f"commit {i}/{len(commits)}"
            paths = [f.path_in_repo for f in commit.files]
            remote = {info.path: info for info in api.get_paths_info(repo_id, paths, repo_type=REPO_TYPE, revision=revision)}
            todo = [f for f in commit.files if not _same_content(f, remote.get(f.path_in_repo))]
            report.skipped += [f.path_in_repo for f in commit.files if f not in todo]
            deletions: list[str] = []
            if i == len(commits):
                try:
                    tree = api.list_repo_tree(repo_id, path_in_repo=DATA_DIR, recursive=True, repo_type=REPO_TYPE,
                                              revision=revision)
                    deletions = sorted(e.path for e in tree if hasattr(e, "blob_id") and e.path not in local_data)
                except EntryNotFoundError:
                    deletions = []
            if not todo and not deletions:
                say(f"{step}: all {len(commit.files)} file(s) already on the Hub, skipped")
                continue
            ops = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local)) for f in todo]
            ops += [CommitOperationDelete(path_in_repo=p) for p in deletions]
            size = sum(f.size for f in todo)
            say(f"{step}: uploading {len(todo)} file(s), {human_bytes(size)}"
                + (f"; {len(commit.files) - len(todo)} already on the Hub" if len(todo) < len(commit.files) else "")
                + (f"; deleting {len(deletions)} stale data file(s)" if deletions else ""))
            names = ", ".join(paths) if len(paths) <= 3 else f"{paths[0]} … {paths[-1]}"
            api.create_commit(repo_id, operations=ops, commit_message=f"indexer: {names} ({i}/{len(commits)})",
                              repo_type=REPO_TYPE, revision=revision)
            report.commits_made += 1
            report.uploaded += [f.path_in_repo for f in todo]
            report.deleted += deletions
            report.bytes_uploaded += size
    except _network_errors() as exc:
        raise UploadError(
            f"upload to {repo_id} stopped at {step}: {type(exc).__name__}: {exc}\n"
            f"{report.commits_made} commit(s) finished; run the same command again to resume (files already on the "
            "Hub are skipped)"
        ) from exc
    return report
