"""Settings of the Modal app, read from ``INDEXER_MODAL_*`` environment variables.

They are read where ``modal deploy`` runs (they shape the app: GPU type, image, container limits) and passed on to
the containers as environment variables, so the code in a container sees the settings it was deployed with. This
module imports nothing heavy: the plugin reads it at CLI start.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import ConfigError

PREFIX = "INDEXER_MODAL_"

# TEI publishes one CUDA image per GPU architecture; the tag prefix says which (TEI's README, "Docker images").
_TEI_TAG_PREFIX = {
    "T4": "turing-",  # Turing, compute capability 7.5
    "A100": "", "A100-40GB": "", "A100-80GB": "", "A30": "",  # Ampere 8.0
    "A10G": "86-", "A10": "86-", "A40": "86-", "A6000": "86-",  # Ampere 8.6
    "L4": "89-", "L40S": "89-", "L40": "89-",  # Ada Lovelace 8.9
    "H100": "hopper-", "H200": "hopper-",  # Hopper 9.0
    "B200": "100-",  # Blackwell 10.0
}


@dataclass(frozen=True)
class ModalSettings:
    """Every knob of the Modal app. Environment variable: ``INDEXER_MODAL_`` + the field name in capitals."""

    app_name: str = "indexer"
    volume: str = "indexer-data"  # holds the work directory, staged inputs and the Hugging Face cache
    mount: str = "/data"  # where containers see the Volume
    secrets: tuple[str, ...] = ("huggingface",)  # Modal secret names (comma-separated); HF_TOKEN for gated models

    gpu: str = "A10G"
    gpu_containers: int = 10  # most GPU containers at once
    gpu_concurrency: int = 8  # embedding batches in flight per GPU container (TEI batches them together)
    gpu_timeout: int = 600  # seconds one batch may take
    gpu_startup_timeout: int = 1200  # seconds a container may take to start TEI (the first one downloads the model)
    gpu_idle_seconds: int = 120  # an idle GPU container stops after this long
    tei_version: str = "1.9"
    tei_image: str = ""  # a full image reference; default: TEI's image for the GPU's architecture
    router: str = "text-embeddings-router"  # the TEI server command in the image
    router_args: str = "--max-client-batch-size 512"
    port: int = 8000
    tokenizer: str = ""  # the served model's tokenizer.json (default: the one TEI downloaded into the cache)

    cpu_containers: int = 50  # most chunking containers (shards in flight) at once
    cpu: float = 2.0  # cores per chunking container
    memory: int = 4096  # MiB per chunking container
    shard_timeout: int = 3600  # seconds one shard may take
    retries: int = 2  # Modal retries a shard or a batch whose container failed

    run: str = "modal"  # "local": run the functions' bodies in this process (Modal's .local()), no Modal account
    local_volume: str = ""  # the folder that stands in for the Volume when run=local

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ModalSettings":
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            try:
                if f.type == "tuple[str, ...]":
                    values[f.name] = tuple(s.strip() for s in raw.split(",") if s.strip())
                elif f.type == "int":
                    values[f.name] = int(raw)
                elif f.type == "float":
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                raise ConfigError(f"{PREFIX}{f.name.upper()}={raw!r} is not a valid {f.type}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.run not in ("modal", "local"):
            raise ConfigError(f"{PREFIX}RUN must be modal or local (got {self.run!r})")
        for name in ("gpu_containers", "gpu_concurrency", "gpu_timeout", "gpu_startup_timeout", "cpu_containers",
                     "memory", "shard_timeout", "port"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{PREFIX}{name.upper()} must be at least 1 (got {getattr(self, name)})")
        if self.cpu <= 0 or self.retries < 0 or not 2 <= self.gpu_idle_seconds <= 3600:
            raise ConfigError(f"{PREFIX}CPU must be positive, {PREFIX}RETRIES at least 0 and "
                              f"{PREFIX}GPU_IDLE_SECONDS between 2 and 3600")
        if not self.mount.startswith("/"):
            raise ConfigError(f"{PREFIX}MOUNT must be an absolute path (got {self.mount!r})")
        self.tei_image_ref()

    def tei_image_ref(self) -> str:
        """The TEI image for this GPU: ``ghcr.io/huggingface/text-embeddings-inference:<arch prefix><version>``."""
        if self.tei_image:
            return self.tei_image
        kind = self.gpu.split(":")[0].upper()
        prefix = next((p for name, p in _TEI_TAG_PREFIX.items() if name.upper() == kind), None)
        if prefix is None:
            raise ConfigError(
                f"no TEI image known for GPU {self.gpu!r} (known: {', '.join(_TEI_TAG_PREFIX)}); "
                f"set {PREFIX}TEI_IMAGE to the image for its architecture"
            )
        return f"ghcr.io/huggingface/text-embeddings-inference:{prefix}{self.tei_version}"

    def router_command(self) -> list[str]:
        return shlex.split(self.router) + shlex.split(self.router_args)

    def volume_root(self) -> Path:
        """Where this process sees the Volume: its mount in a container, the stand-in folder in a local run."""
        if self.run == "local":
            return Path(self.local_volume or Path.home() / ".cache" / "indexer" / "modal-volume").expanduser()
        return Path(self.mount)

    def env(self) -> dict[str, str]:
        """The ``INDEXER_MODAL_*`` variables that reproduce these settings in a container."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[PREFIX + f.name.upper()] = ",".join(value) if isinstance(value, tuple) else str(value)
        return out

    def container_env(self) -> dict[str, str]:
        """Environment of every container: these settings, and the Hugging Face cache on the Volume, shared by
        TEI (model weights) and the Hub source (dataset files) so that each is downloaded once."""
        hub = f"{self.mount}/hf/hub"
        return {**self.env(), f"{PREFIX}RUN": "modal", "HF_HOME": f"{self.mount}/hf", "HF_HUB_CACHE": hub,
                "HUGGINGFACE_HUB_CACHE": hub, "TOKENIZERS_PARALLELISM": "true"}
