"""`python -m longrec_core STAGE [flags]`: the stage scripts (prep, train, eval, recommend,
frontier) from an installed package, as `python scripts/STAGE.py [flags]` in a checkout."""

import sys

from longrec_core.entry import STAGES, run_stage

if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
    sys.stderr.write(f"usage: python -m longrec_core {{{','.join(STAGES)}}} [flags]  (each stage: --help)\n")
    raise SystemExit(2)
run_stage(sys.argv[1], sys.argv[2:])
