"""Memory readings (and the machine's description) shared by the benchmarks' worker processes.

Peak RSS comes from VmHWM in /proc/self/status, not from getrusage's ru_maxrss: ru_maxrss
survives exec, so a fresh worker started by a large parent would report the parent's
high-water mark. Off Linux there is no /proc, and ru_maxrss is the fallback.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any


def status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in bytes; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def huge_page_bytes(address: int, size: int) -> int | None:
    """Bytes of [address, address + size) that sit in transparent huge pages (AnonHugePages
    of /proc/self/smaps, summed over every mapping the range touches); None off Linux.

    A big array is rarely one mapping: NumPy asks for huge pages on the 2 MiB-aligned part of
    its allocation only, which splits the allocation into a small head mapping and the rest,
    so looking at the mapping of the first byte alone reports 0.
    """
    try:
        total, overlap = 0, 0
        for line in Path("/proc/self/smaps").read_text().splitlines():
            head = line.split()[0]
            if "-" in head and ":" not in head:  # a mapping's header: start-end perms ...
                lo, hi = (int(x, 16) for x in head.split("-"))
                overlap = max(0, min(hi, address + size) - max(lo, address))
                whole = overlap == hi - lo
            elif overlap and head == "AnonHugePages:":
                # a mapping only partly inside the range: count its huge pages pro rata
                total += int(line.split()[1]) * 1024 * (1 if whole else overlap / (hi - lo))
        return int(total)
    except OSError:
        return None


def _ru_maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def rss_bytes() -> int:
    """This process's resident set size now (the peak so far where /proc is missing)."""
    rss = status_bytes("VmRSS")
    return rss if rss is not None else _ru_maxrss_bytes()


def peak_rss_bytes() -> int:
    """This process's peak resident set size (its own, not inherited through exec)."""
    peak = status_bytes("VmHWM")
    return peak if peak is not None else _ru_maxrss_bytes()


def cpu_and_cores() -> tuple[str, int]:
    """The CPU's model name (/proc/cpuinfo, else platform's guess) and the cores this process may use."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpu, cores


def run_fresh_worker(script: str, name: str, flags: list[str], key: str, env: dict | None = None) -> dict[str, Any]:
    """Run `script --worker name *flags` in a fresh Python process (so one case's peak RSS is its
    own) and return the JSON of its last stdout line, or {key: name, "error": why} when it failed."""
    p = subprocess.run([sys.executable, script, "--worker", name, *flags], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        if p.returncode < 0:
            why = f"killed by signal {-p.returncode} (out of memory?)"
        return {key: name, "error": why}
    return json.loads(p.stdout.strip().splitlines()[-1])
