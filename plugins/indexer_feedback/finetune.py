"""``indexer finetune``: train the embedding model on the stored feedback pairs.

Three steps, split so that the middle one can run anywhere (this machine's CPU or GPU, or a Modal GPU):

1. :func:`prepare` (here, next to the index): read the pairs, resolve their ids to passages of the current table,
   split them 80/20 *by document* (a held-out document never appears in training, not even as a negative), mine
   hard negatives for each training pair by searching the current table (high-ranked documents that are not
   judged relevant for that query), and measure the current table on the held-out pairs (**before**).
2. :func:`train` (a pure function of a JSON payload): sentence-transformers training with
   MultipleNegativesRankingLoss (or its cached variant for big batches) and a batch sampler that keeps duplicate
   texts out of a batch (a duplicate would be an in-batch "negative" that is really a positive); then the same
   held-out measurement with the new weights (**after**); saves the model with its sentence-transformers card.
3. :func:`finetune` ties them together and writes ``indexer_finetune.json`` (base model, data, split, settings,
   metrics and the held-out judgements, which ``indexer reembed`` scores both tables on) and a note in the card.

The held-out measurement ranks a bounded evaluation corpus — the whole table when it has at most
``eval_max_chunks`` chunks, else the held-out documents plus the current table's top candidates for every
held-out query — by each document's best chunk, in the table's search settings: in text or hybrid mode the
table's full-text ranking of each query (restricted to the evaluation corpus, and the same before and after, as
it does not depend on the model) is fused with the model's dense ranking, documents fused per document. On a
bounded corpus "after" is slightly optimistic (documents the old model never ranked high are not there to
distract the new one); ``indexer reembed`` measures both tables in full.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.config import DEFAULT_DB
from indexer.errors import ConfigError
from indexer.log import get_logger
from indexer.metrics import evaluate
from indexer_feedback.judgements import (
    Judgement,
    is_heldout,
    qrels_of,
    rank_by_doc,
    read_chunks,
    resolve,
    rows_of,
)

log = get_logger("feedback")
RECORD = "indexer_finetune.json"


def read_record(model: str) -> dict[str, Any] | None:
    """What ``indexer finetune`` recorded beside the model it saved at ``model`` (its split, held-out judgements,
    metrics); None when ``model`` is not such a folder."""
    record = Path(model) / RECORD
    return json.loads(record.read_text()) if record.is_file() else None
LOSSES = ("mnrl", "cached-mnrl")
# Candidates per held-out query kept in a bounded evaluation corpus.
EVAL_CANDIDATES = 20


@dataclass
class FinetuneSettings:
    """What ``indexer finetune`` does; every field is a flag of the command."""

    db: str = DEFAULT_DB
    table: str | None = None  # table or alias; None = the alias "current", else the only table
    model: str | None = None  # base model; None = the model of the table
    output: str | None = None  # None = <work dir>/models/<base>-ft-<time>
    store: str = "lancedb"
    work_dir: str | None = None
    holdout: float = 0.2
    split_seed: int = 0
    seed: int = 0
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup: float = 0.1
    loss: str = "mnrl"
    mini_batch_size: int = 32  # cached-mnrl: texts per forward pass, which bounds memory, not the batch
    negatives: int = 1  # hard negatives per training pair (0: in-batch negatives only)
    mine_k: int = 30  # documents searched per training query when mining
    margin: float = 0.05  # a mined negative must score below (1 - margin) x the positive: near-ties are likely relevant
    max_seq_length: int | None = None  # None = the model's own limit
    eval_max_chunks: int = 5000
    device: str = "auto"
    progress: bool = True

    def check(self) -> None:
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"--holdout must be at least 0 and below 1 (got {self.holdout})")
        if self.loss not in LOSSES:
            raise ConfigError(f"--loss must be one of {', '.join(LOSSES)} (got {self.loss!r})")
        if self.batch_size < 2:
            raise ConfigError(f"--batch-size must be at least 2: the other pairs of a batch are the negatives (got {self.batch_size})")
        if self.negatives < 0 or self.mine_k < 1:
            raise ConfigError("--negatives must be >= 0 and --mine-k >= 1")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("give --epochs > 0 or --max-steps > 0")
        if not 0 <= self.margin < 1:
            raise ConfigError(f"--margin must be in [0, 1) (got {self.margin})")


# --------------------------------------------------------------------------------------------------------------
# 1. prepare
# --------------------------------------------------------------------------------------------------------------


def base_model_path(name: str) -> Path:
    """The folder of model ``name``, found the way the local embedder finds it (path, Hugging Face cache, a
    package that ships it), so training starts from exactly the weights the table was embedded with."""
    from indexer.plugins import get_host

    embedder = get_host().component("embedder", "local")(name)
    embedder.check()
    return Path(embedder.model_path())  # the embedder's own lookup; no second copy of it here


def prepare(s: FinetuneSettings) -> dict[str, Any]:
    """Training triples, the held-out set and the current table's metrics on it, as one JSON-able payload."""
    from indexer.retrieval import aggregate_by_doc, open_index
    from indexer_feedback.store import FeedbackLog

    s.check()
    index = open_index(s.db, s.table, work_dir=s.work_dir)
    pairs = FeedbackLog(s.db, store=s.store).pairs()
    if not pairs:
        raise ConfigError(f"no feedback pairs in {s.db}: add some with `indexer feedback add` or `indexer feedback import`")
    judgements, rows, skipped = resolve(pairs, index.sink)
    heldout = [j for j in judgements if is_heldout(j.doc_id, s.split_seed, s.holdout)]
    held_docs = {j.doc_id for j in heldout}
    train_js = [j for j in judgements if j.doc_id not in held_docs]
    positives = [j for j in train_js if j.relevance > 0]
    if len(positives) < 2:
        raise ConfigError(
            f"{len(positives)} relevant training pair(s) after holding out {s.holdout:.0%} of the documents "
            f"({len(judgements)} pairs resolved, {len(skipped)} not found in table {index.table}); add more feedback"
        )

    # Every judged id of a query, relevant or not: none of them may be mined as that query's negative.
    judged: dict[str, set[str]] = defaultdict(set)
    explicit: dict[str, list[str]] = defaultdict(list)
    for j in judgements:
        judged[j.qid].add(j.doc_id)
        if j.relevance <= 0:
            explicit[j.qid].append(j.positive_id)
        for n in j.negative_ids:
            explicit[j.qid].append(n)
            if n in rows:
                judged[j.qid].add(rows[n][0]["doc_id"])
    query_texts = sorted({j.query for j in positives})
    t0 = time.perf_counter()
    qvecs = index.embedder.embed_queries(query_texts)
    qvec = dict(zip(query_texts, qvecs))
    fetch = max(s.mine_k * 5, s.mine_k + 50)
    hits = dict(zip(query_texts, (aggregate_by_doc(h, s.mine_k) for h in index.sink.search(qvecs, fetch))))
    rng = random.Random(s.seed)
    train_rows, mined, explicit_used = [], 0, 0
    for j in positives:
        pos_text, pos_score = _passage(j, rows, qvec[j.query])  # a judged chunk itself; a document's best chunk
        negatives: list[str] = []
        for n in explicit.get(j.qid, []):
            if n in rows and rows[n][0]["doc_id"] not in held_docs and len(negatives) < s.negatives:
                negatives.append(_passage_of(rows[n], qvec[j.query])[0])
                explicit_used += 1
        pool = [h for h in hits[j.query] if h.doc_id not in judged[j.qid] and h.doc_id not in held_docs]
        cutoff = pos_score * (1 - s.margin)
        for h in sorted(pool, key=lambda h: h.score > cutoff):  # safely below the positive first; stable order
            if len(negatives) >= s.negatives:
                break
            negatives.append(h.text)
            mined += 1
        if len(negatives) < s.negatives:  # a table of few documents: other training passages
            others = [o for o in positives if o.doc_id not in judged[j.qid]]
            while len(negatives) < s.negatives and others:
                other = rng.choice(others)
                negatives.append(_passage(other, rows, qvec[other.query])[0])
        train_rows.append({"anchor": j.query, "positive": pos_text, "negatives": negatives})
    # every row needs as many negative columns as the others
    per_row = min(len(r["negatives"]) for r in train_rows)
    for r in train_rows:
        del r["negatives"][per_row:]
    log.info(f"finetune: {len(train_rows):,} training pairs ({mined:,} mined and {explicit_used:,} explicit hard "
             f"negatives, {time.perf_counter() - t0:.1f}s), {len(heldout):,} held-out pairs on {len(held_docs):,} "
             "documents")

    evaluation = _evaluation_set(s, index, heldout, rows)
    return {
        "settings": dataclasses.asdict(s),
        "table": index.table,
        "table_model": index.meta["model"],
        "base_model": s.model or index.meta["embedder"]["model"],
        "train": train_rows,
        "eval": evaluation,
        "data": {
            "pairs": len(pairs),
            "resolved": len(judgements),
            "unresolved": skipped,
            "train_pairs": len(train_js),
            "train_relevant_pairs": len(positives),
            "heldout_pairs": len(heldout),
            "heldout_documents": len(held_docs),
            "sources": dict(Counter(p.source for p in pairs)),
            "mined_negatives": mined,
            "explicit_negatives": explicit_used,
        },
        "heldout": [{"query": j.query, "query_id": j.qid, "doc_id": j.doc_id, "relevance": j.relevance}
                    for j in heldout],
    }


