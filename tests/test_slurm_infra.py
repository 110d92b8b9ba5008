"""The local single-node SLURM (deploy/slurm-start.sh) works end to end.

These tests check the infrastructure, not monodir: that a batch job runs and is recorded, and
that dask-jobqueue can start a Dask worker through sbatch which then runs a task. They are
skipped without SLURM, and fail instead when CI=true (see slurm_helpers.require_slurm).
"""

from __future__ import annotations

import time
import uuid

import pytest

try:  # tests/ is on sys.path when it has no __init__.py (pytest's default rootdir handling)
    from slurm_helpers import (
        parse_jobcomp_line,
        require_slurm,
        sbatch,
        submitted_jobs_since,
        wait_for_jobs,
        wait_job_finished,
    )
except ImportError:  # tests/ is a package
    from tests.slurm_helpers import (
        parse_jobcomp_line,
        require_slurm,
        sbatch,
        submitted_jobs_since,
        wait_for_jobs,
        wait_job_finished,
    )


def test_parse_jobcomp_line():
    """The jobcomp/filetxt parser (pure; runs without SLURM)."""
    line = (
        "JobId=17 UserId=root(0) GroupId=root(0) Name=dask-worker JobState=CANCELLED "
        "Partition=debug TimeLimit=10 StartTime=2026-01-02T03:04:05 EndTime=2026-01-02T03:04:09 "
        "NodeList=vm NodeCnt=1 ProcCnt=1 WorkDir=/tmp ReservationName= Tres=cpu=1,mem=1G,node=1 "
        "Account= QOS= WcKey= Cluster=unknown SubmitTime=2026-01-02T03:04:04 "
        "EligibleTime=2026-01-02T03:04:04 DerivedExitCode=0:0 ExitCode=0:15"
    )
    job = parse_jobcomp_line(line)
    assert job is not None
    assert (job.job_id, job.name, job.state) == (17, "dask-worker", "CANCELLED")
    assert job.exit_code == "0:15"
    assert job.finished
    assert job.end_time - job.start_time == 4
    assert job.start_time - job.submit_time == 1
    assert job.raw["ReservationName"] == ""
    assert parse_jobcomp_line("garbage") is None


@pytest.mark.slurm
def test_sbatch_trivial_job_completes(tmp_path):
    require_slurm()
    t0 = time.time()
    name = f"monodir-infra-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "job.out"
    job_id = sbatch(
        f"--job-name={name}",
        f"--output={out}",
        "--ntasks=1",
        "--cpus-per-task=1",
        "--mem=100M",
        "--time=00:02:00",
        "--wrap",
        "hostname; echo monodir-ok; sleep 1",
        cwd=tmp_path,
    )
    job = wait_job_finished(job_id, since=t0, timeout=60)
    assert job.state == "COMPLETED", job
    assert job.exit_code in (None, "0:0"), job
    assert "monodir-ok" in out.read_text()
    seen = submitted_jobs_since(t0, name=name)
    assert [j.job_id for j in seen] == [job_id]


@pytest.mark.slurm
def test_dask_jobqueue_worker_runs_through_sbatch(tmp_path):
    require_slurm()
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    t0 = time.time()
    name = f"monodir-dask-{uuid.uuid4().hex[:8]}"
    cluster = SLURMCluster(
        cores=1,
        processes=1,
        memory="1GiB",
        walltime="00:10:00",
        queue="debug",
        job_name=name,
        # Everything on the loopback interface: scheduler and worker share this machine.
        interface="lo",
        scheduler_options={"dashboard_address": ":0"},
        log_directory=str(tmp_path / "logs"),
        local_directory=str(tmp_path / "worker-space"),
        death_timeout=60,
    )
    try:
        assert f"#SBATCH -J {name}" in cluster.job_script()
        with Client(cluster) as client:
            cluster.scale(jobs=1)
            client.wait_for_workers(1, timeout=60)
            assert client.submit(lambda: 1 + 1).result(timeout=30) == 2
            # The worker is a SLURM job: it is in SLURM's records as running.
            running = wait_for_jobs(
                t0, lambda jobs: any(j.state == "RUNNING" for j in jobs), name=name, timeout=10
            )
            assert len(running) == 1, running
            job_id = running[0].job_id
            worker_job_ids = client.run(lambda: __import__("os").environ.get("SLURM_JOB_ID"))
            assert list(worker_job_ids.values()) == [str(job_id)]
    finally:
        cluster.close()
    # Closing the cluster scancels the job; the record then shows it as finished.
    finished = wait_job_finished(job_id, since=t0, timeout=30)
    assert finished.finished, finished
    assert [j.job_id for j in submitted_jobs_since(t0, name=name)] == [job_id]
