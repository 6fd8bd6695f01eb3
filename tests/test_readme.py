"""The README's core API example runs and says what it claims."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_core_api_example_runs_as_documented():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    np.testing.assert_array_equal(scope["offsets"], [0, 2, 5])
    np.testing.assert_array_equal(scope["items"], [20, 21, 10, 11, 12])
    assert scope["batch"].shape == (len(scope["start"]), 201)
    assert scope["rows"].shape == (5, 8)
