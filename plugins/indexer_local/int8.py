"""int8 on CPUs: the model's linear layers as torch's dynamically quantised linear (fbgemm kernels).

Weights are quantised once, per output channel (symmetric int8); each batch's activations are quantised on the
fly to uint8 with one scale for the whole input of a layer, inside the kernel, which also adds the bias and returns
fp32. Everything else (embeddings, attention, LayerNorm, GELU, pooling) stays fp32.

Why this runtime: it is the fastest int8 we found for these models on CPUs without native bf16, with no new
dependency and no export step (what else was tried: docs/benchmarks.md#figures-behind-the-code).

Full 8-bit activations need VNNI (``vpdpbusd`` adds the u8 x s8 products in 32 bits); without it fbgemm's AVX2
kernel adds pairs of products in 16 bits, which saturate unless activations keep to 7 bits (``reduce_range``).
"""

from __future__ import annotations

import warnings
from typing import Any

# torch's quantised engines that carry fbgemm's x86 int8 kernels
_ENGINES = ("x86", "fbgemm")


def int8_engine() -> str | None:
    """The quantised engine int8 runs on in this torch build, or None when it has none for this CPU."""
    import torch

    if not torch.backends.quantized.supported_engines:
        return None
    return next((e for e in _ENGINES if e in torch.backends.quantized.supported_engines), None)


def has_vnni(flags: frozenset[str]) -> bool:
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def quantize_linears(net, *, full_range: bool) -> int:
    """Replace every ``torch.nn.Linear`` of ``net`` by an int8 one, in place; returns how many. ``full_range``:
    8-bit activations (VNNI), else 7-bit (see the module docstring)."""
    import torch

    engine = int8_engine()
    if engine is None:
        raise RuntimeError("this torch build has no x86 int8 kernels (fbgemm)")
    torch.backends.quantized.engine = engine
    cls = _int8_linear_class()
    count = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, cls(child, full_range))
                count += 1
    return count


_INT8_LINEAR: Any = None


def _int8_linear_class():
    """The module class, made on first use so that importing this plugin does not import torch."""
    global _INT8_LINEAR
    if _INT8_LINEAR is not None:
        return _INT8_LINEAR
    import torch

    class Int8Linear(torch.nn.Module):
        def __init__(self, linear, full_range: bool):
            super().__init__()
            w = linear.weight.detach().float()
            scales = (w.abs().amax(dim=1).clamp(min=1e-12) / 127).double()
            zero = torch.zeros(w.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # quantised tensors are deprecated as a user API, not as fbgemm's input
                warnings.simplefilter("ignore")
                qweight = torch.quantize_per_channel(w, scales, zero, 0, torch.qint8)
                bias = None if linear.bias is None else linear.bias.detach().float()
                self.packed = torch.ops.quantized.linear_prepack(qweight, bias)
            self.reduce_range = not full_range
            self.out_features = linear.out_features

        def forward(self, x):
            return torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)

    _INT8_LINEAR = Int8Linear
    return Int8Linear
