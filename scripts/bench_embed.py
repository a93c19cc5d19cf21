"""Embedding speed: indexer's local embedder against sentence-transformers, in one process, on real text.

    python scripts/bench_embed.py [--chunks 2000] [--rounds 3] [--device auto] [--model MODEL] [--modes auto,exact]
    python scripts/bench_embed.py --without-bf16  # as on a CPU without native bf16: what auto picks there, and speeds
    python scripts/bench_embed.py --profile       # then: where each indexer variant spends its time (torch ops)
    python scripts/bench_embed.py --attention     # only: torch SDPA against the CPU blocked attention, per length
    python scripts/bench_embed.py --gemm-rows 2048,16384   # only: the main GEMM's rate per batch height

Text: the demo corpus (data/demo/wiki-demo.jsonl) cut by the built-in token chunker; without that chunker, the
extracts of shared/data/wiki-sample cut into token windows of 20-254 tokens. Every variant embeds the same chunks
from their text (tokenisation is timed; the pipeline hands token ids over, which only makes it faster).
Variants run alternately, each round in a rotated order so that drift in a shared machine's load falls on all
of them; the figure is the median over rounds. Cosine is per row against sentence-transformers' fp32 output.
The compute bound is the machine's measured matmul rate divided by the model's FLOPs per token. ``auto`` is
settled on the benchmark's own chunks as a build settles it on its corpus (the int8 gate, where int8 is on
trial); every variant not in fp32 gets the gate's top-10 agreement with fp32 on those chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from indexer.types import Chunk, Document  # noqa: E402
import indexer_local  # noqa: E402
from indexer_local import LocalEmbedder, gate, int8  # noqa: E402
from indexer_local.kernels import cpu_flags  # noqa: E402

DEMO = REPO / "data" / "demo" / "wiki-demo.jsonl"
WIKI = REPO.parent / "shared" / "data" / "wiki-sample" / "summaries_en-us.json"


def load_chunks(embedder: LocalEmbedder, n: int) -> tuple[list[Chunk], str]:
    tok = embedder.tokenizer()
    limit = embedder.content_token_limit()
    try:
        from indexer.plugins import get_host

        chunker = get_host().component("chunker", "token")(
            tok, max_tokens=limit, tokenizer_key=embedder.tokenizer_key()
        )
        chunker.check()
        docs = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines() if line.strip()]
        chunks = list(chunker.chunk_many(Document(id=d["id"], text=d["text"]) for d in docs))[:n]
        if chunks:
            return chunks, f"{DEMO.relative_to(REPO)} cut by the token chunker (max {limit} tokens)"
    except Exception as e:  # the chunker plugin is optional here: fall back on plain token windows
        print(f"(token chunker unavailable: {e}; using token windows of the wiki sample)", file=sys.stderr)
    rng = random.Random(0)
    extracts = json.loads(WIKI.read_text(encoding="utf-8"))
    chunks = []
    for title in sorted(extracts):
        text = extracts[title].get("extract") or ""
        enc = tok.encode(text, add_special_tokens=False)
        pos = 0
        while pos < len(enc.ids) and len(chunks) < n:
            end = min(pos + rng.randint(20, min(254, limit)), len(enc.ids))
            if end - pos >= 20:
                piece = text[enc.offsets[pos][0] : enc.offsets[end - 1][1]]
                chunks.append(Chunk(f"{title}#{len(chunks)}", title, 0, piece, end - pos, 0, len(piece), ""))
            pos = end
        if len(chunks) >= n:
            break
    return chunks, f"{WIKI.name} extracts cut into token windows of 20-{min(254, limit)} tokens"


def matmul_gflops(dtype_name: str, device: str, m: int = 8192) -> dict[str, float]:
    """GFLOP/s of the GEMM shape this model spends most time in (m tokens x hidden -> 4 x hidden)."""
    import torch

    k, n = 384, 1536
    if dtype_name == "int8":
        return _rate(int8_gemms(m, k, n), m, k, n, device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    x = torch.randn(m, k, device=device).to(dtype)
    w = torch.randn(n, k, device=device).to(dtype)
    b = torch.randn(n, device=device).to(dtype)
    fns = {"torch linear": lambda: torch.nn.functional.linear(x, w, b)}
    if device == "cpu" and torch.backends.mkldnn.is_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(w, m)
        fns["oneDNN packed"] = lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
    return _rate(fns, m, k, n, device)


def int8_gemms(m: int, k: int, n: int) -> dict:
    """The int8 layer as the embedder runs it (fp32 in, activations quantised, fp32 out) and, as the ceiling,
    the bare int8 x int8 -> int32 GEMM (``torch._int_mm``) with nothing around it."""
    import torch

    layer = torch.nn.Linear(k, n)
    holder = torch.nn.Sequential(layer)
    int8.quantize_linears(holder, full_range=int8.has_vnni(cpu_flags()))
    x = torch.randn(m, k)
    xq, wq = torch.randint(-127, 128, (m, k), dtype=torch.int8), torch.randint(-127, 128, (n, k), dtype=torch.int8)
    return {"int8 layer": lambda: holder(x), "int8 GEMM": lambda: torch._int_mm(xq, wq.t())}


def _rate(fns: dict, m: int, k: int, n: int, device: str) -> dict[str, float]:
    """Median GFLOP/s (2 m k n per call) of each function, over 5 runs of 10 calls after a warm-up call."""
    import torch

    out = {}
    with torch.inference_mode():
        for name, fn in fns.items():
            rates = []
            for _ in range(5):
                fn()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(10):
                    fn()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                rates.append(2 * m * k * n * 10 / (time.perf_counter() - t) / 1e9)
            out[name] = statistics.median(rates)
    return out


def cpu_description() -> str:
    """The CPU's model name and the matmul extensions that decide the precision (Linux; else the architecture)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.machine())
    flags = cpu_flags()  # the embedder's own reading, which chooses its precision and attention
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8"]
    return f"{name} ({', '.join(f for f in wanted if f in flags) or 'no AVX-512'})"


