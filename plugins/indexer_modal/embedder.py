"""The ``modal-tei`` embedder: vectors from TEI on Modal GPUs (the deployed app's ``TEIServer`` class).

A shard's chunks are packed into token-budget batches (the base class's packing), and the batches are ``.map``-ed
over the GPU containers with ``order_outputs=False``: each batch carries its chunks' positions as keys and comes
back with them, so whatever order batches finish in, every vector lands on its own chunk.

The model's identity (its :class:`ModelInfo`), its tokenizer (which the chunker cuts with) and its token limit come
from the GPU container, as the ``tei`` embedder computes them against the router there; so a vector set made on
Modal has the same key as one made through any other TEI server of the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from indexer.components import Embedder, EmbedderOptions
from indexer.config import DEFAULT_MODEL
from indexer.errors import ConfigError
from indexer.options import option
from indexer.types import Chunk, ModelInfo

from indexer_modal.remote import call_local, modal_errors
from indexer_modal.settings import ModalSettings

_LOCAL_SERVERS: dict[tuple[str, str], Any] = {}  # (model, revision) → TEIServer object, for run=local


@dataclass(frozen=True)
class ModalTEIOptions(EmbedderOptions):
    revision: str = option("", "a branch, tag or commit of the model (default: main)")


class ModalTEIEmbedder(Embedder):
    """Embeds through the ``TEIServer`` GPU class of the Modal app (``modal deploy -m indexer_modal.app``).

    :param model: the Hub model id TEI serves (a container pool per model).
    :param batch_tokens: padded tokens per batch sent to a GPU container.
    :param device: accepted like every embedder's; the GPU type is the app's setting (``INDEXER_MODAL_GPU``).
    """

    description = "TEI on Modal GPUs: batches .map-ed over the indexer_modal app's TEIServer containers"
    portable = True  # the model is in the GPU containers, reached through Modal
    name = "modal-tei"
    Options = ModalTEIOptions

    def __init__(self, model: str = DEFAULT_MODEL, **options: Any):
        super().__init__(model, **options)
        self.revision = self.options.revision
        self._server: Any = None
        self._described: dict[str, Any] | None = None
        self._tokenizer: Any = None

    def check(self) -> None:
        if self.precision not in ("auto", "fast"):
            raise ConfigError("the modal-tei embedder runs whatever dtype TEI serves; use --precision auto, and choose "
                              "the dtype with INDEXER_MODAL_ROUTER_ARGS='--dtype float32' at deploy time")
        self.describe()

    # -- the GPU class -------------------------------------------------------------------------------------------

    def server(self) -> "_Calls":
        if self._server is None:
            settings = ModalSettings.from_env()
            if settings.run == "local":
                from indexer_modal import app

                key = (self.model, self.revision)
                if key not in _LOCAL_SERVERS:
                    _LOCAL_SERVERS[key] = app.TEIServer(model=self.model, revision=self.revision)
                self._server = _LocalCalls(_LOCAL_SERVERS[key], settings.gpu_concurrency)
            else:
                import modal

                cls = modal.Cls.from_name(settings.app_name, "TEIServer")
                self._server = _RemoteCalls(cls(model=self.model, revision=self.revision), settings.app_name)
        return self._server

    def describe(self) -> dict[str, Any]:
        """The served model's info, tokenizer and limit (one call; it starts a GPU container if none runs)."""
        if self._described is None:
            self._described = self.server().call("describe")
        return self._described

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(**self.describe()["info"])

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_str(self.describe()["tokenizer_json"])
        return self._tokenizer

    def tokenizer_key(self) -> str:
        return self.describe()["tokenizer_key"]

    def content_token_limit(self) -> int:
        return int(self.describe()["content_token_limit"])

    # -- embedding -----------------------------------------------------------------------------------------------

    def embed(self, chunks: Sequence[Chunk], progress: Callable[[int], None] | None = None) -> Any:
        import numpy as np

        dim = self.info.dimension
        if not chunks:
            return np.zeros((0, dim), dtype=np.float32)
        batches = []
        for idx in self.batches(chunks):
            picked = [chunks[i] for i in idx]
            batches.append({
                "keys": idx,
                "labels": [c.id for c in picked],
                "texts": [c.text for c in picked],
                "token_counts": [c.token_count for c in picked],
                "token_ids": [list(c.token_ids) if c.token_ids is not None else None for c in picked],
            })
        out = np.empty((len(chunks), dim), dtype=np.float32)
        filled = np.zeros(len(chunks), dtype=bool)
        for keys, vectors in self.server().map("embed", batches):
            out[keys] = np.asarray(vectors, dtype=np.float32)
            filled[keys] = True
            if progress:
                progress(len(keys))
        if not filled.all():
            missing = int((~filled).sum())
            raise RuntimeError(f"the GPU containers returned no vectors for {missing} of {len(chunks)} chunks")
        return out

    def embed_batch(self, chunks: Sequence[Chunk]) -> Any:
        return self.embed(chunks)

    def embed_queries(self, queries: Sequence[str]) -> Any:
        import numpy as np

        if not queries:
            return np.zeros((0, self.info.dimension), dtype=np.float32)
        return np.asarray(self.server().call("embed_queries", list(queries)), dtype=np.float32)


class _Calls:
    """How the embedder reaches ``TEIServer``: ``call`` one method, ``map`` one over inputs (any order out)."""

    def call(self, method: str, *args: Any) -> Any:
        raise NotImplementedError

    def map(self, method: str, inputs: list[Any]) -> Iterator[Any]:
        raise NotImplementedError


class _RemoteCalls(_Calls):
    def __init__(self, obj: Any, app_name: str):
        self.obj, self.app_name = obj, app_name

    def call(self, method: str, *args: Any) -> Any:
        with modal_errors(self.app_name):
            return getattr(self.obj, method).remote(*args)

    def map(self, method: str, inputs: list[Any]) -> Iterator[Any]:
        with modal_errors(self.app_name):
            yield from getattr(self.obj, method).map(inputs, order_outputs=False)


class _LocalCalls(_Calls):
    """``run=local``: the methods' bodies in this process through ``.local()``, ``concurrency`` at a time and
    yielded as they finish, as containers would."""

    def __init__(self, obj: Any, concurrency: int):
        self.obj, self.concurrency = obj, concurrency

    def call(self, method: str, *args: Any) -> Any:
        return call_local(getattr(self.obj, method), *args)

    def map(self, method: str, inputs: list[Any]) -> Iterator[Any]:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        self.call("describe")  # enter (start the router) once, before threads race to do it
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="modal-local") as pool:
            futures = [pool.submit(call_local, getattr(self.obj, method), x) for x in inputs]
            for future in as_completed(futures):
                yield future.result()

