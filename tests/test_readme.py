"""The README's examples: the core API example runs and says what it claims, and the stage
commands use only flags the scripts define."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_core_api_example_runs_as_documented():
    section = README.read_text().split("\n## Use as a library\n", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    np.testing.assert_array_equal(scope["offsets"], [0, 4, 8])
    np.testing.assert_array_equal(scope["items"], [20, 21, 22, 23, 10, 11, 12, 13])
    np.testing.assert_array_equal(scope["train_end"], [2, 6])
    for name, expected in (("seq", [0, 1]), ("start", [0, 4]), ("stop", [2, 6])):
        np.testing.assert_array_equal(scope[name], expected)
    for got, expected in zip(scope["by_session"], ([0, 1], [0, 4], [2, 6], [1, 5])):
        np.testing.assert_array_equal(got, expected)
    assert scope["batch"].shape == (2, 201)
    assert scope["rows"].shape == (5, 8)


def test_readme_commands_use_flags_the_scripts_define():
    """Every --flag of a `scripts/X.py` command in the README's bash blocks is one that
    `X.py --help` lists (frontier.py passes the flags it does not define to train.py)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").split("\n"):
            for part in line.split("#")[0].split("|"):
                m = re.search(r"scripts/(\w+)\.py(.*)", part)
                if m:
                    commands.append((m.group(1), re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2))))
    assert {name for name, _ in commands} >= {"prep", "train", "eval", "frontier"}
    helps: dict[str, str] = {}

    def flags_of(name: str) -> str:
        if name not in helps:
            script = README.parent / "scripts" / f"{name}.py"
            helps[name] = subprocess.run(
                [sys.executable, str(script), "--help"],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "COLUMNS": "200"},
            ).stdout
        return helps[name]

    for name, flags in commands:
        for flag in flags:
            owners = [name] + (["train"] if name == "frontier" else [])
            assert any(re.search(rf"(?<![\w-]){flag}(?![\w-])", flags_of(o)) for o in owners), (
                f"README: {flag} is not a flag of scripts/{name}.py"
            )