def _passage_of(chunks: list[dict[str, Any]], qv: Any) -> tuple[str, float]:
    """The chunk of a document that best answers the query (by the current vectors), with its score."""
    import numpy as np

    q = np.asarray(qv, dtype=np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    vectors = np.asarray([r["vector"] for r in chunks], dtype=np.float32)
    cosines = vectors @ q / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)  # as the search ranks them
    best = int(np.argmax(cosines))
    return chunks[best]["text"], float(cosines[best])


def _passage(j: Judgement, rows: dict[str, list[dict[str, Any]]], qv: Any) -> tuple[str, float]:
    if j.positive_id in rows:
        return _passage_of(rows[j.positive_id], qv)
    return j.positive_text or "", 1.0


def _evaluation_set(s: FinetuneSettings, index: Any, heldout: list[Judgement],
                    rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The held-out queries, qrels, the evaluation corpus and the current table's metrics on it."""
    import numpy as np

    if not heldout or not any(j.relevance > 0 for j in heldout):
        return None
    queries, qrels = qrels_of(heldout)
    qids = sorted(queries)
    qvecs = index.embedder.embed_queries([queries[q] for q in qids])
    total = index.sink.count()
    if total <= s.eval_max_chunks:
        corpus = rows_of(index.sink, columns=["id", "doc_id", "text", "vector"])
        scope = "the whole table"
    else:
        chosen: dict[str, dict[str, Any]] = {}
        for j in heldout:
            for r in rows.get(j.positive_id, []):
                chosen[r["id"]] = r
        room = max(0, s.eval_max_chunks - len(chosen))
        results = index.sink.search(qvecs, EVAL_CANDIDATES)
        # rank by rank across queries, so that a cap keeps every query's best candidates
        candidates = list(dict.fromkeys(h.id for rank in range(EVAL_CANDIDATES) for hits in results
                                        if rank < len(hits) for h in [hits[rank]] if h.id not in chosen))[:room]
        for r in read_chunks(index.sink, candidates).values():
            chosen.setdefault(r[0]["id"], r[0])
        corpus = list(chosen.values())
        scope = f"held-out documents + the current table's top candidates for their queries (cap {s.eval_max_chunks:,})"
    vectors = np.asarray([r["vector"] for r in corpus], dtype=np.float32)
    doc_ids = [r["doc_id"] for r in corpus]
    settings = index.settings
    text: dict[str, list[tuple[str, float]]] = {}
    if settings.mode != "dense":
        from indexer.fusion import best_per_doc

        in_corpus = {r["id"] for r in corpus}
        found = index.sink.search_texts([queries[q] for q in qids], EVAL_CANDIDATES * 5)
        text = {q: [(h.doc_id, h.score) for h in best_per_doc([h for h in hits if h.id in in_corpus])]
                for q, hits in zip(qids, found)}
    evaluation = {
        "scope": scope,
        "queries": queries,
        "qrels": qrels,
        "corpus": [{"id": r["id"], "doc_id": r["doc_id"], "text": r["text"]} for r in corpus],
        "search": settings.to_dict(),
        "text": text,
    }
    evaluation["before"] = heldout_metrics(evaluation, qids, rank_by_doc(qvecs, vectors, doc_ids))
    return evaluation


def heldout_metrics(evaluation: dict[str, Any], qids: list[str],
                    dense: list[list[tuple[str, float]]]) -> dict[str, float]:
    """The held-out metrics of documents ranked by the model's vectors (``dense``, per query) in the table's search
    settings: fused with the stored full-text ranking in text and hybrid modes."""
    from indexer.components import Hit
    from indexer.retrieval import SearchSettings, rank

    settings = SearchSettings.from_dict(evaluation.get("search") or {}).with_(fuse="doc")
    text = evaluation.get("text") or {}

    def hits(ranking: list) -> list[Hit]:
        return [Hit(id=d, doc_id=d, score=s) for d, s in ranking]

    run = {q: [(h.doc_id, h.score) for h in rank(hits(d), hits(text.get(q, [])), 100, True, settings)]
           for q, d in zip(qids, dense)}
    return evaluate(evaluation["qrels"], run)


# --------------------------------------------------------------------------------------------------------------
# 2. train (runs here or in a Modal container)
# --------------------------------------------------------------------------------------------------------------


def train(payload: dict[str, Any], base_path: str | Path, output: str | Path) -> dict[str, Any]:
    """Fine-tune the model in ``base_path`` on ``payload["train"]``, save it to ``output`` and measure it on
    ``payload["eval"]``. Returns what happened (steps, seconds, metrics after)."""
    import tempfile

    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerModelCardData,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.training_args import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    s = FinetuneSettings(**payload["settings"])
    base = payload["base_model"]
    card = SentenceTransformerModelCardData(
        model_name=f"{Path(str(base)).name} fine-tuned on indexer feedback pairs",
        train_datasets=[{"name": f"indexer feedback pairs ({payload['data']['train_relevant_pairs']} pairs, "
                                 f"table {payload['table']})"}],
        local_files_only=True,
    )
    if _looks_like_hub_id(base):
        # offline, the card cannot verify the id on the Hub and would leave the base model out
        card.base_model = base
    # "auto": sentence-transformers picks CUDA, then MPS, then the CPU
    model = SentenceTransformer(str(base_path), device=None if s.device == "auto" else s.device, model_card_data=card)
    device = str(model.device)
    if s.max_seq_length:
        model.max_seq_length = s.max_seq_length
    columns: dict[str, list[str]] = {"anchor": [r["anchor"] for r in payload["train"]],
                                     "positive": [r["positive"] for r in payload["train"]]}
    for i in range(len(payload["train"][0]["negatives"])):
        columns[f"negative_{i + 1}"] = [r["negatives"][i] for r in payload["train"]]
    dataset = Dataset.from_dict(columns)
    if s.loss == "cached-mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=s.mini_batch_size)
    else:
        loss = losses.MultipleNegativesRankingLoss(model)
    prompts = _prompts(model, list(columns))
    with tempfile.TemporaryDirectory() as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=s.epochs,
            max_steps=s.max_steps,
            per_device_train_batch_size=min(s.batch_size, len(dataset)),
            learning_rate=s.learning_rate,
            warmup_steps=s.warmup,  # transformers 5: a float below 1 is a fraction of the steps
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            seed=s.seed,
            data_seed=s.seed,
            prompts=prompts or None,
            report_to="none",
            save_strategy="no",
            logging_steps=max(1, len(dataset) // max(1, s.batch_size) // 10),
            disable_tqdm=not s.progress,
            use_cpu=device == "cpu",
            bf16=device.startswith("cuda") and torch.cuda.is_bf16_supported(),
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
        t0 = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - t0
    Path(output).mkdir(parents=True, exist_ok=True)
    model.save(str(output))
    after = _evaluate_model(model, payload["eval"]) if payload.get("eval") else None
    return {"steps": result.global_step, "seconds": round(seconds, 1), "train_loss": result.training_loss,
            "device": device, "after": after}


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/", "~"))


def _prompts(model: Any, columns: list[str]) -> dict[str, str]:
    """The model's own query/document prompts per dataset column (e5, bge and the like need them)."""
    prompts = getattr(model, "prompts", None) or {}
    query = prompts.get("query") or ""
    document = prompts.get("document") or prompts.get("passage") or ""
    if not query and not document:
        return {}
    return {c: (query if c == "anchor" else document) for c in columns}


def _evaluate_model(model: Any, evaluation: dict[str, Any]) -> dict[str, float]:
    qids = sorted(evaluation["queries"])
    queries = [evaluation["queries"][q] for q in qids]
    corpus = evaluation["corpus"]
    qv = model.encode_query(queries, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    cv = model.encode_document([r["text"] for r in corpus], batch_size=64, convert_to_numpy=True,
                               normalize_embeddings=True)
    return heldout_metrics(evaluation, qids, rank_by_doc(qv, cv, [r["doc_id"] for r in corpus]))


# --------------------------------------------------------------------------------------------------------------
# 3. the command
# --------------------------------------------------------------------------------------------------------------


def default_output(s: FinetuneSettings, base: str) -> Path:
    from indexer.state import WorkDir

    work = WorkDir(s.work_dir or Path(s.db) / "_indexer")
    from indexer.types import name_slug

    return work.root / "models" / f"{name_slug(base)}-ft-{time.strftime('%Y%m%d-%H%M%S')}"


def finetune(s: FinetuneSettings, remote: str | None = None, gpu: str | None = None) -> dict[str, Any]:
    """Prepare, train (here, or on Modal with ``remote="modal"``), record. Returns the record."""
    if remote is None:
        import importlib.util

        if importlib.util.find_spec("accelerate") is None:
            raise ConfigError("indexer finetune trains with sentence-transformers, which needs accelerate: "
                              "pip install 'indexer[finetune]' (or train on Modal with --remote modal)")
    if s.output and Path(s.output).exists() and any(Path(s.output).iterdir()):
        raise ConfigError(f"--output {s.output} exists and is not empty; pass a new folder")
    payload = prepare(s)
    base = payload["base_model"]
    base_path = base_model_path(base)
    output = Path(s.output) if s.output else default_output(s, base)
    if remote == "modal":
        try:
            from indexer_feedback.modal_app import train_on_modal
        except ImportError as exc:
            raise ConfigError(f"--remote modal needs the modal package ({exc}): pip install modal, then modal setup") from None

        outcome = train_on_modal(payload, base_path, output, gpu=gpu)
    elif remote:
        raise ConfigError(f"--remote must be 'modal' (got {remote!r})")
    else:
        outcome = train(payload, base_path, output)
    record = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base_model": {"name": base, "path": str(base_path), "table_model": payload["table_model"]},
        "db": s.db,
        "table": payload["table"],
        "data": payload["data"],
        "split": {"by": "document", "heldout_fraction": s.holdout, "seed": s.split_seed},
        "settings": payload["settings"],
        "training": {k: v for k, v in outcome.items() if k != "after"},
        "eval": None if payload["eval"] is None else {
            "scope": payload["eval"]["scope"], "corpus_chunks": len(payload["eval"]["corpus"]),
            "search": payload["eval"].get("search"),
            "before": payload["eval"]["before"], "after": outcome["after"],
        },
        "heldout": payload["heldout"],
        "output": str(output),
    }
    (output / RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False))
    _append_card_note(output / "README.md", record)
    return record


def _append_card_note(readme: Path, record: dict[str, Any]) -> None:
    data, ev = record["data"], record["eval"]
    lines = [
        "", "", "## indexer fine-tune record", "",
        f"- Base model: `{record['base_model']['name']}` (weights fingerprint "
        f"`{record['base_model']['table_model'].get('fingerprint', '')[:16]}` when it made table `{record['table']}`)",
        f"- Data: {data['train_relevant_pairs']:,} (query, passage) pairs from the feedback store of `{record['db']}` "
        f"({', '.join(f'{k}: {v:,}' for k, v in data['sources'].items())}); {data['mined_negatives']:,} hard negatives "
        f"mined from table `{record['table']}`, {data['explicit_negatives']:,} explicit ones",
        f"- Held out: {data['heldout_pairs']:,} pairs on {data['heldout_documents']:,} documents "
        f"({record['split']['heldout_fraction']:.0%} of documents by a hash with seed {record['split']['seed']}); "
        "none of them was trained on",
    ]
    if ev:
        lines.append(f"- Held-out retrieval ({ev['scope']}, {ev['corpus_chunks']:,} chunks; search mode "
                     f"{_searched(ev)}):")
        lines.append("")
        lines.append("  | metric | before | after |")
        lines.append("  |---|---|---|")
        for m in ("recall@10", "ndcg@10", "mrr@10", "recall@100"):
            lines.append(f"  | {m} | {ev['before'][m]:.4f} | {ev['after'][m]:.4f} |")
    lines += ["", f"The full record is in `{RECORD}` beside this card.", ""]
    with readme.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines))


