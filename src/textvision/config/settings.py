"""Each step's settings as one typed, frozen object built from its config section.

The schema declares every key (type, default, description); the classes here only name which
keys a step reads. A workflow rule passes `step_params(...)`, the config fragment of those keys,
as one param, so Snakemake reruns a step exactly when one of its keys changes, and the CLI
rebuilds the same object from that fragment, a config file or `--set` overrides.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import ClassVar

from textvision.config.schema import learning_rates, prepare_config, schema_node, weights_for
from textvision.core.errors import ConfigError
from textvision.core.registry import IMAGENET


@dataclass(frozen=True)
class Settings:
    """Base: `SECTION` is the config section read; `TOP_LEVEL` fields come from the top level."""

    SECTION: ClassVar[str] = ""
    TOP_LEVEL: ClassVar[tuple[str, ...]] = ()
    CONTEXT: ClassVar[tuple[str, ...]] = ()  # what a job adds (e.g. its backbone)

    @classmethod
    def make(cls, base_dir: str = ".", **values):
        """Settings from the schema's defaults and `values` (keys of the section, nested ones as
        dicts, top-level keys the step reads, and its context), validated like a config:
        `MappingSettings.make(pixels=8, tsne={"perplexity": 5})`."""
        context = {k: values.pop(k) for k in cls.CONTEXT if k in values}
        config = {k: values.pop(k) for k in cls.TOP_LEVEL if k in values}
        return build_settings(cls, {cls.SECTION: values, **config}, base_dir, **context)

    @classmethod
    def from_config(cls, config: dict, **context):
        """The settings from a validated, default-filled config."""
        return _build(cls, config[cls.SECTION], config)

    @classmethod
    def fragment(cls, config: dict, **context) -> dict:
        """The part of `config` these settings read, shaped as a config."""
        section = {f.name: config[cls.SECTION][f.name] for f in _own_fields(cls)}
        return {cls.SECTION: section, **{k: config[k] for k in cls.TOP_LEVEL}}

    @classmethod
    def setting_keys(cls) -> list[str]:
        """Dotted config keys of every leaf setting, for help texts."""
        return [k for f in dataclasses.fields(cls) for k in _leaf_keys(cls, f)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _own_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.name not in cls.TOP_LEVEL]


def _leaf_keys(cls, field: dataclasses.Field) -> list[str]:
    prefix = field.name if field.name in cls.TOP_LEVEL else f"{cls.SECTION}.{field.name}"
    nested = typing.get_type_hints(cls)[field.name]
    if dataclasses.is_dataclass(nested):
        return [f"{prefix}.{f.name}" for f in dataclasses.fields(nested)]
    return [prefix]


def _build(cls, section: dict, config: dict):
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in getattr(cls, "TOP_LEVEL", ()):
            values[field.name] = config[field.name]
        elif dataclasses.is_dataclass(hints[field.name]):
            values[field.name] = _build(hints[field.name], section[field.name], config)
        else:
            values[field.name] = section[field.name]
    return cls(**values)


_PYTHON_TYPES = {
    "integer": int,
    "number": float,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "array": list,
    "object": dict,
}


def _python_type(node: dict):
    kinds = node["type"] if isinstance(node.get("type"), list) else [node.get("type")]
    if "type" not in node:
        kinds = [sub["type"] for sub in node.get("oneOf", [])]
    types = tuple(dict.fromkeys(_PYTHON_TYPES[k] for k in kinds))
    return typing.Union[types] if len(types) > 1 else types[0]  # noqa: UP007


def section_settings(name: str, section: str, doc: str, base=Settings) -> type:
    """A frozen dataclass with one field per key of a schema section (nested sections become
    nested dataclasses): the schema alone declares the keys."""
    node = schema_node(section)
    fields = []
    for key, sub in node["properties"].items():
        sub = schema_node(f"{section}.{key}")
        if "properties" in sub:
            nested = section_settings(f"{key.title()}Settings", f"{section}.{key}", "", object)
            fields.append((key, nested))
        else:
            fields.append((key, _python_type(sub)))
    namespace = {"__doc__": doc, "__module__": __name__}
    if base is Settings:
        namespace["SECTION"] = section
    return dataclasses.make_dataclass(name, fields, bases=(base,), frozen=True, namespace=namespace)


DataSettings = section_settings(
    "DataSettings", "data", "`prepare-data`: the `data` section, every key of it."
)


@dataclass(frozen=True)
class EmbedSettings(Settings):
    """`embed`: the encoder keys of `embedding`, and `device`."""

    SECTION: ClassVar[str] = "embedding"
    TOP_LEVEL: ClassVar[tuple[str, ...]] = ("device",)
    model: str
    layers: int | list[int]
    max_length: int
    batch_size: int
    shards: int
    precision: str
    device: str


@dataclass(frozen=True)
class MergeSettings(Settings):
    """`merge-embeddings`: how the merged tensor is stored."""

    SECTION: ClassVar[str] = "embedding"
    compression: str


_MappingSection = section_settings("_MappingSection", "deepinsight", "")


class MappingSettings(_MappingSection):
    """`fit-mapping`: the `deepinsight` section; its fragment leaves out the keys of the
    methods not chosen (and UMAP's unless it projects), so that changing them reruns nothing."""

    # the keys only one `deepinsight.method` reads
    METHOD_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "deepinsight": ("projector", "pca_components", "discretization", "tsne", "umap"),
        "igtd": ("igtd",),
        "refined": ("refined",),
        "raster": (),
    }

    @classmethod
    def fragment(cls, config: dict, **context) -> dict:
        fragment = super().fragment(config, **context)
        section = fragment[cls.SECTION]
        for method, keys in cls.METHOD_KEYS.items():
            if method != section["method"]:
                for key in keys:
                    del section[key]
        if "projector" in section and section["projector"] != "umap":
            del section["umap"]  # UMAP's keys only where it projects
        return fragment


