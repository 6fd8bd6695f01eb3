"""Crash injection: SIGKILL the stages at seeded instants, recover, and check the bytes.

    python tests/crash_harness.py --kills 20 --seed 0          # the short schedule (tests/test_crash.py)
    python tests/crash_harness.py --kills 200 --seed 1         # a campaign (pytest -m crash_campaign)
    python tests/crash_harness.py --seed 1 --trial 17          # replay one trial of that campaign

On a tiny synthetic log and a tiny model it first runs the stages uninterrupted: prep.py, then a
two-cell frontier.py grid (`last` and `sliding`; each cell is train.py then eval.py), whose
`sliding` cell is also the reference of a plain training run and of its evaluation. Then each
trial of the schedule starts a stage, SIGKILLs it (its whole process group, as a lost machine or
the OOM killer would) at an instant drawn from the trial's own seed, recovers the way a user
would, kills the recovery too (a trial holds one to three kills), and finally lets a recovery
finish. Trial kinds:

    prep        prep.py --synthetic into a fresh --out; recovery: the same command with --force
    prep-force  prep.py --force over a complete data dir (the swap); recovery: the same
    train       train.py into a fresh --out; recovery: `train.py --resume R` when R has
                config.json or ckpt.pt (and no --threads: the run's own are restored), else the
                same command
    train-term  as train, but the first signal is SIGTERM (a graceful stop with a mid-epoch
                checkpoint), sometimes followed by a SIGKILL while it saves
    eval        eval.py --out M.json on a finished run; recovery: the same command, unless M.json
                is there (then it must be the reference's)
    frontier    frontier.py on the two-cell grid; recovery: the same command

A kill lands at a uniform time after the start, or right after a line the stage prints on stderr
(`epoch k:`, which train.py prints between the epoch's log line and its checkpoint; `ranked` in
eval.py; `writing` in prep.py) plus a few milliseconds, where the writes are.

After every kill, what is at the output paths must be complete or refused: a data dir that loads
(with every hash verified) holds the reference's bytes; a run that eval.py would accept (finished:
summary.json) holds the reference's weights; a metrics JSON holds the reference's metrics beside
the reference's ranks; every checkpoint and model file that exists loads. After the final
recovery, which must exit 0 (else the dir is stuck), the bytes must equal the uninterrupted run's:
every data dir file; model.pt and ckpt.pt weights; log.jsonl epochs (each once) and losses;
metrics, intervals and ranks; and no temporary file of a dead writer may be left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from longrec_core import cli  # noqa: E402
from longrec_core.datadir import DataDirError, load_data_dir  # noqa: E402
from longrec_core.rundir import RunDir  # noqa: E402

SCRIPTS = ROOT / "scripts"
PREP_ARGS = ["--synthetic", "--users", "60", "--items", "40", "--seed", "0"]
# the tiny model: about 5 steps an epoch; a run is mostly Python and torch starting up
SHARED = [
    "--epochs", "3", "--dim", "16", "--layers", "1", "--heads", "1", "--ffn", "32", "--batch-size", "64",
    "--warmup-steps", "2", "--threads", "1", "--device", "cpu", "--eval-batch-size", "64",
]  # fmt: skip
GRID = ["--regimes", "last,sliding", "--windows", "8", "--strides", "8", *SHARED]
EVAL_ARGS = ["--split", "test"]  # as frontier.py evaluates a cell
SLIDING = "sliding-w8-s8"  # the grid's cell that is also the reference of a plain training run
# Each bag of trials holds these kinds this often (about 20 SIGKILLs a bag), in a seeded order.
BAG = {"prep": 2, "prep-force": 1, "train": 2, "train-term": 2, "eval": 1, "frontier": 1}
TIMEOUT = 600  # seconds any one process may take before the harness calls it stuck


# ----------------------------------------------------------------------------- running and killing


@dataclass
class Outcome:
    """How one started process ended."""

    killed: bool  # by our SIGKILL (False: it exited by itself first)
    returncode: int
    stderr: str
    seconds: float


def python(script: str, *args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, str(SCRIPTS / script), *map(str, args)]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}


def run(cmd: list[str], cwd: Path) -> Outcome:
    t0 = time.perf_counter()
    p = subprocess.run(
        cmd, cwd=cwd, env=env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT
    )
    return Outcome(False, p.returncode, p.stderr, time.perf_counter() - t0)


@dataclass
class Trigger:
    """When to signal: `after` seconds from the start, or `after` seconds from the `nth` stderr line
    that contains `line`."""

    after: float
    line: str | None = None
    nth: int = 1

    def __str__(self) -> str:
        where = "start" if self.line is None else f"line {self.nth} with {self.line!r}"
        return f"{self.after * 1000:.0f} ms after {where}"


def run_and_signal(
    cmd: list[str], cwd: Path, trigger: Trigger, sig: int = signal.SIGKILL, then_kill: float | None = None
) -> Outcome:
    """Start `cmd` in its own process group and send `sig` to the group at `trigger` (unless it has
    exited by then); with `then_kill`, a SIGKILL follows that many seconds later (a kill while a
    SIGTERM'd stage saves). `killed`: the process died of our last signal."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if trigger.line is not None and sum(trigger.line in x for x in lines) >= trigger.nth:
                seen.set()
        seen.set()  # end of output: the process is exiting

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if trigger.line is None:
        deadline = t0 + trigger.after
        while proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(min(0.005, max(0.0, deadline - time.perf_counter())))
    else:
        seen.wait(TIMEOUT)
        time.sleep(trigger.after)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if then_kill is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(then_kill)
            if proc.poll() is None:
                sig = signal.SIGKILL
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
    returncode = proc.wait(TIMEOUT)
    if sig == signal.SIGKILL:  # the group's other members (frontier.py's train.py) die with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(TIMEOUT)
    return Outcome(returncode == -sig, returncode, "".join(lines), time.perf_counter() - t0)


# ----------------------------------------------------------------------------- the references


@dataclass
class World:
    """The uninterrupted stages, the references every trial is compared with."""

    root: Path
    data: Path  # prep.py's data dir
    frontier: Path  # the two-cell grid
    train_args: list[str]  # train.py's flags of the sliding cell (without --out)
    seconds: dict[str, float]  # how long each stage ran uninterrupted

    @property
    def ref_run(self) -> Path:
        return self.cell(SLIDING)

    def cell(self, name: str) -> Path:
        return self.frontier / "cells" / name / "seed0" / "run"

    @property
    def cells(self) -> list[str]:
        return sorted(p.name for p in (self.frontier / "cells").iterdir())


def build_world(root: Path) -> World:
    root.mkdir(parents=True, exist_ok=True)
    seconds = {}
    data = root / "data"
    out = run(python("prep.py", *PREP_ARGS, "--out", data), root)
    assert out.returncode == 0, out.stderr
    seconds["prep"] = out.seconds
    frontier = root / "frontier"
    out = run(python("frontier.py", "--data", data, "--out", frontier, *GRID), root)
    assert out.returncode == 0, out.stderr
    seconds["frontier"] = out.seconds
    cell = json.loads((frontier / "cells" / SLIDING / "seed0" / "cell.json").read_text())
    logs = (frontier / "cells" / SLIDING / "seed0" / "stderr.log").read_text()
    assert "warning" not in logs, logs
    # the wall time of a cell is train.py and eval.py; eval.py is about 40% of it here
    seconds["train"] = 0.6 * cell["wall_seconds"]
    seconds["eval"] = 0.4 * cell["wall_seconds"]
    return World(root, data, frontier, cell["train_args"], seconds)


# ----------------------------------------------------------------------------- what must hold


def file_hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def log_epochs(run_dir: Path) -> list[tuple[int, bool, float]]:
    return [
        (r["epoch"], r["partial"], r["loss"]) for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
    ]


def stale_temps(*dirs: Path) -> list[str]:
    """Temporary files or dirs (`.NAME.tmp-PID-HEX`, `.NAME.old-...`) left in `dirs` by any writer,
    dead or alive (after a recovery nothing of ours runs any more)."""
    found = []
    for d in dirs:
        if d.is_dir():
            found += [str(p) for p in d.rglob(".*") if cli.temp_of(p.name) is not None]
    return found


def check_data(d: Path, world: World, *, must_exist: bool) -> list[str]:
    """What is wrong with a data dir at a final path: [] when absent (and allowed) or complete."""
    if not d.exists():
        if must_exist and not any(cli.temp_of(p.name) == d.name for p in d.parent.iterdir()):
            return [f"{d} is gone and nothing to restore it was left"]
        return []
    try:
        load_data_dir(d, verify=True)
    except DataDirError as e:
        return [f"half-written data dir at its final path: {e}"]
    if file_hashes(d) != file_hashes(world.data):
        return [f"{d} loads but its files differ from the reference"]
    return []


def check_run(r: Path, ref: Path) -> list[str]:
    """What is wrong with a run dir right after a kill: every file there is whole, and a run eval.py
    would accept (finished) holds the final weights (those of the uninterrupted run `ref`)."""
    problems = []
    if not r.is_dir():
        return problems
    for name in ("config.json", "summary.json"):
        if (r / name).exists():
            try:
                json.loads((r / name).read_text())
            except ValueError:
                problems.append(f"{r / name} is half-written")
    for name in ("model.pt", "ckpt.pt"):
        if (r / name).exists():
            try:
                weights(r / name)
            except Exception as e:  # a truncated torch file
                problems.append(f"{r / name} is half-written ({type(e).__name__})")
    if not problems and RunDir(r).finished() is not None and (r / "model.pt").exists():
        if not same_weights(r / "model.pt", ref / "model.pt"):
            problems.append(f"{r} is accepted as finished but model.pt is not the final weights")
    return problems


def check_metrics(m: Path, ref: Path) -> list[str]:
    """A metrics JSON at its final path must be the reference's, beside the reference's ranks."""
    if not m.exists():
        return []
    try:
        got = json.loads(m.read_text())
    except ValueError:
        return [f"{m} is half-written"]
    want = json.loads(ref.read_text())
    problems = []
    for key in ("metrics", "ci", "n_users", "split", "filter_seen"):
        if got.get(key) != want.get(key):
            problems.append(f"{m}: {key} differs from the uninterrupted run's")
    ranks = m.with_suffix(".ranks.npz")
    try:
        with np.load(ranks) as a, np.load(ref.with_suffix(".ranks.npz")) as b:
            if not (np.array_equal(a["users"], b["users"]) and np.array_equal(a["ranks"], b["ranks"])):
                problems.append(f"{ranks} is not the ranks of {m}")
    except Exception as e:
        problems.append(f"{m} has no readable ranks file beside it ({type(e).__name__})")
    return problems


def final_run(r: Path, ref: Path) -> list[str]:
    """After the last recovery: the run equals the reference `ref` (weights, log, finished)."""
    problems = []
    if RunDir(r).finished() is None:
        return [f"{r} did not finish ({RunDir(r).unfinished_reason()})"]
    for name in ("model.pt", "ckpt.pt"):
        if not same_weights(r / name, ref / name):
            problems.append(f"{r / name}: weights differ from the uninterrupted run's")
    got, want = log_epochs(r), log_epochs(ref)
    full = [e for e in got if not e[1]]
    if [e[0] for e in full] != sorted({e[0] for e in full}):
        problems.append(f"{r / 'log.jsonl'} repeats an epoch: {[e[0] for e in got]}")
    if full != [e for e in want if not e[1]]:
        problems.append(f"{r / 'log.jsonl'}: epochs or losses differ from the uninterrupted run's")
    return problems


# ----------------------------------------------------------------------------- trials


@dataclass
class Trial:
    index: int
    kind: str
    kills: int  # SIGKILLs to land (a kill that misses, the stage having finished, is not counted)
    seed: int

    def replay(self) -> str:
        return f"python tests/crash_harness.py --seed {self.seed} --trial {self.index}"


@dataclass
class Report:
    kills: int = 0  # SIGKILLs that landed on a live process
    missed: int = 0  # signals that came after the stage had finished
    terms: int = 0  # graceful SIGTERM stops
    by_kind: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)  # a recovery that failed
    half_written: list[str] = field(default_factory=list)  # an artifact accepted (or left) half-written
    differ: list[str] = field(default_factory=list)  # final bytes unlike the uninterrupted run's
    leftovers: list[str] = field(default_factory=list)  # temporaries of dead writers left behind
    trials: int = 0
    seconds: float = 0.0

    def failures(self) -> list[str]:
        return self.stuck + self.half_written + self.differ + self.leftovers

    def summary(self) -> str:
        return (
            f"{self.trials} trials, {self.kills} SIGKILLs landed ({dict(self.by_kind)}), {self.terms} SIGTERMs, "
            f"{self.missed} signals after the stage had finished; stuck dirs {len(self.stuck)}, half-written "
            f"artifacts accepted {len(self.half_written)}, final bytes that differ {len(self.differ)}, "
            f"temporaries left {len(self.leftovers)}; {self.seconds:.0f} s"
        )


