"""RowwiseAdamW (longrec_core.optim): AdamW on dense groups, the row-wise rule on the sparse table."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from longrec_core.optim import RowwiseAdamW, WeightAverage, param_groups

try:
    from longrec_core import kshift_rows
except ImportError:  # the Rust extension is not built
    kshift_rows = None


class TwoTables(nn.Module):
    """A dense weight and a P x d table read through sparse lookups, as the k-shift table is."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dense = nn.Parameter(torch.randn(3, 4))
        self.table = nn.Parameter(torch.randn(10, 4))

    def loss(self, bags: torch.Tensor, sparse: bool = True) -> torch.Tensor:
        rows = torch.nn.functional.embedding_bag(bags, self.table, mode="sum", sparse=sparse)  # (n, 4)
        return ((rows @ self.dense.T) ** 2).sum()


# each step's bags: rows 0 and 9 never touched, row 2 twice in one step, row 5 in two steps
STEPS = [torch.tensor([[1, 2], [2, 3]]), torch.tensor([[5, 6]]), torch.tensor([[5, 1], [4, 8]])]


def reference_rows(table0: np.ndarray, grads: list[np.ndarray], lr: float, wd: float, beta2=0.999, eps=1e-8):
    """The rule of longrec_core.optim's docstring, one row at a time in float64."""
    p, v, t = table0.astype(np.float64).copy(), np.zeros(len(table0)), np.zeros(len(table0))
    for g in grads:
        for r in np.flatnonzero(np.abs(g).sum(1) > 0):
            t[r] += 1
            v[r] = beta2 * v[r] + (1 - beta2) * np.mean(g[r] ** 2)
            p[r] *= 1 - lr * wd
            p[r] -= lr * g[r] / (np.sqrt(v[r] / (1 - beta2 ** t[r])) + eps)
    return p, t


@pytest.mark.parametrize("sparse", [True, False])  # a dense gradient (the code residual's) moves its nonzero rows
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_rowwise_rows_follow_the_rule_and_dense_params_follow_adamw(wd, sparse):
    model = TwoTables()
    twin = copy.deepcopy(model)
    table0 = model.table.detach().numpy().copy()
    opt = RowwiseAdamW(param_groups(model, [model.table]), lr=0.05, weight_decay=wd)
    adamw = torch.optim.AdamW([twin.dense], lr=0.05, weight_decay=wd)
    grads = []
    for bags in STEPS:
        twin.table.data.copy_(model.table.data)  # the twin's dense weight sees the model's table rows
        for m, o in ((model, opt), (twin, adamw)):
            o.zero_grad(set_to_none=True)
            m.loss(bags, sparse).backward()
        assert model.table.grad.is_sparse == sparse
        grads.append(model.table.grad.to_dense().numpy().copy())
        opt.step()
        adamw.step()
    want, steps = reference_rows(table0, grads, lr=0.05, wd=wd)
    np.testing.assert_allclose(model.table.detach().numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(opt.state[model.table]["row_step"].numpy(), steps)
    assert torch.equal(model.table[[0, 9]], torch.from_numpy(table0[[0, 9]]))  # untouched rows do not move
    assert torch.equal(model.dense, twin.dense)  # bitwise AdamW


def test_state_dict_resumes_bitwise():
    def train(opt_model, opt, steps):
        for bags in steps:
            opt.zero_grad(set_to_none=True)
            opt_model.loss(bags).backward()
            opt.step()

    a = TwoTables()
    opt_a = RowwiseAdamW(param_groups(a, [a.table]), lr=0.05)
    train(a, opt_a, STEPS)
    b = TwoTables()
    opt_b = RowwiseAdamW(param_groups(b, [b.table]), lr=0.05)
    train(b, opt_b, STEPS[:2])
    saved = copy.deepcopy((b.state_dict(), opt_b.state_dict()))
    c = TwoTables()
    c.load_state_dict(saved[0])
    opt_c = RowwiseAdamW(param_groups(c, [c.table]), lr=0.05)
    opt_c.load_state_dict(saved[1])
    train(c, opt_c, STEPS[2:])
    assert torch.equal(a.table, c.table) and torch.equal(a.dense, c.dense)


def test_without_rowwise_groups_it_is_adamw():
    a, b = TwoTables(), TwoTables()
    opt_a = RowwiseAdamW(param_groups(a), lr=0.05)
    opt_b = torch.optim.AdamW(b.parameters(), lr=0.05)
    for bags in STEPS:
        for m, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad(set_to_none=True)
            # dense lookups: AdamW refuses sparse gradients
            (m.table[bags].sum(1) @ m.dense.T).pow(2).sum().backward()
            opt.step()
    assert torch.equal(a.table, b.table) and torch.equal(a.dense, b.dense)


@pytest.mark.skipif(kshift_rows is None, reason="longrec_core._core is not built (run maturin develop)")
@pytest.mark.parametrize("weights", [False, True])
def test_kshift_sparse_gradient_equals_the_dense_one(weights):
    from longrec_core.model import KShiftEmbedding

    dense = KShiftEmbedding(40, 8, k=3, compression=4, seed=1, weights=weights)
    sparse = KShiftEmbedding(40, 8, k=3, compression=4, seed=1, weights=weights, sparse=True)
    sparse.load_state_dict(dense.state_dict())
    ids = torch.tensor([[0, 3, 40, 3], [7, 1, 0, 12]])
    for emb in (dense, sparse):
        (emb(ids) ** 2).sum().backward()
    assert sparse.table.grad.is_sparse and not dense.table.grad.is_sparse
    assert torch.allclose(sparse.table.grad.to_dense(), dense.table.grad, atol=1e-6)


def test_weight_average_follows_its_rule_and_resumes_bitwise():
    model = TwoTables()
    average = WeightAverage(model, decay=0.2)
    want = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for t, bags in enumerate(STEPS, start=1):
        opt.zero_grad()
        model.loss(bags, sparse=False).backward()
        opt.step()
        average.update(model)
        keep = min(0.2, (1 + t) / (10 + t))  # 2/11 while warming up, then the decay 0.2
        for n, p in model.named_parameters():
            want[n] = keep * want[n] + (1 - keep) * p.detach().double()
    for n, p in average.model.named_parameters():
        np.testing.assert_allclose(p.numpy(), want[n].numpy(), rtol=1e-6, atol=1e-7)
        assert not p.requires_grad and not torch.equal(p, dict(model.named_parameters())[n])
    copy_ = WeightAverage(TwoTables(), decay=0.2)
    copy_.load_state_dict(copy.deepcopy(average.state_dict()))
    average.update(model)
    copy_.update(model)
    for a, b in zip(average.model.parameters(), copy_.model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(model, decay=1.0)
