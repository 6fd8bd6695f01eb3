"""longrec_core.prepare, .datadir and .synthetic: prepare() against a plain-Python reference, the loader's
checks, eval targets, cutoffs, and the synthetic generator's determinism and shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from longrec_core import datadir, prepare, synthetic
from longrec_core.datadir import DataDirError
from longrec_core.prepare import Log, PrepParams

# ---------------------------------------------------------------- a plain reference of prepare()


def ref_prepare(user, item, ts, types, p: PrepParams):
    """Lists and dicts, one event at a time: what prepare() must produce (before the split)."""
    events = sorted(range(len(user)), key=lambda i: (user[i], ts[i], i))  # stable (user, time)
    if p.dedupe:
        seen, kept = set(), []
        for i in events:
            key = (user[i], ts[i], item[i], None if types is None else types[i])
            if key not in seen:
                seen.add(key)
                kept.append(i)
        events = kept
    if p.dedupe_consecutive:
        kept = []
        for i in events:
            if kept and user[kept[-1]] == user[i] and item[kept[-1]] == item[i]:
                continue
            kept.append(i)
        events = kept
    while True:
        before = len(events)
        if p.min_item_count > 1:
            cnt: dict[int, int] = {}
            for i in events:
                cnt[item[i]] = cnt.get(item[i], 0) + 1
            events = [i for i in events if cnt[item[i]] >= p.min_item_count]
        if p.min_user_len > 1:
            cnt = {}
            for i in events:
                cnt[user[i]] = cnt.get(user[i], 0) + 1
            events = [i for i in events if cnt[user[i]] >= p.min_user_len]
        if not p.kcore or len(events) == before:
            break
    cnt = {}
    for i in events:
        cnt[item[i]] = cnt.get(item[i], 0) + 1
    order = sorted(cnt, key=lambda k: (-cnt[k], k))  # descending count, ties by raw id (= code)
    index = {k: j + 1 for j, k in enumerate(order)}
    users = sorted({user[i] for i in events})
    offsets = [0]
    for u in users:
        offsets.append(offsets[-1] + sum(1 for i in events if user[i] == u))
    return {
        "items": [index[item[i]] for i in events],
        "ts": [ts[i] for i in events],
        "types": None if types is None else [types[i] for i in events],
        "offsets": offsets,
        "users": users,
        "item_order": order,
        "counts": [cnt[k] for k in order],
    }


def random_log(rng: np.random.Generator, n: int, n_users: int, n_items: int, with_types: bool) -> Log:
    user = rng.integers(0, n_users, n)
    item = rng.integers(0, n_items, n) ** 2 % n_items  # skewed counts, many ties
    ts = rng.integers(0, 40, n) * 700  # many equal times: order ties must keep input order
    types = rng.integers(1, 4, n).astype(np.int8) if with_types else None
    return Log(
        user=user,
        item=item,
        ts=ts,
        types=types,
        user_ids=pl.Series("id", [f"u{k:03d}" for k in range(n_users)]),  # sorted = code order
        item_ids=pl.Series("id", np.arange(n_items) * 10 + 7),
        type_names=["view", "cart", "buy"] if with_types else [],
    )


PARAMS = [
    PrepParams(),
    PrepParams(dedupe=True, session_gap=1),
    PrepParams(dedupe_consecutive=True),
    PrepParams(dedupe=True, dedupe_consecutive=True, min_item_count=3, min_user_len=4),
    PrepParams(min_item_count=4, min_user_len=6, kcore=True),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "params",
    PARAMS,
    ids=lambda p: "-".join(f"{k}" for k, v in vars(p).items() if v not in (False, 1, 1800, "loo", None)) or "default",
)
def test_prepare_matches_reference(tmp_path, seed, params):
    rng = np.random.default_rng(seed)
    log = random_log(rng, 600, 25, 40, with_types=seed == 1)
    ref = ref_prepare(
        log.user.tolist(), log.item.tolist(), log.ts.tolist(), None if log.types is None else log.types.tolist(), params
    )
    with_types = log.types is not None
    out = prepare.prepare(log, tmp_path / "d", params, {"format": "test"})  # consumes the log's arrays
    d = datadir.load_data_dir(out, verify=True)
    assert d.items.tolist() == ref["items"]
    assert d.ts.tolist() == ref["ts"]
    assert d.offsets.tolist() == ref["offsets"]
    assert (d.types is None) == (not with_types)
    if d.types is not None:
        assert d.types.tolist() == ref["types"] and d.n_types == 3
    items_t = pl.read_parquet(out / "items.parquet")
    assert items_t["index"].to_list() == list(range(1, len(ref["item_order"]) + 1))
    assert items_t["id"].to_list() == [k * 10 + 7 for k in ref["item_order"]]
    assert items_t["count"].to_list() == ref["counts"]
    users_t = pl.read_parquet(out / "users.parquet")
    assert users_t["id"].to_list() == [f"u{u:03d}" for u in ref["users"]]
    assert d.n_items == len(ref["item_order"]) and d.n_users == len(ref["users"])
    # Sessions: a start at each user start and after each gap > session_gap.
    starts = [
        i
        for u in range(d.n_users)
        for i in range(ref["offsets"][u], ref["offsets"][u + 1])
        if i == ref["offsets"][u] or ref["ts"][i] - ref["ts"][i - 1] > params.session_gap
    ]
    assert d.sessions.tolist() == starts + [len(ref["items"])]
    # Leave-one-out: test = last, valid = second last, for users with >= 3 events.
    for u in range(d.n_users):
        a, b = ref["offsets"][u], ref["offsets"][u + 1]
        if b - a >= 3:
            assert (d.train_end[u], d.valid_end[u]) == (b - 2, b - 1)
        else:
            assert d.train_end[u] == d.valid_end[u] == b
    users, end = d.eval_targets("test")
    assert (d.valid_end[users] == end).all() and (end == d.offsets[users + 1] - 1).all()
    assert d.manifest["counts"]["events"] == len(ref["items"])


def test_prepare_is_deterministic_and_drops_nothing_by_default(tmp_path):
    a = prepare.prepare(
        random_log(np.random.default_rng(3), 300, 10, 20, False), tmp_path / "a", PrepParams(), {"format": "test"}
    )
    b = prepare.prepare(
        random_log(np.random.default_rng(3), 300, 10, 20, False), tmp_path / "b", PrepParams(), {"format": "test"}
    )
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert ma == mb and ma["counts"]["events"] == 300
    for f in ("items.npy", "ts.npy", "offsets.npy", "sessions.npy", "items.parquet", "users.parquet"):
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_prepare_refuses_empty_results(tmp_path):
    log = random_log(np.random.default_rng(0), 50, 5, 10, with_types=False)
    with pytest.raises(ValueError, match="no events are left"):
        prepare.prepare(log, tmp_path / "d", PrepParams(min_user_len=1000), {})
    empty = Log(
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        None,
        pl.Series([], dtype=pl.Int64),
        pl.Series([], dtype=pl.Int64),
    )
    with pytest.raises(ValueError, match="no events"):
        prepare.prepare(empty, tmp_path / "d", PrepParams(), {})
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# ---------------------------------------------------------------- temporal split and cutoffs


def small_log() -> Log:
    # user 0: times 10, 20, 30, 40; user 1: 35, 50; user 2: 5; user 3: 60, 70 (all after cutoffs)
    user = np.array([0, 0, 0, 0, 1, 1, 2, 3, 3])
    ts = np.array([10, 20, 30, 40, 35, 50, 5, 60, 70])
    return Log(
        user=user,
        item=np.arange(9) % 4,
        ts=ts,
        types=None,
        user_ids=pl.Series("id", [1, 2, 3, 4]),
        item_ids=pl.Series("id", [1, 2, 3, 4]),
    )


def test_temporal_split(tmp_path):
    params = PrepParams(split="temporal", valid_cutoff="30", test_cutoff="40")
    d = datadir.load_data_dir(prepare.prepare(small_log(), tmp_path / "d", params, {}))
    # offsets: u0 [0,4) u1 [4,6) u2 [6,7) u3 [7,9)
    assert d.offsets.tolist() == [0, 4, 6, 7, 9]
    assert d.train_end.tolist() == [2, 4, 7, 7]  # first event with ts >= 30
    assert d.valid_end.tolist() == [3, 5, 7, 7]  # first event with ts >= 40
    assert d.manifest["split"] == {
        "kind": "temporal",
        "valid_cutoff": 30,
        "test_cutoff": 40,
        "train_events": 2 + 0 + 1 + 0,
        "valid_targets": 1,
        "test_targets": 2,
    }
    users, end = d.eval_targets("valid")
    assert users.tolist() == [0] and end.tolist() == [2]  # u1's 35 has no history before it
    users, end = d.eval_targets("test")
    assert users.tolist() == [0, 1] and end.tolist() == [3, 5]  # u3: no history before 60


def test_temporal_split_refusals(tmp_path):
    with pytest.raises(ValueError, match="after the test cutoff"):
        prepare.prepare(
            small_log(), tmp_path / "d", PrepParams(split="temporal", valid_cutoff="50", test_cutoff="40"), {}
        )
    with pytest.raises(ValueError, match="no user has an event at or after the test cutoff"):
        prepare.prepare(
            small_log(), tmp_path / "d", PrepParams(split="temporal", valid_cutoff="50", test_cutoff="1000"), {}
        )
    with pytest.raises(ValueError, match="needs --valid-cutoff"):
        PrepParams(split="temporal", valid_cutoff="q0.5")
    with pytest.raises(ValueError, match="only apply"):
        PrepParams(valid_cutoff="10")
    with pytest.raises(ValueError, match="split must be"):
        PrepParams(split="random")


def test_parse_cutoff():
    ts = np.arange(1, 101)
    assert prepare.parse_cutoff("1438387200", ts) == 1438387200
    assert prepare.parse_cutoff("2015-08-01", ts) == 1438387200  # UTC midnight
    assert prepare.parse_cutoff("2015-08-01T01:00:00+01:00", ts) == 1438387200
    assert prepare.parse_cutoff("q0.9", ts) == 91  # the smallest time with >= 90% at or below it
    assert prepare.parse_cutoff("q1", ts) == 100
    for bad in ("yesterday", "q1.5", "q", "0.9", "2015-13-01"):
        with pytest.raises(ValueError, match="cutoff"):
            prepare.parse_cutoff(bad, ts)


# ---------------------------------------------------------------- the loader's checks


@pytest.fixture()
def ddir(tmp_path) -> Path:
    return prepare.prepare(small_log(), tmp_path / "d", PrepParams(), {"format": "test"})


def test_load_fields(ddir):
    d = datadir.load_data_dir(ddir, verify=True)
    assert d.items.dtype == np.int32 and isinstance(d.items, np.memmap)
    assert d.ts.dtype == d.offsets.dtype == d.sessions.dtype == d.train_end.dtype == np.int64
    assert (d.n_users, d.n_events, d.n_items, d.n_types) == (4, 9, 4, 0) and d.types is None
    assert d.items.min() >= 1 and d.items.max() == d.n_items
    with pytest.raises(ValueError, match="split must be"):
        d.eval_targets("train")


def test_loader_refuses_truncated_array(ddir):
    raw = (ddir / "items.npy").read_bytes()
    (ddir / "items.npy").write_bytes(raw[:-8])
    with pytest.raises(DataDirError, match="items"):
        datadir.load_data_dir(ddir)


def test_loader_refuses_edited_manifest(ddir):
    m = json.loads((ddir / "manifest.json").read_text())
    m["arrays"]["items"]["shape"] = [10]
    (ddir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataDirError, match="manifest says"):
        datadir.load_data_dir(ddir)


def test_loader_refuses_edited_small_array(ddir):
    off = np.load(ddir / "offsets.npy")
    off[2] -= 1  # still a valid partition: only the hash can tell
    np.save(ddir / "offsets.npy", off)
    with pytest.raises(DataDirError, match="offsets does not match its hash"):
        datadir.load_data_dir(ddir)


def test_verify_catches_an_edited_event_array(ddir):
    items = np.load(ddir / "items.npy")
    items[0] = 3 if items[0] != 3 else 2
    np.save(ddir / "items.npy", items)
    datadir.load_data_dir(ddir)  # the cheap checks pass: same size, dtype, small arrays
    with pytest.raises(DataDirError, match="items does not match its hash"):
        datadir.load_data_dir(ddir, verify=True)


def test_loader_refuses_other_version_and_missing_parts(ddir, tmp_path):
    with pytest.raises(DataDirError, match="no such directory"):
        datadir.load_data_dir(tmp_path / "nope")
    m = json.loads((ddir / "manifest.json").read_text())
    (ddir / "manifest.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(DataDirError, match="format version 99"):
        datadir.load_data_dir(ddir)
    (ddir / "manifest.json").write_text(json.dumps(m))
    (ddir / "ts.npy").unlink()
    with pytest.raises(DataDirError, match=r"ts\.npy cannot be read \(it is missing\)"):
        datadir.load_data_dir(ddir)
    (ddir / "manifest.json").unlink()
    with pytest.raises(DataDirError, match=r"no manifest\.json"):
        datadir.load_data_dir(ddir)


@pytest.mark.parametrize("file", ["items.npy", "offsets.npy", "split.npz"])
def test_a_garbage_array_file_is_named_with_what_to_do(ddir, file):
    """NumPy's message for bytes that are not an array file advises loading it with
    allow_pickle; say which file is damaged and to re-run prep.py instead."""
    (ddir / file).write_bytes(b"garbage, not an array" * 10)
    with pytest.raises(DataDirError) as e:
        datadir.load_data_dir(ddir)
    msg = str(e.value)
    assert f"{file} cannot be read" in msg and "re-run prep.py" in msg and "pickle" not in msg, msg


# ---------------------------------------------------------------- the synthetic generator


def test_synthetic_is_deterministic():
    a = synthetic.generate(users=300, items=200, seed=7)
    b = synthetic.generate(users=300, items=200, seed=7)
    c = synthetic.generate(users=300, items=200, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1][:1000], c[1][:1000])


def test_synthetic_chunks_are_the_log():
    cfg = synthetic.SyntheticConfig(users=synthetic.BLOCK + 500, items=300, seed=1, median_len=6, len_sigma=0.5)
    parts = list(synthetic.chunks(cfg))
    assert len(parts) == 2
    user, item, ts = synthetic.generate(**cfg.to_dict())
    got = (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )
    by_user_time = np.lexsort((got[2], got[0]))
    ref = np.lexsort((ts, user))
    assert np.array_equal(got[1][by_user_time], item[ref]) and np.array_equal(got[2][by_user_time], ts[ref])
    assert (np.diff(ts) >= 0).all()  # generate() is in time order across users
    assert all((np.diff(p[2]) >= 0).all() for p in parts)  # and so is each block


def test_synthetic_log_shape():
    user, item, ts = synthetic.generate(seed=0)  # the demo defaults: 2,000 users, 3,000 items
    assert user.min() == 1 and user.max() == 2000 and item.min() >= 1 and item.max() <= 3000
    lens = np.bincount(user)[1:]
    assert 40 <= np.median(lens) <= 100  # median history ~50
    assert lens.max() >= 3000 and np.percentile(lens, 99) > 20 * np.median(lens)  # a long tail of heavy users
    assert np.minimum(lens, 200).sum() < 0.5 * lens.sum()  # most events lie beyond a user's last 200
    counts = np.sort(np.bincount(item, minlength=3001)[1:])[::-1]
    assert counts[:300].sum() > 0.3 * counts.sum()  # top 10% of items: a large share of events
    assert 2e5 < len(user) < 6e5  # the demo size
    # Each user's times increase, and sessions (gaps <= 30 min) hold several events on average.
    order = np.lexsort((ts, user))
    u, t = user[order], ts[order]
    same = u[1:] == u[:-1]
    assert (np.diff(t)[same] > 0).all()
    new_sessions = (~same).sum() + (np.diff(t)[same] > 1800).sum()
    assert 3 < len(user) / new_sessions < 20


def test_synthetic_has_sequential_structure():
    """The next item is far more predictable from the user's previous item than from popularity."""
    user, item, ts = synthetic.generate(users=1000, items=500, seed=0)
    order = np.lexsort((ts, user))
    u, it = user[order], item[order]
    same = u[1:] == u[:-1]
    prev, nxt = it[:-1][same], it[1:][same]
    half = len(prev) // 2  # fit on the first half of the pairs, score on the second
    pairs = pl.DataFrame({"a": prev[:half], "b": nxt[:half]}).group_by("a", "b").len()
    best = pairs.sort("len", descending=True).group_by("a").head(10).group_by("a").agg("b")
    top10 = dict(zip(best["a"].to_list(), best["b"].to_list()))
    hit = np.mean([b in top10.get(a, ()) for a, b in zip(prev[half:], nxt[half:])])
    popular = set(np.argsort(-np.bincount(nxt[:half]))[:10].tolist())
    pop_hit = np.mean([b in popular for b in nxt[half:]])
    assert hit > 2 * pop_hit and hit > 0.3


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> datadir.DataDir:
    return datadir.load_data_dir(prepare.prepare_synthetic(tmp_path_factory.mktemp("demo") / "d"))  # the defaults