@dataclass(frozen=True)
class TrainSettings(Settings):
    """`train`: the `training` section resolved for one backbone (its weights and learning
    rates), and `device`. The fragment holds only that backbone's entries, so changing another
    backbone's learning rate leaves this job alone."""

    SECTION: ClassVar[str] = "training"
    TOP_LEVEL: ClassVar[tuple[str, ...]] = ("device",)
    CONTEXT: ClassVar[tuple[str, ...]] = ("backbone",)
    weights: str
    lr_head: float
    lr_classifier: float
    epochs: int
    batch_size: int
    upsample: int
    normalization: str
    batchnorm: str
    precision: str
    cache_features_mb: int
    threads: int
    trainable: str
    trainable_lr: float
    device: str

    # keys whose values leave a job unchanged unless the slice trains: in its fragment then only
    _FINE_TUNING: ClassVar[tuple[str, ...]] = ("trainable", "trainable_lr")
    _SHARED: ClassVar[tuple[str, ...]] = (
        "epochs",
        "batch_size",
        "upsample",
        "normalization",
        "batchnorm",
        "precision",
        "cache_features_mb",
        "threads",
    )

    @classmethod
    def from_config(cls, config: dict, *, backbone: str, **context):
        head, classifier = learning_rates(config, backbone)
        section = config[cls.SECTION]
        return cls(
            weights=weights_for(config, backbone),
            lr_head=head,
            lr_classifier=classifier,
            device=config["device"],
            **{k: section[k] for k in (*cls._SHARED, *cls._FINE_TUNING)},
        )

    @classmethod
    def fragment(cls, config: dict, *, backbone: str, **context) -> dict:
        resolved = cls.from_config(config, backbone=backbone)
        section = {
            "weights": resolved.weights,
            "lr": {backbone: {"head": resolved.lr_head, "classifier": resolved.lr_classifier}},
            **{k: config[cls.SECTION][k] for k in cls._SHARED},
        }
        if resolved.trainable != "none":
            section.update({k: config[cls.SECTION][k] for k in cls._FINE_TUNING})
        return {cls.SECTION: section, "device": config["device"]}

    @classmethod
    def setting_keys(cls) -> list[str]:
        keys = ("weights", "lr", *cls._SHARED, *cls._FINE_TUNING)
        return [f"training.{k}" for k in keys] + ["device"]


