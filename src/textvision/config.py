"""Workflow configuration: type coercion, defaults and validation against the JSON schema."""

from __future__ import annotations

import contextlib
import copy
import re
from pathlib import Path

import jsonschema
import yaml

from textvision.errors import ConfigError
from textvision.paper import LEARNING_RATES

_TYPES = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def load_schema(path: str | Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _types(schema: dict) -> list[str]:
    if "type" in schema:
        return schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    types = []
    for sub in schema.get("oneOf", []) + schema.get("anyOf", []):
        types += _types(sub)
    return types


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return {**node, **{k: v for k, v in schema.items() if k != "$ref"}}


def _coerce(value, schema: dict, root: dict):
    """Turn strings from `--config` (parsed with YAML's base loader) into the declared types."""
    schema = _resolve(schema, root)
    types = _types(schema)
    if isinstance(value, str) and any(t != "string" for t in types):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, str) and "number" in types:  # YAML 1.1 reads '1e-4' as a string
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        if not isinstance(parsed, str) and any(_TYPES[t](parsed) for t in types if t != "string"):
            value = parsed
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for sub in schema.get("oneOf", []):
            if "object" in _types(sub):
                extra = sub.get("additionalProperties", extra)
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = _coerce(item, sub, root)
    elif isinstance(value, list):
        items = schema.get("items")
        for sub in schema.get("oneOf", []):
            items = sub.get("items", items)
        if isinstance(items, dict):
            value = [_coerce(item, items, root) for item in value]
    return value


def _fill_defaults(value: dict, schema: dict, root: dict) -> None:
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve(sub, root)
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if isinstance(value.get(key), dict) and "properties" in sub:
            _fill_defaults(value[key], sub, root)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def prepare_config(config: dict, schema: dict, base_dir: str | Path = ".") -> dict:
    """Coerce, fill defaults, validate; return a new config or raise ConfigError naming the key."""
    config = _coerce(copy.deepcopy(dict(config)), schema, schema)
    _fill_defaults(config, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key '{_key(e.absolute_path)}': {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    backbone = schema["properties"]["training"]["properties"]["backbones"]["items"]["pattern"]
    _check_semantics(config, Path(base_dir), re.compile(backbone))
    return config


def _check_semantics(config: dict, base_dir: Path, backbone: re.Pattern) -> None:
    split = config["data"]["split"]
    if split["val"] + split["test"] >= 1:
        raise ConfigError(
            "config keys 'data.split.val' + 'data.split.test' must be < 1 (no rows left to "
            f"train on), got {split['val']} + {split['test']}"
        )
    source = config["data"]["source"]
    is_path = source != "synthetic" and not source.startswith("hf:")
    if is_path and not (base_dir / source).exists():
        raise ConfigError(
            f"config key 'data.source': file or folder {source!r} does not exist "
            "(expected 'synthetic', 'hf:<dataset id>' or an existing path)"
        )
    outdir = Path(config["outdir"])
    if ".." in outdir.parts:
        raise ConfigError(f"config key 'outdir': {str(outdir)!r} must not contain '..'")
    backbones = config["training"]["backbones"]
    names = {b.split("@")[0] for b in backbones} | set(backbones)
    for key in config["training"]["lr"]:
        if key not in LEARNING_RATES and key not in names:
            raise ConfigError(
                f"config key 'training.lr.{key}': unknown backbone {key!r}; expected one of "
                f"{sorted(LEARNING_RATES)}"
            )
    weights = config["training"]["weights"]
    entries = weights.items() if isinstance(weights, dict) else [("", weights)]
    for name, value in entries:
        key = "training.weights" + (f".{name}" if name else "")
        if name and name != "default" and not backbone.fullmatch(name):
            raise ConfigError(
                f"config key '{key}': {name!r} is not a backbone name (expected e.g. 'alexnet', "
                "'resnet18@layer2' or 'default')"
            )
        if value not in ("imagenet", "none") and not (base_dir / value).is_file():
            raise ConfigError(
                f"config key '{key}': {value!r} is neither 'imagenet', 'none' nor an existing "
                "state_dict file"
            )


def weights_for(config: dict, backbone: str) -> str:
    """The weights setting (`imagenet`, `none` or a path) of one backbone."""
    weights = config["training"]["weights"]
    if isinstance(weights, str):
        return weights
    return weights.get(
        backbone, weights.get(backbone.split("@")[0], weights.get("default", "imagenet"))
    )


def learning_rates(config: dict, backbone: str) -> tuple[float, float]:
    """(head, classifier) learning rates: the config's, else the paper's for that architecture."""
    arch = backbone.split("@")[0]
    lr = {
        **LEARNING_RATES[arch],
        **config["training"]["lr"].get(arch, {}),
        **config["training"]["lr"].get(backbone, {}),
    }
    return lr["head"], lr["classifier"]
