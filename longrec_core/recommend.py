"""Top-k recommendations from a trained run: the library call behind scripts/recommend.py.

    from longrec_core.recommend import Recommender
    rec = Recommender.load("runs/demo/sliding")          # model.pt, its data dir's item ids, its seen-items rule
    rec.topk([[17, 4, 230], ["42"]], k=5)                # raw item ids per user, oldest first
    # -> [[(raw id, score), ... 5 of them], [...]], best first

A history is a user's events, oldest first, as raw item ids (those of the data dir's items.parquet;
ids it does not know are skipped and counted in `Recommender.last_unknown`). The model reads the
last `window` of them (its max_len) and scores every item of the catalogue; with seen items
filtered (the run's rule, as eval.py ranks: `--filter-seen` of train.py), every item of the whole
history is left out. Items are scored in chunks and users in batches, as eval.py ranks them
(`longrec_core.metrics`), so memory is O(batch x item_chunk) whatever the catalogue: a running
top-k per user is merged with each chunk's. Ties are broken arbitrarily; a user with fewer than k
candidates gets fewer (index 0, score -inf pad the arrays of `topk_indices`).

`export_model` writes the model with torch.export (a .pt2 file, loaded by `torch.export.load`): a
padded history batch (B, max_len) of item indices 1..N (0 = padding, left-padded) -> scores
(B, N + 1) over the catalogue, column 0 = -inf.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from longrec_core import cli
from longrec_core.datadir import item_ids, load_data_dir
from longrec_core.metrics import _item_table, resolve_filter_seen
from longrec_core.model import SASRec, load_model
from longrec_core.rundir import RunDir


def run_filter_seen(run: RunDir) -> bool | str:
    """The seen-items rule a run validated with: the resolved yes/no of its summary.json when it has
    one, else the rule of its config.json ("auto" without one), to be resolved on the data."""
    summary = run.summary()
    decided = None if summary is None else summary.filter_seen
    return decided if decided is not None else run.config().filter_seen


def padded(histories: Sequence[np.ndarray], window: int) -> np.ndarray:
    """(B, window) int64: the last `window` items of each history, right-aligned, 0 = padding."""
    out = np.zeros((len(histories), window), dtype=np.int64)
    for i, h in enumerate(histories):
        tail = np.asarray(h)[-window:]
        if len(tail):
            out[i, window - len(tail) :] = tail
    return out


@dataclass
class Recommender:
    """A trained model with its catalogue's raw ids and its seen-items rule; see the module docstring."""

    model: SASRec
    ids: pl.Series  # raw id of item index i + 1
    filter_seen: bool
    device: torch.device
    item_chunk: int = 65536
    last_unknown: int = 0  # raw ids `topk` skipped in its last call (not in the catalogue)
    _table: Any = None  # the item vectors, computed once (metrics._item_table)
    _lookup: Any = None  # raw id -> index table for index_of, built once

    @classmethod
    def load(
        cls,
        run: str | os.PathLike[str],
        *,
        data: str | os.PathLike[str] | None = None,
        filter_seen: bool | str | None = None,
        device: str | torch.device = "cpu",
        item_chunk: int = 65536,
    ) -> Recommender:
        """The best weights of `run` (its model.pt), the raw item ids of its data dir (`data`, default the
        one in its config.json) and its seen-items rule (`filter_seen`: True/False or yes/no/auto to
        override it). Raises ValueError on a run or data dir that cannot serve (one sentence)."""
        run_dir = RunDir(Path(run))
        if not run_dir.has_model():
            raise ValueError(
                f"{run} has no {run_dir.model_path.name} (not a run dir, or its training has not finished)"
            )
        if data is None:
            data = run_dir.config().data
            if data is None:
                raise ValueError(f"{run_dir.config_path} names no data dir; pass its data dir")
        try:
            model = load_model(run_dir.path)
        except Exception as e:  # whatever torch.load or load_state_dict raises on a damaged or foreign file
            raise ValueError(f"{run_dir.model_path} is not a model saved by train.py, or is damaged ({e})") from None
        rule = run_filter_seen(run_dir) if filter_seen is None else filter_seen
        if not isinstance(rule, bool):
            rule = resolve_filter_seen(rule, load_data_dir(data))
        ids = item_ids(data)
        if len(ids) != model.n_items:
            raise ValueError(
                f"data dir {data} has {len(ids):,} items but the model in {run} was trained on {model.n_items:,}"
            )
        dev = torch.device(device)
        return cls(model.to(dev).eval(), ids, rule, dev, item_chunk)

    @property
    def window(self) -> int:
        return int(self.model.cfg.max_len)

    @property
    def n_items(self) -> int:
        return int(self.model.n_items)

    # -------------------------------------------------------------------------- raw ids
    def index_of(self, raw: Sequence[Any]) -> np.ndarray:
        """Item indices (n,) int64 of raw ids (any mix of str and int spellings of the catalogue's ids);
        0 where an id is not in the catalogue. One join against the catalogue: map many histories in
        one call (`indices_of`), not one call each."""
        if len(raw) == 0:
            return np.zeros(0, dtype=np.int64)
        asked = pl.Series("id", [str(r) for r in raw], dtype=pl.String)
        if self.ids.dtype != pl.String:
            asked = asked.cast(self.ids.dtype, strict=False)  # "12" -> 12; "x" -> null, unknown
        if self._lookup is None:
            self._lookup = pl.DataFrame({"id": self.ids, "index": np.arange(1, len(self.ids) + 1, dtype=np.int64)})
        found = pl.DataFrame({"id": asked}).join(self._lookup, on="id", how="left", maintain_order="left")["index"]
        return found.fill_null(0).to_numpy().astype(np.int64)

    def indices_of(self, histories: Sequence[Sequence[Any]]) -> list[np.ndarray]:
        """`index_of` of every history, in one join."""
        flat = self.index_of([r for h in histories for r in h])
        return np.split(flat, np.cumsum([len(h) for h in histories])[:-1]) if histories else []

    def raw_ids(self, index: np.ndarray) -> list[Any]:
        """Raw ids of item indices 1..N (None for 0, no item)."""
        flat = np.asarray(index).ravel()
        ids = self.ids.gather(np.maximum(flat - 1, 0)).to_list()
        return [i if x > 0 else None for i, x in zip(ids, flat)]

    # -------------------------------------------------------------------------- scoring
    def item_vectors(self) -> Any:
        if self._table is None:
            self._table = _item_table(self.model, self.n_items, self.item_chunk, self.device)
        return self._table

    @torch.inference_mode()
    def topk_indices(
        self, histories: Sequence[np.ndarray], k: int, types: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One batch: histories of item indices 1..N (oldest first; with `types` for a model trained with
        event types) -> (items (B, k) int64, scores (B, k) float32), best first; index 0 and -inf where
        fewer than k items are candidates."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        b = len(histories)
        if self.model.cfg.n_types > 0 and types is None:
            raise ValueError("this model was trained with event types; histories need their types too")
        # as wide as the longest history: positions count from the right, so padding only costs time
        width = min(self.window, max([len(h) for h in histories] + [1]))
        hist = torch.from_numpy(padded(histories, width)).to(self.device)
        types_t = torch.from_numpy(padded(types, width)).to(self.device) if types is not None else None
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            query = self.model(hist, types_t)[:, -1].float()  # (B, d) state after the last event
        rows = np.repeat(np.arange(b), [len(h) for h in histories])
        seen_rows = torch.from_numpy(rows).to(self.device)
        seen_items = torch.from_numpy(np.concatenate([np.asarray(h, dtype=np.int64) for h in histories] or [[]]))
        seen_items = seen_items.to(self.device, torch.long)
        table = self.item_vectors()
        k_eff = min(k, self.n_items)
        best_s = torch.full((b, k_eff), -math.inf, device=self.device)  # running top-k
        best_i = torch.zeros((b, k_eff), dtype=torch.long, device=self.device)
        for lo in range(1, self.n_items + 1, self.item_chunk):
            hi = min(lo + self.item_chunk, self.n_items + 1)
            ids = torch.arange(lo, hi, device=self.device)
            vecs = table[ids] if isinstance(table, Tensor) else table(ids)
            s = query @ vecs.to(self.device, torch.float32).T  # (B, C)
            s = torch.nan_to_num(s, nan=-math.inf)
            if self.filter_seen and len(seen_items):
                sel = (seen_items >= lo) & (seen_items < hi)
                s[seen_rows[sel], seen_items[sel] - lo] = -math.inf
            cand_s = torch.cat([best_s, s], dim=1)
            cand_i = torch.cat([best_i, ids.expand(b, -1)], dim=1)
            best_s, pick = cand_s.topk(k_eff, dim=1)
            best_i = cand_i.gather(1, pick)
        best_i[torch.isinf(best_s) & (best_s < 0)] = 0  # no candidate: seen, or fewer items than k
        items, scores = np.zeros((b, k), dtype=np.int64), np.full((b, k), -np.inf, dtype=np.float32)
        items[:, :k_eff], scores[:, :k_eff] = best_i.cpu().numpy(), best_s.cpu().numpy()
        return items, scores

    def topk(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        *,
        batch_size: int = 256,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[list[tuple[Any, float]]]:
        """Top-k (raw id, score) per history of raw item ids (oldest first), best first. Raw ids not in
        the catalogue are skipped (their count: `last_unknown`); a history with no known id gets []."""
        index = self.indices_of(histories)
        self.last_unknown = int(sum(int((i == 0).sum()) for i in index))
        index = [i[i > 0] for i in index]
        out: list[list[tuple[Any, float]]] = [[] for _ in histories]
        known = [u for u, h in enumerate(index) if len(h)]
        for lo in range(0, len(known), batch_size):
            users = known[lo : lo + batch_size]
            items, scores = self.topk_indices([index[u] for u in users], k)
            for u, it, sc in zip(users, items, scores):
                keep = it > 0
                out[u] = list(zip(self.raw_ids(it[keep]), sc[keep].tolist()))
            if on_batch is not None:
                on_batch(lo + len(users), len(known))
        return out


# ------------------------------------------------------------------------------ histories from a file
HISTORY_FORMATS = ("lines", "csv", "jsonl")


def history_format(name: str, first_line: str) -> str:
    """The format of a history file: by its suffix (.csv; .jsonl or .ndjson), else by its first line
    (a JSON object: jsonl), else `user item item ...` lines."""
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson")) or first_line.lstrip().startswith("{"):
        return "jsonl"
    return "lines"


def parse_histories(text: str, fmt: str, source: str) -> tuple[list[str], list[list[str]]]:
    """(user labels, raw item ids per user, oldest first) from the text of a history file:
    - lines: `user item item ...` per line, whitespace-separated (a user on two lines: one history);
    - csv: a header with columns `user` and `item`, one event per row, each user's rows in time order;
    - jsonl: one object per line, {"user": ..., "items": [...]}.
    Raises ValueError (one sentence naming `source` and the line) on anything else."""
    users: dict[str, list[str]] = {}
    if fmt == "csv":
        try:
            df = pl.read_csv(text.encode(), infer_schema_length=0)  # every column as text
        except pl.exceptions.PolarsError as e:
            raise ValueError(f"{source} is not a readable CSV ({type(e).__name__})") from None
        if not {"user", "item"} <= set(df.columns):
            raise ValueError(f"{source} needs a header with columns user and item, got {', '.join(df.columns)}")
        for user, item in zip(df["user"].to_list(), df["item"].to_list()):
            if user is None or item is None:
                raise ValueError(f"{source} has a row with an empty user or item")
            users.setdefault(user, []).append(item)
        return list(users), list(users.values())
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if fmt == "jsonl":
            try:
                obj = json.loads(line)
            except ValueError:
                raise ValueError(f"{source} line {n} is not JSON") from None
            if not isinstance(obj, dict) or "user" not in obj or not isinstance(obj.get("items"), list):
                raise ValueError(f'{source} line {n} must be an object {{"user": ..., "items": [...]}}')
            user, items = str(obj["user"]), [str(i) for i in obj["items"]]
        else:
            user, *items = line.split()
        users.setdefault(user, []).extend(items)
    return list(users), list(users.values())


# ------------------------------------------------------------------------------ output
OUTPUT_SUFFIXES = (".parquet", ".csv", ".jsonl")


def check_output_suffix(path: str | os.PathLike[str]) -> str:
    """The output format of --out (its suffix), or ValueError naming the ones there are."""
    suffix = Path(path).suffix
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"--out {path} must end in {', '.join(OUTPUT_SUFFIXES)} (the format it is written in)")
    return suffix


def write_recommendations(
    path: str | os.PathLike[str], users: list[Any], items: list[list[Any]], scores: list[list[float]]
) -> None:
    """Write top-k lists atomically, in the format of `path`'s suffix: .parquet and .csv one row per
    recommendation (user, rank from 1, item, score); .jsonl one line per user {"user", "items",
    "scores"}, best first."""
    path = Path(path)
    suffix = check_output_suffix(path)
    with cli.atomic_write(path) as tmp:
        if suffix == ".jsonl":
            with open(tmp, "w") as f:
                for u, it, sc in zip(users, items, scores):
                    f.write(json.dumps({"user": u, "items": it, "scores": sc}) + "\n")
            return
        lens = [len(it) for it in items]
        df = pl.DataFrame(
            {
                "user": [u for u, n in zip(users, lens) for _ in range(n)],
                "rank": [r for n in lens for r in range(1, n + 1)],
                "item": [i for it in items for i in it],
                "score": pl.Series([s for sc in scores for s in sc], dtype=pl.Float32),
            }
        )
        if suffix == ".csv":
            df.write_csv(tmp)
        else:
            df.write_parquet(tmp)


# ------------------------------------------------------------------------------ export
class _Scorer(nn.Module):
    """The model as a function of a padded history batch: (B, max_len) [, types] -> (B, N + 1) scores,
    column 0 (padding) = -inf. The item embedding becomes a fixed table of every item's vector, so a
    k-shift model exports without the core's hash."""

    def __init__(self, model: SASRec, table: Tensor) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        self.model.item_emb = nn.Embedding.from_pretrained(table, freeze=True, padding_idx=0)
        self.register_buffer("padding", torch.arange(table.shape[0]) == 0)

    def forward(self, items: Tensor, types: Tensor | None = None) -> Tensor:
        hidden = self.model(items, types)[:, -1].float()  # (B, d)
        scores = hidden @ self.model.item_emb.weight.float().T  # (B, N + 1)
        return scores.masked_fill(self.padding, -math.inf)


@torch.no_grad()  # not inference_mode: an exported graph must not hold inference tensors
def export_model(model: SASRec, path: str | os.PathLike[str]) -> None:
    """Write `model` (eval mode, CPU) with torch.export to `path` (a .pt2 file), atomically: a padded
    (B, max_len) int64 batch of item indices (0 = padding, left-padded; and their types when the model
    was trained with event types) -> (B, N + 1) float32 scores, column 0 = -inf; any batch size B.
    Load it with `torch.export.load(path).module()`; the file's extra file `longrec.json` holds
    max_len, n_items and n_types. Checked against the model on a second batch size before it is
    written. Needs torch >= 2.5 (torch.compiler.is_exporting)."""
    model = model.to("cpu").eval()
    n, window, n_types = int(model.n_items), int(model.cfg.max_len), int(model.cfg.n_types)
    chunks = [model.item_vectors(torch.arange(lo, min(lo + 65536, n + 1))).float() for lo in range(0, n + 1, 65536)]
    scorer = _Scorer(model, torch.cat(chunks)).eval()
    gen = torch.Generator().manual_seed(0)

    def example(b: int) -> tuple[Tensor, ...]:
        items = torch.randint(1, n + 1, (b, window), generator=gen)
        items[0, : window // 2] = 0  # some left padding
        types = torch.randint(1, n_types + 1, (b, window), generator=gen) * (items > 0) if n_types else None
        return (items,) if types is None else (items, types)

    batch = torch.export.Dim("batch", min=1)
    inputs = example(4)
    program = torch.export.export(scorer, inputs, dynamic_shapes=tuple({0: batch} for _ in inputs))
    check = example(7)
    if not torch.allclose(program.module()(*check), scorer(*check), rtol=1e-4, atol=1e-5):
        raise RuntimeError("the exported model does not score as the model does")
    meta = {"max_len": window, "n_items": n, "n_types": n_types, "inputs": "items (B, max_len) int64, 0 = padding"}
    with cli.atomic_write(path) as tmp:
        torch.export.save(program, tmp, extra_files={"longrec.json": json.dumps(meta)})