def schedule(seed: int) -> Iterator[Trial]:
    """The trials of a campaign, endless: bags of BAG's kinds, each shuffled by `seed`, each trial
    planning 1 to 3 SIGKILLs. Trial i is the same for a seed whatever happens before it, so a
    failure replays with --seed and --trial."""
    rng = random.Random(seed)
    index = 0
    while True:
        bag = [kind for kind, n in BAG.items() for _ in range(n)]
        rng.shuffle(bag)
        for kind in bag:
            yield Trial(index, kind, rng.randint(2 if kind == "frontier" else 1, 3), seed)
            index += 1


def draw_trigger(kind: str, rng: random.Random, world: World) -> Trigger:
    """A uniform instant in the stage's run, or a few ms after a line it prints where it writes."""
    stage = "prep" if kind.startswith("prep") else "train" if kind.startswith("train") else kind
    if rng.random() < 0.5 or stage == "frontier":
        return Trigger(rng.uniform(0.05, 1.1 * world.seconds[stage]))
    if stage == "prep":
        return Trigger(rng.uniform(0, 0.05), "writing ")
    if stage == "eval":
        return Trigger(rng.uniform(0, 0.05), " ranked ")
    return Trigger(rng.uniform(0, 0.03), "epoch ", rng.randint(1, 3))  # between log line and checkpoint


