"""train.py --config FILE: its settings from a TOML (or JSON) file whose keys are its flags.

    # sasrec.toml: any train.py flag, underscored or dashed; the command line wins over the file
    regime = "sliding"
    window = 200
    stride = 64
    kshift-compression = 16
    group_by_length = true

    python scripts/train.py --config sasrec.toml --data data/ml-1m --epochs 50

Every run's config.json is itself a valid --config (JSON is read too): the keys that describe a
run rather than set it (model, world_size, config, resume) are left out, so
`train.py --config RUN/config.json --out OTHER` trains the same settings again. An unknown key,
or a value the flag refuses, exits 2 naming it. No torch: frontier.py's checks stay quick.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from longrec_core.rundir import RECORDED_KEYS

# config.json keys that are not settings of a new run: what it recorded about the run beside its
# flags (RECORDED_KEYS), the file its settings came from, and the run it resumed
DESCRIBES_A_RUN = (*RECORDED_KEYS, "config", "resume")


def read_config(path: str | Path) -> dict[str, Any]:
    """The key-value table of a .toml or .json config file; ValueError (one sentence) when it cannot be read."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise ValueError(f"--config {path} must be a .toml or .json file")
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"--config {path} cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--config {path} is not valid {path.suffix[1:].upper()}: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--config {path} must hold a table of settings (flag = value)")
    return raw


def config_argv(p: argparse.ArgumentParser, raw: dict[str, Any], path: str | Path) -> list[str]:
    """The flags a config table stands for (`window = 200` -> ["--window", "200"]), so that argparse
    checks each value as it checks the command line. Unknown keys raise ValueError naming them all."""
    actions = {a.dest: a for a in p._actions if a.option_strings and a.dest != "help"}
    # a key is a flag's dest or any of its names (an alias such as kshift-compression), dashed or not
    dest_of = {a.dest: a.dest for a in actions.values()} | {
        name.removeprefix("--").replace("-", "_"): a.dest for a in actions.values() for name in a.option_strings
    }
    keys = {k: k.replace("-", "_") for k in raw if k.replace("-", "_") not in DESCRIBES_A_RUN}
    unknown = sorted(k for k, key in keys.items() if key not in dest_of)
    if unknown:
        raise ValueError(f"--config {path} has unknown keys: {', '.join(unknown)} (train.py has no such flags)")
    argv: list[str] = []
    for k, key in keys.items():
        dest, value = dest_of[key], raw[k]
        action, flag = actions[dest], actions[dest].option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ValueError(f"--config {path}: {dest} must be true or false, got {value!r}")
            argv += [flag] if value else []
        elif value is None:
            if action.default is not None:
                raise ValueError(f"--config {path}: {dest} must have a value (its default is {action.default!r})")
        elif isinstance(value, (bool, dict, list)):
            raise ValueError(f"--config {path}: {dest} must be a number or a string, got {value!r}")
        else:
            argv += [flag, str(value)]
    return argv


def parse_with_config(p: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse `argv` with `p`; with --config FILE, the file's settings come first, so every flag given on
    the command line wins over it."""
    first = p.parse_args(argv)
    if getattr(first, "config", None) is None:
        return first
    args = p.parse_args([*config_argv(p, read_config(first.config), first.config), *argv])
    return args
