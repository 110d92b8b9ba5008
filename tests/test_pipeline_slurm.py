"""End to end on the local single-node SLURM (``deploy/slurm-start.sh``).

Worker jobs must go through ``sbatch`` (seen in SLURM's records) and the outputs must equal
those of a LocalCluster run bit for bit.
"""

from __future__ import annotations

import time

import pytest
from slurm_helpers import require_slurm, submitted_jobs_since
from test_pipeline_local import assert_same_outputs, make_inputs, run_cli, write_config

from monodir.io.store import RunStore


def _slurm_cluster(tmp_path, jobs: int = 2) -> dict:
    return {
        "kind": "slurm",
        "n_workers": None,
        "threads_per_worker": None,
        "cores": 1,
        "processes": 1,
        "memory": "2GiB",
        "walltime": "00:15:00",
        "queue": "debug",
        "jobs": jobs,
        "death_timeout": 60,
        "log_directory": str(tmp_path / "slurm-logs"),
        "dashboard": ":0",
    }


@pytest.mark.slurm
def test_slurm_run_uses_sbatch_and_matches_local(tmp_path):
    require_slurm()
    inputs = make_inputs(tmp_path / "data", n=32)
    local = write_config(tmp_path / "local.yaml", inputs, tmp_path / "local", n_workers=1)
    slurm = write_config(
        tmp_path / "slurm.yaml",
        inputs,
        tmp_path / "slurm",
        extra={"cluster": _slurm_cluster(tmp_path)},
    )
    t0 = time.time()
    proc = run_cli(["run", str(slurm)], timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "SLURM cluster: 2 job(s)" in proc.stderr
    jobs = submitted_jobs_since(t0, name="dask-worker")
    assert jobs, "no dask-worker job went through sbatch"
    assert list((tmp_path / "slurm-logs").glob("dask-worker-*.err")), "no worker job logs"

    proc = run_cli(["run", str(local)], timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert_same_outputs(tmp_path / "slurm", tmp_path / "local")
    attrs = RunStore.open(tmp_path / "slurm" / "run.zarr", mode="r").attrs
    assert attrs["status"] == "complete"
    assert attrs["config"]["cluster"]["kind"] == "slurm"


@pytest.mark.slurm
def test_slurm_adaptive(tmp_path):
    require_slurm()
    inputs = make_inputs(tmp_path / "data", n=32)
    cluster = _slurm_cluster(tmp_path)
    del cluster["jobs"]
    cluster["adapt"] = {"minimum": 1, "maximum": 2}
    cfg = write_config(tmp_path / "c.yaml", inputs, tmp_path / "out", extra={"cluster": cluster})
    t0 = time.time()
    proc = run_cli(["run", str(cfg)], timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "adaptive 1-2 job(s)" in proc.stderr
    assert submitted_jobs_since(t0, name="dask-worker")
    assert (tmp_path / "out" / "anisotropy.mrc").is_file()


def test_job_script_without_slurm(tmp_path):
    """The SLURMCluster arguments render the expected job script (no sbatch is called)."""
    from dask_jobqueue import SLURMCluster

    from monodir.config import config_from_dict
    from monodir.pipeline.cluster import slurm_cluster_kwargs

    cfg = config_from_dict(
        {
            "input": {"map": "m.mrc", "mask": "k.mrc"},
            "cluster": {
                **_slurm_cluster(tmp_path),
                "cores": 8,
                "processes": 2,
                "memory": "16GiB",
                "account": "proj1",
                "job_extra_directives": ["--constraint=avx2"],
                "job_script_prologue": ["module load fftw"],
                "worker_extra_args": ["--lifetime", "55m"],
                "dashboard": ":12435",
            },
        },
        tmp_path,
    ).cluster
    kwargs = slurm_cluster_kwargs(cfg)
    assert kwargs["scheduler_options"]["dashboard_address"] == ":12435"
    with SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -p debug" in script
    assert "#SBATCH -A proj1" in script
    assert "#SBATCH --cpus-per-task=8" in script
    assert "#SBATCH --constraint=avx2" in script
    assert "module load fftw" in script
    assert "--nworkers 2" in script and "--nthreads 4" in script
    assert "--lifetime 55m" in script
    assert "--resources monodir=1" in script
    assert "PYTHONPATH" in script


def test_local_cluster_sizing():
    import os

    from monodir.config import ClusterConfig
    from monodir.pipeline.cluster import local_cluster_kwargs

    cores = len(os.sched_getaffinity(0))
    kw = local_cluster_kwargs(ClusterConfig())
    assert kw["n_workers"] * kw["threads_per_worker"] <= cores
    assert kw["n_workers"] == cores and kw["processes"] is True
    kw = local_cluster_kwargs(ClusterConfig(n_workers=1, threads_per_worker=2))
    assert (kw["n_workers"], kw["threads_per_worker"]) == (1, 2)
    assert kw["resources"] == {"monodir": 1}


def test_keys_of_other_cluster_kinds_are_reported():
    from monodir.config import ClusterConfig
    from monodir.pipeline.cluster import ignored_keys

    assert ignored_keys(ClusterConfig(kind="slurm", n_workers=2, cores=4)) == ["n_workers"]
    assert ignored_keys(ClusterConfig(kind="local", cores=4, jobs=2)) == ["cores", "jobs"]
    assert ignored_keys(ClusterConfig()) == []
