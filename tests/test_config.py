import os

import pytest
import yaml
from conftest import REPO, run_snakemake, write_config

from textvision.config.schema import learning_rates, load_schema, prepare_config, weights_for
from textvision.core.errors import ConfigError

SCHEMA = load_schema()


def prepared(config: dict) -> dict:
    return prepare_config(config, SCHEMA, base_dir=REPO)


def test_shipped_configs_validate():
    for name in ("config.yaml", "paper.yaml"):
        config = prepared(yaml.safe_load((REPO / "config" / name).read_text()))
        assert config["deepinsight"]["pixels"] == 50
    paper = prepared(yaml.safe_load((REPO / "config/paper.yaml").read_text()))
    assert paper["embedding"]["model"] == "bert-base-uncased"
    assert paper["training"]["upsample"] == 3 and paper["training"]["epochs"] == 15


@pytest.mark.parametrize(
    "path", sorted((REPO / "config").glob("*.yaml")), ids=lambda path: path.name
)
def test_every_shipped_config_validates_with_its_variants_and_pairs(path):
    from textvision.config.variants import check_comparisons, variant_config

    config = prepared(yaml.safe_load(path.read_text()))
    for name in config["variants"]:
        variant_config(config, name)
    check_comparisons(config)


def test_defaults_fill_every_section():
    config = prepared({})
    assert config["data"]["split"] == {"val": 0.2, "test": 0.0, "seed": 42, "column": None}
    assert config["deepinsight"]["tsne"]["perplexity"] == 30
    assert config["training"]["backbones"][0] == "alexnet"


def test_strings_from_command_line_are_coerced():
    # Snakemake parses nested --config values with YAML's base loader: everything is a string
    config = prepared(
        {
            "deepinsight": {
                "tsne": {"perplexity": "7", "learning_rate": "200"},
                "pixels": "40",
                "pca_components": "null",
            },
            "data": {"clean_html": "false", "n_per_class": "10", "split": {"val": "0.3"}},
            "training": {"seeds": ["1", "2"], "lr": {"vgg16": {"head": "1e-4"}}},
        }
    )
    assert config["deepinsight"]["tsne"]["perplexity"] == 7
    assert config["deepinsight"]["tsne"]["learning_rate"] == 200
    assert config["deepinsight"]["pixels"] == 40
    assert config["deepinsight"]["pca_components"] is None
    assert config["data"]["clean_html"] is False
    assert config["data"]["split"]["val"] == 0.3
    assert config["training"]["seeds"] == [1, 2]
    assert learning_rates(config, "vgg16") == (1e-4, 1e-3)
    assert (
        prepared({"deepinsight": {"tsne": {"learning_rate": "auto"}}})["deepinsight"]["tsne"][
            "learning_rate"
        ]
        == "auto"
    )


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"training": {"backbones": ["resnet1000"]}}, "training.backbones.0"),
        ({"deepinsight": {"pixels": 1}}, "deepinsight.pixels"),
        ({"data": {"split": {"val": 1.5}}}, "data.split.val"),
        ({"data": {"split": {"val": 0}}}, "data.split.val"),
        ({"data": {"split": {"val": 0.6, "test": 0.5}}}, "data.split.val"),
        ({"data": {"source": "no/such/file.csv"}}, "data.source"),
        ({"deepinsight": {"scaler": "quantile"}}, "deepinsight.scaler"),
        ({"deepinsight": {"tsne": {"perplexity": -3}}}, "deepinsight.tsne.perplexity"),
        ({"training": {"epochs": 0}}, "training.epochs"),
        ({"training": {"lr": {"vgg16": {"head": "fast"}}}}, "training.lr.vgg16.head"),
        ({"training": {"lr": {"lenet": {"head": 0.1}}}}, "training.lr.lenet"),
        ({"training": {"weights": "missing.pt"}}, "training.weights"),
        ({"embedding": {"layers": [0]}}, "embedding.layers"),
        ({"device": "tpu"}, "device"),
        ({"deepinsight": {"bogus_key": 1}}, "deepinsight"),
        ({"outdir": "../escape"}, "outdir"),
    ],
)
def test_bad_values_name_their_key(config, key):
    with pytest.raises(ConfigError) as err:
        prepared(config)
    assert f"'{key}" in str(err.value)


def test_weights_mapping_per_backbone():
    config = prepared(
        {
            "training": {
                "backbones": ["alexnet", "vgg16"],
                "weights": {"alexnet": "none", "default": "imagenet"},
            }
        }
    )
    assert weights_for(config, "alexnet") == "none"
    assert weights_for(config, "vgg16") == "imagenet"


@pytest.mark.slow
def test_snakemake_stops_before_any_job_on_a_bad_value(tmp_path):
    write_config(tmp_path, {"deepinsight": {"pixels": 1}})
    proc = run_snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert "deepinsight.pixels" in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()
    # a nested --config override is coerced like a file value: perplexity '7' works
    proc = run_snakemake(
        tmp_path, "-n", "--config", 'deepinsight={"tsne":{"perplexity":"x"}}', check=False
    )
    assert proc.returncode != 0 and "deepinsight.tsne.perplexity" in proc.stderr + proc.stdout


def test_comparisons_must_name_rows_of_the_run():
    from textvision.config.settings import ReportSettings
    from textvision.config.variants import (
        check_comparisons,
        default_comparisons,
        row_names,
        variant_config,
    )

    config = prepare_config(
        {
            "training": {"backbones": ["alexnet"]},
            "variants": {"random": {"training": {"weights": "none"}}},
            "report": {"comparisons": [["alexnet", "random/alexnet"]]},
        }
    )
    check_comparisons(config)
    assert row_names(config) == ["alexnet", "logreg", "random/alexnet"]
    assert default_comparisons(row_names(config)) == [
        ["random/alexnet", "alexnet"], ["alexnet", "logreg"]
    ]  # fmt: skip
    for pair, message in [
        (["alexnet", "random/vgg16"], r"\['random/vgg16'\] not a row of this run"),
        (["alexnet", "alexnet"], "compares 'alexnet' with itself"),
    ]:
        bad = {**config, "report": {**config["report"], "comparisons": [pair]}}
        with pytest.raises(ConfigError, match=r"report\.comparisons\.0': " + message):
            check_comparisons(bad)
    # a step's settings fragment names rows it cannot check: the report checks them itself
    assert ReportSettings.make(comparisons=[["x", "y"]]).comparisons == [["x", "y"]]
    config = prepare_config({"variants": {"random": {"training": {"epochs": 0}}}})
    with pytest.raises(ConfigError, match=r"variants\.random\.training\.epochs'"):
        variant_config(config, "random")


def test_the_output_folder_is_checked_before_any_job(tmp_path):
    from textvision.config.schema import check_outdir

    check_outdir(tmp_path / "results")  # nothing yet: made by the run
    with pytest.raises(ConfigError, match="file system's root"):
        check_outdir("/")
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(ConfigError, match="is a file; expected a folder"):
        check_outdir(taken)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root may write anywhere
        with pytest.raises(ConfigError, match="is not writable"):
            check_outdir(locked / "results")


def test_predict_source_is_named_when_missing(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'predict.source': .*file not found"):
        prepare_config({"predict": {"source": str(tmp_path / "reviews.csv")}})


def test_an_empty_variant_is_refused_not_trained_as_a_copy():
    from textvision.config.variants import variant_config

    config = prepare_config({"variants": {"copy": {"training": {"epochs": 15}}}})  # the default
    with pytest.raises(ConfigError, match=r"variants.copy': changes no setting"):
        variant_config(config, "copy")
