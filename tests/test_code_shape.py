"""The shape the code keeps: every on-disk name spelled by one owner module, and short functions."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.joinpath("longrec_core").glob("*.py"), *ROOT.joinpath("scripts").glob("*.py")])
MAX_FUNCTION_LINES = 60

# Each format's file and folder names, and the one module allowed to spell them.
OWNERS = {
    '"config.json"': "longrec_core/rundir.py",
    '"log.jsonl"': "longrec_core/rundir.py",
    '"summary.json"': "longrec_core/rundir.py",
    '"ckpt.pt"': "longrec_core/rundir.py",
    '"model.pt"': "longrec_core/rundir.py",
    '"cell.json"': "longrec_core/griddir.py",
    '"manifest.json"': "longrec_core/datadir.py",
}


# Path shapes, which no other module may even mention (a grep of the whole text, prose included).
PATH_OWNERS = {"cells/": "longrec_core/griddir.py", "shard-": "longrec_core/datadir.py"}


def _code_without_docstrings(path: Path) -> str:
    """The module's source with its docstrings and comments removed: names in prose are not spellings."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                body[0] = ast.Pass()
    return ast.unparse(tree)


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_each_on_disk_name_is_spelled_by_its_owner_only(name: str) -> None:
    quoted = re.escape(name).replace('"', "[\"']")  # ast.unparse writes strings with single quotes
    spelled = [p.relative_to(ROOT).as_posix() for p in SOURCES if re.search(quoted, _code_without_docstrings(p))]
    assert spelled == [OWNERS[name]]


@pytest.mark.parametrize("shape", sorted(PATH_OWNERS))
def test_each_path_shape_is_written_in_its_owner_only(shape: str) -> None:
    mentioned = [p.relative_to(ROOT).as_posix() for p in SOURCES if shape in p.read_text()]
    assert mentioned == [PATH_OWNERS[shape]]


def test_no_function_is_longer_than_60_lines() -> None:
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
