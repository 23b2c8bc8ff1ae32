"""Render config/README.md from the workflow's JSON schema and the backbone registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import yaml

from textvision.config.schema import SCHEMA_PATH, resolve_ref
from textvision.core import backbones
from textvision.core.io import atomic_path
from textvision.core.markdown import cell, markdown_table

# name shown for the free key of a mapping (`additionalProperties` schema); default `<name>`
PLACEHOLDERS = {"training.lr": "<backbone>"}
_COLUMNS = ["key", "type", "default", "meaning"]


def _bounds(node: dict) -> str:
    """`>= 2`, `> 0`, `in (0, 1)`, ... or empty."""
    lo = [(s, node[k]) for k, s in (("minimum", "["), ("exclusiveMinimum", "(")) if k in node]
    hi = [(s, node[k]) for k, s in (("maximum", "]"), ("exclusiveMaximum", ")")) if k in node]
    if lo and hi:
        return f"in {lo[0][0]}{lo[0][1]}, {hi[0][1]}{hi[0][0]}"
    if lo:
        return f"{'>=' if lo[0][0] == '[' else '>'} {lo[0][1]}"
    if hi:
        return f"{'<=' if hi[0][0] == ']' else '<'} {hi[0][1]}"
    return ""


def _type_name(name: str, node: dict, detail: bool) -> str:
    if name == "array":
        items = node.get("items", {}).get("type")
        return f"list of {items}s" if detail and isinstance(items, str) else "list"
    if name == "object":
        return "mapping" if isinstance(node.get("additionalProperties"), dict) else "object"
    bounds = _bounds(node) if detail and name in ("integer", "number") else ""
    return f"{name} {bounds}" if bounds else name


def _type(node: dict, detail: bool = True) -> str:
    """Readable type: enum values, bounds, `integer or list`, `string or null`."""
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return "/".join(f"`{v}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(_type(alt, detail=False) for alt in node["oneOf"])
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else types
    return " or ".join(_type_name(t, node, detail) for t in types) or "any"


def _row(name: str, node: dict) -> list[str]:
    default = f"`{json.dumps(node['default'])}`" if "default" in node else "-"
    texts = (_type(node), default, node.get("description", ""))
    return [f"`{name}`", *(cell(text, fold=True) for text in texts)]


def _rows(node: dict, name: str, root: dict) -> Iterator[list[str]]:
    """Table rows of `node` and everything under it; objects get a row when described."""
    node = resolve_ref(node, root)
    props = node.get("properties")
    extra = node.get("additionalProperties")
    if "oneOf" in node or (props is None and not isinstance(extra, dict)):
        yield _row(name, node)
        return
    if "description" in node:
        yield _row(name, node)
    for key, child in (props or {}).items():
        yield from _rows(child, f"{name}.{key}", root)
    if isinstance(extra, dict):
        yield from _rows(extra, f"{name}.{PLACEHOLDERS.get(name, '<name>')}", root)


def _backbone_section() -> str:
    def lr(x: float) -> str:
        mantissa, exponent = f"{x:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"

    rows = []
    for b in backbones.backbone_table():
        paper = "yes" if b["paper"] else "no"
        rows.append(
            [f"`{b['name']}`", b["feature_maps"], lr(b["lr_head"]), lr(b["lr_classifier"]), paper]
        )
    lines = [
        "## Backbones",
        "",
        "Generated from the registry (`textvision.core.backbones`): output maps of each frozen "
        "slice and the learning rates used where `training.lr` sets none.",
        "",
        markdown_table(["backbone", "feature maps", "lr head", "lr classifier", "paper"], rows),
    ]
    return "\n".join(lines)


def render_config_readme(schema: dict) -> str:
    """The Markdown configuration reference of `schema`, ending with the backbone table."""
    props = schema.get("properties", {})
    sections = {k: resolve_ref(v, schema) for k, v in props.items()}
    sections = {k: v for k, v in sections.items() if "properties" in v}
    top = [k for k in props if k not in sections]
    parts = [
        "# Configuration reference",
        "Generated from `src/textvision/config/config.schema.yaml` by "
        "`textvision config-docs --out config/README.md`: do not edit by hand.",
    ]
    if schema.get("description"):
        parts.append(schema["description"].strip())
    if top:
        rows = [r for key in top for r in _rows(props[key], key, schema)]
        parts.append("\n".join(["## Top level", "", markdown_table(_COLUMNS, rows)]))
    for key, node in sections.items():
        lines = [f"## `{key}`", ""]
        if node.get("description"):
            lines += [node["description"].strip(), ""]
        children = node["properties"].items()
        rows = [r for c, sub in children for r in _rows(sub, f"{key}.{c}", schema)]
        lines.append(markdown_table(_COLUMNS, rows))
        parts.append("\n".join(lines))
    parts.append(_backbone_section())
    return "\n\n".join(parts) + "\n"


def write_config_readme(out: str | Path, schema_path: str | Path | None = None) -> None:
    """Render the schema at `schema_path` (default `SCHEMA_PATH`) and write it to `out`."""
    schema = yaml.safe_load(Path(schema_path or SCHEMA_PATH).read_text(encoding="utf-8"))
    text = render_config_readme(schema)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
