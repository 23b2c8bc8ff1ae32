"""The package's shape, from its source: one subpackage per workflow stage, imported one way
(a stage imports only the stages before it), no import cycle, no import of the package deferred
into a function, and functions and classes of a size a reader can hold."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src/textvision"
# The stages in import order: a subpackage imports only those of a lower rank (and its own);
# stages of the same rank do not import each other.
RANKS = {
    "core": 0,
    "config": 1,
    "data": 2,
    "embed": 3,
    "deepinsight": 4,
    "models": 5,
    "bundle": 6,
    "train": 7,
    "prefetch": 8,
    "predict": 9,
    "explain": 10,
    "domain": 10,
    "report": 11,
    "cli": 12,
    "__main__": 13,
}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def package_imports(path: Path) -> list[tuple[str, ast.stmt, bool]]:
    """(imported textvision module, node, at top level) of every import of the package."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "textvision":
                names = [f"textvision.{a.name}" for a in node.names]
                names = [n for n in names if n in modules()] or ["textvision"]
            elif node.module.startswith("textvision."):
                names = [node.module]
            else:
                continue
            found += [(n, node, id(node) in top) for n in names]
        elif isinstance(node, ast.Import):
            found += [
                (a.name, node, id(node) in top)
                for a in node.names
                if a.name.startswith("textvision")
            ]
    return found


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_belongs_to_a_stage():
    loose = [m for m in modules() if m.count(".") == 1 and stage(m) not in RANKS]
    assert loose == [], "modules outside a stage's subpackage"
    assert {stage(m) for m in modules() if stage(m)} <= set(RANKS)


def test_stages_import_only_the_stages_before_them():
    wrong = []
    for module, path in modules().items():
        here = stage(module)
        for imported, node, _ in package_imports(path):
            there = stage(imported)
            if here is None or there is None or there == here:
                continue
            if RANKS[there] >= RANKS[here]:
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} {here} imports {there}")
    assert wrong == []


def test_no_import_cycle_between_modules():
    graph = {m: {i for i, _, _ in package_imports(p) if i in modules() and i != m}
             for m, p in modules().items()}  # fmt: skip
    state: dict[str, int] = {}

    def visit(module, trail):
        state[module] = 1
        for nxt in graph[module]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, module, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_no_import_of_the_package_is_deferred():
    deferred = [
        f"{path.relative_to(REPO)}:{node.lineno} {imported}"
        for path in modules().values()
        for imported, node, top in package_imports(path)
        if not top
    ]
    assert deferred == []


def test_no_function_is_over_60_lines_and_no_class_over_150():
    long = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            limit = {ast.FunctionDef: 60, ast.AsyncFunctionDef: 60, ast.ClassDef: 150}.get(
                type(node)
            )
            if limit and node.end_lineno - node.lineno + 1 > limit:
                lines = node.end_lineno - node.lineno + 1
                long.append(f"{path.relative_to(REPO)}:{node.name} ({lines} lines)")
    assert long == []
