"""SASRec and the k-shift layer: rows against a NumPy port of the hash, masks, padding, loading."""

import collections
import json
import math
import re
from collections.abc import Callable
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

import longrec_core.model as model_module
from longrec_core import kernels
from longrec_core.codes import hashed_codes
from longrec_core.model import (
    WEIGHT_SEED_SALT,
    CodesEmbedding,
    KShiftEmbedding,
    LowRankEmbedding,
    ModelConfig,
    SASRec,
    embedding_memory_bytes,
    kshift_collision_share,
    kshift_table_rows,
    load_model,
    saved_codes,
)
from longrec_core.optim import optimizer_for

try:
    from longrec_core import kshift_rows
except ImportError:  # the Rust core is not built yet
    kshift_rows = None
needs_core = pytest.mark.skipif(kshift_rows is None, reason="longrec_core._core is not built (run maturin develop)")

# --- NumPy reference of the core's hash (wrapping uint64 arithmetic) ---------------------------

U = np.uint64


def splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + U(0x9E3779B97F4A7C15)
    z = (x ^ (x >> U(30))) * U(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U(27))) * U(0x94D049BB133111EB)
    return z ^ (z >> U(31))


def reference_rows(ids: np.ndarray, k: int, rows: int, seed: int, scheme: str) -> np.ndarray:
    h = splitmix64(ids.astype(np.uint64) ^ splitmix64(np.array([seed % 2**64], dtype=np.uint64)))
    out = np.empty((len(ids), k), dtype=np.int64)
    for c in range(k):
        if scheme == "mix":
            key = splitmix64(np.array([0xC0FFEE + c], dtype=np.uint64)) | U(1)
            out[:, c] = splitmix64(h ^ key) % U(rows)
        elif scheme == "rotate":
            rot = h if c == 0 else (h << U(c)) | (h >> U(64 - c))
            out[:, c] = rot % U(rows)
        else:  # rotate_signed: the paper code's arithmetic shift, then Python's floor mod
            s = h.view(np.int64)
            rot = s if c == 0 else (h << U(c)).view(np.int64) | (s >> np.int64(64 - c))
            out[:, c] = np.mod(rot, rows)
    return out


@needs_core
@pytest.mark.parametrize("scheme", ["mix", "rotate", "rotate_signed"])
@pytest.mark.parametrize("seed,rows", [(0, 7), (1, 1000), (12345, 2**31 - 1)])
def test_kshift_rows_match_numpy_reference(scheme, seed, rows):
    ids = np.concatenate([np.arange(2000), [2**31 - 1, 2**40 + 3, 2**62]])
    got = kshift_rows(ids, k=8, rows=rows, seed=seed, scheme=scheme)
    assert np.array_equal(got, reference_rows(ids, 8, rows, seed, scheme))


def test_reference_hash_known_value():
    # splitmix64 of state 0 (first output of the standard generator seeded with 0)
    assert splitmix64(np.array([0], dtype=np.uint64))[0] == U(0xE220A8397B1DCDAF)


# --- collision share ---------------------------------------------------------------------------


def test_collision_share_hand_made():
    rows = np.array(
        [
            [9, 9],  # id 0 (padding): ignored even though it equals nothing
            [1, 2],
            [2, 1],
            [3, 4],
            [1, 2],
            [5, 5],
            [5, 6],
        ]
    )
    # items 1, 2, 4 share the multiset {1, 2}; {5, 5} and {5, 6} differ
    assert kshift_collision_share(rows) == pytest.approx(3 / 6)
    assert kshift_collision_share(np.array([[0, 0], [1, 1], [1, 2]])) == 0.0
    assert kshift_collision_share(np.array([[0, 0], [1, 1], [1, 1], [2, 1]])) == pytest.approx(2 / 3)


def test_collision_share_matches_unique_reference():
    rows = np.random.default_rng(0).integers(0, 40, size=(3001, 3))  # ~11k multisets: many collide
    s = np.sort(rows[1:], axis=1)
    _, inverse, counts = np.unique(s, axis=0, return_inverse=True, return_counts=True)
    expected = (counts[inverse.reshape(-1)] > 1).mean()
    assert 0 < expected < 1
    assert kshift_collision_share(rows) == pytest.approx(expected)


@needs_core
def test_rotate_collides_and_mix_does_not():
    n = 20_000
    share = {s: KShiftEmbedding(n, 4, k=8, compression=16, scheme=s).collision_share() for s in ("mix", "rotate")}
    assert share["mix"] < 0.001 < 0.01 < share["rotate"]


# --- k-shift layer -----------------------------------------------------------------------------


