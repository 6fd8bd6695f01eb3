"""The installable package: one version everywhere, an abi3 floor equal to the minimum Python, the
core and the torch-free modules importable without torch, polars, rich or matplotlib, and an entry
point per stage that runs its script. (tests/wheel_check.sh builds and installs the wheel itself.)"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import longrec_core
from longrec_core import entry

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CARGO = tomllib.loads((ROOT / "Cargo.toml").read_text())


def test_one_version_and_an_abi3_floor_equal_to_requires_python():
    project = PYPROJECT["project"]
    assert longrec_core.__version__ == project["version"] == CARGO["package"]["version"]
    features = CARGO["dependencies"]["pyo3"]["features"]
    (abi3,) = [f for f in features if f.startswith("abi3-py")]
    floor = re.fullmatch(r">=3\.(\d+)", project["requires-python"])
    assert floor and abi3 == f"abi3-py3{floor[1]}", (abi3, project["requires-python"])


def test_the_core_needs_numpy_alone_and_training_is_an_extra():
    project = PYPROJECT["project"]
    assert [re.split(r"[<>=]", d)[0] for d in project["dependencies"]] == ["numpy"]
    train = {re.split(r"[<>=]", d)[0] for d in project["optional-dependencies"]["train"]}
    assert train == {"torch", "polars", "rich", "matplotlib"}


def test_torch_free_modules_import_without_the_training_packages():
    """As in a venv with numpy alone: importing torch, polars, rich or matplotlib fails."""
    code = (
        "import sys\n"
        "for m in ('torch', 'polars', 'rich', 'matplotlib'): sys.modules[m] = None  # import fails\n"
        "import numpy as np, longrec_core as lc\n"
        "from longrec_core import choices, cli, frontier, griddir, rundir, schedule, synthetic, train_flags\n"
        "assert lc.windows(np.array([0, 4]), window=2, stride=1)[2].tolist() == [2, 3, 4]\n"
        "assert train_flags.train_defaults()['window'] == 200\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_every_stage_has_an_entry_point_running_its_script():
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts == {f"longrec-{s}": f"longrec_core.entry:{s}" for s in entry.STAGES}
    for stage in entry.STAGES:
        assert callable(getattr(entry, stage))
        assert (entry.SCRIPTS / f"{stage}.py").resolve() == (ROOT / "scripts" / f"{stage}.py").resolve()
    proc = subprocess.run(
        [sys.executable, "-m", "longrec_core", "train", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0 and "--window" in proc.stdout, proc.stderr