def bigram_hr10(d: datadir.DataDir, keep: np.ndarray) -> float:
    """HR@10 on the test targets of a count model of (previous item -> item), fit on the
    training events where `keep` holds."""
    items = np.asarray(d.items, dtype=np.int64)
    pos = np.flatnonzero(keep)
    pairs = pl.DataFrame({"a": items[pos - 1], "b": items[pos]}).group_by("a", "b").len()
    top = pairs.sort(["a", "len", "b"], descending=[False, True, False]).group_by("a").head(10)
    table = set(zip(top["a"].to_list(), top["b"].to_list()))
    _users, end = d.eval_targets("test")
    return float(np.mean([(a, b) in table for a, b in zip(items[end - 1].tolist(), items[end].tolist())]))


def test_synthetic_rewards_training_on_all_windows(demo):
    """The same item-to-item dynamics run through whole histories, so fitting on every
    training event beats fitting on the last 50 per user (what last-window training sees)."""
    d = demo
    user = np.repeat(np.arange(d.n_users), np.diff(d.offsets))
    pos = np.arange(d.n_events)
    train = (pos < d.train_end[user]) & (pos > d.offsets[:-1][user])  # events with a predecessor
    last50 = train & (pos >= d.train_end[user] - 50)
    assert last50.sum() < 0.2 * train.sum()
    hr_all, hr_last = bigram_hr10(d, train), bigram_hr10(d, last50)
    assert hr_all > hr_last + 0.02, (hr_all, hr_last)