@needs_core
def test_kshift_embedding_composes_rows():
    emb = KShiftEmbedding(100, 6, k=4, compression=8, seed=3)
    assert emb.n_rows == kshift_table_rows(100, 8) == 13 and emb.table.shape == (13, 6)
    assert np.array_equal(emb.rows.numpy(), reference_rows(np.arange(101), 4, 13, 3, "mix"))
    ids = torch.tensor([[0, 5, 99], [100, 1, 0]])
    out = emb(ids)
    assert out.shape == (2, 3, 6)
    expected = emb.table[emb.rows[ids].long()].sum(dim=2) / math.sqrt(4)
    expected[ids == 0] = 0
    assert torch.allclose(out, expected)
    assert torch.equal(out[0, 0], torch.zeros(6))
    out.sum().backward()  # gradient reaches only rows that real items use
    used = torch.zeros(13, dtype=torch.bool)
    used[emb.rows[ids[ids != 0]].long().reshape(-1)] = True
    assert torch.equal(emb.table.grad.abs().sum(1) > 0, used)


@needs_core
def test_kshift_fingerprint_guards_loading():
    a = KShiftEmbedding(50, 4, k=3, compression=5, seed=0)
    b = KShiftEmbedding(50, 4, k=3, compression=5, seed=0)
    b.load_state_dict(a.state_dict())
    assert "rows" not in a.state_dict()  # recomputed from the seed, never stored
    c = KShiftEmbedding(50, 4, k=3, compression=5, seed=1)
    with pytest.raises(ValueError, match="k-shift rows differ"):
        c.load_state_dict(a.state_dict())


def test_memory_of_ten_million_items_fits_in_a_gigabyte():
    cfg = ModelConfig(n_items=10**7, max_len=200, item_emb="kshift", kshift_compression=16)
    mem = embedding_memory_bytes(cfg)
    assert mem["params_bytes"] == 625_000 * 64 * 4 and mem["rows_bytes"] == (10**7 + 1) * 8 * 4
    assert mem["params_bytes"] + mem["adam_bytes"] + mem["rows_bytes"] < 1e9
    assert mem["full_table_bytes"] == (10**7 + 1) * 64 * 4
    assert embedding_memory_bytes(ModelConfig(n_items=10, max_len=5))["total_bytes"] == 4 * 11 * 64 * 4


# --- k-shift variants and the low-rank baseline --------------------------------------------------

# ModelConfig settings of each opt-in variant (tiny(): 30 items, dim 16, compression 4)
VARIANTS = {
    "head": {"item_emb": "kshift", "kshift_head": 5},
    "weights": {"item_emb": "kshift", "kshift_weights": True},
    "computed": {"item_emb": "kshift", "kshift_rows": "computed"},
    "all": {"item_emb": "kshift", "kshift_head": 5, "kshift_weights": True, "kshift_rows": "computed"},
    "rowwise": {"item_emb": "kshift", "kshift_optimizer": "rowwise", "kshift_weights": True},
    "lowrank": {"item_emb": "lowrank"},
    "codes": {"item_emb": "codes", "code_subspaces": 4, "code_centroids": 8},
    "codes-wide": {"item_emb": "codes", "code_subspaces": 2, "code_centroids": 300},  # int16-held codes
    "codes-residual-rowwise": {
        "item_emb": "codes",
        "code_subspaces": 4,
        "code_centroids": 8,
        "code_residual": 3,
        "kshift_optimizer": "rowwise",
    },
    "kshift-codes": {
        "item_emb": "kshift",
        "kshift_rows": "codes",
        "kshift_k": 4,
        "code_subspaces": 4,
        "code_centroids": 8,
    },
    "kshift-codes-all": {
        "item_emb": "kshift",
        "kshift_rows": "codes",
        "kshift_k": 3,
        "code_subspaces": 3,
        "code_centroids": 5,
        "kshift_head": 4,
        "kshift_weights": True,
        "kshift_optimizer": "rowwise",
    },
}
needs_core_unless_lowrank = [pytest.param(v, marks=needs_core if v != "lowrank" else ()) for v in VARIANTS]


@needs_core
@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("head", [0, 7])
def test_computed_rows_equal_the_core_and_the_stored_buffer_bitwise(weights, head):
    kw = {"k": 4, "compression": 8, "seed": 5, "head": head, "weights": weights}
    stored = KShiftEmbedding(100, 6, **kw)
    computed = KShiftEmbedding(100, 6, **kw, rows="computed")
    assert not hasattr(computed, "rows") and not hasattr(computed, "weight_rows")  # no buffers
    if weights:  # trained-looking weights, so a wrong weight row shows
        with torch.no_grad():
            stored.weights.uniform_(-1, 1)
    computed.load_state_dict(stored.state_dict())  # same fingerprint, same parameters
    ids = torch.tensor([[0, 5, 99], [100, 1, 7]])
    flat = ids.reshape(-1)
    want = kshift_rows(flat.numpy(), k=4, rows=13, seed=5)
    np.testing.assert_array_equal(computed.rows_of(flat).numpy(), want)
    np.testing.assert_array_equal(stored.rows_of(flat).numpy(), want)
    if weights:
        want_w = kshift_rows(flat.numpy(), k=1, rows=13, seed=5 ^ WEIGHT_SEED_SALT)[:, 0]
        np.testing.assert_array_equal(computed.weight_rows_of(flat).numpy(), want_w)
        np.testing.assert_array_equal(stored.weight_rows_of(flat).numpy(), want_w)
    assert torch.equal(computed(ids), stored(ids))  # bitwise
    all_ids = torch.arange(101)
    assert torch.equal(computed(all_ids), stored(all_ids))


