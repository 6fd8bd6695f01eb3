"""Copy the compiled core's docstrings into its stub, longrec_core/_core.pyi, so that each is written
once: in the `///` comment on its `#[pyfunction]` (or on the `#[pymodule]`) in rust/python*.rs.

    python -m longrec_core.stubdoc           # after rebuilding the extension: rewrite _core.pyi's docstrings
    python -m longrec_core.stubdoc --check   # exit 1 (naming the stale stub) if that would change it

The signatures and types stay hand-written in the stub (the binary has no types); stubtest checks them
against the extension, and tests/test_core.py checks that the stub's docstrings are the extension's.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

STUB = Path(__file__).with_name("_core.pyi")


def docstring_lines(doc: str, indent: str) -> list[str]:
    """`doc` as a triple-quoted docstring at `indent`, closing quotes on its last line."""
    if '"""' in doc or "\\" in doc or doc.endswith('"'):
        raise ValueError(f"a docstring with triple quotes, a backslash or a closing quote cannot be copied: {doc!r}")
    lines = [f"{indent}{line}" if line else "" for line in doc.strip().splitlines()]
    lines[0] = f'{indent}"""{lines[0].lstrip()}'
    lines[-1] += '"""'
    return lines


def _replace(lines: list[bytes], node: ast.stmt, new: list[str]) -> None:
    """Put `new` in place of statement `node` in `lines` (UTF-8, as ast's column offsets count); text
    before it on its first line (a one-line `def f(): ...`) stays there, on a line of its own."""
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    head, tail = lines[first][: node.col_offset], lines[last][node.end_col_offset or 0 :]
    out = [line.encode() for line in new]
    out[-1] += tail
    if head.strip():
        out.insert(0, head.rstrip())
    lines[first : last + 1] = out


def with_docs(stub: str, core: ModuleType) -> str:
    """`stub` with its module docstring and every function's docstring set to `core`'s."""
    tree = ast.parse(stub)
    lines = stub.encode().split(b"\n")
    for node, doc, indent, insert in sorted(_targets(tree, core), key=lambda t: -t[0].lineno):  # bottom up
        new = docstring_lines(doc, indent)
        if insert:
            lines[node.lineno - 1 : node.lineno - 1] = [line.encode() for line in [*new, ""]]
        else:
            _replace(lines, node, new)
    return b"\n".join(lines).decode()


def _targets(tree: ast.Module, core: ModuleType) -> Iterator[tuple[ast.stmt, str, str, bool]]:
    """(statement, its docstring, indent, whether the docstring goes before the statement instead of
    replacing it) for the module and each function of the stub."""
    if not core.__doc__:
        raise ValueError(f"{core.__name__} has no docstring: give its #[pymodule] a /// comment")
    first = tree.body[0]
    yield first, core.__doc__, "", not _is_docstring(first)
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        binding = getattr(core, node.name, None)
        if binding is None or not binding.__doc__:
            raise ValueError(f"{node.name} has no docstring in {core.__name__}: give it a /// comment")
        body = node.body[0]
        if not (_is_docstring(body) or _constant(body) is Ellipsis):
            raise ValueError(f"{node.name}: a stub function's body is its docstring or ...")
        yield body, binding.__doc__, " " * (node.col_offset + 4), False


def _constant(node: ast.stmt) -> object:
    """The value of a statement that is a lone constant (a docstring, `...`), else None."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return node.value.value
    return None


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(_constant(node), str)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m longrec_core.stubdoc", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if the stub is stale")
    args = p.parse_args(argv)
    from longrec_core import _core

    old = STUB.read_text()
    new = with_docs(old, _core)
    if args.check:
        if new != old:
            print(f"{STUB} is stale: run python -m longrec_core.stubdoc", file=sys.stderr)
        return int(new != old)
    if new != old:
        STUB.write_text(new)
        print(STUB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
