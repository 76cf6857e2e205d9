"""The package's layering, read from the code's imports (AST) and checked against the tiers that
docs/architecture.md draws, so the picture and the code cannot drift apart.

Every import counts: module level, inside functions, and under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "lossatlas"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
DRAWING = ("matplotlib", "plotly")
DRAWING_PACKAGES = {"plot", "report", "demo", "cli"}  # the only ones that may import DRAWING
MAX_MODULES = 20


def tiers() -> list[list[str]]:
    """The tiers of docs/architecture.md, lowest first (its `tier N: a b c` lines)."""
    block = re.search(r"<!-- layers -->(.*?)<!-- /layers -->", ARCHITECTURE.read_text(), re.S)
    assert block, "docs/architecture.md has no <!-- layers --> block"
    found = re.findall(r"^tier (\d+): ([\w ]+?)\s*(?:#.*)?$", block.group(1), re.M)
    assert [int(n) for n, _ in found] == list(range(len(found))), "tiers must be numbered 0, 1, ..."
    return [names.split() for _, names in found]


def rank() -> dict[str, float]:
    """Each package's tier; the package `lossatlas` itself (its `__init__` re-exports the API)
    sits just above the highest tier it imports, so only packages above that may use it."""
    order: dict[str, float] = {name: i for i, names in enumerate(tiers()) for name in names}
    top = [unit(dst) for src, dst, _ in edges() if src == "lossatlas" and unit(dst) in order]
    order["lossatlas"] = max(order[u] for u in top) + 0.5
    return order


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    """The package (or top-level module) a module belongs to: `lossatlas.core.engine` -> `core`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and not parts[1].startswith("__") else "lossatlas"


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """`(line, module, names)` for every import in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def edges() -> Iterator[tuple[str, str, int]]:
    """`(importer, imported module, line)` within lossatlas; `from pkg import submodule` counts
    as importing the submodule."""
    known = modules()
    for name, path in known.items():
        for line, target, names in imports(path):
            if target != "lossatlas" and not target.startswith("lossatlas."):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            for t in subs or [target]:
                yield name, t, line


def test_the_architecture_page_names_every_package_once() -> None:
    listed = [name for names in tiers() for name in names]
    assert len(listed) == len(set(listed)), "a package appears in two tiers"
    actual = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    actual |= {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")}
    assert set(listed) == actual, f"tiers {sorted(set(listed))} vs packages {sorted(actual)}"


def test_packages_import_only_from_lower_tiers() -> None:
    order = rank()
    bad = [
        f"{src} (line {line}) imports {dst}"
        for src, dst, line in edges()
        if unit(src) not in ("lossatlas", unit(dst)) and order[unit(dst)] >= order[unit(src)]
    ]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_computation_never_imports_drawing_libraries() -> None:
    bad = [
        f"{name} (line {line}) imports {target}"
        for name, path in modules().items()
        if unit(name) not in DRAWING_PACKAGES
        for line, target, _ in imports(path)
        if target.split(".")[0] in DRAWING
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for src, dst, _ in edges():
        if dst in graph and dst != src:
            graph[src].add(dst)
    # a package's __init__ is imported before its modules, so the edge module -> its own
    # package's __init__ would be a cycle; so is any other loop
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_no_private_name_is_imported_across_modules() -> None:
    bad = [
        f"{name} (line {line}) imports {target}.{n}"
        for name, path in modules().items()
        for line, target, names in imports(path)
        if target.startswith("lossatlas")
        for n in names
        if n.startswith("_") and n != "__version__"
    ]
    assert not bad, "import a public name from a private module instead:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", sorted(p.name for p in PACKAGE.iterdir() if p.is_dir()))
def test_no_module_shares_a_name_with_what_its_package_exports(package: str) -> None:
    folder = PACKAGE / package
    if not (folder / "__init__.py").exists():
        pytest.skip("not a package")
    tree = ast.parse((folder / "__init__.py").read_text())
    exported = next(
        (
            [ast.literal_eval(e) for e in node.value.elts]
            for node in tree.body
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__"
        ),
        [],
    )
    clashes = [n for n in exported if (folder / f"{n}.py").exists()]
    assert not clashes, f"lossatlas.{package}: modules named like exported names: {clashes}"
    assert len(list(folder.glob("*.py"))) - 1 <= MAX_MODULES, f"{package} holds too many modules"
