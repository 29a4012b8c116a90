"""The layout rules of issue 11: development-only generators in tools/ imported by name (pytest's
`pythonpath`, the venv's .pth) with no sys.path edits anywhere and no import cycles among them;
the user-facing entry points in the package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _py_files():
    for d in ("tools", "bench", "tests"):
        yield from sorted((ROOT / d).glob("*.py"))


def test_no_sys_path_edits():
    offenders = []
    for path in _py_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in ("insert", "append", "extend")
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "path"
                    and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_tools_import_graph_is_acyclic():
    names = {p.stem for p in (ROOT / "tools").glob("*.py")}
    graph = {}
    for name in names:
        deps = set()
        for node in ast.walk(ast.parse((ROOT / "tools" / f"{name}.py").read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                deps.add(node.module.split(".")[0])
        graph[name] = deps & names
    state = {}

    def visit(n, stack):
        if state.get(n) == "done":
            return
        assert state.get(n) != "open", "import cycle: " + " -> ".join(stack + [n])
        state[n] = "open"
        for m in sorted(graph[n]):
            visit(m, stack + [n])
        state[n] = "done"

    for n in sorted(graph):
        visit(n, [])


def test_entry_points_are_in_the_package():
    import pyomnisift

    pkg = Path(pyomnisift.__file__).parent
    for rel in ("cli.py", "__main__.py", "viz.py", "convert.py", "convert_head.py", "demo.py",
                "server/app.py", "server/model.py", "server/settings.py", "server/types.py", "server/__main__.py"):
        assert (pkg / rel).is_file(), rel
    assert not (ROOT / "scripts").exists()
