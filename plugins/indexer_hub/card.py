"""The dataset card (``README.md``): a YAML header the Hub and ``datasets`` read, a body people read.

Everything ``indexer import`` needs to rebuild a searchable table lives in the header under the key ``indexer``
(model fingerprint, embedder, chunking, source, counts), so the card is the one place that describes the vectors
and cannot disagree with a sidecar file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from indexer.config import EMBEDDER_SETTINGS
from indexer.errors import ConfigError
from indexer.plugins import get_host

from .layout import COLUMN_DOCS, SPLIT, Stats, data_files_pattern, published_schema

CARD_FORMAT = 1
TASK_CATEGORIES = ["feature-extraction", "sentence-similarity", "text-retrieval"]
# The Hub's size_categories values, by row count.
SIZE_CATEGORIES = [
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T"),
]


def size_category(rows: int) -> str:
    return next((label for limit, label in SIZE_CATEGORIES if rows < limit), "n>1T")


def _is_local_path(name: str) -> bool:
    return name.startswith(("/", "~", "./", "../", "\\")) or (len(name) > 1 and name[1] == ":") or os.path.isdir(name)


def public_model_name(name: str) -> str:
    """A model id as is; a local folder by its last component (its absolute path means nothing to a reader
    and may say more about the publisher's machine than they intend)."""
    return Path(name.rstrip("/\\")).name if _is_local_path(name) else name


def describe_source(identity: str | None, override: str | None = None) -> dict[str, Any]:
    """``{"name", "revision", "selection"}`` from a source's identity (``hub:owner/name@commit:split=train``,
    ``jsonl:/path/file.jsonl``) or from the user's ``NAME[@REVISION]``."""
    if override:
        name, _, revision = override.partition("@")
        return {"name": name, "revision": revision or None, "selection": None}
    if not identity:
        return {"name": "unknown", "revision": None, "selection": None}
    kind, _, rest = identity.partition(":")
    if kind == "hub":
        repo_rev, _, selection = rest.partition(":")
        repo, _, revision = repo_rev.partition("@")
        return {"name": repo, "revision": revision or None, "selection": selection or None}
    path, _, selection = rest.partition(":") if kind == "hf-disk" else (rest, "", "")
    return {"name": Path(path).name or path, "revision": None, "selection": selection or None, "format": kind}


def public_meta(meta: dict[str, Any], table: str, source_name: str | None = None) -> dict[str, Any]:
    """The table's metadata as it goes on a public card: no local paths, no options the embedder declares secret
    (credentials, private endpoints)."""
    model = dict(meta["model"])
    model["name"] = public_model_name(model["name"])
    embedder = dict(meta.get("embedder") or {})
    if embedder:
        embedder["model"] = public_model_name(str(embedder.get("model", model["name"])))
        embedder["options"] = get_host().public_options("embedder", str(embedder.get("name", "")),
                                                        embedder.get("options") or {}, keep=EMBEDDER_SETTINGS)
    return {
        "format": CARD_FORMAT,
        "table": table,
        "model": model,
        "embedder": embedder,
        "chunking": meta.get("chunking"),
        "chunkset": meta.get("chunkset"),
        "source": describe_source(meta.get("source"), source_name),
    }


def build_card(indexer_meta: dict[str, Any], stats: Stats, *, repo_id: str, license: str | None,
               pretty_name: str | None = None) -> Any:
    """The card for a folder whose data files ``stats`` describes."""
    from datasets import DatasetInfo, Features
    from datasets.info import DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from huggingface_hub import DatasetCard, DatasetCardData

    model, source = indexer_meta["model"], indexer_meta["source"]
    model_short = model["name"].rstrip("/").split("/")[-1]
    header = {**indexer_meta, "stats": stats.to_dict()}
    data = DatasetCardData(
        license=license or "unknown",
        pretty_name=pretty_name or f"{source['name']} embedded with {model_short}",
        task_categories=TASK_CATEGORIES,
        size_categories=[size_category(stats.rows)],
        tags=["embeddings", "indexer", model_short],
        source_datasets=[source["name"]] if source.get("revision") and "/" in source["name"] else None,
        configs=[{"config_name": "default", "data_files": [{"split": SPLIT, "path": data_files_pattern(len(stats.files))}]}],
        indexer=header,
    )
    splits = SplitDict()
    splits.add(SplitInfo(name=SPLIT, num_bytes=stats.num_bytes, num_examples=stats.rows))
    info = DatasetInfo(features=Features.from_arrow_schema(published_schema(model["dimension"])), splits=splits,
                       download_size=stats.download_size, dataset_size=stats.num_bytes)
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{_body(header, repo_id, data.pretty_name, data.license)}")


def read_card(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(DatasetCard, its indexer section)`` of a published folder; :class:`ConfigError` for any other folder."""
    from huggingface_hub import DatasetCard

    path = Path(folder) / "README.md"
    if not path.is_file():
        raise ConfigError(f"{folder} has no README.md: it is not a dataset published by indexer")
    card = DatasetCard.load(path)
    section = card.data.to_dict().get("indexer")
    if not isinstance(section, dict) or "model" not in section:
        raise ConfigError(f"the card in {folder} has no 'indexer' section: the dataset was not published by indexer, "
                          "so nothing says which model made its vectors")
    if section.get("format") != CARD_FORMAT:
        raise ConfigError(f"the card in {folder} has indexer format {section.get('format')!r}; this indexer reads "
                          f"format {CARD_FORMAT}: upgrade indexer")
    return card, section


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _body(h: dict[str, Any], repo_id: str, title: str, license: str) -> str:
    m, s, ch, e, st = h["model"], h["source"], h.get("chunking") or {}, h.get("embedder") or {}, h["stats"]
    normalized = bool(m.get("normalize"))
    source_rev = s.get("revision") or "not recorded (local files)"
    options = ", ".join(f"{k}={v}" for k, v in (e.get("options") or {}).items()) or "defaults"
    columns = "\n".join(f"| `{name}` | {_column_type(name, m['dimension'])} | {doc} |" for name, doc in COLUMN_DOCS.items())
    score = "embeddings @ query" if normalized else "(embeddings @ query) / np.linalg.norm(embeddings, axis=1)"
    return f"""# {title}

Chunks of **{s['name']}** with their embeddings by **{m['name']}**, made with
indexer. One row per chunk: {st['rows']:,} chunks of
{st['documents']:,} documents, {st['tokens']:,} tokens. License: `{license}`.

## How the vectors were made

| | |
|---|---|
| Source dataset | `{s['name']}`{f" ({s['selection']})" if s.get('selection') else ""} |
| Source revision | `{source_rev}` |
| Model | `{m['name']}` |
| Model revision | `{m['revision']}` |
| Model fingerprint | `{m['fingerprint']}` (hash of the files that determine the vectors) |
| Embedder | `{e.get('name', 'n/a')}` ({options}) |
| Kind | {m.get('kind', 'dense')} |
| Dimension | {m['dimension']} |
| Pooling | {m['pooling']} |
| Normalised | {_yes(normalized)}{" (unit length: dot product = cosine similarity)" if normalized else ""} |
| Precision | {m['precision']} (the model ran at this precision; vectors are stored as float32) |
| Model max tokens | {m['max_tokens']} |

## Chunking

| | |
|---|---|
| Chunker | {ch.get('chunker', 'n/a')} |
| Max tokens per chunk | {ch.get('max_tokens', 'n/a')} |
| Overlap | {ch.get('overlap', 'n/a')} tokens |
| Min tokens | {ch.get('min_tokens', 'n/a')} |
| Boundaries | {ch.get('boundaries', 'n/a')} |
| Tokenizer | `{ch.get('tokenizer', 'n/a')}` |

## Size

| | |
|---|---|
| Rows (chunks) | {st['rows']:,} |
| Documents | {st['documents']:,} |
| Tokens | {st['tokens']:,} |
| Data files | {st['files']:,} parquet file(s), {st['download_size']:,} bytes |

## Columns

| Column | Type | Meaning |
|---|---|---|
{columns}

## Load it

With `datasets`:

```python
from datasets import load_dataset

ds = load_dataset("{repo_id}", split="train")
```

Into LanceDB, searchable with `indexer search` (no re-embedding; the model's fingerprint is checked):

```bash
indexer import {repo_id} --db index.lancedb
indexer search "your question" --db index.lancedb
```

## Search it

Embed the query with the same model ({m['pooling']} pooling{", normalised" if normalized else ""}), then rank by
cosine similarity. With plain numpy:

```python
import numpy as np
from datasets import load_dataset
from sentence_transformers import SentenceTransformer

ds = load_dataset("{repo_id}", split="train")
embeddings = ds.with_format("numpy", columns=["embedding"])[:]["embedding"]  # ({st['rows']:,}, {m['dimension']}) float32
model = SentenceTransformer("{m['name']}")
query = model.encode("your question", normalize_embeddings={normalized})
scores = {score}
for i in np.argsort(-scores)[:10]:
    print(round(float(scores[i]), 4), ds[int(i)]["doc_id"], ds[int(i)]["text"][:80])
```

With LanceDB by hand:

```python
import lancedb
from datasets import load_dataset
from sentence_transformers import SentenceTransformer

chunks = lancedb.connect("index.lancedb").create_table(
    "chunks", data=load_dataset("{repo_id}", split="train").data.table, mode="overwrite")
query = SentenceTransformer("{m['name']}").encode("your question", normalize_embeddings={normalized})
hits = chunks.search(query, vector_column_name="embedding").distance_type("cosine").limit(10).to_list()
```
"""


def _column_type(name: str, dimension: int) -> str:
    return {
        "chunk_index": "int32", "token_count": "int32", "offsets": "struct<start: int64, end: int64>",
        "embedding": f"float32[{dimension}]",
    }.get(name, "string")
