"""Project files: conda env pins agree with pyproject, rules have envs, docs cover the config."""

import re

import tomllib
import yaml
from conftest import REPO


def pinned(requirements) -> dict[str, str]:
    pins = {}
    for req in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^;\s]+)", req.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_env_pins_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = pinned(project["dependencies"])
    assert wanted["torch"] == "2.14.1" and wanted["torchvision"] == "0.29.1"
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert len(envs) >= 5
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        pins = pinned(pip)
        for name, version in pins.items():
            if name in wanted:
                assert version == wanted[name], (
                    f"{env.name}: {name}=={version}, pyproject {wanted[name]}"
                )
        assert {"torch", "torchvision"} <= pins.keys(), env.name


def test_every_rule_has_a_conda_env_that_exists():
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.findall(r"^rule (\w+):", text, flags=re.M)
        envs = re.findall(r'conda:\n\s+"([^"]+)"', text)
        assert len(envs) == len(rules), f"{smk.name}: {len(rules)} rules, {len(envs)} conda envs"
        for env in envs:
            assert (smk.parent / env).resolve().is_file(), env


def test_config_readme_documents_every_key():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    readme = (REPO / "config/README.md").read_text()

    def keys(node, prefix=""):
        for name, sub in node.get("properties", {}).items():
            yield prefix + name
            yield from keys(sub, f"{prefix}{name}.")

    missing = [k for k in keys(schema) if k.split(".")[0] != "resources" and f"`{k}" not in readme]
    assert missing == []
