"""``indexer estimate``: what embedding a corpus on Modal GPUs costs, before spending anything.

The arithmetic is :func:`estimate`, a pure function of a token count and a price table. The built-in table
(:data:`GPUS`) holds Modal's list prices and throughput *assumptions* that a user overrides with ``--prices FILE``
or ``--tokens-per-second-per-gpu``; a short real run (its summary prints tokens/s) is the way to replace them with
measurements. Where the prices and the throughput assumptions come from: docs/benchmarks.md#figures-behind-the-code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from indexer.errors import ConfigError


@dataclass(frozen=True)
class GPUPrice:
    price_per_hour: float  # dollars per GPU-hour
    tokens_per_second: float  # per GPU, BERT-base-sized model


# Modal list prices; throughput for a BERT-base-sized model (sources: docs/benchmarks.md#figures-behind-the-code).
GPUS: dict[str, GPUPrice] = {
    "T4": GPUPrice(0.5904, 50_000),
    "L4": GPUPrice(0.7992, 90_000),
    "A10G": GPUPrice(1.1016, 150_000),
    "L40S": GPUPrice(1.9512, 300_000),
    "A100-40GB": GPUPrice(2.0988, 350_000),
    "A100-80GB": GPUPrice(2.4984, 350_000),
    "H100": GPUPrice(3.9492, 700_000),
    "H200": GPUPrice(4.5396, 750_000),
    "B200": GPUPrice(6.2496, 1_200_000),
}
GPU_ALIASES = {"A100": "A100-40GB", "A10": "A10G"}
MODEL_SIZES = {"small": 4.0, "base": 1.0, "large": 1 / 3}  # throughput factor against BERT-base

#: Seconds each GPU container is billed before it embeds anything (container start, TEI start, model load from
#: the Volume's cache); the first run also downloads the model once.
STARTUP_SECONDS = 60.0
#: Chunking on CPU containers: tokens per second per core (most of the fast tokenizer's own rate) and Modal's price
#: per core-hour.
CHUNK_TOKENS_PER_CORE_SECOND = 700_000.0
CPU_PRICE_PER_CORE_HOUR = 0.0000131 * 3600


@dataclass(frozen=True)
class PriceTable:
    gpus: dict[str, GPUPrice]
    startup_seconds: float = STARTUP_SECONDS
    chunk_tokens_per_core_second: float = CHUNK_TOKENS_PER_CORE_SECOND
    cpu_price_per_core_hour: float = CPU_PRICE_PER_CORE_HOUR

    def gpu(self, name: str) -> tuple[str, GPUPrice]:
        key = GPU_ALIASES.get(name.upper(), name.upper())
        for known, price in self.gpus.items():
            if known.upper() == key:
                return known, price
        raise ConfigError(f"no price for GPU {name!r}; known: {', '.join(self.gpus)} (add it with --prices FILE)")


@dataclass(frozen=True)
class Estimate:
    tokens: float
    gpu: str
    containers: int
    tokens_per_second_per_gpu: float
    price_per_gpu_hour: float
    gpu_hours: float  # embedding only
    billed_gpu_hours: float  # embedding plus every container's startup
    wall_seconds: float
    gpu_dollars: float
    chunk_core_hours: float
    chunk_dollars: float

    @property
    def dollars(self) -> float:
        return self.gpu_dollars + self.chunk_dollars


def estimate(tokens: float, gpu: str, containers: int, prices: PriceTable | None = None, *,
             tokens_per_second_per_gpu: float | None = None, model_size: str = "base") -> Estimate:
    """Cost and time of embedding ``tokens`` on ``containers`` GPUs of type ``gpu``.

    GPU time is ``tokens / throughput``; the containers share it evenly, and each is billed ``startup_seconds``
    on top. Chunking is billed per core-second on CPU containers.
    """
    prices = prices or PriceTable(GPUS)
    if tokens < 0:
        raise ConfigError(f"--tokens must not be negative (got {tokens})")
    if containers < 1:
        raise ConfigError(f"--containers must be at least 1 (got {containers})")
    if model_size not in MODEL_SIZES:
        raise ConfigError(f"--model-size must be one of {', '.join(MODEL_SIZES)} (got {model_size!r})")
    name, price = prices.gpu(gpu)
    tps = tokens_per_second_per_gpu or price.tokens_per_second * MODEL_SIZES[model_size]
    if tps <= 0:
        raise ConfigError(f"--tokens-per-second-per-gpu must be positive (got {tps})")
    gpu_seconds = tokens / tps
    billed = gpu_seconds + containers * prices.startup_seconds
    core_seconds = tokens / prices.chunk_tokens_per_core_second
    return Estimate(
        tokens=tokens,
        gpu=name,
        containers=containers,
        tokens_per_second_per_gpu=tps,
        price_per_gpu_hour=price.price_per_hour,
        gpu_hours=gpu_seconds / 3600,
        billed_gpu_hours=billed / 3600,
        wall_seconds=gpu_seconds / containers + prices.startup_seconds,
        gpu_dollars=billed / 3600 * price.price_per_hour,
        chunk_core_hours=core_seconds / 3600,
        chunk_dollars=core_seconds / 3600 * prices.cpu_price_per_core_hour,
    )


def load_prices(path: str | Path | None) -> PriceTable:
    """The built-in table, with a TOML or JSON file's entries laid over it::

        startup_seconds = 90
        [gpus.A10G]
        price_per_hour = 1.10
        tokens_per_second = 180000
        [gpus.RTX6000]          # a GPU the table lacks: give both fields
        price_per_hour = 0.9
        tokens_per_second = 120000
    """
    table = PriceTable(dict(GPUS))
    if path is None:
        return table
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"price file {p} does not exist")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(p.read_text())
        else:
            from indexer.config import read_toml

            data = read_toml(p)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"price file {p} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"price file {p} must hold a table of settings")
    known = {"gpus", "startup_seconds", "chunk_tokens_per_core_second", "cpu_price_per_core_hour"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"price file {p}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    gpus = dict(table.gpus)
    for name, entry in (data.get("gpus") or {}).items():
        base = gpus.get(name)
        fields = {"price_per_hour", "tokens_per_second"}
        if not isinstance(entry, dict) or set(entry) - fields or (base is None and set(entry) != fields):
            raise ConfigError(f"price file {p}: gpus.{name} needs price_per_hour and tokens_per_second (numbers)")
        values = {k: _positive(v, f"gpus.{name}.{k}", p) for k, v in entry.items()}
        gpus[name] = replace(base, **values) if base else GPUPrice(**values)
    scalars = {k: _positive(data[k], k, p) for k in known - {"gpus"} if k in data}
    return replace(table, gpus=gpus, **scalars)


def _positive(value: Any, name: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"price file {path}: {name} must be a non-negative number (got {value!r})")
    return float(value)


def render(e: Estimate, how: str) -> str:
    """The figures as ``indexer estimate`` prints them."""
    return "\n".join([
        f"tokens        {e.tokens:,.0f} ({how})",
        f"GPU           {e.gpu} at {e.tokens_per_second_per_gpu:,.0f} tokens/s per GPU, "
        f"${e.price_per_gpu_hour:.4f} per GPU-hour",
        f"GPU-hours     {_num(e.gpu_hours)} embedding, {_num(e.billed_gpu_hours)} billed with container starts",
        f"wall time     {_duration(e.wall_seconds)} on {e.containers:,} container(s)",
        f"cost          ${_num(e.gpu_dollars)} GPU + ${_num(e.chunk_dollars)} chunking "
        f"({_num(e.chunk_core_hours)} CPU core-hours) = ${_num(e.dollars)}",
    ])


def _num(x: float) -> str:
    """Two decimals, or three significant digits for amounts under 1 (a demo corpus costs fractions of a cent)."""
    if x >= 1 or x <= 0:
        return f"{x:,.2f}"
    return f"{x:.{2 - math.floor(math.log10(x))}f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"


# -- counting tokens --------------------------------------------------------------------------------------------


def count_tokens(config: Any, sample_shards: int) -> tuple[int, str]:
    """Chunk tokens of ``config.source`` with the configured chunker: every shard, or (when the source has more
    than ``sample_shards``) that many evenly spaced shards, extrapolated by shard count. Returns the count and a
    phrase saying how it was obtained."""
    from indexer.pipeline import count_chunks, plan_build

    plan = plan_build(config)
    shards = plan.source.shards()
    if not shards:
        raise ConfigError(f"{config.source} holds no input files")
    chosen = shards
    if sample_shards and len(shards) > sample_shards:
        step = len(shards) / sample_shards
        chosen = [shards[int(i * step)] for i in range(sample_shards)]
    tokens = count_chunks(plan, chosen)[2]
    if chosen is shards:
        return tokens, f"counted: every shard chunked with the {config.chunker} chunker"
    total = round(tokens * len(shards) / len(chosen))
    return total, (f"extrapolated: {len(chosen)} of {len(shards)} shards chunked ({tokens:,} tokens), "
                   "scaled by shard count")


def register(cli: Any) -> None:
    """Add ``indexer estimate`` to the command line."""
    import click

    @cli.command("estimate")
    @click.argument("source", required=False)
    @click.option("--gpu", default="A10G", show_default=True, help=f"GPU type: {', '.join(GPUS)}.")
    @click.option("--containers", type=int, default=10, show_default=True, help="GPU containers running at once.")
    @click.option("--tokens", "tokens", type=float,
                  help="Describe the corpus instead of reading it: its token count (e.g. 10.5e9).")
    @click.option("--prices", type=click.Path(dir_okay=False), help="TOML/JSON file overriding prices and throughput.")
    @click.option("--tokens-per-second-per-gpu", type=float, help="Throughput of one GPU (default: the price table's).")
    @click.option("--model-size", type=click.Choice(list(MODEL_SIZES)), default="base", show_default=True,
                  help="Model class for the default throughput: small (MiniLM, bge-small), base (bge-base), large.")
    @click.option("--model", envvar="INDEXER_MODEL", help="Model whose tokenizer counts the tokens (default: MiniLM).")
    @click.option("--source-type", help="Source plugin (default: detected from SOURCE).")
    @click.option("--text-field", help="Field holding the text (default: text).")
    @click.option("--title-field", help="Field whose value is joined before the text.")
    @click.option("--max-tokens", type=int, help="Most tokens per chunk (default: what the model takes).")
    @click.option("--overlap", type=int, help="Tokens shared by consecutive chunks (default 32).")
    @click.option("--sample-shards", type=int, default=16, show_default=True,
                  help="Chunk at most this many evenly spaced shards and extrapolate (0: chunk everything).")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def estimate_command(source, gpu, containers, tokens, prices, tokens_per_second_per_gpu, model_size, model,
                         source_type, text_field, title_field, max_tokens, overlap, sample_shards, as_json):
        """Tokens, GPU-hours, wall time and dollars for embedding SOURCE (or --tokens N) on Modal."""
        from dataclasses import asdict

        from indexer.config import BuildConfig

        table = load_prices(prices)
        table.gpu(gpu)  # an unknown GPU fails before any reading
        if (source is None) == (tokens is None):
            raise click.UsageError("give a SOURCE to count, or --tokens N to describe a corpus (not both)")
        if tokens is not None:
            count, how = tokens, "as described"
        else:
            if sample_shards < 0:
                raise click.BadParameter("must be 0 or more", param_hint="--sample-shards")
            config = BuildConfig.load(None, source=source, model=model, source_type=source_type,
                                      text_field=text_field, title_field=title_field, max_tokens=max_tokens,
                                      overlap=overlap, progress=False, sinks=[])
            count, how = count_tokens(config, sample_shards)
        e = estimate(count, gpu, containers, table, tokens_per_second_per_gpu=tokens_per_second_per_gpu,
                     model_size=model_size)
        if as_json:
            click.echo(json.dumps({**asdict(e), "dollars": e.dollars, "tokens_counted": how}, indent=1))
        else:
            click.echo(render(e, how))