@needs_core
def test_fingerprint_in_chunks_is_the_whole_buffers(monkeypatch):
    import hashlib

    emb = KShiftEmbedding(50, 4, k=3, compression=5, seed=2)
    # the digest old checkpoints hold: blake2b of the whole [N+1, k] int32 buffer at once
    whole = hashlib.blake2b(emb.rows.numpy().tobytes(), digest_size=8).digest()
    assert int(emb.rows_fingerprint) == int.from_bytes(whole, "little", signed=True)
    monkeypatch.setattr(model_module, "ROW_CHUNK", 7)  # 51 ids in 8 chunks, the last one short
    computed = KShiftEmbedding(50, 4, k=3, compression=5, seed=2, rows="computed")
    assert int(computed.rows_fingerprint) == int(emb.rows_fingerprint)
    assert np.array_equal(model_module._kshift_rows_int32(50, 3, 10, 2, "mix"), emb.rows.numpy())
    with pytest.raises(ValueError, match="k-shift rows differ"):
        KShiftEmbedding(50, 4, k=3, compression=5, seed=3, rows="computed").load_state_dict(emb.state_dict())


@pytest.mark.parametrize("variant", needs_core_unless_lowrank)
def test_variant_vectors_have_width_d_and_padding_stays_zero(variant):
    model = tiny(**VARIANTS[variant]).train()
    ids = torch.tensor([[0, 3, 30], [6, 0, 1]])
    v = model.item_vectors(ids)
    assert v.shape == (2, 3, 16) and torch.equal(v[ids == 0], torch.zeros(2, 16))
    assert torch.isfinite(v).all() and v[ids != 0].abs().sum(1).min() > 0
    assert model.item_table().shape == (31, 16) and torch.equal(model.item_table()[ids], v)
    # a step of train.py's optimizer (AdamW) with weight decay leaves padding at exactly zero
    opt = optimizer_for(model, lr=0.1, weight_decay=0.1)
    x = seqs()
    model(x)[x != 0].sum().backward()
    opt.step()
    assert torch.equal(model.item_vectors(torch.tensor([0])), torch.zeros(1, 16))


@needs_core
def test_head_items_use_their_own_rows():
    emb = KShiftEmbedding(50, 4, k=3, compression=5, head=10)
    head, tail = torch.arange(1, 11), torch.arange(11, 51)
    assert emb.head.shape == (10, 4) and torch.equal(emb(head), emb.head)
    plain = KShiftEmbedding(50, 4, k=3, compression=5)  # same rows; tail items compose as before
    with torch.no_grad():
        plain.table.copy_(emb.table)
    assert torch.equal(emb(tail), plain(tail))
    before_head, before_tail = emb(head).detach().clone(), emb(tail).detach().clone()
    with torch.no_grad():
        emb.table.add_(1.0)  # every hashed row
    assert torch.equal(emb(head), before_head) and not torch.equal(emb(tail), before_tail)
    before_tail = emb(tail).detach().clone()
    with torch.no_grad():
        emb.head.add_(1.0)
    assert not torch.equal(emb(head), before_head) and torch.equal(emb(tail), before_tail)
    emb(head).sum().backward()  # a head item's gradient goes to its own row only
    assert torch.equal(emb.table.grad, torch.zeros_like(emb.table))
    assert emb.collision_share() == kshift_collision_share(emb.rows[10:].numpy())


@needs_core
def test_codes_embedding_concatenates_the_rows_its_codes_pick():
    codes = np.random.default_rng(0).integers(0, 5, (41, 4)).astype(np.uint8)
    codes[0] = 0
    emb = CodesEmbedding(40, 12, subspaces=4, centroids=5, codes=codes)
    assert emb.table.shape == (4 * 5, 3) and emb.codes.dtype == torch.uint8 and emb.codes.shape == (41, 4)
    ids = torch.tensor([[0, 1, 40], [7, 7, 0]])
    want = torch.stack([torch.cat([emb.table[c * 5 + int(codes[i, c])] for c in range(4)]) for i in ids.reshape(-1)])
    want[ids.reshape(-1) == 0] = 0
    assert emb(ids).shape == (2, 3, 12) and torch.equal(emb(ids), want.view(2, 3, 12))
    emb(torch.tensor([0, 0])).sum().backward()  # padding passes no gradient, though it reads rows c * 5
    assert torch.equal(emb.table.grad, torch.zeros_like(emb.table))
    with pytest.raises(ValueError, match=r"codes must have shape \(41, 4\)"):
        CodesEmbedding(40, 12, subspaces=4, centroids=5, codes=codes[:, :3])
    with pytest.raises(ValueError, match=r"codes must be in 0\.\.3"):
        CodesEmbedding(40, 12, subspaces=4, centroids=4, codes=codes)
    with pytest.raises(ValueError, match="must divide dim"):
        CodesEmbedding(40, 12, subspaces=5, centroids=5)
    # no codes given: every item's are hashed, as for an item unseen in training
    assert np.array_equal(
        CodesEmbedding(40, 12, 4, 300, seed=3).codes.numpy().view(np.uint16), hashed_codes(40, 4, 300, 3)
    )


