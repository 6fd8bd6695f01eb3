"""Crash injection (the harness is tests/crash_harness.py): SIGKILL prep, train (fresh and
resumed, mid-epoch and at epoch boundaries), eval and a two-cell frontier grid at seeded instants,
recover, and require that no half-written artifact is accepted, every recovery completes, and the
final bytes equal an uninterrupted run's.

The short schedule (about 20 kills) runs with the suite. The campaign (200 kills, tens of minutes)
is opt-in: `pytest tests/test_crash.py -m crash_campaign -n 0` (CRASH_SEED, CRASH_KILLS to vary it).
A failure names its trial and the command that replays it alone.
"""

from __future__ import annotations

import os

import pytest
from crash_harness import campaign


def assert_clean(report) -> None:
    assert not report.failures(), report.summary() + "\n" + "\n".join(report.failures())


def test_short_crash_schedule(tmp_path):
    report = campaign(seed=0, kills=20, root=tmp_path)
    assert_clean(report)
    assert report.kills >= 20 and len(report.by_kind) >= 4, report.summary()


@pytest.mark.crash_campaign
def test_crash_campaign(tmp_path):
    kills = int(os.environ.get("CRASH_KILLS", "200"))
    seed = int(os.environ.get("CRASH_SEED", "1"))
    report = campaign(seed=seed, kills=kills, root=tmp_path, log=lambda line: print(line, flush=True))  # with -s
    print(report.summary())
    assert_clean(report)
    assert report.kills >= kills
