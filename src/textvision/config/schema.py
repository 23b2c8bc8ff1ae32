"""Workflow configuration: type coercion, defaults and validation against the JSON schema, the
single declaration of every setting (`config.schema.yaml`, beside this module)."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from pathlib import Path

import jsonschema
import yaml

from textvision.core.backbones import backbone_names, parse_backbone
from textvision.core.errors import ConfigError
from textvision.core.io import nearest_existing
from textvision.core.registry import IMAGENET, is_weights_file

SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"

_TYPES = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The schema as a dict (cached per path)."""
    return copy.deepcopy(_load_schema(str(path)))


@functools.lru_cache
def _load_schema(path: str) -> dict:
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config schema ({err.strerror})") from err


def schema_node(key: str, schema: dict | None = None) -> dict:
    """The schema of a dotted key (`deepinsight.tsne.perplexity`), `$ref`s resolved."""
    root = schema or _load_schema(str(SCHEMA_PATH))
    node = root
    for part in key.split("."):
        node = resolve_ref(node, root)
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        if part in props:
            node = props[part]
        elif isinstance(extra, dict):
            node = extra
        else:
            raise ConfigError(f"config key {key!r}: no such key (at {part!r})")
    return resolve_ref(node, root)


@functools.lru_cache
def _defaults() -> dict:
    return prepare_config({})


def schema_default(key: str):
    """The default of a dotted key, nested defaults filled (`deepinsight.tsne` -> a dict)."""
    node = _defaults()
    for part in key.split("."):
        node = node[part]
    return copy.deepcopy(node)


def _types(schema: dict) -> list[str]:
    if "type" in schema:
        return schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    types = []
    for sub in schema.get("oneOf", []) + schema.get("anyOf", []):
        types += _types(sub)
    return types


def resolve_ref(schema: dict, root: dict) -> dict:
    """`schema` with the node its `$ref` (`#/...` in `root`) points to merged in (the node's own
    keys win); `schema` itself where it has no `$ref`."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return {**node, **{k: v for k, v in schema.items() if k != "$ref"}}


def _parse_string(value: str, types: list[str]):
    """A `--config` string as the declared non-string type, where it parses as one."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if isinstance(parsed, str) and "number" in types:  # YAML 1.1 reads '1e-4' as a string
        with contextlib.suppress(ValueError):
            parsed = float(parsed)
    if not isinstance(parsed, str) and any(_TYPES[t](parsed) for t in types if t != "string"):
        return parsed
    return value


def _branch(schema: dict, key: str, kind: str):
    """`schema[key]`, or that of the `oneOf` branch of JSON type `kind`."""
    found = schema.get(key)
    for sub in schema.get("oneOf", []):
        if kind in _types(sub):
            found = sub.get(key, found)
    return found


def _coerce(value, schema: dict, root: dict):
    """Turn strings from `--config` (parsed with YAML's base loader) into the declared types."""
    schema = resolve_ref(schema, root)
    types = _types(schema)
    if isinstance(value, str) and any(t != "string" for t in types):
        value = _parse_string(value, types)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = _branch(schema, "additionalProperties", "object")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = _coerce(item, sub, root)
    elif isinstance(value, list):
        items = _branch(schema, "items", "array")
        if isinstance(items, dict):
            value = [_coerce(item, items, root) for item in value]
    return value