@needs_core
def test_kshift_rows_from_codes():
    codes = np.random.default_rng(1).integers(0, 6, (51, 3)).astype(np.uint8)
    codes[0] = 0
    emb = KShiftEmbedding(50, 4, k=3, compression=2, rows="codes", codes=codes, centroids=6)
    assert emb.n_rows == 18 and emb.table.shape == (18, 4) and not hasattr(emb, "rows")  # P = k x centroids
    ids = torch.arange(51)
    rows = torch.from_numpy(codes.astype(np.int64)) + torch.tensor([0, 6, 12])
    assert torch.equal(emb.rows_of(ids), rows)
    want = emb.table[rows].sum(1) / math.sqrt(3)
    want[0] = 0
    torch.testing.assert_close(emb(ids), want)
    assert emb.collision_share() == kshift_collision_share(rows.numpy())
    swapped = np.zeros((4, 2), dtype=np.uint8)
    swapped[1:] = [[1, 2], [2, 1], [1, 2]]  # items 1 and 3 share their code; item 2 only its multiset
    for share in (
        KShiftEmbedding(3, 4, k=2, rows="codes", codes=swapped, centroids=3).collision_share(),
        CodesEmbedding(3, 4, subspaces=2, centroids=3, codes=swapped).collision_share(),
    ):
        assert share == pytest.approx(2 / 3)
    other = KShiftEmbedding(50, 4, k=3, compression=2, rows="codes", centroids=6)  # hashed codes until loaded
    other.load_state_dict(emb.state_dict())
    assert torch.equal(other.codes, emb.codes) and torch.equal(other(ids), emb(ids))


@pytest.mark.parametrize("centroids", [pytest.param(7, marks=needs_core), pytest.param(1000, marks=needs_core)])
@pytest.mark.parametrize("kshift", [False, True])
def test_load_model_restores_the_codes(tmp_path, centroids, kshift):
    kw = {"item_emb": "kshift", "kshift_rows": "codes", "kshift_k": 4} if kshift else {"item_emb": "codes"}
    cfg = ModelConfig(n_items=30, max_len=12, dim=16, code_subspaces=4, code_centroids=centroids, **kw)
    codes = np.random.default_rng(2).integers(0, centroids, (31, 4)).astype(np.uint8 if centroids <= 256 else np.uint16)
    codes[0] = 0
    model, x = SASRec(cfg, codes=codes).eval(), seqs()
    torch.save({"model": model.state_dict(), "model_config": cfg.to_dict()}, tmp_path / "model.pt")
    loaded = load_model(tmp_path)
    np.testing.assert_array_equal(saved_codes(loaded.state_dict()), codes)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="codes were given but item_emb 'full'"):
        SASRec(ModelConfig(n_items=30, max_len=12), codes=codes)


@needs_core
def test_learned_weights_combine_the_rows():
    emb = KShiftEmbedding(60, 5, k=4, compression=6, weights=True)
    plain = KShiftEmbedding(60, 5, k=4, compression=6)
    with torch.no_grad():
        plain.table.copy_(emb.table)
    ids = torch.arange(61)
    assert emb.weights.shape == (10, 4)
    torch.testing.assert_close(emb(ids), plain(ids))  # initialized to 1/sqrt(k)
    with torch.no_grad():
        emb.weights.uniform_(-1, 1)
    w = emb.weights[emb.weight_rows[ids].long()]  # (61, k)
    want = (emb.table[emb.rows[ids].long()] * w.unsqueeze(-1)).sum(1)
    want[0] = 0
    torch.testing.assert_close(emb(ids), want)
    emb(ids[1:]).sum().backward()
    assert emb.weights.grad.abs().sum() > 0


