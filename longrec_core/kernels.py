"""The ops a SASRec step draws dropout masks in, chosen per model: `CORE` (the default) runs the Rust
core's training kernels on CPU tensors and torch's ops elsewhere; `TORCH` runs torch's ops everywhere,
the plain PyTorch step that benchmarks compare against.

    model = SASRec(cfg)                     # ops=CORE
    model = SASRec(cfg, ops=kernels.TORCH)  # F.dropout, F.gelu and torch's fused attention

On a 2-core CPU torch's dropout draws its masks with `bernoulli_` at about 9 ns per element, a quarter
of a SASRec training step; the core's `dropout_mask` draws the same distribution over 30x faster
(0.26 ns per element on one thread with AVX-512), in the tensor's own dtype (float32, or bfloat16
under `--precision bf16`). Its seed comes from torch's generator, so `torch.manual_seed` and the
checkpointed RNG state still make runs reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from longrec_core import _core

Tensor = torch.Tensor


@dataclass(frozen=True)
class Ops:
    """The model's three ops that draw dropout masks; `p` is the drop probability, and `training`
    False (or p = 0) makes each one's dropout the identity."""

    dropout: Callable[[Tensor, float, bool], Tensor]  # (x, p, training) -> inverted dropout of x
    gelu_dropout: Callable[[Tensor, float, bool], Tensor]  # (x, p, training) -> dropout(gelu(x))
    # (q, k, v, mask, p, training) -> softmax(q k^T / sqrt(d_h), masked) v, dropout p on the weights;
    # q, k, v (B, H, T, d_h), mask (B, 1, T, T) bool, True where query t may attend key s
    attention: Callable[[Tensor, Tensor, Tensor, Tensor, float, bool], Tensor]


# ---------------------------------------------------------------------------------------------
# torch's ops


def torch_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    return F.dropout(x, p, training)


def torch_gelu_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    return F.dropout(F.gelu(x), p, training)


def torch_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, p: float, training: bool) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p if training else 0.0)


# ---------------------------------------------------------------------------------------------
# the core's kernels

# dtypes the core's kernels take, and the view of each that NumPy can hold (no bfloat16 there)
_CORE_VIEWS = {torch.float32: torch.float32, torch.bfloat16: torch.uint16}


def _numpy(t: Tensor) -> np.ndarray:
    """A CPU tensor's memory as NumPy sees it (bfloat16 as its uint16 bits)."""
    return t.detach().view(_CORE_VIEWS[t.dtype]).numpy()


def _mask_seed() -> int:
    """A core mask's seed, drawn from torch's generator (so torch.manual_seed governs it)."""
    return int(torch.randint(0, 2**62, ()))


def core_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout with the core's mask on CPU (float32 or bfloat16), torch's elsewhere."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or x.dtype not in _CORE_VIEWS:
        return torch_dropout(x, p, True)
    mask = torch.empty(x.shape, dtype=x.dtype)
    _core.dropout_mask(_numpy(mask), p=p, seed=_mask_seed())
    return x * mask


class _GeluDropout(torch.autograd.Function):
    """dropout(gelu(x)) by the core's fused kernels: one pass forward, one backward, with the
    mask recomputed from its seed, so neither the activation nor the mask is stored."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, p: float, seed: int) -> Tensor:
        out = torch.empty_like(x)
        _core.gelu_dropout(_numpy(x), _numpy(out), p=p, seed=seed)
        ctx.save_for_backward(x)
        ctx.p, ctx.seed = p, seed
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        grad_out = grad_out.to(x.dtype).contiguous()
        _core.gelu_dropout_backward(_numpy(x), _numpy(grad_out), _numpy(grad_x), p=ctx.p, seed=ctx.seed)
        return grad_x, None, None


def _exporting() -> bool:
    """Whether torch.export (or torch.jit.trace) is tracing this code into a graph to save; not true
    under torch.compile, whose training keeps the core's kernels."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch >= 2.5
    return bool(exporting() or torch.jit.is_tracing())


def core_gelu_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """dropout(gelu(x)), the feed-forward layer's activation: fused by the core on CPU.

    torch spends five passes over the (B, T, ffn) activations on this (GELU, mask, multiply,
    and two backward); the core's kernels take one pass each way and store no mask. Alone they
    are 1.5-1.9x as fast as torch's ops (a 3200 x 2048 activation, one thread); inside a step,
    where the layer's matrix products dominate, they save a few percent. Same mask as `core_dropout`
    (the same seed from torch's generator), GELU within 3e-7 * (1 + |x|) of torch's.
    """
    # an exported graph (torch.export, longrec_core.recommend) cannot call the core: torch's ops there
    if x.device.type != "cpu" or x.dtype not in _CORE_VIEWS or not x.is_contiguous() or _exporting():
        return core_dropout(F.gelu(x), p, training)
    p = p if training else 0.0
    return _GeluDropout.apply(x, p, _mask_seed() if p > 0.0 else 0)


def core_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, p: float, training: bool) -> Tensor:
    """Attention whose weights' dropout draws the core's mask: training on CPU spells the product out;
    everything else (evaluation, GPU) takes torch's fused kernel.

    The (B, H, T, T) scores are the big tensors of a step, so each is made once and kept in q's
    dtype: the scale goes on q (T times smaller) instead of the scores, the mask is filled in place,
    and the softmax runs in that dtype (torch's CPU kernel accumulates bfloat16 in float32, and its
    weights were rounded to bfloat16 before the product anyway). Autocast is off inside, since it
    would upcast the softmax to float32 and back: under bf16 a 4-block ml-1m step on windows of 200
    takes 1.2x less time than with the float32 round trip, level on windows of 50 (bench/attention.py),
    with a gradient as close to a float64 reference as torch's fused bf16 kernel gives
    (tests/test_kernels.py).
    """
    if not (training and p > 0.0 and q.device.type == "cpu" and q.dtype in _CORE_VIEWS):
        return torch_attention(q, k, v, mask, p, training)
    with torch.autocast("cpu", enabled=False):
        scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
        weights = torch.softmax(scores.masked_fill_(~mask, float("-inf")), dim=-1)
        return core_dropout(weights, p, True) @ v


CORE = Ops(dropout=core_dropout, gelu_dropout=core_gelu_dropout, attention=core_attention)
TORCH = Ops(dropout=torch_dropout, gelu_dropout=torch_gelu_dropout, attention=torch_attention)
