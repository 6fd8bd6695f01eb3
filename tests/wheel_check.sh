#!/usr/bin/env bash
# The installable core (run by .ci/run after `make test`): build a wheel from this checkout, install it
# into a fresh venv WITHOUT system site packages, and check that the core and the torch-free modules
# run with numpy alone (no torch, polars, rich or matplotlib pulled in). About a minute when the
# release build of `make install` is in target/; needs PyPI for numpy.
#   bash tests/wheel_check.sh                 # PYTHON=python3.12 MATURIN=maturin to choose
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
MATURIN=${MATURIN:-.venv/bin/maturin}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$MATURIN" build --release -q -i "$PYTHON" -o "$tmp/wheel"
wheel=$(ls "$tmp"/wheel/longrec-*.whl)
"$PYTHON" -m venv "$tmp/venv"  # no --system-site-packages: nothing but what the wheel brings
"$tmp/venv/bin/python" -m pip install -q "$wheel"
"$tmp/venv/bin/python" - "$wheel" <<'PY'
import importlib.metadata as md
import importlib.util
import sys

import numpy as np

import longrec_core as lc
from longrec_core import choices, cli, frontier, schedule, synthetic, train_flags  # noqa: F401  (torch-free)

installed = sorted(d.metadata["Name"].lower() for d in md.distributions())
heavy = [m for m in ("torch", "polars", "rich", "matplotlib") if importlib.util.find_spec(m) or m in sys.modules]
assert not heavy, f"the core pulled in {heavy} (installed: {installed})"
assert lc.__version__ == md.version("longrec"), (lc.__version__, md.version("longrec"))
offsets = np.array([0, 5, 9])
seq, start, stop = lc.windows(offsets, window=3, stride=2)
assert seq.tolist() == [0, 0, 1, 1] and stop.tolist() == [3, 5, 7, 9], (seq, start, stop)
items = np.arange(1, 10, dtype=np.int32)
batch = lc.gather(items, start, stop, length=3)
assert batch.shape == (4, 4) and batch[:2].tolist() == [[0, 1, 2, 3], [2, 3, 4, 5]], batch
assert train_flags.train_defaults()["window"] == 200
print(f"ok: {sys.argv[1].rsplit('/', 1)[-1]} runs longrec_core.windows with {', '.join(installed)}")
PY