def run_trial(trial: Trial, world: World, report: Report) -> None:
    rng = random.Random(f"{trial.seed}-{trial.index}")
    d = Path(tempfile.mkdtemp(prefix=f"t{trial.index}-{trial.kind}-", dir=world.root))
    tag = f"trial {trial.index} ({trial.kind}; replay: {trial.replay()})"
    plan: list[str] = []

    # the first command, how to recover, and the checks after a kill and at the end
    if trial.kind.startswith("prep"):
        out = d / "data"
        first = python("prep.py", *PREP_ARGS, "--out", out)
        if trial.kind == "prep-force":
            shutil.copytree(world.data, out)
            first.append("--force")

        def recover() -> list[str]:
            return python("prep.py", *PREP_ARGS, "--out", out, "--force")

        def after_kill() -> list[str]:
            return check_data(out, world, must_exist=trial.kind == "prep-force")

        def at_end() -> list[str]:
            return check_data(out, world, must_exist=True) or ([] if out.exists() else [f"{out} is missing"])

        watched = [d]
    elif trial.kind.startswith("train"):
        out = d / "run"
        first = python("train.py", *world.train_args, "--out", out)

        def recover() -> list[str]:
            if (out / "config.json").exists() or (out / "ckpt.pt").exists():
                return python("train.py", "--resume", out)
            return first

        def after_kill() -> list[str]:
            return check_run(out, world.ref_run)

        def at_end() -> list[str]:
            return final_run(out, world.ref_run)

        watched = [d]
    elif trial.kind == "eval":
        run_dir = d / "run"
        shutil.copytree(world.ref_run, run_dir)
        for p in run_dir.glob("metrics_*"):
            p.unlink()
        out = d / "m.json"
        ref = world.ref_run / "metrics_test.json"
        first = python("eval.py", "--run", run_dir, *EVAL_ARGS, "--out", out)

        def recover() -> list[str] | None:
            return None if out.exists() else first  # a metrics JSON there is complete (checked)

        def after_kill() -> list[str]:
            return check_metrics(out, ref)

        def at_end() -> list[str]:
            return check_metrics(out, ref) or ([] if out.exists() else [f"{out} is missing"])

        watched = [d]
    else:  # frontier
        out = d / "frontier"
        first = python("frontier.py", "--data", world.data, "--out", out, *GRID)

        def recover() -> list[str]:
            return first

        def after_kill() -> list[str]:
            problems = []
            for cell in world.cells:
                r = out / "cells" / cell / "seed0" / "run"
                problems += check_run(r, world.cell(cell))
                problems += check_metrics(r / "metrics_test.json", world.cell(cell) / "metrics_test.json")
            return problems

        def at_end() -> list[str]:
            problems = []
            for cell in world.cells:
                r = out / "cells" / cell / "seed0" / "run"
                problems += final_run(r, world.cell(cell))
                problems += check_metrics(r / "metrics_test.json", world.cell(cell) / "metrics_test.json")
            try:
                rows = {row["name"]: row for row in json.loads((out / "frontier.json").read_text())["cells"]}
                want = {row["name"]: row for row in json.loads((world.frontier / "frontier.json").read_text())["cells"]}
                for name, row in want.items():
                    if rows.get(name, {}).get("NDCG@10") != row.get("NDCG@10"):
                        problems.append(f"{out / 'frontier.json'}: {name} differs from the uninterrupted grid's")
            except (OSError, ValueError, KeyError) as e:
                problems.append(f"{out / 'frontier.json'} is missing or damaged ({type(e).__name__})")
            return problems

        watched = [d]

    cmd: list[str] | None = first
    landed = attempts = 0
    while cmd is not None and landed < trial.kills and attempts < 3 * trial.kills + 3:
        attempts += 1
        trigger = draw_trigger(trial.kind, rng, world)
        term = trial.kind == "train-term" and attempts == 1  # a graceful stop first
        then_kill = rng.uniform(0, 0.3) if term and rng.random() < 0.5 else None  # killed while it saves
        outcome = run_and_signal(cmd, d, trigger, signal.SIGTERM if term else signal.SIGKILL, then_kill)
        killed = outcome.returncode == -signal.SIGKILL
        # stopped with a checkpoint, as asked (130); or the SIGTERM came while Python was exiting,
        # its work done, when the interpreter has put the default handler back (-15)
        stopped = term and outcome.returncode in (130, -signal.SIGTERM)
        plan.append(
            f"{'SIGTERM' if term else 'SIGKILL'} {trigger}"
            + (f" then SIGKILL {then_kill * 1000:.0f} ms later" if then_kill is not None else "")
            + f": exit {outcome.returncode}"
        )
        if killed:
            landed += 1
            report.kills += 1
            report.by_kind[trial.kind] += 1
        elif stopped:
            report.terms += 1
        elif outcome.returncode == 0:
            report.missed += 1  # it finished first: a rerun would only redo a finished stage
        else:
            report.stuck.append(f"{tag}: {shlex_join(cmd)} exited {outcome.returncode}: {last_line(outcome.stderr)}")
            return
        problems = after_kill()
        if problems:
            report.half_written += [f"{tag}: {p} [{'; '.join(plan)}]" for p in problems]
            return
        cmd = recover()
        if outcome.returncode == 0:
            break
    if cmd is not None:
        outcome = run(cmd, d)
        plan.append(f"recovery: exit {outcome.returncode}")
        if outcome.returncode != 0:
            report.stuck.append(
                f"{tag}: {shlex_join(cmd)} exited {outcome.returncode}: {last_line(outcome.stderr)} [{'; '.join(plan)}]"
            )
            return
    report.differ += [f"{tag}: {p} [{'; '.join(plan)}]" for p in at_end()]
    report.leftovers += [f"{tag}: {p} [{'; '.join(plan)}]" for p in stale_temps(*watched)]
    shutil.rmtree(d, ignore_errors=True)