def _searched(ev: dict[str, Any]) -> str:
    from indexer.retrieval import SearchSettings

    return SearchSettings.from_dict(ev.get("search") or {}).with_(fuse="doc").describe()


def render(record: dict[str, Any]) -> str:
    t, ev = record["training"], record["eval"]
    out = [f"fine-tuned {record['base_model']['name']} → {record['output']}",
           f"  training   {record['data']['train_relevant_pairs']:,} pairs, {t['steps']} steps in {t['seconds']:.0f}s on {t['device']}"
           f" (loss {t['train_loss']:.4f})",
           f"  held out   {record['data']['heldout_pairs']:,} pairs on {record['data']['heldout_documents']:,} documents"]
    if record["data"]["unresolved"]:
        out.append(f"  skipped    {len(record['data']['unresolved']):,} pair(s) whose passage is not in table {record['table']}")
    if ev:
        out.append(f"  eval       {ev['scope']} ({ev['corpus_chunks']:,} chunks), searched {_searched(ev)}")
        for m in ("recall@10", "ndcg@10", "mrr@10"):
            out.append(f"    {m:<10} {ev['before'][m]:.4f} → {ev['after'][m]:.4f}  ({ev['after'][m] - ev['before'][m]:+.4f})")
    out.append(f"next: indexer reembed --model {record['output']} --db {record['db']} --promote-if-better")
    return "\n".join(out)