@dataclass(frozen=True)
class DomainSettings(Settings):
    """`domain-shift`: the `domain` section, and what the step needs from `training` resolved for
    one backbone (its weights, the upsampling) and `device`. Like `TrainSettings`, the fragment
    holds only that backbone's weights (another backbone's change leaves this job alone) and no
    learning rates. `--set training.weights=none` overrides a training key."""

    SECTION: ClassVar[str] = "domain"
    TOP_LEVEL: ClassVar[tuple[str, ...]] = ("device", "training")
    CONTEXT: ClassVar[tuple[str, ...]] = ("backbone",)
    reference: str
    n_reference: int
    max_images: int
    seed: int
    weights: str
    upsample: int
    device: str

    _OWN: ClassVar[tuple[str, ...]] = ("reference", "n_reference", "max_images", "seed")

    @classmethod
    def make(cls, base_dir: str = ".", **values):
        """As `Settings.make`; `weights` and `upsample` may also be given flat."""
        training = {k: values.pop(k) for k in ("weights", "upsample") if k in values}
        if training:
            values["training"] = {**values.get("training", {}), **training}
        return super().make(base_dir, **values)

    @classmethod
    def from_config(cls, config: dict, *, backbone: str, **context):
        return cls(
            weights=weights_for(config, backbone),
            upsample=config["training"]["upsample"],
            device=config["device"],
            **{k: config[cls.SECTION][k] for k in cls._OWN},
        )

    @classmethod
    def fragment(cls, config: dict, *, backbone: str, **context) -> dict:
        return {
            cls.SECTION: {k: config[cls.SECTION][k] for k in cls._OWN},
            "training": {
                "weights": weights_for(config, backbone),
                "upsample": config["training"]["upsample"],
            },
            "device": config["device"],
        }

    @classmethod
    def setting_keys(cls) -> list[str]:
        own = [f"{cls.SECTION}.{k}" for k in cls._OWN]
        return [*own, "training.weights", "training.upsample", "device"]


@dataclass(frozen=True)
class BaselineSettings(Settings):
    """`baseline`: the logistic regression's settings."""

    SECTION: ClassVar[str] = "baseline"
    C: float
    max_iter: int


ReportSettings = section_settings(
    "ReportSettings", "report", "`report`: the comparisons and their bootstrap."
)


@dataclass(frozen=True)
class PrefetchSettings(Settings):
    """`prefetch`: what the compute jobs will need from the network (encoder, `hf:` dataset,
    ImageNet weights of the backbones that use them)."""

    model: str
    source: str
    backbones: list[str]

    @classmethod
    def from_config(cls, config: dict, **context):
        training = config["training"]
        return cls(
            model=config["embedding"]["model"],
            source=config["data"]["source"],
            backbones=[b for b in training["backbones"] if weights_for(config, b) == IMAGENET],
        )

    @classmethod
    def fragment(cls, config: dict, **context) -> dict:
        training = config["training"]
        return {
            "embedding": {"model": config["embedding"]["model"]},
            "data": {"source": config["data"]["source"]},
            "training": {"backbones": training["backbones"], "weights": training["weights"]},
        }

    @classmethod
    def setting_keys(cls) -> list[str]:
        return ["embedding.model", "data.source", "training.backbones", "training.weights"]


@dataclass(frozen=True)
class PredictSettings(Settings):
    """`predict`: how the texts are read and classified, and `device`. Which texts
    (`predict.source`) and which models (`predict.models`) are the workflow's choice: the rule
    passes them as the job's input."""

    SECTION: ClassVar[str] = "predict"
    TOP_LEVEL: ClassVar[tuple[str, ...]] = ("device",)
    text_column: str
    id_column: str | None
    batch_size: int
    device: str


@dataclass(frozen=True)
class ExplainSettings(Settings):
    """`explain`: the integrated gradients and the sample of texts, and `device`. Whether the
    default target explains (`explain.enabled`) and which models (`explain.models`) are the
    workflow's choice."""

    SECTION: ClassVar[str] = "explain"
    TOP_LEVEL: ClassVar[tuple[str, ...]] = ("device",)
    steps: int
    n_texts: int
    seed: int
    references: int
    device: str


def step_params(cls: type[Settings], config: dict, **context) -> str:
    """The rule param of a step: its config fragment as canonical JSON."""
    return json.dumps(cls.fragment(config, **context), sort_keys=True)


def deep_merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` merged in, nested mappings key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def set_key(config: dict, cls: type[Settings], assignment: str) -> dict:
    """Apply one `--set key=value` (the key relative to the step's section, or a top-level key
    the step reads); the value stays a string for the schema's type coercion."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. tsne.perplexity=10")
    parts = key.split(".")
    if parts[0] not in cls.TOP_LEVEL and cls.SECTION:
        parts = [cls.SECTION, *parts]
    schema_node(".".join(parts))  # an unknown key stops here, named
    nested: dict = value
    for part in reversed(parts):
        nested = {part: nested}
    return deep_merge(config, nested)


def build_settings(cls: type[Settings], config: dict, base_dir: str = ".", **context) -> Settings:
    """Validate a (partial) config against the schema and build the step's settings."""
    return cls.from_config(prepare_config(config, base_dir=base_dir), **context)
