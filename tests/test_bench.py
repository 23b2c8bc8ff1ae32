"""The benchmarks' helpers the tests share: the one Snakemake command line and its environment."""

import os
import sys
from pathlib import Path

from conftest import REPO

from bench.common import SNAKEMAKE, snakemake_command, snakemake_env


def test_snakemake_command_runs_this_snakefile_in_the_workdir_with_the_config():
    cmd = snakemake_command(Path("/w"), Path("/w/c.yaml"), "-n", "--until", "x", cores=2)
    assert cmd == [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", "/w",
        "--configfile", "/w/c.yaml", "--cores", "2", "-n", "--until", "x",
    ]  # fmt: skip
    assert cmd[:3] == SNAKEMAKE


def test_snakemake_command_without_cores_leaves_them_to_a_profile():
    cmd = snakemake_command("/w", "/w/c.yaml", "--profile", "p", cores=None)
    assert "--cores" not in cmd and cmd[-4:] == ["--configfile", "/w/c.yaml", "--profile", "p"]


def test_snakemake_env_puts_this_interpreter_first_on_path():
    env = snakemake_env()
    assert env["PATH"] == f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    assert {k: v for k, v in env.items() if k != "PATH"} == {
        k: v for k, v in os.environ.items() if k != "PATH"
    }
