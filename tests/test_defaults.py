"""The algorithms (DeepInsight's transformer, its t-SNE, integrated gradients) carry their own
literal defaults and scikit-learn `_parameter_constraints`, and never import the workflow's
config; every parameter that has a config key has the schema's default and the schema's allowed
values (enum -> `StrOptions`, minimum/maximum -> `Interval` bounds, null -> None)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from numbers import Integral, Real

import pytest
from sklearn.utils._param_validation import Interval, StrOptions, make_constraint

from textvision.config.schema import schema_default, schema_node
from textvision.deepinsight.base import RasterTransformer
from textvision.deepinsight.igtd import IGTDTransformer
from textvision.deepinsight.methods import CLASSES
from textvision.deepinsight.refined import REFINEDTransformer
from textvision.deepinsight.transformer import DeepInsightTransformer
from textvision.deepinsight.tsne import tsne
from textvision.explain.attribution import integrated_gradients

# parameter -> config key, per algorithm: the one place the names are paired
TSNE_KEYS = {
    "perplexity": "deepinsight.tsne.perplexity",
    "early_exaggeration": "deepinsight.tsne.early_exaggeration",
    "metric": "deepinsight.tsne.metric",
    "init": "deepinsight.tsne.init",
    "learning_rate": "deepinsight.tsne.learning_rate",
    "max_iter": "deepinsight.tsne.max_iter",
    "random_state": "deepinsight.tsne.seed",
}
SHARED_KEYS = {
    "pixels": "deepinsight.pixels",
    "scaler": "deepinsight.scaler",
    "empty_value": "deepinsight.empty_value",
    "layout": "deepinsight.layout",
    "layout_seed": "deepinsight.layout_seed",
    "chunk_size": "deepinsight.chunk_size",
}
TRANSFORMER_KEYS = {
    **SHARED_KEYS,
    "projector": "deepinsight.projector",
    "pca_components": "deepinsight.pca_components",
    "discretization": "deepinsight.discretization",
    "backend": "deepinsight.tsne.backend",
    **TSNE_KEYS,
    "n_neighbors": "deepinsight.umap.n_neighbors",
    "min_dist": "deepinsight.umap.min_dist",
    "umap_metric": "deepinsight.umap.metric",
}
IGTD_KEYS = {
    **SHARED_KEYS,
    **{
        name: f"deepinsight.igtd.{name}"
        for name in ("feature_distance", "pixel_distance", "error", "max_step", "val_step")
    },
    "min_gain": "deepinsight.igtd.min_gain",
}
REFINED_KEYS = {
    **SHARED_KEYS,
    "hc_iterations": "deepinsight.refined.hc_iterations",
    "mds_max_iter": "deepinsight.refined.mds_max_iter",
    "random_state": "deepinsight.refined.seed",
}
INTEGRATED_GRADIENTS_KEYS = {"steps": "explain.steps"}

# parameters without a config key: the data, and run-time choices the workflow sets elsewhere
WITHOUT_KEY = {
    DeepInsightTransformer: {"n_jobs"},
    IGTDTransformer: {"n_jobs"},
    REFINEDTransformer: {"n_jobs"},
    RasterTransformer: {"n_jobs"},
    tsne: {"points", "n_jobs"},
    integrated_gradients: {"path", "text", "target", "batch_tokens", "refine", "references"},
}
ALGORITHMS = {
    DeepInsightTransformer: TRANSFORMER_KEYS,
    IGTDTransformer: IGTD_KEYS,
    REFINEDTransformer: REFINED_KEYS,
    RasterTransformer: SHARED_KEYS,
    tsne: TSNE_KEYS,
    integrated_gradients: INTEGRATED_GRADIENTS_KEYS,
}
CASES = [
    pytest.param(algorithm, parameter, key, id=f"{algorithm.__name__}.{parameter}")
    for algorithm, keys in ALGORITHMS.items()
    for parameter, key in keys.items()
]


def schema_constraints(key: str) -> list:
    """The scikit-learn constraints a schema key's allowed values translate to."""
    node = schema_node(key)
    return [c for branch in node.get("oneOf", [node]) for c in _branch_constraints(branch)]