def test_lowrank_is_a_narrow_table_times_a_projection():
    emb = LowRankEmbedding(40, 12, width=3)
    ids = torch.tensor([0, 1, 40])
    torch.testing.assert_close(emb(ids), emb.table[ids] @ emb.proj)
    assert torch.equal(emb(ids)[0], torch.zeros(12))
    assert tiny("lowrank").item_emb.table.shape == (31, 16 // 4)  # r = dim // compression
    assert emb(torch.arange(1, 41)).std().item() == pytest.approx(0.02, rel=0.3)  # a full table's scale


def test_memory_of_each_variant():
    n, d, p = 10**7, 64, 625_000

    def mem(**kw):
        return embedding_memory_bytes(ModelConfig(n_items=n, max_len=200, **kw))

    plain = mem(item_emb="kshift")
    assert plain["table_bytes"] == p * d * 4 and plain["rows_bytes"] == (n + 1) * 8 * 4
    assert plain["total_bytes"] == 4 * p * d * 4 + (n + 1) * 32 and plain["bytes_per_item"] == pytest.approx(96, 1e-3)
    assert mem(item_emb="kshift", kshift_rows="computed")["rows_bytes"] == 0
    both = mem(item_emb="kshift", kshift_head=1000, kshift_weights=True)
    assert both["head_bytes"] == 1000 * d * 4 and both["weights_bytes"] == p * 8 * 4
    assert both["params_bytes"] == (p * d + 1000 * d + p * 8) * 4 and both["weight_rows_bytes"] == (n + 1) * 4
    computed = mem(item_emb="kshift", kshift_weights=True, kshift_rows="computed")
    assert computed["rows_bytes"] == computed["weight_rows_bytes"] == 0
    low = mem(item_emb="lowrank")  # r = 64 // 16 = 4: the same bytes per item as the k-shift table
    assert low["table_bytes"] == (n + 1) * 4 * 4 and low["proj_bytes"] == 4 * d * 4 and low["rows_bytes"] == 0
    assert low["params_bytes"] == pytest.approx(plain["params_bytes"], rel=1e-3)
    rowwise = mem(item_emb="kshift", kshift_optimizer="rowwise", kshift_rows="computed")
    assert rowwise["grad_bytes"] == 0 and rowwise["adam_bytes"] == 8 * p  # sparse gradient, 8 bytes a row
    assert rowwise["total_bytes"] == p * d * 4 + 8 * p
    full = mem()
    assert full["total_bytes"] == full["full_total_bytes"] and full["bytes_per_item"] == pytest.approx(1024, 1e-3)
    codes = mem(item_emb="codes", code_subspaces=8, code_centroids=256)  # 8 sub-tables of 256 x 8
    assert codes["table_bytes"] == 256 * d * 4 and codes["codes_bytes"] == (n + 1) * 8 and codes["rows_bytes"] == 0
    assert codes["total_bytes"] == 4 * 256 * d * 4 + (n + 1) * 8
    assert mem(item_emb="codes", code_centroids=257)["codes_bytes"] == (n + 1) * 8 * 2  # uint16 codes
    kcodes = mem(item_emb="kshift", kshift_rows="codes", kshift_k=4, code_subspaces=4, code_centroids=100)
    assert kcodes["table_bytes"] == 4 * 100 * d * 4 and kcodes["rows_bytes"] == 0  # P = k x centroids
    assert kcodes["codes_bytes"] == (n + 1) * 4 and kcodes["total_bytes"] == 4 * 400 * d * 4 + (n + 1) * 4
    kw = dict(item_emb="kshift", kshift_rows="codes", kshift_k=4, code_subspaces=4, code_centroids=100)
    rowwise = mem(**kw, kshift_optimizer="rowwise", kshift_weights=True)
    assert rowwise["adam_bytes"] == 8 * 400 + 2 * 400 * 4 * 4 and rowwise["weight_rows_bytes"] == (n + 1) * 4
    residual = mem(item_emb="codes", code_residual=5)  # sub-tables 256 x d, an (N+1) x 5 table, a 5 x d projection
    params = 256 * d * 4 + (n + 1) * 5 * 4 + 5 * d * 4
    assert residual["params_bytes"] == residual["grad_bytes"] == params and residual["adam_bytes"] == 2 * params
    rowwise = mem(item_emb="codes", code_residual=5, kshift_optimizer="rowwise")  # 8 bytes a row of state
    assert rowwise["grad_bytes"] == params and rowwise["adam_bytes"] == 2 * (params - (n + 1) * 5 * 4) + 8 * (n + 1)
    assert rowwise["total_bytes"] == residual["total_bytes"] - 2 * (n + 1) * 5 * 4 + 8 * (n + 1)


# the sizes the code runs train at d = 64: (items, item_emb settings, at most this share of a full table)
CODE_SIZES = [
    (12_101, {"item_emb": "codes", "code_subspaces": 8, "code_centroids": 512}, 1 / 16),  # amazon-beauty
    (12_101, {"item_emb": "codes", "code_subspaces": 8, "code_centroids": 256}, 1 / 32),
    (
        12_101,
        {"item_emb": "kshift", "kshift_rows": "codes", "kshift_k": 8, "code_subspaces": 8, "code_centroids": 64},
        1 / 16,
    ),
    (
        12_101,
        {"item_emb": "kshift", "kshift_rows": "codes", "kshift_k": 8, "code_subspaces": 8, "code_centroids": 32},
        1 / 32,
    ),
    (  # retailrocket: 3 residual floats with AdamW, 5 with the row-wise rule
        36_968,
        {"item_emb": "codes", "code_subspaces": 8, "code_centroids": 256, "code_residual": 3},
        1 / 16,
    ),
    (
        36_968,
        {"item_emb": "codes", "code_residual": 5, "kshift_optimizer": "rowwise"},
        1 / 16,
    ),
    (3_416, {"item_emb": "codes", "code_subspaces": 8, "code_centroids": 128}, 1 / 16),  # ml-1m
    (3_416, {"item_emb": "codes", "code_subspaces": 8, "code_centroids": 64}, 1 / 32),
    (
        3_416,
        {"item_emb": "kshift", "kshift_rows": "codes", "kshift_k": 8, "code_subspaces": 8, "code_centroids": 16},
        1 / 16,
    ),
    (
        3_416,
        {"item_emb": "kshift", "kshift_rows": "codes", "kshift_k": 4, "code_subspaces": 4, "code_centroids": 16},
        1 / 32,
    ),
]


@pytest.mark.parametrize("n, kw, share", CODE_SIZES)
def test_code_configurations_fit_their_share_of_a_full_table(n, kw, share):
    mem = embedding_memory_bytes(ModelConfig(n_items=n, max_len=200, dim=64, **kw))
    assert mem["total_bytes"] <= share * mem["full_total_bytes"]


def test_old_configs_load_and_bad_variant_configs_are_refused():
    old = {"n_items": 30, "max_len": 12, "item_emb": "kshift", "kshift_k": 8, "kshift_compression": 16}
    old |= {"kshift_scheme": "mix", "kshift_seed": 0, "n_types": 0, "dim": 16, "layers": 1, "heads": 2}
    cfg = ModelConfig.from_dict(old)  # a config saved before the variants existed
    assert (cfg.kshift_head, cfg.kshift_weights, cfg.kshift_rows) == (0, False, "stored")
    bad = [
        ({"kshift_head": 3}, "kshift_head applies to item_emb kshift only, not item_emb full"),
        ({"item_emb": "lowrank", "kshift_rows": "computed"}, "kshift_rows computed applies to item_emb kshift only"),
        ({"item_emb": "kshift", "kshift_head": 30}, "kshift_head (30) must be below the 30 items"),
        ({"item_emb": "kshift", "kshift_rows": "lazy"}, "kshift_rows must be one of"),
        ({"item_emb": "kshift", "kshift_optimizer": "sgd"}, "kshift_optimizer must be one of"),
        (
            {"kshift_optimizer": "rowwise"},
            "kshift_optimizer rowwise applies to item_emb kshift or to item_emb codes with code_residual above 0, "
            "not item_emb full",
        ),
        ({"item_emb": "codes", "kshift_optimizer": "rowwise"}, "not item_emb codes with code_residual 0"),
        ({"item_emb": "lowrank", "kshift_compression": 17}, "width dim // kshift_compression would be 0"),
        ({"code_centroids": 16}, "code_centroids 16 applies to item_emb codes or kshift_rows codes only"),
        (
            {"item_emb": "kshift", "code_subspaces": 4},
            "code_subspaces 4 applies to item_emb codes or kshift_rows codes",
        ),
        ({"item_emb": "codes", "code_subspaces": 3}, "code_subspaces (3) must divide dim (16)"),
        ({"item_emb": "codes", "code_subspaces": 32}, "code_subspaces (32) must divide dim (16)"),
        ({"item_emb": "codes", "code_centroids": 65537}, "code_centroids must be <= 65,536, got 65,537"),
        ({"item_emb": "codes", "code_centroids": 0}, "code_centroids must be >= 1, got 0"),
        ({"item_emb": "kshift", "kshift_rows": "codes", "kshift_k": 4}, "code_subspaces (8) must equal kshift_k (4)"),
        ({"item_emb": "lowrank", "kshift_rows": "codes"}, "kshift_rows codes applies to item_emb kshift only"),
        ({"ffn": "16"}, "ffn must be an integer, got '16'"),  # a hand-edited config.json
        ({"heads": None}, "heads must be an integer, got None"),
        ({"layers": 1025}, "layers must be <= 1,024, got 1,025"),
        ({"kshift_seed": -1}, "kshift_seed must be >= 0, got -1"),
        ({"n_types": 128}, "n_types must be <= 127, got 128"),
        ({"dropout": 1.0}, "dropout must be a number in [0, 1), got 1.0"),
        ({"dropout": "0.1"}, "dropout must be a number in [0, 1), got '0.1'"),
        ({"kshift_compression": math.nan}, "kshift_compression must be a finite number above 0, got nan"),
        ({"summary_events": 4}, "summary_events (4) must be a multiple of summary_tokens (0), both set or both 0"),
    ]
    for kw, message in bad:
        with pytest.raises(ValueError, match=re.escape(message)):
            ModelConfig(n_items=30, max_len=12, dim=16, **kw)


# --- SASRec ------------------------------------------------------------------------------------


def tiny(item_emb: str = "full", ops: kernels.Ops = kernels.CORE, **kw) -> SASRec:
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_items=30, max_len=12, dim=16, layers=2, heads=2, ffn=32, item_emb=item_emb, kshift_compression=4, **kw
    )
    return SASRec(cfg, ops=ops).eval()


