"""The training kernels (the core's `dropout_mask`, `gelu_dropout` and its backward) and the ops of
longrec_core.kernels that run them: the same masks from torch's seed, GELU within float32 rounding of
torch's, every kind of bad array refused."""

import dataclasses

import numpy as np
import pytest
import torch

import longrec_core as lc
from longrec_core.kernels import CORE, Ops, core_attention, core_dropout, core_gelu_dropout
from longrec_core.model import ModelConfig, SASRec


def test_dropout_mask_from_core():
    m = np.empty((64, 1000), np.float32)
    lc.dropout_mask(m, p=0.3, seed=5)
    assert abs((m == 0).mean() - 0.3) < 0.01
    assert np.allclose(m[m != 0], 1 / (1 - 0.3), atol=1e-4)
    again = np.empty_like(m)
    lc.dropout_mask(again, p=0.3, seed=5)
    assert np.array_equal(m, again)
    with pytest.raises(TypeError, match="float32 or uint16"):
        lc.dropout_mask(np.empty(8, np.float64), p=0.1, seed=0)
    with pytest.raises(ValueError, match="contiguous"):
        lc.dropout_mask(m[:, ::2], p=0.1, seed=0)
    with pytest.raises(ValueError, match="p"):
        lc.dropout_mask(m, p=1.0, seed=0)


def test_bfloat16_mask_drops_what_the_float32_mask_drops():
    f = np.empty((33, 101), np.float32)
    lc.dropout_mask(f, p=0.1, seed=9)
    b = torch.empty(f.shape, dtype=torch.bfloat16)
    lc.dropout_mask(b.view(torch.uint16).numpy(), p=0.1, seed=9)
    assert torch.equal(b == 0, torch.from_numpy(f == 0))
    # the kept value is float32's 1/(1 - p) rounded to bfloat16, as torch would cast it
    assert torch.equal(b[b != 0].unique(), torch.tensor(f[f != 0][:1]).bfloat16())


def test_bf16_training_dropout_uses_the_core_mask():
    x = torch.randn(40, 300).bfloat16()
    torch.manual_seed(4)
    y = core_dropout(x, 0.3, True)
    torch.manual_seed(4)  # the same seed draws the same core mask, in float32 this time
    z = core_dropout(x.float(), 0.3, True)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y == 0, z == 0)  # x has no zeros: zeros are exactly the dropped elements
    assert torch.allclose(y.float(), z, rtol=1e-2)


def plain_gelu_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """What core_gelu_dropout fuses, step by step (the same seed draw, hence the same mask)."""
    return core_dropout(torch.nn.functional.gelu(x), p, training)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_fused_gelu_dropout_equals_gelu_then_dropout(dtype, p):
    # a partial block at the end; |x| <= 5, where GELU is not 0 in float32 (far below, both
    # round to 0 at different points), so zeros are exactly the dropped elements
    x0 = (torch.randn(7, 33, 65, generator=torch.Generator().manual_seed(1)) * 2).clamp(-5, 5).to(dtype)
    grad = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    results = []
    for fn in (core_gelu_dropout, plain_gelu_dropout):
        x = x0.clone().requires_grad_(True)
        torch.manual_seed(5)
        y = fn(x, p, True)
        y.backward(grad)
        results.append((y.detach().float(), x.grad.float()))
    (y, gx), (ry, rgx) = results
    assert y.dtype == gx.dtype == torch.float32 and x0.dtype == dtype
    assert torch.equal(y == 0, ry == 0) if p else not (y == 0).any()
    # the core's erf is within 5e-7 of torch's: |x| <= 5, scale 1/(1-p) and grads of ~4 make 1e-5
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-2}
    assert torch.allclose(y, ry, **tol) and torch.allclose(gx, rgx, **tol)


def small_model(ops: Ops) -> SASRec:
    torch.manual_seed(0)
    return SASRec(ModelConfig(n_items=30, max_len=12, dim=16, layers=2, heads=2, ffn=32), ops=ops).train()


