"""The layout of the design card: benchmarks and development generators in scripts/ (run as
`python scripts/NAME.py`, importing each other by name because Python puts a script's folder on its
path), tests in tests/, everything users run in the package; no sys.path edits anywhere and no import
cycles among the scripts; the package never imports a script (so `pyomnisift demo` works installed)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
PACKAGE = ROOT / "pyomnisift"


def _imports(path: Path) -> set:
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            deps |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            deps.add(node.module.split(".")[0])
    return deps


def test_no_sys_path_edits():
    offenders = []
    for path in sorted(p for d in (SCRIPTS, ROOT / "tests", PACKAGE) for p in d.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in ("insert", "append", "extend")
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "path"
                    and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_scripts_import_graph_is_acyclic():
    names = {p.stem for p in SCRIPTS.glob("*.py")}
    assert names, "scripts/ holds the benchmarks and generators"
    graph = {name: _imports(SCRIPTS / f"{name}.py") & names for name in names}
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


def test_the_package_never_imports_a_script():
    scripts = {p.stem for p in SCRIPTS.glob("*.py")}
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & scripts) for p in PACKAGE.rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_entry_points_are_in_the_package():
    for rel in ("cli.py", "__main__.py", "viz.py", "convert.py", "convert_head.py", "demo.py", "assets.py",
                "tiny_model.py", "server/app.py", "server/model.py", "server/settings.py", "server/types.py",
                "server/__main__.py"):
        assert (PACKAGE / rel).is_file(), rel
    assert not (ROOT / "tools").exists() and not (ROOT / "bench").exists()


def test_demo_runs_from_an_installed_package(tmp_path, tiny_model):
    """`pyomnisift demo` outside the checkout (cwd elsewhere, no scripts/ or tests/ on the path) finds
    its default clip and model through the package alone."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-m", "pyomnisift", "demo", "--retention", "0.25", "-t", "2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "test-3.mp4" in p.stdout and " 25% |" in p.stdout


def test_graphs_folder_includes_nothing_from_the_c_api_above_it():
    """ggml_ext/ (the graphs) sits below cpp/ (the C API): no quoted include of a cpp/ header."""
    import re

    cpp_headers = {p.name for p in (ROOT / "cpp").glob("*.h")}
    assert "omnisift.h" in cpp_headers
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in sorted((ROOT / "ggml_ext").iterdir())
                 for m in re.findall(r'#include\s+"([^"]+)"', p.read_text()) if Path(m).name in cpp_headers]
    assert not offenders, offenders
