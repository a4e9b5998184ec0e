"""The house's rules, read from the code: arrows point down (core imports neither ros nor tools,
ros not tools), core/ never imports rclpy, and no module of core imports itself back through
others (imports inside functions count: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Set

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "seg_perception")


def _modules() -> Dict[str, str]:
    out = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def _imports(name: str, path: str, known: Set[str]) -> Set[str]:
    """The package's modules ``name`` imports anywhere in its file."""
    tree = ast.parse(open(path).read())
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name:
                found.add(t)
    return found


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(n: str) -> List[str]:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def test_layers_point_down_and_core_has_no_import_cycle():
    mods = _modules()
    known = set(mods)
    graph = {n: _imports(n, p, known) for n, p in mods.items()}
    for name, deps in graph.items():
        if name.startswith("seg_perception.core"):
            assert not any(d.startswith(("seg_perception.ros", "seg_perception.tools")) for d in deps), name
        if name.startswith("seg_perception.ros"):
            assert not any(d.startswith("seg_perception.tools") for d in deps), name
    core = {n: {d for d in deps if d.startswith("seg_perception.core") and d != "seg_perception.core"}
            for n, deps in graph.items() if n.startswith("seg_perception.core") and n != "seg_perception.core"}
    # a package's __init__ importing its own modules is no cycle of the code's
    for n in core:
        core[n] = {d for d in core[n] if not (n.startswith(d + ".") and mods[d].endswith("__init__.py"))}
    assert _cycle(core) == [], " -> ".join(_cycle(core))


def test_core_never_imports_rclpy_or_ros_messages():
    for name, path in _modules().items():
        if not name.startswith("seg_perception.core"):
            continue
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            mods = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for m in mods:
                assert not (m == "rclpy" or m.startswith("rclpy.") or m.endswith(".msg") or
                            m.startswith(("sensor_msgs", "nav_msgs", "std_msgs", "geometry_msgs"))), (name, m)