def test_synthetic_rewards_long_context(demo):
    """For long histories the test item often recurs in the history, but far back: the more
    of the history a model reads, the more often the answer is in front of it."""
    d = demo
    users, end = d.eval_targets("test")
    users, end = users[np.diff(d.offsets)[users] > 400], end[np.diff(d.offsets)[users] > 400]
    assert len(users) > 100
    seen = {
        w: np.mean([d.items[e] in d.items[max(d.offsets[u], e - w) : e] for u, e in zip(users, end)])
        for w in (50, 200, 10**9)
    }
    assert seen[10**9] > seen[200] + 0.1 and seen[200] > seen[50] + 0.1, seen


def test_synthetic_config_checks():
    with pytest.raises(ValueError, match="items"):
        synthetic.SyntheticConfig(items=1)
    with pytest.raises(ValueError, match="p_noise"):
        synthetic.SyntheticConfig(p_noise=2.0)
    users = synthetic.users_for_events(100_000, items=50)
    user, _, _ = synthetic.generate(users=users, items=50)
    assert 85_000 < len(user) < 115_000


def test_prepare_synthetic_matches_generator(tmp_path):
    out = prepare.prepare_synthetic(tmp_path / "s", users=200, items=100, seed=3)
    d = datadir.load_data_dir(out, verify=True)
    user, item, ts = synthetic.generate(users=200, items=100, seed=3)
    assert d.n_events == len(user) and d.n_users == 200
    assert d.manifest["source"]["synthetic"]["seed"] == 3
    raw = pl.read_parquet(out / "items.parquet")["id"].to_numpy()  # index k -> raw id raw[k-1]
    order = np.lexsort((ts, user))
    assert np.array_equal(raw[d.items - 1], item[order]) and np.array_equal(d.ts, ts[order])
    again = prepare.prepare_synthetic(tmp_path / "t", users=200, items=100, seed=3)
    assert (out / "manifest.json").read_text() == (again / "manifest.json").read_text()