def _branch_constraints(node: dict) -> list:
    if "enum" in node:
        return [StrOptions(set(node["enum"]))]
    if "const" in node:
        return [StrOptions({node["const"]})]
    out = []
    for kind in node["type"] if isinstance(node["type"], list) else [node["type"]]:
        if kind == "null":
            out.append(None)
            continue
        assert kind in ("integer", "number"), f"no constraint for schema type {kind!r}"
        closed = {
            (True, True): "both",
            (True, False): "left",
            (False, True): "right",
            (False, False): "neither",
        }[("minimum" in node, "maximum" in node)]
        out.append(
            Interval(
                Integral if kind == "integer" else Real,
                node.get("minimum", node.get("exclusiveMinimum")),
                node.get("maximum", node.get("exclusiveMaximum")),
                closed=closed,
            )
        )
    return out


def comparable(constraint):
    """A constraint as a value that compares equal for equal constraints."""
    constraint = make_constraint(constraint)
    if isinstance(constraint, StrOptions):
        return ("one of", frozenset(constraint.options))
    if isinstance(constraint, Interval):
        return ("interval", constraint.type, constraint.left, constraint.right, constraint.closed)
    return ("other", str(constraint))


def constraints_of(algorithm) -> dict:
    return algorithm._parameter_constraints


@pytest.mark.parametrize("algorithm, parameter, key", CASES)
def test_default_is_the_schema_default(algorithm, parameter, key):
    default = inspect.signature(algorithm).parameters[parameter].default
    expected = schema_default(key)
    assert default == expected and type(default) is type(expected), (
        f"{algorithm.__name__}({parameter}={default!r}): the schema's {key} default is {expected!r}"
    )


@pytest.mark.parametrize("algorithm, parameter, key", CASES)
def test_allowed_values_are_the_schema_allowed_values(algorithm, parameter, key):
    ours = [comparable(c) for c in constraints_of(algorithm)[parameter]]
    schema = [comparable(c) for c in schema_constraints(key)]
    assert len(ours) == len(set(ours)) and set(ours) == set(schema), (
        f"{algorithm.__name__} {parameter}: {ours}; the schema's {key}: {schema}"
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.__name__)
def test_every_parameter_is_paired_with_a_key_or_has_none(algorithm):
    parameters = set(inspect.signature(algorithm).parameters)
    keys = set(ALGORITHMS[algorithm])
    assert not keys & WITHOUT_KEY[algorithm]
    assert parameters == keys | WITHOUT_KEY[algorithm]
    assert keys <= set(constraints_of(algorithm))  # a parameter with a key is checked


@pytest.mark.parametrize("method", CLASSES, ids=lambda m: m.__name__)
def test_every_constrained_parameter_of_a_method_is_a_parameter(method):
    assert set(method._parameter_constraints) == set(method().get_params())


def _leaf_keys(prefix: str) -> set[str]:
    node = schema_node(prefix)
    if "properties" not in node:
        return {prefix}
    return {k for name in node["properties"] for k in _leaf_keys(f"{prefix}.{name}")}


def test_every_deepinsight_key_but_fit_on_and_method_is_a_method_parameter():
    # `fit_on` chooses the rows `fit_mapping` fits on, `method` the estimator: step settings
    keys = {key for algorithm in CLASSES for key in ALGORITHMS[algorithm].values()}
    assert _leaf_keys("deepinsight") - {"deepinsight.fit_on", "deepinsight.method"} == keys


@pytest.mark.parametrize("method", CLASSES, ids=lambda m: m.__name__)
def test_a_method_reads_the_keys_its_fragment_keeps(method):
    # MappingSettings.METHOD_KEYS: what a change of which reruns only this method's fits
    from textvision.config.settings import MappingSettings

    own = set(ALGORITHMS[method].values()) - set(SHARED_KEYS.values())
    assert {key.split(".")[1] for key in own} == set(MappingSettings.METHOD_KEYS[method.method])


def test_algorithms_never_import_the_workflow_config():
    modules = (
        "textvision.deepinsight.methods",
        "textvision.deepinsight.transformer",
        "textvision.deepinsight.tsne",
        "textvision.deepinsight.functional",
        "textvision.deepinsight.functional_torch",
        "textvision.explain.attribution",
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('textvision.config')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert done.stdout.strip() == "[]"


def test_refusals_name_the_parameter_and_its_allowed_values():
    with pytest.raises(ValueError, match=r"pixels must be in \[2, 512\] \(an integer\), got 1"):
        DeepInsightTransformer(pixels=1).fit([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="learning_rate must be 'auto' or above 0, got -1"):
        tsne([[0.0, 1.0], [1.0, 0.0]], learning_rate=-1)
    with pytest.raises(ValueError, match=r"steps must be at least 1 \(an integer\), got 0"):
        integrated_gradients(None, "a text", steps=0)