def seqs(B: int = 4, T: int = 8, seed: int = 0) -> torch.Tensor:
    x = torch.randint(1, 31, (B, T), generator=torch.Generator().manual_seed(seed))
    x[1, :3] = 0  # left padding
    x[2, :7] = 0
    return x


EMBS = ["full", pytest.param("kshift", marks=needs_core), "lowrank", pytest.param("codes", marks=needs_core)]


@pytest.mark.parametrize("item_emb", EMBS)
def test_causal(item_emb):
    model, x = tiny(item_emb), seqs()
    y = x.clone()
    y[:, 5] = (y[:, 5] % 30) + 1  # change one event in the middle (padding in row 2 becomes real: fine)
    a, b = model(x), model(y)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-4)


@pytest.mark.parametrize("item_emb", EMBS)
def test_left_padding_does_not_change_real_outputs(item_emb):
    model, x = tiny(item_emb), seqs()
    wider = torch.cat([torch.zeros(4, 3, dtype=torch.long), x], dim=1)  # (4, 11): 3 more padding columns
    a, b = model(x), model(wider)[:, 3:]
    real = x != 0
    assert torch.allclose(a[real], b[real], atol=1e-5)
    assert torch.isfinite(model(wider)).all()  # padding positions themselves stay finite


def test_fully_padded_rows_give_no_nan_in_training_mode():
    model = tiny().train()
    x = seqs()
    x[0] = 0
    out = model(x)
    assert torch.isfinite(out).all()
    out[x != 0].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("item_emb", EMBS)