def test_number_types_puts_the_format_order_first_then_sorts():
    lut, names = prepare.number_types(["zoom", "buy", "view", "cart"], ["view", "buy", "absent"])
    assert names == ["view", "buy", "cart", "zoom"]
    assert lut.tolist() == [0, 4, 2, 1, 3] and lut.dtype == np.int8  # provisional code 1 (zoom) -> 4
    lut, names = prepare.number_types([], [])
    assert names == [] and lut.tolist() == [0]


def library_imports() -> dict[str, set[str]]:
    """{module: the longrec_core modules it imports, anywhere in its body} over longrec_core/*.py."""
    import ast

    package = Path(datadir.__file__).parent
    names = {p.stem for p in package.glob("*.py")} | {"_core"}
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "longrec_core":
                found |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("longrec_core."):
                found.add(node.module.split(".")[1])
        graph[path.stem] = found - {path.stem}
    return graph


def test_the_library_has_no_import_cycle():
    graph = library_imports()
    assert {"datadir", "prepare"} <= graph["shards"] and "prepare" in graph["readers"]  # the graph was read
    assert not {"shards", "readers"} & (graph["datadir"] | graph["prepare"])  # the data dir and prep are below both
    assert "prepare" not in graph["datadir"]  # the format does not depend on the pipeline that fills it
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path + (module,))}"
        if module not in done:
            for dep in graph.get(module, ()):
                visit(dep, path + (module,))
            done.add(module)

    for module in graph:
        visit(module, ())
