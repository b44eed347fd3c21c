"""The dependency rule, checked on the source (no import needed): which package may import
which, no torch or onnx where the runtime or the format could load it, and no import cycle
between the modules of a package. docs/architecture.md states the rule."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {
    "vae_format": REPO / "format" / "vae_format",
    "vae_runtime": REPO / "runtime" / "vae_runtime",
    "vae_train": REPO / "train" / "vae_train",
    "vae_export": REPO / "export" / "vae_export",
}
# The first-party packages each package may import (besides itself).
MAY_IMPORT = {
    "vae_format": set(),
    "vae_runtime": {"vae_format"},
    "vae_train": {"vae_format"},
    "vae_export": {"vae_format", "vae_runtime", "vae_train"},
}
NEVER = {  # third-party packages a package must not import
    "vae_runtime": {"torch", "onnx", "onnxscript", "safetensors", "pooch"},
    "vae_train": set(),
    "vae_export": set(),
}
FORMAT_MAY_IMPORT = {"numpy", "PIL", "__future__"} | set(sys.stdlib_module_names)


def modules(package: str, root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``package`` under ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The absolute names module ``name`` imports anywhere in its body (function-level
    imports too: they hide cycles); ``from pkg import sub`` names the submodule."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")
                parent = parent[: len(parent) - node.level + (1 if is_package else 0)]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in known else base


def violations(packages: dict[str, Path]) -> list[str]:
    """Every broken rule, one line each starting with the module at fault (empty when the
    rule holds)."""
    found: list[str] = []
    all_modules = {m: p for pkg, root in packages.items() for m, p in modules(pkg, root).items()}
    known = set(all_modules)
    graph: dict[str, set[str]] = {}
    for name, path in all_modules.items():
        package = name.split(".")[0]
        graph[name] = set()
        for target in imported(name, path, known):
            top = target.split(".")[0]
            if top == package:
                if target in known and target != name:
                    graph[name].add(target)
            elif top in MAY_IMPORT and top not in MAY_IMPORT[package]:
                found.append(f"{name} imports {target} ({package} may not import {top})")
            elif package == "vae_format" and top not in FORMAT_MAY_IMPORT:
                found.append(f"{name} imports {target} (vae_format: numpy and stdlib only)")
            elif top in NEVER.get(package, set()):
                found.append(f"{name} imports {target} ({package} must never import {top})")
    found += [f"{c[0]} is in an import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (depth-first search)."""
    seen: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append([*path[path.index(node) :], node])
            return
        if node in seen:
            return
        seen.add(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])

    for start in sorted(graph):
        visit(start, [])
    return found


@pytest.mark.parametrize("package", list(PACKAGES))
def test_the_dependency_rule_holds(package):
    problems = [v for v in violations(PACKAGES) if v.split()[0].split(".")[0] == package]
    assert not problems, "\n".join(problems)


def test_every_package_is_found():
    for package, root in PACKAGES.items():
        assert (root / "__init__.py").is_file(), package
        assert len(modules(package, root)) >= 3, package


def test_the_checker_finds_what_it_is_for(tmp_path):
    """A made-up runtime that imports torch and training code and has a hidden cycle."""
    root = tmp_path / "vae_runtime"
    root.mkdir()
    (root / "__init__.py").write_text("from .a import f\n")
    (root / "a.py").write_text(
        "import numpy\nfrom vae_train.models import x\n\ndef f():\n    from .b import g\n"
    )
    (root / "b.py").write_text("import torch.nn\nfrom . import a\n")
    fmt = tmp_path / "vae_format"
    fmt.mkdir()
    (fmt / "__init__.py").write_text("import json\nimport onnx\n")
    found = violations({"vae_runtime": root, "vae_format": fmt})
    assert any("vae_runtime.a imports vae_train.models" in v for v in found), found
    assert any("vae_runtime.b imports torch.nn" in v for v in found), found
    assert any("vae_format imports onnx" in v for v in found), found
    assert any("cycle: vae_runtime.a -> vae_runtime.b -> vae_runtime.a" in v for v in found), found
    assert not any("imports json" in v or "imports numpy" in v for v in found), found
