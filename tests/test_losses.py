"""Losses against plain references: full softmax by hand, chunked == full, sampled softmax math."""

import math

import pytest
import torch

from longrec_core.losses import (
    chunked_cross_entropy,
    full_cross_entropy,
    log_q,
    naive_cross_entropy,
    sample_negatives,
    sampled_softmax,
)


def make(M: int = 13, N: int = 29, d: int = 5, dtype: torch.dtype = torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(M, d, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(N + 1, d, generator=g, dtype=dtype)
    weight[0] = 100.0  # a huge padding row: any loss that scores it changes visibly
    weight.requires_grad_(True)
    targets = torch.randint(1, N + 1, (M,), generator=g)
    return hidden, weight, targets


def grads(loss: torch.Tensor, *xs: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, xs))


def reference_ce(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax over items 1..N written out by hand."""
    logits = hidden @ weight.T  # (M, N+1)
    lse = torch.logsumexp(logits[:, 1:], dim=1)
    return (lse - logits[torch.arange(len(targets)), targets]).mean()


@pytest.mark.parametrize("loss_fn", [full_cross_entropy, naive_cross_entropy])
def test_full_ce_matches_hand_reference_and_ignores_padding(loss_fn):
    hidden, weight, targets = make()
    targets[:5] = targets[0]  # repeated targets
    loss = loss_fn(hidden, weight, targets)
    ref = reference_ce(hidden, weight, targets)
    assert torch.allclose(loss, ref, atol=1e-12)
    gh, gw = grads(loss * 2.5, hidden, weight)
    assert torch.equal(gw[0], torch.zeros_like(gw[0]))  # padding row never trained
    rh, rw = grads(ref * 2.5, hidden, weight)
    assert torch.allclose(gh, rh, atol=1e-12) and torch.allclose(gw, rw, atol=1e-12)


def test_full_ce_float32_equals_naive_and_only_hidden_grad():
    hidden, weight, targets = make(M=64, N=300, d=16, dtype=torch.float32)
    a, b = full_cross_entropy(hidden, weight, targets), naive_cross_entropy(hidden, weight, targets)
    assert abs(a.item() - b.item()) < 1e-5
    for x, y in zip(grads(a, hidden, weight), grads(b, hidden, weight)):
        assert torch.allclose(x, y, atol=1e-6)
    (gh,) = grads(full_cross_entropy(hidden, weight.detach(), targets), hidden)
    assert torch.allclose(gh, grads(naive_cross_entropy(hidden, weight, targets), hidden)[0], atol=1e-6)


@pytest.mark.parametrize("M", [1, 31, 32, 33, 100])
def test_full_ce_blocks_of_rows_equal_one_block(M):
    # 300 items -> blocks of 873 rows by default; force small blocks to cross block edges.
    from longrec_core.losses import _FullCrossEntropy

    hidden, weight, targets = make(M=M, N=300, d=8)
    one = _FullCrossEntropy.apply(hidden, weight, targets, M, True)
    one_grads = grads(one, hidden, weight)
    for rows in (1, 7, 32):
        many = _FullCrossEntropy.apply(hidden, weight, targets, rows, True)
        assert torch.allclose(many, one, atol=1e-12)
        for x, y in zip(grads(many, hidden, weight), one_grads):
            assert torch.allclose(x, y, atol=1e-12)


def test_full_ce_without_grad_and_retained_graph():
    hidden, weight, targets = make(M=40, N=50, d=8)
    with torch.no_grad():
        assert torch.allclose(full_cross_entropy(hidden, weight, targets), reference_ce(hidden, weight, targets))
    loss = full_cross_entropy(hidden, weight, targets)
    first = torch.autograd.grad(loss, hidden, retain_graph=True)[0]
    again = torch.autograd.grad(loss, hidden)[0]  # a second backward sees the same gradient
    assert torch.equal(first, again)


@pytest.mark.parametrize(
    "loss_fn",
    [
        full_cross_entropy,
        chunked_cross_entropy,
        lambda h, w, t: sampled_softmax(h, w, t, num_negatives=4),
    ],
)
@pytest.mark.parametrize("bad", [0, -1, 30])
def test_padding_or_out_of_range_target_is_refused(loss_fn, bad):
    hidden, weight, targets = make()
    targets[3] = bad
    with pytest.raises(ValueError, match="targets must be item indices"):
        loss_fn(hidden, weight, targets)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 29, 30, 1000, None])
def test_chunked_equals_full_value_and_gradients(chunk_size):
    hidden, weight, targets = make()
    full = naive_cross_entropy(hidden, weight, targets)
    chunked = chunked_cross_entropy(hidden, weight, targets, chunk_size=chunk_size)
    assert abs(full.item() - chunked.item()) < 1e-10
    (gh_f, gw_f), (gh_c, gw_c) = grads(full * 3.0, hidden, weight), grads(chunked * 3.0, hidden, weight)
    assert torch.allclose(gh_f, gh_c, atol=1e-10) and torch.allclose(gw_f, gw_c, atol=1e-10)
    assert torch.equal(gw_c[0], torch.zeros_like(gw_c[0]))


def test_chunked_float32_and_repeated_targets():
    hidden, weight, _ = make(M=64, N=300, d=16, dtype=torch.float32)
    targets = torch.full((64,), 7)  # every row the same target: index_add must accumulate
    full = naive_cross_entropy(hidden, weight, targets)
    chunked = chunked_cross_entropy(hidden, weight, targets, chunk_size=37)
    assert abs(full.item() - chunked.item()) < 1e-5
    for a, b in zip(grads(full, hidden, weight), grads(chunked, hidden, weight)):
        assert torch.allclose(a, b, atol=1e-5)


def test_chunked_gradcheck():
    hidden, weight, targets = make(M=4, N=6, d=3)
    assert torch.autograd.gradcheck(lambda h, w: chunked_cross_entropy(h, w, targets, chunk_size=4), (hidden, weight))


def test_chunked_bf16_under_autocast_computes_in_float32():
    hidden, weight, targets = make(M=32, N=50, d=8, dtype=torch.float32)
    h16 = hidden.detach().bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = chunked_cross_entropy(h16, weight, targets, chunk_size=16)
    assert loss.dtype == torch.float32
    ref = full_cross_entropy(h16.float(), weight, targets)  # same bf16-rounded inputs, float32 math
    assert abs(loss.item() - ref.item()) < 1e-5
    gh, gw = grads(loss, h16, weight)
    assert gh.dtype == torch.bfloat16 and gw.dtype == torch.float32


def test_full_bf16_under_autocast_computes_in_float32():
    hidden, weight, targets = make(M=300, N=5000, d=8, dtype=torch.float32)  # 6 row blocks of 52
    h16 = hidden.detach().bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = full_cross_entropy(h16, weight, targets)
    assert loss.dtype == torch.float32
    h32 = h16.detach().float().requires_grad_(True)  # the same bf16-rounded inputs, float32 math
    ref = naive_cross_entropy(h32, weight, targets)
    assert abs(loss.item() - ref.item()) < 1e-6
    gh, gw = grads(loss, h16, weight)
    rh, rw = grads(ref, h32, weight)
    assert gh.dtype == torch.bfloat16 and gw.dtype == torch.float32
    assert torch.allclose(gw, rw, atol=1e-6) and torch.allclose(gh.float(), rh, rtol=1e-2, atol=1e-6)


def test_chunked_only_hidden_needs_grad():
    hidden, weight, targets = make()
    loss = chunked_cross_entropy(hidden, weight.detach(), targets, chunk_size=8)
    (gh,) = grads(loss, hidden)
    assert torch.allclose(gh, grads(full_cross_entropy(hidden, weight, targets), hidden)[0], atol=1e-10)


def test_sampled_log_q_on_a_hand_made_case():
    hidden = torch.tensor([[1.0, 0.0]], requires_grad=True)
    weight = torch.tensor([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])  # row 0 padding
    counts = torch.tensor([0.0, 1.0, 2.0, 1.0])  # q = 1/4, 2/4, 1/4
    loss = sampled_softmax(
        hidden,
        weight,
        torch.tensor([1]),
        num_negatives=3,
        sampler="popularity",
        item_counts=counts,
        negatives=torch.tensor([2, 3, 1]),
    )
    pos = 1.0 - math.log(1 / 4)
    negs = [0.0 - math.log(2 / 4), 2.0 - math.log(1 / 4)]  # the third negative is the target itself: masked
    expected = -pos + math.log(sum(math.exp(x) for x in [pos, *negs]))
    assert abs(loss.item() - expected) < 1e-6
    with pytest.raises(ValueError, match="negatives must be item indices"):  # padding is never a negative
        sampled_softmax(hidden, weight, torch.tensor([1]), 2, negatives=torch.tensor([2, 0]))


def test_sampled_with_all_items_as_negatives_equals_full_softmax():
    hidden, weight, targets = make(N=11)
    every = torch.arange(1, 12)  # each target appears once among the negatives: masked, so no double count
    sampled = sampled_softmax(hidden, weight, targets, num_negatives=11, negatives=every)
    full = full_cross_entropy(hidden, weight, targets)
    assert abs(sampled.item() - full.item()) < 1e-6
    gw = grads(sampled, weight)[0]
    assert torch.equal(gw[0], torch.zeros_like(gw[0]))


def test_sampled_accidental_hits_are_masked():
    # N = 2: every negative is item 1 or 2, so half the negatives hit the target; masking them makes
    # the loss exactly CE over {target, other item} weighted by how often the other one was drawn
    hidden, weight, targets = make(M=6, N=2)
    g = torch.Generator().manual_seed(1)
    loss = sampled_softmax(hidden, weight, targets, num_negatives=50, generator=g)
    neg = sample_negatives(2, 50, generator=torch.Generator().manual_seed(1))
    logits = (hidden @ weight.T).detach()  # (M, 3); log q is the same constant for every item: cancels
    other = 3 - targets
    n_other = (neg[None, :] == other[:, None]).sum(1)
    rows = torch.arange(6)
    expected = -logits[rows, targets] + torch.logaddexp(
        logits[rows, targets], logits[rows, other] + n_other.double().log()
    )
    assert abs(loss.item() - expected.mean().item()) < 1e-8


def test_sampled_shapes_and_weight_fn_of_a_model_like_owner():
    hidden, weight, targets = make(M=9, N=40, dtype=torch.float32)

    class Owner:
        n_items = 40

        def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
            assert ids.dim() == 1 and int(ids.min()) >= 1  # only targets and negatives are looked up
            return weight[ids]

    loss = sampled_softmax(
        hidden, Owner().item_vectors, targets, num_negatives=16, generator=torch.Generator().manual_seed(0)
    )
    assert loss.dim() == 0 and torch.isfinite(loss)
    gh, gw = grads(loss, hidden, weight)
    assert gh.shape == hidden.shape and gw.shape == weight.shape
    with pytest.raises(ValueError, match="needs n_items"):
        sampled_softmax(hidden, lambda ids: weight[ids], targets, num_negatives=4)
    with pytest.raises(ValueError, match="sampler must be"):
        sampled_softmax(hidden, weight, targets, num_negatives=4, sampler="zipf")


def test_popularity_sampler_follows_counts_and_never_draws_padding():
    counts = [1000, 1, 3, 0, 4]  # padding count ignored; the zero count is raised to 1
    ids = sample_negatives(4, 90_000, "popularity", counts, torch.Generator().manual_seed(0))
    freq = torch.bincount(ids, minlength=5).double() / len(ids)
    assert freq[0] == 0
    assert torch.allclose(freq[1:], torch.tensor([1, 3, 1, 4], dtype=torch.float64) / 9, atol=0.01)
    lq = log_q(torch.tensor([1, 2, 3, 4]), 4, "popularity", counts)
    assert torch.allclose(lq, torch.tensor([1.0, 3.0, 1.0, 4.0], dtype=torch.float64).div(9).log())
