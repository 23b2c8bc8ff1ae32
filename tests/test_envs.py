"""Every rule's conda env provides every package its step imports.

For each rule in workflow/rules/*.smk: its `conda:` env file and its shell command's
`textvision <subcommand>`; `textvision.cli.STEPS[subcommand].target` ("module:function") names
the module the step runs. The static import closure (`ast`, imports inside functions included,
`if TYPE_CHECKING:` blocks left out) of that module, `textvision.cli` and every textvision module
they import transitively gives the third-party top-level names; each maps to its distribution
(`importlib.metadata.packages_distributions()`), which the env must list: under `pip:` (or as a
conda package), or as a core dependency that `-e ../../` installs (pyproject.toml
`[project].dependencies`, plus extras for `-e ../../[extra]`).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import tomllib
import yaml
from conftest import REPO
from packaging.requirements import Requirement

PACKAGE = "textvision"
SRC = REPO / "src" / PACKAGE
RULES_DIR = REPO / "workflow" / "rules"
# Snakemake creates each env from its copy of the env file here (default --conda-prefix), and
# conda runs pip in that folder: relative pip paths start from it.
CONDA_PREFIX = REPO / ".snakemake" / "conda"


def normalise(name: str) -> str:
    """PEP 503 name: lowercase, runs of `-`, `_`, `.` as one `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    smk: Path
    env: Path | None  # the `conda:` file, resolved
    subcommands: tuple[str, ...]  # `textvision <subcommand>` in the shell command


def parse_rules() -> list[Rule]:
    rules = []
    for smk in sorted(RULES_DIR.glob("*.smk")):
        blocks = re.split(r"^rule (\w+):", smk.read_text(), flags=re.M)
        for name, body in zip(blocks[1::2], blocks[2::2], strict=True):
            conda = re.search(r'^\s+conda:\s*\n\s+"([^"]+)"', body, flags=re.M)
            shell = body.split("shell:", 1)[1] if "shell:" in body else ""
            subcommands = tuple(re.findall(r"\btextvision ([a-z][a-z0-9-]*)", shell))
            env = (smk.parent / conda.group(1)).resolve() if conda else None
            rules.append(Rule(name, smk, env, subcommands))
    return rules


RULES = parse_rules()


# --- envs ------------------------------------------------------------------------------------


def _requirement_names(line: str) -> set[str]:
    """The distribution a requirement line names (with its extras' packages for textvision)."""
    req = Requirement(line)
    if normalise(req.name) == PACKAGE:
        return {PACKAGE} | pyproject_provides(frozenset(req.extras))
    return {normalise(req.name)}


@cache
def pyproject_provides(extras: frozenset[str] = frozenset()) -> set[str]:
    """Distributions `pip install -e '.[extras]'` asks for: the core plus those extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"].get(extra, [])
    names = set()
    for line in lines:
        names |= _requirement_names(line)
    return names


def env_provides(env: Path) -> set[str]:
    """Normalised names of the distributions a conda env file installs directly."""
    spec = yaml.safe_load(env.read_text())
    names = set()
    for dep in spec.get("dependencies", []):
        if isinstance(dep, str):  # a conda package: `name`, `name=1.2`, `name>=1.2`
            names.add(normalise(re.match(r"[A-Za-z0-9_.-]+", dep).group()))
            continue
        for line in dep.get("pip", []):
            line = line.strip()
            editable = re.fullmatch(r"-e\s+([^\[\s]+)(?:\[([^\]]*)\])?", line)
            if editable and (CONDA_PREFIX / editable.group(1)).resolve() == REPO:
                # this checkout, with its core and the extras named
                extras = frozenset(e.strip() for e in (editable.group(2) or "").split(",") if e)
                names |= {PACKAGE} | pyproject_provides(extras)
            elif not line.startswith("-"):
                names |= _requirement_names(line)
    return names


# --- imports ---------------------------------------------------------------------------------


def module_file(module: str) -> Path | None:
    """The source file of a textvision module, or None when there is none."""
    parts = module.split(".")[1:]
    base = SRC.joinpath(*parts)
    for path in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST):
    """Import statements anywhere in `node` (functions, classes, try blocks), except the body of
    `if TYPE_CHECKING:`, which never runs."""
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.orelse:
            yield from _import_nodes(child)
        return
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    for child in ast.iter_child_nodes(node):
        yield from _import_nodes(child)


@cache
def imports_of(module: str) -> tuple[tuple[str, bool], ...]:
    """(imported module name, certain) pairs of one textvision module. `from a import b` also
    gives `a.b`, uncertain: b may be a submodule or just a name in a."""
    path = module_file(module)
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, True) for alias in node.names]
            continue
        if node.level:  # relative: from . import x, from ..io import y
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module
        found.append((source, True))
        found += [(f"{source}.{alias.name}", False) for alias in node.names if alias.name != "*"]
    return tuple(found)


def import_closure(roots: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Third-party top-level names imported by `roots` and the textvision modules they reach,
    each with the chain of modules that leads to its first import; and the imports of textvision
    modules that do not exist."""
    parent: dict[str, str | None] = {}
    queue: deque[str] = deque()

    def visit(module: str, by: str | None) -> None:
        # importing a.b.c runs a/__init__, a/b/__init__ and c: visit each level
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name not in parent:
                parent[name] = by
                queue.append(name)

    def chain(module: str) -> list[str]:
        out = [module]
        while parent[out[-1]] is not None:
            out.append(parent[out[-1]])
        return out[::-1]

    for root in roots:
        assert module_file(root), f"{root}: no such textvision module under {SRC}"
        visit(root, None)
    third_party: dict[str, list[str]] = {}
    broken: list[str] = []
    while queue:
        module = queue.popleft()
        for name, certain in imports_of(module):
            top = name.split(".")[0]
            if top == PACKAGE:
                if module_file(name):
                    visit(name, module)
                elif certain:
                    where = " -> ".join(chain(module))
                    broken.append(f"`import {name}` in {where}: no such module")
            elif top not in sys.stdlib_module_names and certain:
                third_party.setdefault(top, chain(module))
    return third_party, broken


# --- tests -----------------------------------------------------------------------------------


def step_target(subcommand: str) -> str:
    from textvision import cli

    steps = getattr(cli, "STEPS", None)
    if steps is None:
        pytest.fail("textvision.cli.STEPS is missing: {subcommand: Step(target='module:function')}")
    assert subcommand in steps, f"`textvision {subcommand}` is not in textvision.cli.STEPS"
    return steps[subcommand].target


def test_rules_found():
    assert RULES, f"no `rule NAME:` in {RULES_DIR}/*.smk"


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_rule_env_provides_every_import(rule):
    where = f"rule {rule.name} ({rule.smk.relative_to(REPO)})"
    assert rule.env is not None and rule.env.is_file(), f"{where}: no conda env file ({rule.env})"
    assert len(rule.subcommands) == 1, (
        f"{where}: expected one `textvision <subcommand>` in the shell command, "
        f"found {rule.subcommands}"
    )
    subcommand = rule.subcommands[0]
    target = step_target(subcommand)
    step_module = target.partition(":")[0]
    env = rule.env.relative_to(REPO)
    provided = env_provides(rule.env)
    assert PACKAGE in provided, f"{env}: does not install this checkout (`-e ../../`)"
    distributions = importlib.metadata.packages_distributions()
    third_party, missing = import_closure([f"{PACKAGE}.cli", step_module])
    for top, modules in sorted(third_party.items()):
        dists = distributions.get(top)
        how = f"`import {top}` in {' -> '.join(modules)}"
        if not dists:
            missing.append(f"{how}: no installed distribution provides `{top}`")
        elif not {normalise(d) for d in dists} & provided:
            missing.append(f"{how}: {' or '.join(sorted(set(dists)))} not in {env}")
    assert not missing, (
        f"{where}, `textvision {subcommand}` ({target}) in env {env}:\n  " + "\n  ".join(missing)
    )


def test_every_env_is_used_by_a_rule():
    used = {rule.env for rule in RULES}
    unused = [env.name for env in sorted((REPO / "envs").glob("*.yaml")) if env not in used]
    assert not unused, f"envs used by no rule in workflow/rules: {unused}"
