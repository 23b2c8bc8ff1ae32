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
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def names(requirements) -> set[str]:
    """Distribution names of requirement lines (`-e ../../` and other options left out)."""
    return {
        normalise(re.match(r"[A-Za-z0-9_.-]+", req.strip()).group())
        for req in requirements
        if not req.strip().startswith("-")
    }


def env_pip(env) -> list[str]:
    spec = yaml.safe_load(env.read_text())
    return next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))


# The rule families whose steps import torch / torchvision: only their envs hold them (the rest,
# the report above all, must not pull the CUDA wheels).
TORCH_ENVS = {"embed", "train", "prefetch"}
TORCHVISION_ENVS = {"train", "prefetch"}


def test_env_pins_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = pinned(project["dependencies"])
    for requirements in extras.values():
        wanted.update(pinned(requirements))
    assert wanted["torch"] == "2.14.1" and wanted["torchvision"] == "0.29.1"
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert {env.stem for env in envs} >= {"data", "embed", "deepinsight", "train", "report"}
    for env in envs:
        pins = pinned(env_pip(env))
        for name, version in pins.items():
            if name in wanted:
                assert version == wanted[name], (
                    f"{env.name}: {name}=={version}, pyproject {wanted[name]}"
                )
        assert ("torch" in pins) == (env.stem in TORCH_ENVS), f"{env.name}: torch"
        assert ("torchvision" in pins) == (env.stem in TORCHVISION_ENVS), f"{env.name}: torchvision"


def test_envs_match_pyproject_extras():
    """envs/<family>.yaml installs what `pip install -e '.[<family>]'` does: the same packages on
    top of this checkout with its core. Snakemake creates the env from its copy of the file in
    .snakemake/conda/ and conda runs pip there, so the checkout is `-e ../../`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for env in sorted((REPO / "envs").glob("*.yaml")):
        pip = env_pip(env)
        editable = [req.split()[1] for req in pip if req.strip().startswith("-e ")]
        assert [(REPO / ".snakemake/conda" / path).resolve() for path in editable] == [REPO], (
            f"{env.name}: {editable}, expected one `-e ../../` (this checkout)"
        )
        if env.stem in extras:
            assert names(pip) == names(extras[env.stem]), (
                f"{env.name} vs pyproject extra [{env.stem}]"
            )


def test_every_rule_has_a_conda_env_that_exists():
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.findall(r"^rule (\w+):", text, flags=re.M)
        envs = re.findall(r'conda:\n\s+"([^"]+)"', text)
        assert len(envs) == len(rules), f"{smk.name}: {len(rules)} rules, {len(envs)} conda envs"
        for env in envs:
            assert (smk.parent / env).resolve().is_file(), env


def test_config_readme_documents_every_key():
    schema = yaml.safe_load((REPO / "src/textvision/config/config.schema.yaml").read_text())
    readme = (REPO / "config/README.md").read_text()

    def keys(node, prefix=""):
        for name, sub in node.get("properties", {}).items():
            yield prefix + name
            yield from keys(sub, f"{prefix}{name}.")

    missing = [k for k in keys(schema) if k.split(".")[0] != "resources" and f"`{k}" not in readme]
    assert missing == []


def test_the_project_describes_the_software_and_the_machine():
    pattern = re.compile(r"\blent\b|not drawn", re.IGNORECASE)
    files = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "bench").rglob("*")]
    files += list((REPO / "src").rglob("*.py"))
    hits = [
        f"{path.relative_to(REPO)}: {line.strip()}"
        for path in files
        if path.is_file() and path.suffix in (".md", ".py")
        for line in path.read_text().splitlines()
        if pattern.search(line)
    ]
    assert hits == []