def flops_per_token(config: dict, lengths: list[int]) -> tuple[float, float, float]:
    """(matmul FLOPs/token, attention FLOPs/token, token-weighted mean length) for a BERT-like encoder."""
    h = config["hidden_size"]
    layers = config["num_hidden_layers"]
    inter = config.get("intermediate_size", 4 * h)
    dense = 2 * layers * (4 * h * h + 2 * h * inter)  # q, k, v, o and the two feed-forward matrices
    # Q.K^T and attention x V: 2 x 2 x h FLOPs per (token, attended token); a token attends to its whole sequence,
    # so the per-token mean sequence length is weighted by tokens: sum(L^2) / sum(L).
    attended = sum(n * n for n in lengths) / sum(lengths)
    return dense, 4 * layers * h * attended, attended


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--modes", default="auto,fast,exact,int8",
                    help="precision modes of the local embedder, comma-separated")
    ap.add_argument("--without-bf16", action="store_true",
                    help="hide the CPU's bf16 flags from the embedder, so that auto chooses as on a CPU without native "
                         "bf16 (the bf16 variants still run on this CPU's bf16 units)")
    ap.add_argument("--batch-tokens", type=int, help="padded tokens per indexer batch (default: the embedder's, "
                                                     "4,096 on a CPU and 16,384 on a GPU)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--profile", action="store_true", help="after the rounds, profile one run of each indexer variant")
    ap.add_argument("--gemm-rows", help="only print the matmul rate of the model's main GEMM at these row counts "
                                        "(comma-separated; a batch's padded tokens), per precision")
    ap.add_argument("--attention", action="store_true",
                    help="only compare torch SDPA with the local embedder's blocked CPU attention, at the model's head "
                         "shape, per sequence length and precision")
    args = ap.parse_args()
    from indexer.memory import limit_malloc_arenas

    limit_malloc_arenas()  # as indexer build does; the same for both sides
    if args.without_bf16:
        flags = cpu_flags() - {"avx512_bf16", "amx_bf16"}
        indexer_local.kernels.cpu_flags = lambda: flags
    if args.gemm_rows:
        device = LocalEmbedder(args.model, device=args.device)._choose()[0]
        precisions = ["fp32", "bf16"] + (["int8"] if device == "cpu" and int8.int8_engine() else [])
        print(f"GFLOP/s (int8: GOP/s) of rows x 384 by 384 x 1536 on "
              f"{cpu_description() if device == 'cpu' else device}:")
        print("| rows | precision | torch linear / int8 layer | oneDNN packed / bare int8 GEMM |\n|---|---|---|---|")
        for m in (int(x) for x in args.gemm_rows.split(",")):
            for precision in precisions:
                first, second = matmul_gflops(precision, device, m).values()
                print(f"| {m:,} | {precision} | {first:,.0f} | {second:,.0f} |")
        return
    if args.attention:
        budget = LocalEmbedder(args.model, device=args.device, batch_tokens=args.batch_tokens).token_budget()
        bench_attention(args.model, args.rounds, budget)
        return

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    reference = LocalEmbedder(args.model, device=args.device, precision="exact", batch_tokens=args.batch_tokens)
    reference.check()
    device = reference._choose()[0]
    chunks, source = load_chunks(reference, args.chunks)
    texts = [c.text for c in chunks]
    for c in chunks:
        c.token_ids = None  # every variant tokenises, as sentence-transformers must
    lengths = [len(ids) for ids in reference.input_ids(chunks)]
    tokens = sum(lengths)

    # Distinct code paths only: on a CPU with native bf16, auto and fast are the same run.
    embedders: dict[str, LocalEmbedder] = {}
    labels: dict[str, list[str]] = {}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        emb = LocalEmbedder(args.model, device=args.device, precision=mode, batch_tokens=args.batch_tokens)
        settled = emb.settle(lambda: chunks)
        if settled:
            print(f"{mode}: {settled['summary']}")
        key = emb.info.precision
        embedders.setdefault(key, emb)
        labels.setdefault(key, []).append(mode)
    st = SentenceTransformer(str(reference.model_path()), device=device)

    def run_st():
        return st.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)

    variants = {"sentence-transformers": run_st}
    for key, emb in embedders.items():
        variants[f"indexer {'/'.join(labels[key])} ({key})"] = lambda emb=emb: emb.embed(chunks)

    print(f"machine: {cpu_description()}, {torch.get_num_threads()} torch threads, "
          f"device {device}, torch {torch.__version__}")
    print(f"text: {len(chunks)} chunks, {tokens:,} tokens incl. specials, mean {tokens / len(chunks):.1f}, "
          f"min {min(lengths)}, median {int(statistics.median(lengths))}, max {max(lengths)} ({source})")
    print(f"indexer batches: {reference.token_budget():,} padded tokens; sentence-transformers: 32 texts")
    # Warm-up: model loading, first-call allocations, oneDNN kernel creation.
    st.encode(texts[:256], batch_size=32)
    for emb in embedders.values():
        emb.embed(chunks[:256])
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, np.ndarray] = {}
    names = list(variants)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = variants[name]()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
            outputs[name] = np.asarray(out, dtype=np.float32)
        print(f"  round {r + 1}: " + ", ".join(f"{n.split(' (')[0]} {tokens / times[n][-1]:,.0f}" for n in names),
              file=sys.stderr)

    if hasattr(os, "getloadavg"):
        # Other processes on the machine skew every figure (ratios less, as the variants alternate).
        print(f"load average (1 min): {load_before:.2f} before the timed rounds, {os.getloadavg()[0]:.2f} after")
    ref = outputs["sentence-transformers"]
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    config = json.loads((reference.model_path() / "config.json").read_text())
    dense, attention, attended = flops_per_token(config, lengths)
    per_token = dense + attention
    peak = {p: matmul_gflops(p, device) for p in sorted({"fp32", *embedders})}
    print(f"model: {args.model}, {per_token / 1e6:.2f} MFLOP/token ({dense / 1e6:.2f} in weight matmuls + "
          f"{attention / 1e6:.2f} attention at token-weighted mean length {attended:.0f})")
    for p, rates in peak.items():
        print(f"matmul {p}: " + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in rates.items())
              + f" -> bound {max(rates.values()) * 1e9 / per_token:,.0f} tokens/s")

    base = tokens / statistics.median(times["sentence-transformers"])
    rows = []
    print("\n| variant | tokens/s | vs s-t | of compute bound | min row cosine vs s-t fp32 | gate: top-10 agreement "
          "with fp32 |\n|---|---|---|---|---|---|")
    for name in names:
        rate = tokens / statistics.median(times[name])
        prec = "fp32" if name == "sentence-transformers" else name.rsplit("(", 1)[1].rstrip(")")
        bound = max(peak[prec].values()) * 1e9 / per_token
        out = outputs[name] / np.linalg.norm(outputs[name], axis=1, keepdims=True)
        cos = float((out * ref).sum(1).min())
        agreement = None
        if prec != "fp32":
            agreement = gate.run_gate(chunks, reference, embedders[prec]).agreement
        rows.append({"variant": name, "tokens_per_s": rate, "vs_st": rate / base, "of_bound": rate / bound,
                     "min_cos": cos, "gate_agreement": agreement, "seconds": times[name]})
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x | {rate / bound:.0%} | "
              f"{'—' if name == 'sentence-transformers' else f'{cos:.6f}'} | "
              f"{'—' if agreement is None else f'{agreement:.3f}'} |")
    if args.profile:
        for name in names[1:]:
            profile(name, variants[name])
    if args.json:
        Path(args.json).write_text(json.dumps({"tokens": tokens, "chunks": len(chunks), "source": source,
                                               "peak_gflops": peak, "flops_per_token": per_token, "rows": rows},
                                              indent=1))


