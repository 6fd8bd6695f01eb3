"""SASRec-style causal transformer with a full, a k-shift, a low-rank or a code (RecJPQ) item embedding.

Conventions (shared with every stage):
- item ids are 1..N, 0 is padding and never a real item; item tables have N+1 rows, row 0 = padding;
- inputs are left-padded [B, T] batches, so column T-1 always holds the most recent event;
- scores are dot products of the final hidden state with `item_vectors(ids)`, the very vectors the
  input side embeds (tied), so a k-shift model scores with its composed vectors too.

    cfg = ModelConfig(n_items=3706, max_len=200)
    model = SASRec(cfg)
    hidden = model(items)                           # (B, T, d)
    logits = hidden[:, -1] @ model.item_table().T   # (B, N+1); column 0 is padding, never rank it
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from longrec_core import kshift_rows
from longrec_core.choices import ITEM_EMBS, KSHIFT_OPTIMIZERS, KSHIFT_ROW_SOURCES, KSHIFT_SCHEMES, SUMMARY_POOLS
from longrec_core.cli import INT64_MAX, check_int
from longrec_core.codes import MAX_CENTROIDS, code_dtype, hashed_codes
from longrec_core.kernels import CORE, Ops
from longrec_core.rundir import RunDir

# Each integer field's range. The upper bounds are far beyond any real use; above them a value is a
# typo that would overflow or exhaust memory later.
INT_FIELDS = {
    "n_items": (1, INT64_MAX),
    "max_len": (1, 2**20),
    "dim": (1, 2**16),
    "layers": (0, 1024),
    "heads": (1, 1024),
    "ffn": (1, 2**20),
    "kshift_k": (1, 1024),
    "kshift_seed": (0, 2**64 - 1),
    "n_types": (0, 127),
    "kshift_head": (0, 2**40),
    "summary_tokens": (0, 1024),
    "summary_events": (0, 2**20),
    "code_subspaces": (1, 2**16),
    "code_centroids": (1, MAX_CENTROIDS),
    "code_residual": (0, 2**16),
}
CHOICE_FIELDS = {
    "item_emb": ITEM_EMBS,
    "kshift_scheme": KSHIFT_SCHEMES,
    "kshift_rows": KSHIFT_ROW_SOURCES,
    "kshift_optimizer": KSHIFT_OPTIMIZERS,
    "summary_pool": SUMMARY_POOLS,
}


@dataclass
class ModelConfig:
    """Architecture of a SASRec model; saved in model.pt and config.json as a plain dict."""

    n_items: int  # N; the item table has N+1 rows, row 0 = padding
    max_len: int  # longest input T (learned positions)
    dim: int = 64  # d, width of embeddings and hidden states
    layers: int = 2  # transformer blocks
    heads: int = 2  # attention heads; must divide dim
    ffn: int = 256  # hidden width of each block's feed-forward
    dropout: float = 0.2  # on embeddings, attention weights and residual branches
    # "full" (N+1 x d table) | "kshift" (shared P x d table, P = ceil(N / compression))
    # | "lowrank" (N+1 x r table times an r x d projection, r = dim // compression)
    # | "codes" (m sub-tables of centroids x d/m rows; an item concatenates the rows its code picks)
    item_emb: str = "full"
    kshift_k: int = 8  # rows summed per item
    kshift_compression: float = 16  # N / P (kshift; below 1 = more rows than items); dim / r (lowrank)
    kshift_scheme: str = "mix"  # "mix" | "rotate" | "rotate_signed" (the paper code's bug, for comparison only)
    kshift_seed: int = 0  # seed of the item hash, and of the code assignment (codes)
    n_types: int = 0  # event types 1..n_types get an embedding; 0 = no type embedding
    # Each field below defaults to the model without its feature, so a config that lacks it loads as saved.
    kshift_head: int = 0  # items 1..H (the most frequent, as prep.py numbers them) get exact rows of their own
    kshift_weights: bool = False  # learned per-item weights of the k rows instead of 1/sqrt(k)
    # "stored" ([N+1, k] int32 buffer) | "computed" (hashed per batch) | "codes" (shift c takes row
    # c * code_centroids + code[item, c] of a table of k * code_centroids rows; code_subspaces = k)
    kshift_rows: str = "stored"
    # "adamw" | "rowwise": the optimizer (longrec_core.optim) of the per-item table, k-shift's shared
    # table or the codes' residual table; rowwise = 8 bytes of state per row (k-shift: sparse gradient)
    kshift_optimizer: str = "adamw"
    # History before the window: the `summary_events` events before a window's first input become
    # `summary_tokens` extra input tokens that every position of the window attends to. 0 and 0 = no
    # summary. summary_pool "mean": token i is the mean item vector of the i-th equal run of the events
    # (the most recent run last); "attention": token i is what learned query i picks from all of them
    # (SummaryAttention), so the summary learns which earlier events matter.
    summary_tokens: int = 0
    summary_events: int = 0
    summary_pool: str = "mean"
    # data-driven codes (longrec_core.codes), for item_emb "codes" and kshift_rows "codes"
    code_subspaces: int = 8  # m: codes per item (the SVD's components); must divide dim (codes), = kshift_k
    code_centroids: int = 256  # values of each code, 1..65536: rows of each sub-table
    # item_emb "codes": r floats of each item's own, projected to d and added to its sub-embeddings; 0 = none
    code_residual: int = 0

    @property
    def uses_codes(self) -> bool:
        """Whether the item embedding reads data-driven codes (a [N+1, m] buffer saved with the weights)."""
        return self.item_emb == "codes" or (self.item_emb == "kshift" and self.kshift_rows == "codes")

    def __post_init__(self) -> None:
        """Refuse (ValueError, one sentence naming the fields) a value out of range, then a combination
        of settings that does not compose; the only check of model settings (train.py's flags map onto
        these fields through `train_flags.model_config`, which names the flags in the message)."""
        for name, (lo, hi) in INT_FIELDS.items():
            if getattr(self, name) is None:  # which check_int lets pass
                raise ValueError(f"{name} must be an integer, got None")
            check_int(name, getattr(self, name), lo, hi)
        for name, allowed in CHOICE_FIELDS.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        d, c = self.dropout, self.kshift_compression
        if not (isinstance(d, (int, float)) and 0 <= d < 1):  # NaN fails too
            raise ValueError(f"dropout must be a number in [0, 1), got {d!r}")
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0):
            raise ValueError(f"kshift_compression must be a finite number above 0, got {c!r}")
        for bad, msg in self._combination_problems():
            if bad:
                raise ValueError(msg)

    def _combination_problems(self) -> Iterator[tuple[bool, str]]:
        """(refused, why) for each rule across fields; every field is already in range."""
        emb, m, k = self.item_emb, self.code_subspaces, self.kshift_k
        yield self.dim % self.heads != 0, f"dim ({self.dim}) must be a multiple of heads ({self.heads})"
        kshift_only = {
            "kshift_head": self.kshift_head > 0,
            "kshift_weights": self.kshift_weights,
            f"kshift_rows {self.kshift_rows}": self.kshift_rows != "stored",
        }
        for setting, given in kshift_only.items():
            yield bool(given) and emb != "kshift", f"{setting} applies to item_emb kshift only, not item_emb {emb}"
        yield (
            self.kshift_optimizer != "adamw" and emb != "kshift" and not (emb == "codes" and self.code_residual > 0),
            f"kshift_optimizer {self.kshift_optimizer} applies to item_emb kshift or to item_emb codes with "
            f"code_residual above 0, not item_emb {emb}" + (" with code_residual 0" if emb == "codes" else ""),
        )
        code_only = {f"code_subspaces {m}": m != 8, f"code_centroids {self.code_centroids}": self.code_centroids != 256}
        yield (
            self.code_residual > 0 and emb != "codes",
            f"code_residual {self.code_residual} applies to item_emb codes only, not item_emb {emb}",
        )
        for setting, given in code_only.items():
            yield (
                given and not self.uses_codes,
                f"{setting} applies to item_emb codes or kshift_rows codes only, not item_emb {emb}",
            )
        yield (
            emb == "codes" and self.dim % m != 0,
            f"code_subspaces ({m}) must divide dim ({self.dim}): an item's vector concatenates its sub-embeddings",
        )
        yield (
            emb == "kshift" and self.kshift_rows == "codes" and m != k,
            f"kshift_rows codes reads one code per shift: code_subspaces ({m}) must equal kshift_k ({k})",
        )
        yield (
            emb == "lowrank" and self.kshift_compression > self.dim,
            f"item_emb lowrank needs kshift_compression ({self.kshift_compression:g}) at most dim ({self.dim}): "
            "its width dim // kshift_compression would be 0",
        )
        yield (
            self.kshift_head >= self.n_items,
            f"kshift_head ({self.kshift_head:,}) must be below the {self.n_items:,} items",
        )
        yield (
            (self.summary_tokens == 0) != (self.summary_events == 0)
            or (self.summary_tokens > 0 and self.summary_events % self.summary_tokens != 0),
            f"summary_events ({self.summary_events}) must be a multiple of summary_tokens ({self.summary_tokens}), "
            "both set or both 0",
        )
        yield (
            self.summary_pool != "mean" and self.summary_tokens == 0,
            f"summary_pool {self.summary_pool} applies to a history summary only: "
            "set summary_tokens and summary_events",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# k-shift embedding


def kshift_table_rows(n_items: int, compression: float) -> int:
    """P = ceil(N / compression), at least 1: rows of the shared k-shift table."""
    return max(1, math.ceil(n_items / compression))


# The importance weights' row of an item comes from a second hash, independent of its k table rows:
# the core's `kshift_rows(ids, k=1, rows=P, seed=kshift_seed ^ WEIGHT_SEED_SALT, scheme="mix")`.
WEIGHT_SEED_SALT = 0x5EED_0F1E_A4D5_1A27
ROW_CHUNK = 1 << 20  # ids hashed at once when all N+1 are: 64 MB of int64 rows at k = 8


def _kshift_row_chunks(n_items: int, k: int, rows: int, seed: int, scheme: str) -> Iterator[np.ndarray]:
    """The [N+1, k] row indices of ids 0..N as int32 chunks of ROW_CHUNK ids, in id order, so that
    no caller needs an int64 copy of all of them (or, for a fingerprint, any whole copy)."""
    for lo in range(0, n_items + 1, ROW_CHUNK):
        ids = np.arange(lo, min(n_items + 1, lo + ROW_CHUNK), dtype=np.int64)
        yield kshift_rows(ids, k=k, rows=rows, seed=seed, scheme=scheme).astype(np.int32)


def _kshift_rows_int32(n_items: int, k: int, rows: int, seed: int, scheme: str) -> np.ndarray:
    """[N+1, k] int32 row indices of ids 0..N (4k bytes per item), filled chunk by chunk."""
    out = np.empty((n_items + 1, k), dtype=np.int32)
    lo = 0
    for chunk in _kshift_row_chunks(n_items, k, rows, seed, scheme):
        out[lo : lo + len(chunk)] = chunk
        lo += len(chunk)
    return out


def _fingerprint(chunks: Iterable[np.ndarray]) -> int:
    """64-bit digest of the [N+1, k] int32 row table, kept in checkpoints so a changed hash cannot load
    silently. blake2b is fed the table's bytes chunk by chunk (consecutive id ranges, C order), which
    gives the digest of the whole buffer: stored and computed rows have the same fingerprint."""
    digest = hashlib.blake2b(digest_size=8)
    for chunk in chunks:
        digest.update(memoryview(np.ascontiguousarray(chunk, dtype=np.int32)))
    return int.from_bytes(digest.digest(), "little", signed=True)


class KShiftEmbedding(nn.Module):
    """Hashed item embedding: item i is the sum of k rows of one shared P x d table, divided by sqrt(k).

    The rows come from `longrec_core.kshift_rows` (scheme "mix" by default: k independent hashes).
    Dividing by sqrt(k) (rather than L2-normalizing) keeps the composed vector's scale equal to a
    table row's scale when rows are independent, and keeps its norm free to carry popularity, as a
    full table's does. Id 0 (padding) maps to the zero vector.

    Opt-in variants (the defaults are the plain k-shift):
    - `head` H: items 1..H take exact rows of their own (an H x d table) instead of hashed ones; prep.py
      numbers items by descending training frequency, so these are the most frequent. P is unchanged.
    - `weights`: the k rows are summed with k learned weights instead of 1/sqrt(k) (hash embeddings,
      Svenstrup et al. 2017). The weights are a P x k table, initialized to 1/sqrt(k); an item's weight
      row is picked by a second hash of its id (`kshift_rows` with k=1, seed `seed ^ WEIGHT_SEED_SALT`).
    - `rows="computed"`: no row buffer; each call hashes its ids with the core (on the CPU).
    - `rows="codes"`: the rows come from the item's data-driven code (`longrec_core.codes`, k codes
      per item, each in 0..centroids-1) instead of the hash: shift c takes row c * centroids + code[i, c]
      of a table of P = k * centroids rows (compression is ignored), so each shift has its own block of
      rows, and items that the training users consume together share rows. The [N+1, k] codes (uint8,
      or uint16 bits in int16 above 256 centroids) are a buffer saved with the weights; `codes=None`
      builds hashed codes for every item (`longrec_core.codes.hashed_codes`), which loading replaces.
    - `sparse`: the table's gradient is sparse (the rows a step touched), for the row-wise optimizer
      of `longrec_core.optim`; the head and the weights keep dense gradients.

    Memory (float32; parameters count 4 times with gradient and AdamW's two moments): the table P x d,
    the head H x d, the weights P x k; buffers: the [N+1, k] int32 rows and, with weights, the [N+1]
    int32 weight rows, both absent when computed — for N = 10^7, d = 64, compression 16, k = 8: table
    160 + 160 + 320 MB, rows 320 MB. Buffers are not saved in checkpoints (they are recomputed from the
    seed); a 64-bit fingerprint of the rows is, and loading a checkpoint whose fingerprint differs
    raises ValueError.
    """

    def __init__(
        self,
        n_items: int,
        dim: int,
        k: int = 8,
        compression: float = 16,
        scheme: str = "mix",
        seed: int = 0,
        *,
        head: int = 0,
        weights: bool = False,
        rows: str = "stored",
        sparse: bool = False,
        codes: np.ndarray | None = None,
        centroids: int = 256,
    ) -> None:
        super().__init__()
        if not 0 <= head < n_items:
            raise ValueError(f"the k-shift head must be in 0..{n_items - 1} (below the {n_items:,} items), got {head}")
        if rows not in KSHIFT_ROW_SOURCES:
            raise ValueError(f"rows must be one of {KSHIFT_ROW_SOURCES}, got {rows!r}")
        self.n_items, self.k, self.scheme, self.seed, self.n_head = n_items, k, scheme, seed, head
        self.computed, self.from_codes, self.sparse = rows == "computed", rows == "codes", sparse
        self.n_rows = k * centroids if self.from_codes else kshift_table_rows(n_items, compression)  # P
        self.table = nn.Parameter(torch.empty(self.n_rows, dim))
        nn.init.normal_(self.table, std=0.02)
        self.head = nn.Parameter(torch.empty(head, dim).normal_(std=0.02)) if head else None  # a row's scale
        self.weights = nn.Parameter(torch.full((self.n_rows, k), 1 / math.sqrt(k))) if weights else None
        if self.from_codes:  # the codes themselves are saved: no fingerprint to check
            self.register_buffer("codes", _codes_buffer(codes, n_items, k, centroids, seed), persistent=True)
            self.register_buffer("shift_base", torch.arange(k) * centroids, persistent=False)  # (k,)
            if weights:
                weight_rows = _kshift_rows_int32(n_items, 1, self.n_rows, seed ^ WEIGHT_SEED_SALT, "mix")
                self.register_buffer("weight_rows", torch.from_numpy(weight_rows[:, 0]), persistent=False)  # (N+1,)
            return
        if self.computed:
            fingerprint = _fingerprint(_kshift_row_chunks(n_items, k, self.n_rows, seed, scheme))
        else:
            table_rows = _kshift_rows_int32(n_items, k, self.n_rows, seed, scheme)
            self.register_buffer("rows", torch.from_numpy(table_rows), persistent=False)  # (N+1, k) int32
            if weights:
                weight_rows = _kshift_rows_int32(n_items, 1, self.n_rows, seed ^ WEIGHT_SEED_SALT, "mix")
                self.register_buffer("weight_rows", torch.from_numpy(weight_rows[:, 0]), persistent=False)  # (N+1,)
            fingerprint = _fingerprint([table_rows])
        self.register_buffer("rows_fingerprint", torch.tensor(fingerprint), persistent=True)

    def rows_of(self, flat: torch.Tensor) -> torch.Tensor:
        """ids (n,) -> (n, k) int64 table rows, on the ids' device: from the buffer or hashed now."""
        if self.computed:
            return self._hash(flat, self.k, self.seed, self.scheme)
        if self.from_codes:
            return _decode_codes(self.codes[flat]) + self.shift_base
        return self.rows[flat].long()

    def weight_rows_of(self, flat: torch.Tensor) -> torch.Tensor:
        """ids (n,) -> (n,) int64 rows of the weight table (the second hash), on the ids' device."""
        if self.computed:
            return self._hash(flat, 1, self.seed ^ WEIGHT_SEED_SALT, "mix")[:, 0]
        return self.weight_rows[flat].long()

    def _hash(self, flat: torch.Tensor, k: int, seed: int, scheme: str) -> torch.Tensor:
        """The core's `kshift_rows` of `flat`, (n, k) int64 on flat's device. The hash runs on the CPU:
        on CUDA, `.cpu()` waits for all queued GPU work (a device sync on every forward, which stalls
        the pipeline by the time the queued kernels take) and the rows go back over PCIe, 8k bytes an
        id (1.6 MB for a 128 x 200 batch at k = 8)."""
        ids = flat.detach().to("cpu", torch.int64).contiguous().numpy()
        return torch.from_numpy(kshift_rows(ids, k=k, rows=self.n_rows, seed=seed, scheme=scheme)).to(flat.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids of any shape (...) -> composed vectors (..., d); zeros where ids == 0."""
        flat = ids.reshape(-1)
        bags = self.rows_of(flat)  # (n, k)
        real = (flat != 0).unsqueeze(1)  # (n, 1)
        if self.weights is None:  # (n, d) without an (n, k, d) intermediate
            out = F.embedding_bag(bags, self.table, mode="sum", sparse=self.sparse)
            scale = real.to(out.dtype) / math.sqrt(self.k)
        else:
            w = self.weights[self.weight_rows_of(flat)]  # (n, k) learned, one row of P per item
            out = F.embedding_bag(bags, self.table, mode="sum", per_sample_weights=w, sparse=self.sparse)
            scale = real.to(out.dtype)
        out = out * scale
        if self.head is not None:  # the head's exact rows replace (and take the gradient of) the hashed ones
            exact = F.embedding((flat - 1).clamp(0, self.n_head - 1), self.head)  # (n, d)
            out = torch.where(real & (flat <= self.n_head).unsqueeze(1), exact.to(out.dtype), out)
        return out.view(*ids.shape, -1)

    def collision_share(self) -> float:
        """Share of the hashed items H+1..N whose row multiset equals another's (identical vectors).
        Needs the stored rows: with computed rows it would materialize the whole [N+1, k] buffer."""
        if self.computed:
            raise ValueError("collision_share needs the stored rows (rows='stored' or 'codes')")
        rows = _decode_codes(self.codes) + self.shift_base if self.from_codes else self.rows
        return kshift_collision_share(rows[self.n_head :].cpu().numpy())  # row H stands in for padding

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        saved = state_dict.get(prefix + "rows_fingerprint")
        if saved is not None and not self.from_codes and int(saved) != int(self.rows_fingerprint):
            raise ValueError(
                "the checkpoint's k-shift rows differ from the rows computed here "
                "(a different seed or scheme, or a core whose hash changed)"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class LowRankEmbedding(nn.Module):
    """Item i's vector is row i of an (N+1) x r table times a learned r x d projection (no bias): the
    same-memory baseline of k-shift. With r = d // compression the table holds about N x d /
    compression floats, as the k-shift table at that compression does, but every item keeps a row of
    its own. Row 0 (padding) is zero and gets no gradient, so with no bias id 0 maps to exact zeros.

    Memory: ((N+1) x r + r x d) float32 values (4r bytes per item), 4 times that with gradient and
    AdamW's moments; no buffer. Plain parameters rather than nn.Embedding / nn.Linear, whose generic
    std-0.02 init in SASRec would make the composed vectors 0.02 * 0.02 * sqrt(r) small.
    """

    def __init__(self, n_items: int, dim: int, width: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.empty(n_items + 1, width))
        self.proj = nn.Parameter(torch.empty(width, dim))
        nn.init.normal_(self.table, std=0.02)
        nn.init.normal_(self.proj, std=1 / math.sqrt(width))  # composed vectors get a full table's std 0.02
        with torch.no_grad():
            self.table[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids of any shape (...) -> (..., d); zeros where ids == 0."""
        return F.embedding(ids, self.table, padding_idx=0) @ self.proj


def lowrank_width(dim: int, compression: float) -> int:
    """r = d // compression: the low-rank table's width (ModelConfig refuses compression > d, r = 0)."""
    return int(dim // compression)


# ---------------------------------------------------------------------------------------------
# data-driven item codes (longrec_core.codes): RecJPQ's concatenated sub-embeddings


def _codes_buffer(codes: np.ndarray | None, n_items: int, subspaces: int, centroids: int, seed: int) -> torch.Tensor:
    """The [N+1, m] code buffer: uint8 for up to 256 centroids, else int16 holding the uint16 bits (torch
    indexes int16 on every device, uint16 not on all); `_decode_codes` reads either. None = hashed
    codes for every item (`hashed_codes`: what an item unseen in training gets)."""
    dtype = code_dtype(centroids)
    if codes is None:
        codes = hashed_codes(n_items, subspaces, centroids, seed)
    codes = np.asarray(codes)
    if codes.shape != (n_items + 1, subspaces):
        raise ValueError(f"codes must have shape ({n_items + 1}, {subspaces}) [N+1, m], got {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= centroids):
        raise ValueError(f"codes must be in 0..{centroids - 1}, got {codes.min()}..{codes.max()}")
    codes = np.ascontiguousarray(codes, dtype=dtype)
    return torch.from_numpy(codes.view(np.int16) if dtype == np.uint16 else codes)


def _decode_codes(codes: torch.Tensor) -> torch.Tensor:
    """A code buffer's entries (any shape) as int64 codes 0..centroids-1."""
    out = codes.long()
    return out & 0xFFFF if codes.dtype == torch.int16 else out


def saved_codes(state: dict[str, Any]) -> np.ndarray:
    """The [N+1, m] codes (uint8 or uint16) in a SASRec state dict (a checkpoint's "model")."""
    t = state["item_emb.codes"]
    return t.numpy().view(np.uint16) if t.dtype == torch.int16 else t.numpy()


class CodesEmbedding(nn.Module):
    """RecJPQ's item embedding: item i's vector concatenates m sub-embeddings, the j-th being row
    code[i, j] of sub-table j (centroids x d/m). The codes are assigned before training from the
    training events (`longrec_core.codes.item_codes`: SVD components, balanced buckets; hashed for
    items unseen in training) and never change; the sub-tables are learned.

    Parameters: `table` (m * centroids, d/m) float32, the m sub-tables stacked (sub-table j is rows
    j * centroids ..), std 0.02 as a full table. Buffer, saved with the weights (so load_model and
    --resume restore the codes without recomputing them): `codes` (N+1, m), uint8 up to 256 centroids,
    else int16 holding the uint16 bits; `codes=None` builds hashed codes for every item, which loading
    replaces. Id 0 (padding) maps to exact zeros and passes no gradient (its output is multiplied by 0).
    Memory: centroids x d floats in all (4 times with gradient and AdamW), plus m or 2m bytes per item.

    `residual` r > 0 adds what codes cannot hold, a part of each item's own: row i of an (N+1) x r
    table times an r x d projection (as `LowRankEmbedding`), added to the concatenation; 4r more bytes
    per item (16r to train; 8r + 8 with kshift_optimizer "rowwise", `longrec_core.optim`).
    """

    def __init__(
        self,
        n_items: int,
        dim: int,
        subspaces: int,
        centroids: int,
        codes: np.ndarray | None = None,
        seed: int = 0,
        residual: int = 0,
    ) -> None:
        super().__init__()
        if dim % subspaces:
            raise ValueError(f"subspaces ({subspaces}) must divide dim ({dim})")
        self.n_items, self.dim, self.subspaces, self.centroids = n_items, dim, subspaces, centroids
        self.table = nn.Parameter(torch.empty(subspaces * centroids, dim // subspaces).normal_(std=0.02))
        self.residual = LowRankEmbedding(n_items, dim, residual) if residual > 0 else None
        self.register_buffer("codes", _codes_buffer(codes, n_items, subspaces, centroids, seed), persistent=True)
        self.register_buffer("sub_base", torch.arange(subspaces) * centroids, persistent=False)  # (m,)

    def rows_of(self, flat: torch.Tensor) -> torch.Tensor:
        """ids (n,) -> (n, m) int64 rows of the stacked sub-tables."""
        return _decode_codes(self.codes[flat]) + self.sub_base

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids of any shape (...) -> (..., d), the m rows (..., m, d/m) concatenated; zeros where ids == 0."""
        flat = ids.reshape(-1)
        out = F.embedding(self.rows_of(flat), self.table).reshape(len(flat), self.dim)  # (n, d)
        out = out * (flat != 0).unsqueeze(1).to(out.dtype)
        if self.residual is not None:  # zeros for id 0 too
            out = out + self.residual(flat)
        return out.view(*ids.shape, self.dim)

    def collision_share(self) -> float:
        """Share of items whose whole code equals another item's (identical vectors). The rows, not the
        codes, are compared: kshift_collision_share compares multisets, and codes (1, 2) and (2, 1) differ."""
        return kshift_collision_share((_decode_codes(self.codes) + self.sub_base).cpu().numpy())


def kshift_collision_share(rows: np.ndarray) -> float:
    """Share of items whose row multiset equals another item's, so their composed vectors are identical.

    rows: [N+1, k] row indices indexed by item id (the KShiftEmbedding buffer); row 0 (padding) is
    ignored, items are ids 1..N. Rows are compared as multisets (sorted), since the vector is a sum.
    Exact and fast at N = 10^7: a 64-bit hash of each sorted row picks the candidates (equal rows have
    equal hashes), then an exact np.unique over the candidates alone confirms them.
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] < 1:
        raise ValueError(f"rows must be a 2-d array [N+1, k], got shape {rows.shape}")
    items = np.sort(rows[1:], axis=1)  # (N, k)
    n = items.shape[0]
    if n < 2:
        return 0.0
    h = np.zeros(n, dtype=np.uint64)
    for c in range(items.shape[1]):  # FNV-style mix, wrapping uint64 arithmetic
        h = (h ^ items[:, c].astype(np.uint64)) * np.uint64(0x100000001B3)
        h ^= h >> np.uint64(29)
    _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
    candidates = items[counts[inverse] > 1]
    if len(candidates) == 0:
        return 0.0
    _, inverse, counts = np.unique(candidates, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.reshape(-1)] > 1).sum()) / n


def _training_state_bytes(cfg: ModelConfig, params: int, table: int, kshift_rows: int) -> tuple[int, int]:
    """(gradient, optimizer state) bytes of an embedding of `params` bytes whose per-item table takes
    `table` (the k-shift table has `kshift_rows` rows): a dense gradient and AdamW's two moments for
    every parameter, but kshift_optimizer "rowwise" keeps 8 bytes a row for the k-shift table (and a
    sparse gradient) or the code residual's table (its gradient stays dense: the tied full-catalogue
    loss reaches every row)."""
    if cfg.kshift_optimizer != "rowwise":
        return params, 2 * params
    if cfg.item_emb == "kshift":
        return params - table, 2 * (params - table) + 8 * kshift_rows
    residual = (cfg.n_items + 1) * cfg.code_residual * 4
    return params, 2 * (params - residual) + 8 * (cfg.n_items + 1)


def embedding_memory_bytes(cfg: ModelConfig) -> dict[str, float]:
    """Bytes the item embedding needs to train (float32 parameters, AdamW), part by part, and what a
    full table would need. All ints except bytes_per_item.

    Parameters: table_bytes (the full (N+1) x d table, the k-shift P x d shared table, the low-rank
    (N+1) x r table, or the code embedding's m sub-tables, centroids x d floats in all, and its
    residual's (N+1) x r table), head_bytes (k-shift head, H x d), weights_bytes (k-shift importance
    weights, P x k), proj_bytes (the low-rank or code residual projection, r x d); params_bytes is
    their sum, grad_bytes equals it and adam_bytes is twice it (two moments). Buffers, never trained:
    rows_bytes (the k-shift [N+1, k] int32 rows) and
    weight_rows_bytes (the [N+1] int32 weight row of each item), both 0 when the rows are computed
    per batch; codes_bytes (the [N+1, m] codes of item_emb "codes" or kshift_rows "codes", 1 byte
    each up to 256 centroids, else 2; a k-shift table read by codes has P = k x centroids rows and no
    rows_bytes). With kshift_optimizer "rowwise" the k-shift table's share of grad_bytes is 0 (its
    gradient holds only the rows a step touches, as with a sampled loss) and its share of adam_bytes
    (the optimizer state) is 8 bytes per table row instead of two moments; the code residual's table
    keeps its gradient and takes 8 bytes per row of state. total_bytes sums parameters, gradient,
    optimizer state and buffers; bytes_per_item = total_bytes / N; full_table_bytes ((N+1) x d
    params) and full_total_bytes (params, grad and AdamW state of a full table) for comparison.
    """
    n, d = cfg.n_items, cfg.dim
    full = (n + 1) * d * 4
    parts = {"table_bytes": full, "head_bytes": 0, "weights_bytes": 0, "proj_bytes": 0}
    buffers = {"rows_bytes": 0, "weight_rows_bytes": 0, "codes_bytes": 0}
    if cfg.uses_codes:
        buffers["codes_bytes"] = (n + 1) * cfg.code_subspaces * code_dtype(cfg.code_centroids).itemsize
    p = cfg.kshift_k * cfg.code_centroids if cfg.uses_codes else kshift_table_rows(n, cfg.kshift_compression)
    if cfg.item_emb == "kshift":
        parts.update(table_bytes=p * d * 4, head_bytes=cfg.kshift_head * d * 4)
        parts["weights_bytes"] = p * cfg.kshift_k * 4 if cfg.kshift_weights else 0
        if cfg.kshift_rows in ("stored", "codes"):
            buffers["rows_bytes"] = (n + 1) * cfg.kshift_k * 4 if cfg.kshift_rows == "stored" else 0
            buffers["weight_rows_bytes"] = (n + 1) * 4 if cfg.kshift_weights else 0
    elif cfg.item_emb == "lowrank":
        r = lowrank_width(d, cfg.kshift_compression)
        parts.update(table_bytes=(n + 1) * r * 4, proj_bytes=r * d * 4)
    elif cfg.item_emb == "codes":  # m sub-tables of centroids x d/m, and the residual's table and projection
        parts["table_bytes"] = cfg.code_centroids * (d // cfg.code_subspaces) * cfg.code_subspaces * 4
        r = cfg.code_residual
        parts["table_bytes"] += (n + 1) * r * 4
        parts["proj_bytes"] = r * d * 4
    params = sum(parts.values())
    grad, adam = _training_state_bytes(cfg, params, parts["table_bytes"], p)
    total = params + grad + adam + sum(buffers.values())
    return {
        **parts,
        "params_bytes": params,
        "grad_bytes": grad,
        "adam_bytes": adam,
        **buffers,
        "total_bytes": total,
        "bytes_per_item": total / n,
        "full_table_bytes": full,
        "full_total_bytes": 4 * full,
    }


# ---------------------------------------------------------------------------------------------
# transformer


class Dropout(nn.Module):
    """Inverted dropout by `ops.dropout` (the core's fast CPU mask, by default)."""

    def __init__(self, p: float, ops: Ops) -> None:
        super().__init__()
        self.p, self.ops = p, ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.dropout(x, self.p, self.training)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, cfg: ModelConfig, ops: Ops) -> None:
        super().__init__()
        self.heads, self.p, self.ops = cfg.heads, cfg.dropout, ops
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.ln2 = nn.LayerNorm(cfg.dim)
        # ffn[1:3] (GELU, dropout) run as one op, ops.gelu_dropout; the Sequential keeps the layout
        # (and checkpoint keys) of the plain layer
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn), nn.GELU(), Dropout(cfg.dropout, ops), nn.Linear(cfg.ffn, cfg.dim)
        )
        self.drop = Dropout(cfg.dropout, ops)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, d); mask (B, 1, T, T) bool, True where query t may attend key s."""
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(B, T, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T, d/H)
        y = self.ops.attention(q, k, v, mask, self.p, self.training)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, d)))
        up, _, _, down = self.ffn
        return x + self.drop(down(self.ops.gelu_dropout(up(self.ln2(x)), self.p, self.training)))


class SummaryAttention(nn.Module):
    """The learned history summary: S learned queries, each attending (one head) over the H events
    before a window, give S tokens. Keys and values are linear maps of each event's item vector plus
    its position among the H (right-aligned: the event just before the window is position H - 1), so
    a query can prefer recent events, frequent ones or a kind of item. Cost per window: O(S H d),
    against O(H^2 d) for feeding the H events to the transformer as inputs."""

    def __init__(self, dim: int, tokens: int, events: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(tokens, dim) * 0.02)
        self.pos = nn.Embedding(events, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, vecs: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """vecs (B, H, d) the events' item vectors, present (B, H) bool (False = padding) ->
        (tokens (B, S, d), real (B, S)): a row without any event gives zero tokens, none of them real."""
        x = vecs + self.pos.weight
        scores = torch.einsum("sd,bhd->bsh", self.queries.to(x.dtype), self.key(x)) / math.sqrt(x.shape[-1])
        any_event = present.any(1)  # (B,)
        # mask padding; a row with no event keeps finite scores (softmax of all -inf is NaN) and is zeroed
        keep = present[:, None, :] | ~any_event[:, None, None]
        weights = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)  # (B, S, H)
        tokens = (weights @ self.value(x)) * any_event[:, None, None]
        return tokens, any_event[:, None].expand(-1, self.queries.shape[0])


class SASRec(nn.Module):
    """Causal transformer over left-padded item sequences; scores are tied to the item embedding.

    Positions are counted from the right end (column T-1 gets the last position embedding), so a
    sequence's outputs do not depend on how much left padding its batch has.

    `codes` ([N+1, m] ints from `longrec_core.codes.item_codes`) are the item codes of a config whose
    embedding uses them (`cfg.uses_codes`); None builds hashed codes, which `load_state_dict` (load_model,
    --resume) replaces with the saved ones. `ops` are the dropout, fused GELU + dropout and attention
    ops of every layer (`longrec_core.kernels`: the core's CPU kernels by default, or torch's).
    """

    def __init__(self, cfg: ModelConfig, codes: np.ndarray | None = None, ops: Ops = CORE) -> None:
        super().__init__()
        self.cfg = cfg
        if codes is not None and not cfg.uses_codes:
            raise ValueError(f"codes were given but item_emb {cfg.item_emb!r} (rows {cfg.kshift_rows!r}) reads none")
        if cfg.item_emb == "kshift":
            self.item_emb: nn.Module = KShiftEmbedding(
                cfg.n_items,
                cfg.dim,
                cfg.kshift_k,
                cfg.kshift_compression,
                cfg.kshift_scheme,
                cfg.kshift_seed,
                head=cfg.kshift_head,
                weights=cfg.kshift_weights,
                rows=cfg.kshift_rows,
                sparse=cfg.kshift_optimizer == "rowwise",
                codes=codes,
                centroids=cfg.code_centroids,
            )
        elif cfg.item_emb == "codes":
            self.item_emb = CodesEmbedding(
                cfg.n_items,
                cfg.dim,
                cfg.code_subspaces,
                cfg.code_centroids,
                codes=codes,
                seed=cfg.kshift_seed,
                residual=cfg.code_residual,
            )
        elif cfg.item_emb == "lowrank":
            self.item_emb = LowRankEmbedding(cfg.n_items, cfg.dim, lowrank_width(cfg.dim, cfg.kshift_compression))
        else:
            self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)  # row 0 zero, never trained
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.summary_pos = nn.Embedding(cfg.summary_tokens, cfg.dim) if cfg.summary_tokens > 0 else None
        self.summary_attention = (
            SummaryAttention(cfg.dim, cfg.summary_tokens, cfg.summary_events)
            if cfg.summary_tokens > 0 and cfg.summary_pool == "attention"
            else None
        )
        self.type_emb = nn.Embedding(cfg.n_types + 1, cfg.dim, padding_idx=0) if cfg.n_types > 0 else None
        self.drop = Dropout(cfg.dropout, ops)
        self.blocks = nn.ModuleList(Block(cfg, ops) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.dim)
        for m in self.modules():  # small init as in GPT-2; the k-shift and low-rank tables initialize themselves
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        with torch.no_grad():  # padding rows stay zero (padding_idx also keeps their gradient zero)
            for emb in (self.item_emb, self.type_emb):
                if isinstance(emb, nn.Embedding):
                    emb.weight[0].zero_()

    @property
    def n_items(self) -> int:
        return self.cfg.n_items

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> (..., d): the vectors used both as inputs and for scoring; id 0 -> zeros."""
        return self.item_emb(ids)

    def item_table(self) -> torch.Tensor:
        """(N+1, d) all item vectors, row 0 = zeros; differentiable (the weight itself for a full table)."""
        if isinstance(self.item_emb, nn.Embedding):
            return self.item_emb.weight
        ids = torch.arange(self.n_items + 1, device=self.item_emb.table.device)
        step = 1 << 20  # composes in chunks: the (n, k) row indices of 10^7 items at once would take 640 MB
        return torch.cat([self.item_emb(ids[lo : lo + step]) for lo in range(0, len(ids), step)])

    def summary(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """prefix (B, H) long, the H = summary_events events before each window, left-padded with 0
        -> (tokens (B, S, d), real (B, S)), each token plus its own position vector. Pool "mean": the
        mean item vector of each of S equal runs of the prefix (oldest run first); a run with no event
        is not real (never attended to). Pool "attention": `SummaryAttention` over the whole prefix;
        its tokens are not real when the prefix has no event."""
        B, H = prefix.shape
        S = self.cfg.summary_tokens
        if H != self.cfg.summary_events:
            raise ValueError(f"prefix must hold {self.cfg.summary_events} events per row, got {H}")
        if self.summary_attention is not None:
            present = prefix != 0  # (B, H)
            x, real = self.summary_attention(self.item_emb(prefix) * math.sqrt(self.cfg.dim), present)
            return x + self.summary_pos.weight, real
        present = (prefix != 0).view(B, S, H // S, 1)  # (B, S, H/S, 1)
        vecs = self.item_emb(prefix).view(B, S, H // S, -1) * present  # (B, S, H/S, d)
        count = present.sum(2)  # (B, S, 1)
        mean = vecs.sum(2) / count.clamp(min=1)  # (B, S, d)
        x = mean * math.sqrt(self.cfg.dim) + self.summary_pos.weight  # (B, S, d)
        return x, count.squeeze(-1) > 0

    def forward(
        self, items: torch.Tensor, types: torch.Tensor | None = None, prefix: torch.Tensor | None = None
    ) -> torch.Tensor:
        """items (B, T) long, left-padded with 0; types (B, T) ints, 0 = padding; prefix (B, H) the
        events before the window (`summary`), or None to predict from the window alone -> hidden (B, T, d).

        Padding positions get finite but meaningless outputs (each attends only to itself); callers
        must keep only the positions where items != 0.
        """
        _B, T = items.shape
        if T > self.cfg.max_len:
            raise ValueError(f"input length {T} exceeds the model's max_len {self.cfg.max_len}")
        if prefix is not None and self.summary_pos is None:
            raise ValueError("this model has no history summary (summary_tokens 0); pass prefix=None")
        real = items != 0  # (B, T)
        x = self.item_emb(items) * math.sqrt(self.cfg.dim)  # (B, T, d), SASRec's embedding scale
        x = x + self.pos_emb.weight[self.cfg.max_len - T :]  # right-aligned positions
        if self.type_emb is not None:
            if types is None:
                raise ValueError("this model was trained with event types; pass types alongside items")
            x = x + self.type_emb(types.long())
        S = 0
        if prefix is not None:  # the summary tokens go first: every window position may attend to them
            tokens, tokens_real = self.summary(prefix)
            S = tokens.shape[1]
            x, real = torch.cat([tokens.to(x.dtype), x], 1), torch.cat([tokens_real, real], 1)  # (B, S+T, ...)
        x = self.drop(x) * real.unsqueeze(-1)
        # query t attends keys s <= t that are real; the diagonal is always allowed so a padding query
        # has one key and softmax never sees an all-masked row (NaN in some attention kernels)
        L = S + T
        eye = torch.eye(L, dtype=torch.bool, device=items.device)
        mask = torch.ones(L, L, dtype=torch.bool, device=items.device).tril() & (real[:, None, None, :] | eye)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x[:, S:])


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> SASRec:
    """The best weights of a run (its model.pt, `RunDir.read_weights`), in eval mode."""
    ckpt = RunDir(Path(run_dir)).read_weights()
    model = SASRec(ModelConfig.from_dict(ckpt["model_config"]))
    # a torch.compile'd model saves its keys under "_orig_mod."; accept those too
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    return model.to(device).eval()