def test_item_vectors_are_tied_and_padding_is_zero(item_emb):
    model = tiny(item_emb)
    ids = torch.tensor([0, 1, 30])
    v = model.item_vectors(ids)
    assert v.shape == (3, 16) and torch.equal(v[0], torch.zeros(16))
    assert torch.allclose(model.item_table()[ids], v)
    # the input side embeds the same vectors: one item alone, no other signal than its vector
    x = torch.tensor([[0, 0, 7]])
    table = model.item_emb.weight if item_emb == "full" else model.item_emb.table
    with torch.no_grad():
        table.mul_(2)
    assert torch.allclose(model.item_vectors(torch.tensor([7])), 2 * tiny(item_emb).item_vectors(torch.tensor([7])))
    assert not torch.allclose(model(x), tiny(item_emb)(x))


def test_types_embedding():
    model = tiny(n_types=3)
    x = seqs()
    t = (x != 0).long()
    t2 = t * 2
    assert not torch.allclose(model(x, t), model(x, t2))
    with pytest.raises(ValueError, match="pass types"):
        model(x)
    assert torch.allclose(tiny()(x, t), tiny()(x))  # a model without types ignores them


def test_bad_input_and_config_are_refused():
    with pytest.raises(ValueError, match="exceeds the model's max_len"):
        tiny()(torch.ones(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of heads"):
        ModelConfig(n_items=5, max_len=5, dim=10, heads=3)
    with pytest.raises(ValueError, match="item_emb must be"):
        ModelConfig(n_items=5, max_len=5, item_emb="hash")
    with pytest.raises(ValueError, match="unknown model config keys: colour"):
        ModelConfig.from_dict({"n_items": 5, "max_len": 5, "colour": 1})


def test_flags_map_onto_every_model_field_and_refusals_name_the_flags():

    from longrec_core.train_flags import model_config, train_parser

    parse = train_parser().parse_args
    argv = ["--window", "9", "--dim", "12", "--layers", "3", "--heads", "3", "--ffn", "7", "--dropout", "0.1"]
    argv += ["--item-emb", "kshift", "--kshift-k", "4", "--emb-compression", "2", "--kshift-scheme", "rotate"]
    argv += ["--kshift-seed", "5", "--kshift-head", "6", "--kshift-weights", "--kshift-rows", "codes"]
    argv += ["--kshift-optimizer", "rowwise", "--summary-tokens", "2", "--summary-events", "4", "--code-centroids", "9"]
    argv += ["--summary-pool", "attention"]
    cfg = model_config(parse(argv), n_items=40, n_types=3)
    default = ModelConfig(n_items=1, max_len=1)
    # every field but the data's differs from its default: each one is set from its flag (the code
    # residual belongs to item_emb codes, not to the k-shift these flags choose: checked on its own)
    assert [f.name for f in fields(cfg) if getattr(cfg, f.name) == getattr(default, f.name)] == ["code_residual"]
    assert model_config(parse(["--item-emb", "codes", "--code-residual", "3"]), n_items=40).code_residual == 3
    assert (cfg.max_len, cfg.kshift_compression, cfg.code_subspaces) == (9, 2.0, 4)  # m = k for k-shift codes
    assert model_config(parse(["--item-emb", "codes"]), n_items=40).code_subspaces == 8
    assert model_config(parse([]), n_items=40) == ModelConfig(n_items=40, max_len=200)
    for argv, message in [
        (["--window", "0"], "--window must be >= 1, got 0"),
        (["--item-emb", "lowrank", "--emb-compression", "65"], "--emb-compression (65) at most --dim (64)"),
        (["--item-emb", "kshift", "--kshift-head", "40"], "--kshift-head (40) must be below the 40 items"),
        (["--code-subspaces", "8"], "--code-subspaces 8 applies to --item-emb codes or --kshift-rows codes only"),
        (["--code-oversample", "0"], "--code-oversample 0 applies to --item-emb codes or --kshift-rows codes only"),
        (["--code-residual", "2"], "--code-residual 2 applies to --item-emb codes only, not --item-emb full"),
        (["--code-assignment", "pq"], "--code-assignment pq applies to --item-emb codes or --kshift-rows codes only"),
        (["--item-emb", "codes", "--code-components", "16"], "--code-components 16 applies to --code-assignment pq"),
        (
            ["--item-emb", "codes", "--code-assignment", "pq", "--code-components", "4"],
            "--code-components (4) must be at least the 8 codes per item",
        ),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            model_config(parse(argv), n_items=40)
    model_config(parse(["--item-emb", "kshift", "--kshift-head", "40"]))  # no bound before the data is loaded


@needs_core
def test_code_residual_separates_items_with_one_code():
    """With every item given the same code, codes alone give all items one vector; the residual gives
    each its own, padding stays exact zeros, and the memory counts the residual's table and projection."""
    cfg = ModelConfig(n_items=30, max_len=12, dim=16, layers=1, heads=2, ffn=32, item_emb="codes", code_subspaces=4)
    same = np.zeros((31, 4), dtype=np.uint8)
    plain = SASRec(cfg, codes=same).item_emb
    with_residual = SASRec(replace(cfg, code_residual=2), codes=same).item_emb
    ids = torch.tensor([0, 1, 2, 3])
    assert torch.equal(plain(ids)[1], plain(ids)[2])
    out = with_residual(ids)
    assert out.shape == (4, 16) and torch.equal(out[0], torch.zeros(16))
    assert not torch.allclose(out[1], out[2]) and not torch.allclose(out[2], out[3])
    extra = embedding_memory_bytes(replace(cfg, code_residual=2))["params_bytes"]
    assert extra - embedding_memory_bytes(cfg)["params_bytes"] == (31 * 2 + 2 * 16) * 4


def test_bf16_autocast_forward():
    model, x = tiny(), seqs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.float(), model(x), atol=0.2)


@pytest.mark.parametrize("item_emb", EMBS)
def test_load_model_round_trip(tmp_path, item_emb):
    model, x = tiny(item_emb, n_types=2), seqs()
    cfg = json.loads(json.dumps(model.cfg.to_dict()))  # as it travels through config.json
    assert ModelConfig.from_dict(cfg) == model.cfg
    torch.save({"model": model.state_dict(), "model_config": cfg}, tmp_path / "model.pt")
    loaded = load_model(tmp_path)
    assert not loaded.training
    t = (x != 0).long()
    assert torch.equal(loaded(x, t), model(x, t))
    with pytest.raises(FileNotFoundError, match=r"no model\.pt"):
        load_model(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# the ops every layer runs (longrec_core.kernels)


def test_every_layer_runs_the_ops_the_model_is_given():
    calls: collections.Counter[str] = collections.Counter()

    def counted(name: str) -> Callable:
        def op(*args):
            calls[name] += 1
            return getattr(kernels.TORCH, name)(*args)

        return op

    ops = kernels.Ops(**{name: counted(name) for name in ("dropout", "gelu_dropout", "attention")})
    model = tiny(ops=ops).train()  # 2 layers
    model(seqs())
    assert calls == {"dropout": 1 + 2 * 2, "gelu_dropout": 2, "attention": 2}
    assert torch.equal(tiny(ops=kernels.TORCH)(seqs()), tiny(ops=ops)(seqs()))  # eval: the same torch ops


def test_torch_ops_and_the_cores_agree_in_evaluation():
    """No dropout in evaluation: the two differ only by the core's GELU (within 3e-7 of torch's)."""
    x = seqs()
    assert torch.allclose(tiny()(x), tiny(ops=kernels.TORCH)(x), atol=1e-5)


def test_a_compression_below_one_gives_the_paper_codes_table_of_more_rows_than_items():
    """RecSysSWT's KShiftEmbedding has int(1.15 N) rows: --emb-compression 1/1.15 builds that table."""
    cfg = ModelConfig(n_items=3416, max_len=4, dim=16, heads=2, item_emb="kshift", kshift_compression=1 / 1.15)
    model = SASRec(cfg)
    assert model.item_emb.n_rows == math.ceil(3416 * 1.15) > 3416
    mem = embedding_memory_bytes(cfg)
    assert mem["bytes_per_item"] > mem["full_total_bytes"] / 3416  # no memory saved: more to train than a full table