def profile(name: str, run, top: int = 8) -> None:
    """Self time of the torch ops one run of ``run`` spends most in."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    t = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    wall = time.perf_counter() - t
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops) / 1e6
    print(f"\nprofile of {name}: {wall:.1f} s wall under the profiler, {total:.1f} s in torch ops")
    for e in ops[:top]:
        print(f"  {e.key:<55} {e.self_cpu_time_total / 1e6:6.2f} s  {e.count:>6} calls")


def bench_attention(model: str, rounds: int, batch_tokens: int) -> None:
    """Median time of torch's SDPA and of ``indexer_local.kernels.blocked_attention`` on batches of ``batch_tokens``
    tokens at several sequence lengths, with a padding mask (lengths 85-100% of the longest) and the query/key/
    value layout transformers hands an attention function (a transposed view)."""
    import torch

    from indexer_local.kernels import blocked_attention

    config = json.loads((LocalEmbedder(model).model_path() / "config.json").read_text())
    heads = config["num_attention_heads"]
    size = config["hidden_size"] // heads
    g = torch.Generator().manual_seed(0)
    print(f"attention, {heads} heads x {size} dims, {batch_tokens:,}-token batches, {torch.get_num_threads()} "
          f"threads, median of {max(rounds, 5)}:")
    print("| precision | length | torch SDPA | blocked | SDPA / blocked |\n|---|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float32):
        for length in (64, 128, 192, 256):
            batch = batch_tokens // length
            q, k, v = (torch.randn(batch, length, heads, size, generator=g).to(dtype).transpose(1, 2)
                       for _ in range(3))
            lengths = torch.randint(int(length * 0.85), length + 1, (batch,), generator=g)
            mask = (torch.arange(length)[None, :] < lengths[:, None])[:, None, None, :].expand(batch, 1, length, length)
            fns = {"sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                   "blocked": lambda: blocked_attention(None, q, k, v, mask)}
            times: dict[str, list[float]] = {n: [] for n in fns}
            with torch.inference_mode():
                for fn in fns.values():
                    fn()
                for _ in range(max(rounds, 5)):
                    for n, fn in fns.items():
                        t = time.perf_counter()
                        fn()
                        times[n].append(time.perf_counter() - t)
            sdpa, blocked = statistics.median(times["sdpa"]), statistics.median(times["blocked"])
            print(f"| {str(dtype).removeprefix('torch.')} | {length} | {sdpa * 1e3:.0f} ms | {blocked * 1e3:.0f} ms | "
                  f"{sdpa / blocked:.2f}x |")


if __name__ == "__main__":
    main()
