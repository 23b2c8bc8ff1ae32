"""The tiny workflow through profiles/slurm on a real one-node SLURM cluster.

tests/slurm/start_local_slurm.sh installs Debian's SLURM and starts slurmctld + slurmd (+ munged)
without systemd; the workflow then runs with `--profile profiles/slurm`, the profile's
partitions replaced by the local one on the command line, exactly as a site would override
them. Every non-local job must go through sbatch (one kept SLURM log per job, and slurmctld
knows each job as COMPLETED, with a GPU for embed_shard, train and domain_shift), and the outputs
must equal those of the local run. The cluster is stopped afterwards.

Needs root and apt-get (a CI container); set TEXTVISION_SKIP_SLURM=1 to skip it anyway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, planned_jobs, write_config

from bench.common import snakemake_command, snakemake_env

pytestmark = pytest.mark.slow

START = REPO / "tests" / "slurm" / "start_local_slurm.sh"
PROFILE = REPO / "profiles" / "slurm"
PARTITION = "debug"
LOCAL_RULES = {"all", "prepare_data", "merge_embeddings", "plot_mapping", "report", "prefetch"}
GPU_RULES = {"embed_shard", "train", "train_variant", "domain_shift"}
# tiny_run uses --cores 2, so its jobs ran with 2 threads; the same here keeps the numbers
# identical, and every job fits on a 2-CPU node (the rules ask for 8 threads: sbatch accepts
# --cpus-per-task=8 on a 2-CPU node and the job then pends forever, reason PartitionConfig).
THREADS = 2
# seconds for the whole SLURM run: it guards against a hang, not a speed (the run takes ~3 min
# here alone, and 7 min when the machine ran slower while the other test worker shared it)
RUN_TIMEOUT = 900


def _skip_reason() -> str | None:
    if os.environ.get("TEXTVISION_SKIP_SLURM"):
        return "TEXTVISION_SKIP_SLURM is set"
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root to install and start a local SLURM cluster"
    if shutil.which("apt-get") is None:
        return "needs apt-get (Debian/Ubuntu) to install SLURM"
    if (os.cpu_count() or 1) < THREADS:
        return f"needs at least {THREADS} CPUs"
    return None


def _script(mode: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(START), mode],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "SLURM_CI_PARTITION": PARTITION},
    )


@pytest.fixture(scope="module")
def slurm_cluster():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        proc = _script("start", timeout=900)  # the first start installs packages
        if proc.returncode != 0:
            pytest.fail(f"local SLURM cluster did not start:\n{proc.stdout}\n{proc.stderr}")
        yield PARTITION
    finally:
        stop = _script("stop", timeout=120)
        print(stop.stdout, stop.stderr)


def _profile_overrides(partition: str) -> list[str]:
    """The profile's default- and set-resources with every slurm_partition replaced."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    default = {**profile["default-resources"], "slurm_partition": partition}
    args = ["--default-resources", *(f"{k}={v}" for k, v in default.items())]
    args.append("--set-resources")
    for rule, resources in profile["set-resources"].items():
        resources = {**resources, "slurm_partition": partition}
        args += [f"{rule}:{k}={v}" for k, v in resources.items()]
    assert set(profile["set-resources"]) >= GPU_RULES, "the profile sends the GPU rules nowhere"
    return args


def _scontrol_job(jobid: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", jobid],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def test_tiny_workflow_on_local_slurm(slurm_cluster, tiny_run, tmp_path):
    workdir = tmp_path / "slurm_run"
    write_config(workdir, {"explain": {"enabled": False}})  # explain's rules: tested elsewhere
    planned = planned_jobs(workdir)
    expected = {rule: n for rule, n in planned.items() if rule not in LOCAL_RULES}
    assert set(expected) == {
        "embed_shard",
        "fit_mapping",
        "render_images",
        "train",
        "baseline_logreg",
        "domain_shift",
        "fit_mapping_variant",
        "render_images_variant",
        "train_variant",
    }, planned

    cmd = [
        # SIGINT (not TERM) makes Snakemake scancel its jobs; KILL 30 s later if it hangs
        "timeout",
        "-s",
        "INT",
        "-k",
        "30",
        str(RUN_TIMEOUT),
        *snakemake_command(
            workdir,
            workdir / "config.yaml",
            "--profile",
            str(PROFILE),
            "--jobs",
            "4",
            *_profile_overrides(slurm_cluster),
            "--set-threads",
            *(f"{rule}={THREADS}" for rule in expected),
            # no accounting database on the test cluster: poll squeue, and poll it fast
            "--slurm-status-command",
            "squeue",
            "--slurm-init-seconds-before-status-checks",
            "1",
            "--seconds-between-status-checks",
            "1",
            "--slurm-no-account",
            "--slurm-keep-successful-logs",
            "--retries",
            "0",
            cores=None,
        ),
    ]
    # jobs inherit this environment (sbatch --export=ALL): the venv's `textvision`, no Hub
    env = {**snakemake_env(), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        cmd,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=RUN_TIMEOUT + 60,
    )
    log = f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert proc.returncode not in (124, 137), f"SLURM run timed out ({RUN_TIMEOUT}s):\n{log}"
    assert proc.returncode == 0, f"SLURM run failed ({proc.returncode}):\n{log}"

    # one kept SLURM log per non-local job: every one of them went through sbatch
    logdir = workdir / ".snakemake" / "slurm_logs"
    logs = sorted(logdir.rglob("*.log"))
    per_rule = {rule: len(list((logdir / f"rule_{rule}").rglob("*.log"))) for rule in expected}
    assert per_rule == expected, f"{per_rule} != {expected}; logs: {logs}"
    assert len(logs) == sum(expected.values()), logs
    for path in logs:
        rule = path.relative_to(logdir).parts[0].removeprefix("rule_")
        job = _scontrol_job(path.stem)  # the log is named <jobid>.log
        assert job["JobState"] == "COMPLETED", (path, job)
        assert job["Partition"] == slurm_cluster, (path, job)
        gpus = job.get("TresPerJob", "")
        assert ("gpu" in gpus) == (rule in GPU_RULES), (rule, gpus)

    # the same numbers as the local run
    ours, local = workdir / "out", tiny_run / "out"
    pd.testing.assert_frame_equal(
        pd.read_parquet(ours / "data/dataset.parquet"),
        pd.read_parquet(local / "data/dataset.parquet"),
    )
    with (
        h5py.File(ours / "embeddings/embeddings.h5") as a,
        h5py.File(local / "embeddings/embeddings.h5") as b,
    ):
        np.testing.assert_array_equal(a["cls"][()], b["cls"][()])
    got = pd.read_csv(ours / "report/results.csv")
    want = pd.read_csv(local / "report/results.csv")
    assert list(got.columns) == list(want.columns)
    assert list(got["model"]) == list(want["model"])
    timing = [c for c in got.columns if "seconds" in c or "per_second" in c]
    got, want = got.drop(columns=timing), want.drop(columns=timing)
    numeric = got.select_dtypes("number").columns
    assert len(numeric) and any(c.startswith("val_accuracy") for c in numeric), list(numeric)
    np.testing.assert_allclose(
        got[numeric].to_numpy(float),
        want[numeric].to_numpy(float),
        rtol=1e-6,
        atol=1e-9,
        equal_nan=True,
    )
    pd.testing.assert_frame_equal(got.drop(columns=numeric), want.drop(columns=numeric))