def test_model_with_fused_activation_matches_the_plain_layer():
    x = torch.randint(1, 31, (4, 8), generator=torch.Generator().manual_seed(0))
    x[1, :3] = 0  # left padding
    x[2, :7] = 0

    def step(model: SASRec) -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(3)
        out = model(x)
        out[x != 0].square().sum().backward()
        return out.detach(), [q.grad for q in model.parameters() if q.grad is not None]

    fused = step(small_model(CORE))
    plain = step(small_model(dataclasses.replace(CORE, gelu_dropout=plain_gelu_dropout)))
    assert torch.allclose(fused[0], plain[0], atol=1e-5)
    assert len(fused[1]) == len(plain[1])
    for a, b in zip(fused[1], plain[1]):  # the erfs differ by up to 5e-7; two blocks make up to 5e-5 of it
        assert torch.allclose(a, b, rtol=2e-4, atol=1e-5), (a - b).abs().max()


def test_dropout_is_seeded_by_torch_and_keeps_the_mean():
    x = torch.ones(200, 500)
    torch.manual_seed(3)
    a = core_dropout(x, 0.25, True)
    torch.manual_seed(3)
    assert torch.equal(a, core_dropout(x, 0.25, True))
    assert abs(float((a == 0).float().mean()) - 0.25) < 0.01
    assert abs(float(a.mean()) - 1.0) < 0.02
    assert core_dropout(x, 0.25, False) is x
    y = torch.randn(10, 7, requires_grad=True)  # gradient flows through the kept elements, scaled
    out = core_dropout(y, 0.5, True)
    out.sum().backward()
    assert torch.equal(y.grad, (out.detach() / y.detach()).nan_to_num())


def test_spelled_out_attention_equals_torch_kernel_without_dropout():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 9, 8) for _ in range(3))
    mask = torch.ones(9, 9, dtype=torch.bool).tril() | torch.eye(9, dtype=torch.bool)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    # p > 0 in training takes the spelled-out path; a mask of all ones (p tiny) must match the kernel
    spelled = core_attention(q, k, v, mask, 1e-9, True)
    assert torch.allclose(spelled, fused, atol=1e-5)
    assert torch.allclose(core_attention(q, k, v, mask, 0.5, False), fused)


def test_spelled_out_attention_in_bf16_is_as_accurate_as_torch_kernel():
    # under bf16 autocast the spelled-out path keeps the scores and the softmax in bfloat16; its
    # output and gradients must be as close to float64 as torch's fused kernel in bfloat16 is
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 2, 50, 16) * 0.5 for _ in range(3))
    pad = torch.tensor([0, 10, 30, 49])
    t = torch.arange(50)
    real = t[None, :] >= pad[:, None]  # left padding, as SASRec's batches
    mask = ((t[:, None] >= t[None, :]) & real[:, None, :] | ~real[:, :, None])[:, None]  # (B, 1, T, T)

    def output_and_grads(attention, dtype):
        leaves = [x.to(dtype).requires_grad_() for x in (q, k, v)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = attention(*leaves)
        (out.double() * torch.linspace(-1, 1, 16, dtype=torch.float64)).sum().backward()
        return [out.double()] + [x.grad.double() for x in leaves]

    def torch_kernel(*qkv: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(*qkv, attn_mask=mask)

    exact = output_and_grads(torch_kernel, torch.float64)
    fused = output_and_grads(torch_kernel, torch.bfloat16)
    spelled = output_and_grads(lambda *a: core_attention(*a, mask, 1e-9, True), torch.bfloat16)
    for e, f, s in zip(exact, fused, spelled):
        assert s.dtype == torch.float64 and torch.isfinite(s).all()
        assert (s - e).norm() <= 1.5 * (f - e).norm() + 1e-6, ((s - e).norm(), (f - e).norm())


def test_gelu_dropout_kernels_reject_bad_arrays():
    x = np.ones((3, 4), np.float32)
    cases = [
        ((x, x), ValueError, "overlap"),
        ((x, np.ones((3, 5), np.float32)), ValueError, r"shape \[3, 5\]"),
        ((x, np.ones((3, 4))), TypeError, "dtype float32"),
        ((x.astype(np.float64), x), TypeError, "float32 or uint16"),
        ((x, np.ones((4, 3), np.float32).T), ValueError, "C-contiguous"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            lc.gelu_dropout(*args, p=0.1, seed=0)
    with pytest.raises(ValueError, match="grad_out has shape"):
        lc.gelu_dropout_backward(x, np.ones(12, np.float32), np.empty_like(x), p=0.1, seed=0)
    with pytest.raises(ValueError, match="p: must be in"):
        lc.gelu_dropout(x, np.empty_like(x), p=1.5, seed=0)
