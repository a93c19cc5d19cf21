"""Faster CPU paths for the local embedder: oneDNN linear layers with fused epilogues, a blocked attention, CPU flags.

:func:`fuse_for_cpu` swaps a loaded model's linear layers for oneDNN ones and, on CPUs with AVX-512 BF16 but no
AMX, its bf16 attention for :func:`blocked_attention`; it checks the result on a probe batch and undoes the swap if
the outputs disagree. :func:`cpu_flags` is the one reading of the CPU's features that precision and kernel choices
use (tests and ``scripts/bench_embed.py`` replace it to act as another CPU). torch is imported on first use.
What each path gains, per CPU: docs/benchmarks.md#figures-behind-the-code.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

_ATTENTION = "<attention implementation>"  # marks the attention switch among the swaps to undo
BLOCKED_ATTENTION = "indexer_blocked_cpu"  # the name blocked_attention is registered under with transformers
_ATTENTION_BLOCK = 1 << 20  # attention scores per block (batch rows x heads x queries x keys): 2-4 MB, in cache


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def fuse_for_cpu(net, dtype) -> bool:
    """Swap the model's linear layers for oneDNN ones with pre-packed weights, with GELU fused into the feed-forward
    layer and the residual add into the output projections where the model has BERT-style blocks (``dense`` +
    exact GELU; ``dense`` + ``LayerNorm(x + residual)``). Returns whether it did.

    Why: torch's CPU ``Linear`` goes to MKL, which takes a generic path on AMD CPUs, and copies the bias into the
    output before each GEMM; oneDNN runs the same maths on packed weights with bias and GELU applied in the GEMM's
    epilogue, with the same results up to rounding (docs/benchmarks.md#figures-behind-the-code). The swap is
    checked on a probe batch and undone if the outputs disagree (a new architecture, an op missing in this torch).
    """
    import torch

    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    swaps: list[tuple[Any, str, Any]] = []
    try:
        from transformers.activations import GELUActivation

        probe = _probe_batch(net)
        with torch.inference_mode():
            before = net(**probe).last_hidden_state.float()
            for parent in list(net.modules()):
                for name, child in list(parent.named_children()):
                    new = None
                    if isinstance(child, torch.nn.Linear):
                        new = _PackedLinear(child)
                    elif (
                        {n for n, _ in child.named_children()} == {"dense", "intermediate_act_fn"}
                        and isinstance(child.dense, torch.nn.Linear)
                        and type(child.intermediate_act_fn) is GELUActivation
                        and child.intermediate_act_fn.act is torch.nn.functional.gelu
                    ):
                        new = _PackedLinear(child.dense, gelu=True)
                    elif (
                        {n for n, _ in child.named_children()} == {"dense", "LayerNorm", "dropout"}
                        and isinstance(child.dense, torch.nn.Linear)
                        and isinstance(child.LayerNorm, torch.nn.LayerNorm)
                        and list(inspect.signature(child.forward).parameters) == ["hidden_states", "input_tensor"]
                    ):
                        new = _PackedLinear(child.dense, residual_norm=child.LayerNorm)
                    if new is not None:
                        swaps.append((parent, name, child))
                        setattr(parent, name, new)
            # The pooler's tanh layer feeds nothing we use.
            if getattr(net, "pooler", None) is not None:
                swaps.append((net, "pooler", net.pooler))
                net.pooler = None
            attention = getattr(net.config, "_attn_implementation", None)
            # torch's CPU flash attention in bf16 is slow at small head sizes unless it can use AMX tiles; in fp32
            # it is as fast or faster than blocked attention (docs/benchmarks.md#figures-behind-the-code).
            if attention == "sdpa" and dtype == torch.bfloat16 and "amx_bf16" not in cpu_flags() \
                    and use_blocked_attention(net):
                swaps.append((net, _ATTENTION, attention))
            after = net(**probe).last_hidden_state.float()
        cos = torch.nn.functional.cosine_similarity(before, after, dim=-1)[probe["attention_mask"].bool()]
        if cos.min() < (0.9999 if dtype == torch.float32 else 0.99):
            raise ValueError(f"fused model disagrees (min cosine {cos.min():.5f})")
        return True
    except Exception:  # anything unexpected: keep the stock model, which is correct, only slower
        for parent, name, child in reversed(swaps):
            if name == _ATTENTION:
                _set_attention(parent, child)
            else:
                setattr(parent, name, child)
        return False


def use_blocked_attention(net) -> bool:
    """Run ``net``'s attention as :func:`blocked_attention` (registered with transformers under its own name,
    with the mask format of ``sdpa``). Returns whether it could: models whose attention does not go through
    transformers' attention interface (``_supports_attention_backend``; BERT before transformers 5) keep ``sdpa``."""
    if not getattr(net, "_supports_attention_backend", False):
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(BLOCKED_ATTENTION, blocked_attention)
    AttentionMaskInterface.register(BLOCKED_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    _set_attention(net, BLOCKED_ATTENTION)
    return getattr(net.config, "_attn_implementation", None) == BLOCKED_ATTENTION


def _set_attention(net, name: str) -> None:
    if hasattr(net, "set_attn_implementation"):
        net.set_attn_implementation(name)
    else:
        net.config._attn_implementation = name


def blocked_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Softmax attention for bidirectional encoders on CPU, a few sequences at a time.

    ``query``/``key``/``value`` are ``(batch, heads, length, head size)``; the mask is what transformers builds for
    ``sdpa`` (boolean, True = attend, or additive, or None); returns ``(batch, length, heads, head size)`` as
    transformers' attention functions do. Why: with the small heads of sentence encoders (32-64 dims), torch's
    bf16 CPU flash attention is slow without AMX; two batched matmuls and a softmax over blocks of scores that stay
    in cache are faster (docs/benchmarks.md#figures-behind-the-code; ``scripts/bench_embed.py --attention``).
    """
    import torch

    batch, heads, length, size = query.shape
    keys = key.shape[2]
    scale = scaling if scaling is not None else size**-0.5
    bias = _attention_bias(attention_mask, query.dtype)
    q = query.reshape(batch * heads, length, size)
    k_t = key.transpose(-1, -2).reshape(batch * heads, size, keys)
    v = value.reshape(batch * heads, keys, size)
    out = query.new_empty(batch, length, heads, size)
    step = max(1, _ATTENTION_BLOCK // (heads * length * keys))
    for start in range(0, batch, step):
        stop = min(batch, start + step)
        rows = slice(start * heads, stop * heads)
        if bias is None:
            scores = torch.bmm(q[rows], k_t[rows]).mul_(scale)
        else:
            part = bias[start:stop]
            part = part.expand(stop - start, heads, *part.shape[2:]).reshape(-1, *part.shape[2:])
            scores = torch.baddbmm(part, q[rows], k_t[rows], alpha=scale)
        probs = torch.softmax(scores, dim=-1)
        out[start:stop] = torch.bmm(probs, v[rows]).view(stop - start, heads, length, size).transpose(1, 2)
    return out, None


def _attention_bias(mask, dtype):
    """The additive form of an attention mask: ``(batch, 1, 1, keys)`` when every query sees the same keys (an
    encoder's padding mask), else ``(batch, 1, queries, keys)``; None for no mask."""
    import torch

    if mask is None:
        return None
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    first = mask[:, :, :1, :]
    if torch.equal(mask, first.expand_as(mask)):
        mask = first
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def _probe_batch(net):
    import torch

    g = torch.Generator().manual_seed(0)
    vocab = int(getattr(net.config, "vocab_size", 1000) or 1000)
    ids = torch.randint(min(5, vocab - 1), min(vocab, 2000), (2, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 13:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _packed_linear_class():
    import torch

    class PackedLinear(torch.nn.Module):
        def __init__(self, linear, gelu: bool = False, residual_norm=None):
            super().__init__()
            self.norm = residual_norm
            # The batch-size hint only picks oneDNN's weight layout; token batches here are in the thousands.
            self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().contiguous(), 4096)
            self.bias = None if linear.bias is None else linear.bias.detach()
            self.attr, self.algorithm = ("gelu", "none") if gelu else ("none", "")

        def forward(self, x, input_tensor=None):
            if self.norm is not None:  # BERT's "output" block: LayerNorm(dense(x) + residual), add in the GEMM
                return self.norm(torch.ops.mkldnn._linear_pointwise.binary(x, input_tensor, self.weight, self.bias, "add"))
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.attr, [], self.algorithm)

    return PackedLinear


def _PackedLinear(linear, gelu: bool = False, residual_norm=None):  # noqa: N802 (class made on first use: lazy torch)
    global _PACKED_LINEAR
    if _PACKED_LINEAR is None:
        _PACKED_LINEAR = _packed_linear_class()
    return _PACKED_LINEAR(linear, gelu, residual_norm)


_PACKED_LINEAR = None
