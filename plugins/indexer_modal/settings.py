"""Settings of the Modal app, read from ``INDEXER_MODAL_*`` environment variables.

They are read where ``modal deploy`` runs (they shape the app: GPU type, image, container limits) and passed on to
the containers as environment variables, so the code in a container sees the settings it was deployed with. They
are declared as options (:mod:`indexer.options`) whose environment variable is ``INDEXER_MODAL_`` + the name in
capitals, so their types, bounds and descriptions live in one place and ``indexer plugins --options`` lists them
with the ``modal`` executor. This module imports nothing heavy: the plugin reads it at CLI start.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from indexer.errors import ConfigError
from indexer.options import Options, option

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
class ModalSettings(Options):
    """Every knob of the Modal app. Environment variable: ``INDEXER_MODAL_`` + the field name in capitals."""

    env_prefix: ClassVar[str] = PREFIX

    app_name: str = option("indexer", "the deployed Modal app's name")
    volume: str = option("indexer-data", "the Modal Volume: work directory, staged inputs, Hugging Face cache")
    mount: str = option("/data", "where containers see the Volume (an absolute path)")
    secrets: tuple[str, ...] = option(("huggingface",), "Modal secret names, comma-separated (HF_TOKEN for gated "
                                      "models)")

    gpu: str = option("A10G", "GPU type of the TEI containers (T4, A10G, L4, A100, H100, ...)")
    gpu_containers: int = option(10, "most GPU containers at once", ge=1)
    gpu_concurrency: int = option(8, "embedding batches in flight per GPU container (TEI batches them together)",
                                  ge=1)
    gpu_timeout: int = option(600, "seconds one batch may take", ge=1)
    gpu_startup_timeout: int = option(1200, "seconds a container may take to start TEI (the first one downloads "
                                      "the model)", ge=1)
    gpu_idle_seconds: int = option(120, "an idle GPU container stops after this long", ge=2, le=3600)
    tei_version: str = option("1.9", "TEI release whose image the GPU containers run")
    tei_image: str = option("", "a full image reference (default: TEI's image for the GPU's architecture)")
    router: str = option("text-embeddings-router", "the TEI server command in the image")
    router_args: str = option("--max-client-batch-size 512", "arguments of the TEI server command")
    port: int = option(8000, "the port TEI listens on in its container", ge=1)
    tokenizer: str = option("", "the served model's tokenizer.json (default: the one TEI downloaded into the cache)")

    cpu_containers: int = option(50, "most chunking containers (shards in flight) at once", ge=1)
    cpu: float = option(2.0, "cores per chunking container", gt=0)
    memory: int = option(4096, "MiB per chunking container", ge=1)
    shard_timeout: int = option(3600, "seconds one shard may take", ge=1)
    retries: int = option(2, "Modal retries a shard or a batch whose container failed", ge=0)

    run: str = option("modal", "modal, or local: run the functions' bodies in this process (Modal's .local()), no "
                      "Modal account", choices=("modal", "local"))
    local_volume: str = option("", "the folder that stands in for the Volume when run=local")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ModalSettings":
        settings = cls.parse({}, owner="modal app", environ=environ)
        settings.check()
        return settings

    def check(self) -> None:
        """What the declaration cannot say: the mount is absolute, the GPU has a TEI image."""
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
