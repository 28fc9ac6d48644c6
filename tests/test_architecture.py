"""The tree says where a change goes (docs/architecture.md): the lesson at the top of the package, every other
concern in a named wing, imports that only run down the floors, and no code that changes what a reader reads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "lit_transfer"

# Each part of the package and its floor: a module imports from its own floor or below, never above.
FLOORS = {
    # 0, what the lesson stands on: messages, safe writes, the fast layer forms, the image rule
    "errors": 0, "files": 0, "speed": 0, "images": 0,
    # 1, the lesson: the network, the module, the DataModules, FreezeFeatures, checkpoints and transfer
    "model": 1, "module": 1, "freeze": 1, "checkpoint": 1, "data": 1,
    # 2, the wings built on it
    "callbacks": 2, "command_line": 2, "export": 2, "demo": 2,
    # 3, the entry point
    "cli": 3, "__main__": 3, "__init__": 3,
    # 4, the study runs the command line for each of its runs
    "study": 4,
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part(module: str) -> str:
    """``lit_transfer.data.base`` -> ``data``; the package itself -> ``__init__``."""
    return module.split(".")[1] if "." in module else "__init__"


def imports(path: Path) -> set[str]:
    """The lit_transfer modules ``path`` imports (``from a import b`` is ``a.b`` when ``b`` is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lit_transfer"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (REPO / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    REPO / candidate.replace(".", "/")
                ).is_dir()
                found.add(candidate if is_module else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lit_transfer")}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_the_top_level_holds_the_lesson_and_at_most_ten_modules() -> None:
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top
    for lesson in ("model", "module", "freeze", "cli", "__main__"):
        assert lesson in top
    assert (PACKAGE / "data" / "__init__.py").exists()  # the DataModules
    wings = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert set(wings) <= {name for name in FLOORS}, f"a new wing needs its floor in FLOORS: {wings}"


def test_every_wing_opens_with_a_docstring() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 60, f"{init.relative_to(REPO)} says what its wing holds"


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import from a floor to a higher one."""
    return [
        f"{module} (floor {FLOORS[part(module)]}) imports {target} (floor {FLOORS[part(target)]})"
        for module, targets in edges.items()
        for target in targets
        if FLOORS[part(target)] > FLOORS[part(module)]
    ]


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle as its modules in order, or ``[]``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str]:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return [*path, module, target]
            if target not in state and (found := visit(target, [*path, module])):
                return found
        state[module] = 2
        return []

    for module in sorted(edges):
        if module not in state and (found := visit(module, [])):
            return found
    return []


def test_imports_run_down_the_floors_only() -> None:
    assert not upward(graph())


def test_no_import_cycle() -> None:
    assert not cycle(graph())


def test_the_checks_find_an_import_up_a_floor_and_a_cycle() -> None:
    made_up = {"lit_transfer.model": {"lit_transfer.callbacks.marker"}, "lit_transfer.callbacks.marker": set()}
    assert upward(made_up) == ["lit_transfer.model (floor 1) imports lit_transfer.callbacks.marker (floor 2)"]
    made_up["lit_transfer.callbacks.marker"] = {"lit_transfer.model"}
    assert cycle(made_up) == ["lit_transfer.callbacks.marker", "lit_transfer.model", "lit_transfer.callbacks.marker"]


def test_what_a_reader_reads_is_what_runs() -> None:
    # No code assigns a module's forward or reorders its children behind the reader's back.
    pattern = re.compile(r"\.forward *=|_modules *=")
    found = [
        f"{p.relative_to(REPO)}:{n}"
        for p in PACKAGE.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found
