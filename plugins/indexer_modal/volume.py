"""The Modal Volume as this machine reaches it: an :class:`indexer.state.Location`, so that the pipeline sends and
fetches work-directory files through it and the executor stages inputs. Imported when a run needs it (it loads
pyarrow through :mod:`indexer.state`, which ``indexer --help`` must not)."""

from __future__ import annotations

from pathlib import Path

from indexer.state import LocalFolder, Location

from indexer_modal.remote import modal_errors
from indexer_modal.settings import ModalSettings


def volume(settings: ModalSettings, folder: str = "") -> Location:
    """The Volume (or ``folder`` of it), as this machine reaches it."""
    if settings.run == "local":
        return LocalFolder(settings.volume_root() / folder)
    return ModalVolume(settings, folder)


class ModalVolume(Location):
    """``folder`` of the Modal Volume, through Modal's client (the containers mount it at ``settings.mount``)."""

    def __init__(self, settings: ModalSettings, folder: str = ""):
        import modal

        self.settings = settings
        self.prefix = folder.strip("/")
        self.path = str(settings.volume_root() / self.prefix)
        self.volume = modal.Volume.from_name(settings.volume, create_if_missing=True)

    def _full(self, rel: str) -> str:
        return f"{self.prefix}/{rel}".strip("/") if self.prefix else rel

    def listing(self, folder: str = "") -> set[str]:
        import modal.exception
        from modal.volume import FileEntryType

        with modal_errors(self.settings.app_name):
            try:
                entries = self.volume.listdir(self._full(folder) or "/", recursive=True)
            except (FileNotFoundError, modal.exception.NotFoundError):  # nothing there yet
                return set()
        start = len(self.prefix) + 1 if self.prefix else 0
        return {e.path.lstrip("/")[start:] for e in entries if e.type == FileEntryType.FILE}

    def upload(self, files: list[tuple[Path, str]]) -> None:
        if not files:
            return
        with modal_errors(self.settings.app_name), self.volume.batch_upload(force=True) as batch:
            for src, rel in files:
                batch.put_file(str(src), "/" + self._full(rel))

    def download(self, rel: str, dest: Path) -> None:
        with modal_errors(self.settings.app_name), open(dest, "wb") as f:
            self.volume.read_file_into_fileobj(self._full(rel), f)
