"""config/README.md is generated from the config schema, which describes every key."""

from __future__ import annotations

import yaml
from conftest import REPO

from textvision.config.docs import render_config_readme, write_config_readme
from textvision.config.schema import SCHEMA_PATH


def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def test_readme_is_generated_from_schema():
    assert SCHEMA_PATH == REPO / "src/textvision/config/config.schema.yaml"
    committed = (REPO / "config/README.md").read_text(encoding="utf-8")
    assert committed == render_config_readme(_schema()), (
        "config/README.md is out of date: run `textvision config-docs --out config/README.md`"
    )


def test_render_tiny_schema(tmp_path):
    schema = {
        "description": "Tiny intro.",
        "properties": {
            "outdir": {"type": "string", "default": "out", "description": "where"},
            "sec": {
                "type": "object",
                "description": "A section.",
                "properties": {
                    "inner": {
                        "type": "object",
                        "properties": {
                            "mode": {"enum": ["a", "b"], "default": "a", "description": "x | y"},
                            "rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                        },
                    },
                    "res": {"$ref": "#/$defs/res", "default": {"mem": 5}},
                },
            },
        },
        "$defs": {"res": {"type": "object", "properties": {"mem": {"type": "integer"}}}},
    }
    text = render_config_readme(schema)
    assert text.startswith("# Configuration reference\n")
    assert "Tiny intro." in text and "A section." in text
    assert "## Top level" in text.split("## `sec`")[0]
    assert '| `outdir` | string | `"out"` | where |' in text
    assert '| `sec.inner.mode` | `a`/`b` | `"a"` | x \\| y |' in text
    assert "| `sec.inner.rate` | number in (0, 1] | - |  |" in text
    assert "| `sec.res.mem` | integer | - |  |" in text  # resolved through $ref
    out = tmp_path / "README.md"
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(yaml.safe_dump(schema))
    write_config_readme(out, schema_file)
    assert out.read_text(encoding="utf-8") == text


def _undescribed(node: dict, name: str, defs: dict):
    """Dotted names of the properties under `node` that lack a description."""
    if "$ref" in node:
        node = {**defs[node["$ref"].removeprefix("#/$defs/")], **node}
    children = dict(node.get("properties", {}))
    if isinstance(node.get("additionalProperties"), dict):
        children["<name>"] = node["additionalProperties"]
    for key, child in children.items():
        full = f"{name}.{key}" if name else key
        if key != "<name>" and not str(child.get("description", "")).strip():
            yield full
        yield from _undescribed(child, full, defs)


def test_every_key_is_described():
    schema = _schema()
    assert str(schema.get("description", "")).strip(), "the schema lacks a top-level description"
    missing = list(_undescribed(schema, "", schema.get("$defs", {})))
    assert not missing, f"config keys without a description in the schema: {missing}"
