"""longrec_core.cli: atomic output, error exits, the input path."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import longrec_core as lc
from longrec_core import cli

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_dir_renames_on_success_and_cleans_up_on_failure(tmp_path):
    final = tmp_path / "out"
    with cli.atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        (tmp / "a").write_text("1")
        assert not final.exists()
    assert (final / "a").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

    with pytest.raises(FileExistsError, match="already exists; pass --force"):
        with cli.atomic_dir(final):
            pass
    with pytest.raises(RuntimeError):
        with cli.atomic_dir(final, force=True) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (final / "a").exists()  # untouched
    with cli.atomic_dir(final, force=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]


def test_atomic_dir_marker_protects_other_folders(tmp_path):
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("...")
    with pytest.raises(FileExistsError, match=r"has no manifest\.json"):
        with cli.atomic_dir(other, force=True, marker="manifest.json"):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        cli.check_replaceable(tmp_path / "file", force=True)
    (tmp_path / "empty").mkdir()
    cli.check_replaceable(tmp_path / "empty", force=True, marker="manifest.json")  # empty: fine


def test_atomic_write(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    with cli.atomic_write(path) as tmp:
        tmp.write_text("{}")
        assert not path.exists()
    assert path.read_text() == "{}"
    with pytest.raises(ValueError):
        with cli.atomic_write(path) as tmp:
            tmp.write_text("half")
            raise ValueError("no")
    assert path.read_text() == "{}" and sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def test_fail_and_stage_main(capsys):
    with pytest.raises(SystemExit) as e:
        cli.fail("the [data] dir is missing")
    assert e.value.code == 2 and capsys.readouterr().err == "error: the [data] dir is missing\n"

    def bad() -> None:
        raise ValueError("window must be >= 1, got 0\nmore detail")

    with pytest.raises(SystemExit) as e:
        cli.stage_main(bad)
    assert e.value.code == 2 and capsys.readouterr().err == "error: window must be >= 1, got 0\n"

    def missing() -> None:
        open("/nonexistent/x.csv")

    with pytest.raises(SystemExit):
        cli.stage_main(missing)
    assert capsys.readouterr().err == "error: No such file or directory: /nonexistent/x.csv\n"

    def too_big() -> None:
        lc.windows([0, 2**40], window=200, stride=1)

    with pytest.raises(SystemExit) as e:
        cli.stage_main(too_big)
    assert e.value.code == 2
    assert re.fullmatch(
        r"error: windows: the output needs \S+ GiB, more than the \S+ GiB of memory available now \(MemAvailable\); "
        r"ask for a smaller output or free memory\n",
        capsys.readouterr().err,
    )

    def bug() -> None:
        raise KeyError("not bad input: a bug keeps its traceback")

    with pytest.raises(KeyError):
        cli.stage_main(bug)


@pytest.mark.parametrize(
    "raise_, status, stderr",
    [
        ("raise ValueError('--x must be 1\\nmore')", 2, "error: --x must be 1\n"),
        (
            'raise RuntimeError("DefaultCPUAllocator: can\'t allocate memory: you tried to allocate 8 bytes")',
            2,
            "error: DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes\n",
        ),
        ("raise KeyboardInterrupt", None, "interrupted\n"),
    ],
)
def test_a_top_to_bottom_script_ends_on_errors_like_stage_main(raise_, status, stderr):
    script = f"from longrec_core import cli\ncli.report_uncaught_errors()\nprint('out')\n{raise_}\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stderr == stderr and proc.stdout == "out\n"
    if status is not None:
        assert proc.returncode == status
    else:  # Python ends an uncaught Ctrl-C as killed by SIGINT
        assert proc.returncode in (-2, 130)
    bug = subprocess.run(
        [sys.executable, "-c", "from longrec_core import cli\ncli.report_uncaught_errors()\n{}['k']"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "KeyError" in bug.stderr


def test_check_int():
    cli.check_int("--k", None, 1)
    cli.check_int("--k", 2**63 - 1, 1)
    for value, message in [
        (0, "--k must be >= 1, got 0"),
        (2**63, "--k must be <= 9,223,372,036,854,775,807"),
        ("8", "--k must be an integer, got '8'"),
        (True, "--k must be an integer, got True"),
        (2.0, "--k must be an integer, got 2.0"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            cli.check_int("--k", value, 1)


def test_check_parent_dir(tmp_path):
    cli.check_parent_dir(tmp_path / "a" / "b" / "c.json")  # made later: fine
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"cannot write .*afile/run: .*afile is not a directory"):
        cli.check_parent_dir(tmp_path / "afile" / "run")


def test_input_path(monkeypatch, capsys):
    assert str(cli.input_path("data/x", "data dir")) == "data/x"
    monkeypatch.setattr("sys.stdin", io.StringIO("runs/abc\n"))
    assert str(cli.input_path(None, "run dir")) == "runs/abc"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(SystemExit):
        cli.input_path(None, "run dir")
    assert "stdin was empty" in capsys.readouterr().err

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Tty())
    with pytest.raises(SystemExit):
        cli.input_path(None, "data dir")
    assert capsys.readouterr().err.startswith("error: no data dir given")


def test_argument_parser_exits_2(capsys):
    p = cli.ArgumentParser()
    p.add_argument("--split", choices=("loo", "temporal"))
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--split", "random"])
    err = capsys.readouterr().err
    assert (
        e.value.code == 2 and err.startswith("error: argument --split: invalid choice") and len(err.splitlines()) == 1
    )


def test_torch_device_follows_the_choice_and_refuses_a_missing_cuda(capsys):
    import torch

    assert cli.torch_device("cpu") == torch.device("cpu")
    assert cli.torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as e:
            cli.torch_device("cuda")
        assert e.value.code == 2 and "--device cuda was asked for but no CUDA device" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--device must be one of auto, cpu, cuda"):
        cli.torch_device("tpu")


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(dead.stdout)  # a pid whose process has exited
    out = tmp_path / "m.json"
    stale = [tmp_path / f".m.json.tmp-{gone}-0a1b2c3d", tmp_path / f".m.json.tmp-{os.getpid()}-ffffffff"]
    for path in stale:
        path.write_text("half")
    (tmp_path / f".m.json.tmp-{gone}-dir00000").mkdir()  # a data dir's temporary (prep)
    stale.append(tmp_path / f".m.json.tmp-{gone}-dir00000")
    live = tmp_path / ".m.json.tmp-1-0a1b2c3d"  # pid 1 is alive: perhaps writing right now
    live.write_text("busy")
    other = tmp_path / f".n.json.tmp-{gone}-0a1b2c3d"  # another output's: not ours to judge here
    other.write_text("x")
    with cli.atomic_write(out) as tmp:
        tmp.write_text("{}")
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists() and out.read_text() == "{}"
    assert cli.temp_of(live.name) == "m.json" and cli.temp_of("m.json") is None


class Killed(BaseException):
    """Stands for a SIGKILL at one instant: nothing after it runs, not even `except` clean-ups."""


@pytest.mark.parametrize("exchange", [True, False])
def test_replacing_a_dir_leaves_a_complete_one_at_every_instant(tmp_path, monkeypatch, exchange):
    """prep --force: a kill at any step of the swap leaves the old or the new dir at --out, or the
    old one where the next writer puts it back (before: renamed away, then nothing at --out)."""
    final = tmp_path / "data"
    real_rename, real_rmtree = os.rename, shutil.rmtree
    if not exchange:
        monkeypatch.setattr(cli, "_exchange", lambda a, b: False)
    for kill_at in range(4):
        real_rmtree(final, ignore_errors=True)
        final.mkdir()
        (final / "manifest.json").write_text("old")
        steps = []

        def step(*args, fn=None, kill_at=kill_at, steps=steps):
            steps.append(fn.__name__)
            if len(steps) > kill_at:
                raise Killed
            return fn(*args)

        monkeypatch.setattr(os, "rename", lambda a, b, step=step: step(a, b, fn=real_rename))
        monkeypatch.setattr(cli, "_exchange", lambda a, b, step=step, ex=cli._exchange: step(a, b, fn=ex))
        monkeypatch.setattr(shutil, "rmtree", lambda p, ignore_errors=False, step=step: step(p, fn=real_rmtree))
        try:
            with cli.atomic_dir(final, force=True, marker="manifest.json") as tmp:
                (tmp / "manifest.json").write_text("new")
        except Killed:
            pass
        monkeypatch.setattr(os, "rename", real_rename)
        monkeypatch.setattr(shutil, "rmtree", real_rmtree)
        monkeypatch.setattr(cli, "_exchange", cli._exchange if exchange else (lambda a, b: False))
        if not final.exists():
            cli.remove_stale_temps(final)  # what the next prep does first
        assert (final / "manifest.json").read_text() in ("old", "new"), (kill_at, steps)
        cli.remove_stale_temps(final)
        assert [p.name for p in tmp_path.iterdir()] == ["data"], (kill_at, steps)


def test_interrupt_while_starting_exits_130_quietly(tmp_path):
    """Ctrl-C or SIGTERM while torch loads: `interrupted`, exit 130, no traceback."""
    script = ROOT / "scripts" / "train.py"
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [sys.executable, str(script), "--out", str(tmp_path / "run")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        time.sleep(0.4)  # inside `import torch` (about 2 s here)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and out == "", (sig, err)
        assert "Traceback" not in err and err.strip().endswith("interrupted"), err
