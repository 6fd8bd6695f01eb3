"""train.py's optimizer: AdamW, with an opt-in row-wise rule for a per-item table (k-shift's shared
table, the code embedding's residual).

With AdamW the P x d k-shift table carries a dense gradient and two moments: 16 bytes per value
with the value itself, 6.4 GB at 10^8 items (d = 64, compression 16), although a step touches a
few thousand of its rows. A param group with `rowwise=True` instead takes a sparse gradient (the
rows a step touched, from `F.embedding_bag(..., sparse=True)`; a dense one counts its nonzero rows)
and keeps 8 bytes a row: one second moment (an EMA, with AdamW's beta2, of the mean squared
gradient over the row) and one step count for its bias correction. A touched row r at its t-th
update moves by

    lr * g_r / (sqrt(v_r / (1 - beta2^t)) + eps)

and decays by lr * weight_decay beforehand (decoupled, as AdamW). There is no first moment: that
would be a P x d state again. A table of a few values a row (the code residual's r = 3-5) gains
most: AdamW's state is then 8r bytes a row. Rows a step does not touch and their state stay as
they are (lazy, as `torch.optim.SparseAdam`), so a row's bias correction counts its own updates.

    optimizer = optimizer_for(model, lr=1e-3)  # row-wise when model.cfg.kshift_optimizer is "rowwise"

`WeightAverage` keeps an exponential moving average of the weights beside them (--ema-decay).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn


def param_groups(model: nn.Module, rowwise: Sequence[nn.Parameter] = ()) -> list[dict]:
    """The model's parameters as AdamW's group, plus a `rowwise` group of the given ones (if any)."""
    ids = {id(p) for p in rowwise}
    groups: list[dict] = [{"params": [p for p in model.parameters() if id(p) not in ids]}]
    if rowwise:
        groups.append({"params": list(rowwise), "rowwise": True})
    return groups


def optimizer_for(model: nn.Module, lr: float, weight_decay: float = 0.0) -> RowwiseAdamW:
    """The optimizer of a SASRec model: AdamW, with the per-item table in a row-wise group when the
    model's config says kshift_optimizer "rowwise": the k-shift table (its embedding then makes sparse
    gradients) or the code embedding's residual table (a dense gradient: the row-wise rule then saves
    the state, 8 bytes a row against AdamW's 8 a value)."""
    rowwise = []
    if model.cfg.kshift_optimizer == "rowwise":
        emb = model.item_emb
        rowwise = [emb.residual.table if model.cfg.item_emb == "codes" else emb.table]
    return RowwiseAdamW(param_groups(model, rowwise), lr=lr, weight_decay=weight_decay)


class RowwiseAdamW(torch.optim.AdamW):
    """AdamW for every group, except groups with `rowwise=True`: the module docstring's row-wise rule.

    Their state (`row_sq` and `row_step`, float32 per row; `step`) is saved and loaded with the
    rest by `state_dict()`, so a resumed run continues bitwise.
    """

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # AdamW skips parameters without a gradient (and refuses sparse ones): hold the row-wise
        # gradients aside while it steps the rest.
        held = [
            (group, p, p.grad)
            for group in self.param_groups
            if group.get("rowwise")
            for p in group["params"]
            if p.grad is not None
        ]
        for _, p, _ in held:
            p.grad = None
        super().step()
        for group, p, grad in held:
            self._rowwise_step(group, p, grad)
            p.grad = grad
        return loss

    @torch.no_grad()
    def _rowwise_step(self, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        g = (grad if grad.is_sparse else grad.to_sparse(1)).coalesce()  # one entry per touched row
        rows, values = g.indices()[0], g.values().float()  # (n,), (n, d)
        state = self.state[p]
        if not state:
            state["row_sq"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
            # float32 as Optimizer.load_state_dict casts every state tensor but "step" to the parameter's
            # dtype; exact to 2^24 updates of a row, long after beta2^t has reached 0
            state["row_step"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
            state["step"] = torch.tensor(0.0)  # the table's steps, as AdamW keeps (it reads it on load)
        state["step"] += 1
        lr, eps, weight_decay = float(group["lr"]), group["eps"], group["weight_decay"]
        beta2 = group["betas"][1]
        t = state["row_step"][rows] + 1
        state["row_step"][rows] = t
        v = state["row_sq"][rows] * beta2 + values.square().mean(1) * (1 - beta2)
        state["row_sq"][rows] = v
        bias = 1 - torch.pow(torch.tensor(beta2, dtype=torch.float64, device=p.device), t.double())
        denom = (v.double() / bias).sqrt().float() + eps  # (n,)
        if weight_decay:
            p[rows] = p[rows] * (1 - lr * weight_decay)
        p.index_add_(0, rows, (values / denom[:, None]).to(p.dtype), alpha=-lr)


class WeightAverage:
    """An exponential moving average of a model's parameters, which validation, model.pt and eval.py
    then use (train.py --ema-decay). After optimizer step t (counted from 1) each averaged parameter
    moves toward the trained one:

        avg <- d_t * avg + (1 - d_t) * param,   d_t = min(decay, (1 + t) / (10 + t))

    The warm-up of d_t (TensorFlow's ExponentialMovingAverage with num_updates) keeps the first
    steps from tying the average to the random initial weights. A high learning rate makes each
    step's weights noisy around where the loss wants them; their average sits closer.

    `model` is a copy of the trained module (its buffers, such as item codes, never change); its
    state_dict() is what a run saves as its weights. `state_dict()` / `load_state_dict()` carry the
    average and t for a bitwise resume.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay!r}")
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average in `model`'s parameters after an optimizer step."""
        self.updates += 1
        keep = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, p in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1 - keep)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