def shlex_join(cmd: list[str]) -> str:
    import shlex

    return shlex.join(a.replace(str(ROOT) + "/", "") for a in cmd)


def last_line(text: str) -> str:
    lines = [x for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else ""


def campaign(seed: int, kills: int, root: Path, only: int | None = None, log: Any = None) -> Report:
    """Build the references in `root`, then run the trials of `schedule(seed)` until `kills`
    SIGKILLs have landed (or only its trial `only`)."""
    t0 = time.perf_counter()
    world = build_world(root)
    if log is not None:
        log(f"references in {time.perf_counter() - t0:.0f} s: {world.seconds}")
    report = Report()
    for trial in schedule(seed):
        if only is not None and trial.index != only:
            if trial.index > only:
                break
            continue
        t1 = time.perf_counter()
        run_trial(trial, world, report)
        report.trials += 1
        if log is not None:
            log(f"trial {trial.index} {trial.kind} ({time.perf_counter() - t1:.0f} s): {report.summary()}")
        if only is None and report.kills >= kills:
            break
    report.seconds = time.perf_counter() - t0
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="the schedule's seed (default: 0)")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs in the schedule (default: 20)")
    p.add_argument("--trial", type=int, default=None, help="replay only this trial of the schedule")
    p.add_argument("--keep", default=None, help="work in this dir and keep it (default: a temporary dir)")
    args = p.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="crash-"))
    report = campaign(args.seed, args.kills, root, args.trial, log=lambda m: print(m, file=sys.stderr, flush=True))
    for line in report.failures():
        print(f"FAIL {line}", file=sys.stderr)
    print(report.summary())
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    raise SystemExit(1 if report.failures() else 0)


if __name__ == "__main__":
    main()
