#!/usr/bin/env python3
"""Check the project's import graph: no cycles, and every import follows the layering rule.

The rule (ARCHITECTURE.md, "Target layout"): jobs -> stages (scoring, streaming, serving,
sagemaker_backend, reporting) -> models -> features -> ingest; synthetic sits beside features;
every package may use runtime; runtime uses nothing of ours. A package may import its own
modules and anything in a lower layer, never a higher one. Stages may use each other as long as
no cycle forms. Prints each problem and exits 1 when there is one (``make lint`` runs it).
Usage: python3 scripts/check_imports.py [ROOT]
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

SKIP = {"tests", "bench", "build", "dist", "lake", "scripts", "deploy", "docs", "conf"}
LAYER = {"runtime": 0, "ingest": 1, "synthetic": 2, "features": 2, "models": 3,
         "scoring": 4, "streaming": 4, "serving": 4, "sagemaker_backend": 4, "reporting": 4, "jobs": 5}


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if len(rel.parts) == 1 or any(p.startswith(".") or p in SKIP for p in rel.parts[:-1]):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Each module mapped to the project modules it imports (and the line of the first import)."""
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layering(graph: dict[str, dict[str, int]], mods: dict[str, Path], root: Path) -> list[str]:
    problems = []
    for name, targets in sorted(graph.items()):
        top = name.split(".")[0]
        for target, line in sorted(targets.items()):
            other = target.split(".")[0]
            if other == top or top not in LAYER or other not in LAYER:
                continue
            if LAYER[other] > LAYER[top] or (top == "runtime" and other != "runtime"):
                problems.append(f"{mods[name].relative_to(root)}:{line}: {name} imports {target} "
                                f"({top} may not depend on {other})")
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else ".").resolve()
    mods = modules(root)
    graph = imports(mods)
    problems = layering(graph, mods, root)
    for component in cycles(graph):
        problems.append("import cycle: " + " <-> ".join(component))
    for problem in problems:
        print(problem)
    print(f"{len(mods)} modules: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
