"""The README's core API example runs and says what it claims."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_core_api_example_runs_as_documented():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    np.testing.assert_array_equal(scope["offsets"], [0, 4, 8])
    np.testing.assert_array_equal(scope["items"], [20, 21, 22, 23, 10, 11, 12, 13])
    np.testing.assert_array_equal(scope["train_end"], [2, 6])
    for name, expected in (("seq", [0, 1]), ("start", [0, 4]), ("stop", [2, 6])):
        np.testing.assert_array_equal(scope[name], expected)
    assert scope["batch"].shape == (2, 201)
    assert scope["rows"].shape == (5, 8)