def _fill_defaults(value: dict, schema: dict, root: dict) -> None:
    for key, sub in schema.get("properties", {}).items():
        sub = resolve_ref(sub, root)
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if isinstance(value.get(key), dict) and "properties" in sub:
            _fill_defaults(value[key], sub, root)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def prepare_config(config: dict, schema: dict | None = None, base_dir: str | Path = ".") -> dict:
    """Coerce, fill defaults, validate; return a new config or raise ConfigError naming the key."""
    schema = schema or load_schema()
    config = _coerce(copy.deepcopy(dict(config)), schema, schema)
    _fill_defaults(config, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key '{_key(e.absolute_path)}': {e.message}" for e in errors]
        raise ConfigError("invalid configuration: " + "; ".join(lines))
    _check_semantics(config, Path(base_dir))
    return config


def _check_braces(config: dict) -> None:
    """Paths Snakemake would read as patterns: `{...}` are wildcards to it, never literal."""
    weights = config["training"]["weights"]
    paths = [
        ("outdir", config["outdir"]),
        ("data.source", config["data"]["source"]),
        ("domain.reference", config["domain"]["reference"]),
    ]
    if isinstance(weights, dict):
        paths += [(f"training.weights.{name}", value) for name, value in weights.items()]
    else:
        paths.append(("training.weights", weights))
    for key, value in paths:
        if "{" in value or "}" in value:
            raise ConfigError(
                f"config key '{key}': {value!r} contains '{{' or '}}' (Snakemake reads braces as "
                "wildcards); expected a path without braces (rename the file or folder)"
            )


def _check_semantics(config: dict, base_dir: Path) -> None:
    _check_braces(config)
    split = config["data"]["split"]
    if split["val"] + split["test"] >= 1:
        raise ConfigError(
            "config keys 'data.split.val' + 'data.split.test' must be < 1 (no rows left to "
            f"train on), got {split['val']} + {split['test']}"
        )
    if split["column"] is not None and split["test"] > 0:
        raise ConfigError(
            f"config keys 'data.split.column' ({split['column']!r}) and 'data.split.test' "
            f"({split['test']}): the test rows come from the source's split column; expected "
            "'data.split.test' 0 (or 'data.split.column' null for a shuffled test fraction)"
        )
    source = config["data"]["source"]
    is_path = source != "synthetic" and not source.startswith("hf:")
    if is_path and not (base_dir / source).exists():
        raise ConfigError(
            f"config key 'data.source': {source}: file or folder not found "
            "(expected 'synthetic', 'hf:<dataset id>' or an existing path)"
        )
    texts = config["predict"]["source"]
    if texts is not None and not (base_dir / texts).is_file():
        raise ConfigError(
            f"config key 'predict.source': {texts}: file not found (expected the texts to "
            "classify: a .csv, .tsv, .parquet or .jsonl file)"
        )
    reference = config["domain"]["reference"]
    if reference != "sklearn" and not (base_dir / reference).is_dir():
        raise ConfigError(
            f"config key 'domain.reference': {reference}: folder not found (expected 'sklearn' "
            "or a folder of JPEG/PNG images)"
        )
    outdir = Path(config["outdir"])
    if ".." in outdir.parts:
        raise ConfigError(f"config key 'outdir': {str(outdir)!r} must not contain '..'")
    _check_backbones(config)
    _check_weights(config, base_dir)


def check_outdir(outdir: str | Path) -> None:
    """Where the run writes, before any job: not the file system's root, a folder (or nothing
    yet) and writable, where it exists or in its nearest existing parent."""
    path = Path(outdir).absolute()
    if path == Path(path.anchor):
        raise ConfigError(
            f"config key 'outdir': {str(outdir)!r} is the file system's root; expected a folder "
            "of the run's own (e.g. results)"
        )
    if path.exists() and not path.is_dir():
        raise ConfigError(f"config key 'outdir': {outdir} is a file; expected a folder")
    existing = nearest_existing(path)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"config key 'outdir': {outdir}: {existing} is not writable; expected a folder the "
            "run may write in"
        )


def _known(name: str) -> bool:
    """A registry name, an alias, or an architecture (which applies to all its cuts)."""
    return name in backbone_names() or any(b.split("@")[0] == name for b in backbone_names())


def _check_backbones(config: dict) -> None:
    for i, name in enumerate(config["training"]["backbones"]):
        if name not in backbone_names():
            raise ConfigError(
                f"config key 'training.backbones.{i}': unknown backbone {name!r}; expected one "
                f"of {backbone_names()}"
            )
    for key in config["training"]["lr"]:
        if not _known(key):
            raise ConfigError(
                f"config key 'training.lr.{key}': unknown backbone {key!r}; expected one of "
                f"{backbone_names()} or an architecture name"
            )


def _check_weights(config: dict, base_dir: Path) -> None:
    weights = config["training"]["weights"]
    entries = weights.items() if isinstance(weights, dict) else [("", weights)]
    for name, value in entries:
        key = "training.weights" + (f".{name}" if name else "")
        if name and name != "default" and not _known(name):
            raise ConfigError(
                f"config key '{key}': {name!r} is not a backbone name (expected e.g. 'alexnet', "
                "'resnet18@layer2' or 'default')"
            )
        if is_weights_file(value) and not (base_dir / value).is_file():
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
        backbone, weights.get(backbone.split("@")[0], weights.get("default", IMAGENET))
    )


def learning_rates(config: dict, backbone: str) -> tuple[float, float]:
    """(head, classifier) learning rates: the config's (for the architecture, then the backbone
    name), else the registry's default for that backbone."""
    arch, spec = parse_backbone(backbone)
    lr = {
        "head": spec.lr_head,
        "classifier": spec.lr_classifier,
        **config["training"]["lr"].get(arch, {}),
        **config["training"]["lr"].get(backbone, {}),
    }
    return lr["head"], lr["classifier"]
