"""Faults during a run: the run survives them and its outputs are the same as undisturbed.

* (a) a local worker process is SIGKILLed in the middle of a direction task: the nanny
  starts a new worker, Dask reschedules the task (and recomputes the shared setup that
  lived on the dead worker), and the outputs equal an undisturbed run's bit for bit;
* (b) on the local SLURM, the only worker job is cancelled (``scancel``) in the middle of a
  direction task: the runner's job keeper (:class:`monodir.pipeline.cluster.JobKeeper`)
  submits a replacement job, which finishes the run, again with identical outputs;
* (c) the driver itself SIGKILLed mid-run, then the same command again: it resumes and
  ends with identical outputs. That is ``test_resume.py::
  test_sigkill_during_cone_tasks_then_resume`` (not repeated here).

The faults are injected by the kernel substitute of :mod:`fault_helpers` (the real kernels
with a fault in one chosen direction).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from fault_helpers import install_fault_kernels
from slurm_helpers import job_record, require_slurm, submitted_jobs_since
from test_pipeline_local import assert_same_outputs, cli_env, make_inputs, run_cli, write_config

from monodir.config import load_config
from monodir.io.store import RunStore
from monodir.pipeline.runner import run_pipeline

DIRECTION = 5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_local_worker_killed_mid_task(tmp_path, monkeypatch):
    """One local worker; its process SIGKILLs itself in direction 5 (once): the run
    completes (the nanny restarts the worker, the task is retried) with identical outputs."""
    kernels = install_fault_kernels(tmp_path, monkeypatch)
    inputs = make_inputs(tmp_path / "data", n=32)
    marker = tmp_path / "killed.pid"
    monkeypatch.setenv("MONODIR_FAULT_DIRECTION", str(DIRECTION))
    monkeypatch.setenv("MONODIR_FAULT_KILL_MARKER", str(marker))
    cfg = write_config(tmp_path / "c.yaml", inputs, tmp_path / "out", n_workers=1)
    out = run_pipeline(load_config(cfg), kernels=kernels)

    assert marker.is_file(), "the fault was not injected"
    assert not _alive(int(marker.read_text())), "the worker process was not killed"
    store = RunStore.open(out / "run.zarr", mode="r")
    assert store.status == "complete" and store.attrs["attempts"] == 1
    assert store.done_directions().all()

    monkeypatch.delenv("MONODIR_FAULT_KILL_MARKER")
    ref_cfg = write_config(tmp_path / "ref.yaml", inputs, tmp_path / "ref", n_workers=1)
    ref = run_pipeline(load_config(ref_cfg))
    assert_same_outputs(out, ref)


def _slurm_cluster(tmp_path) -> dict:
    return {
        "kind": "slurm",
        "n_workers": None,
        "threads_per_worker": None,
        "cores": 1,
        "processes": 1,
        "memory": "2GiB",
        "walltime": "00:15:00",
        "queue": "debug",
        "jobs": 1,
        "death_timeout": 60,
        "log_directory": str(tmp_path / "slurm-logs"),
        "dashboard": ":0",
    }


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended while waiting for {what}: {err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slurm
def test_slurm_worker_job_cancelled_mid_run(tmp_path, monkeypatch):
    """``cluster.jobs: 1``; the worker job is cancelled while it computes direction 5: a
    replacement job is submitted and finishes the run; outputs equal a local run's."""
    require_slurm()
    kernels = install_fault_kernels(tmp_path, monkeypatch)
    inputs = make_inputs(tmp_path / "data", n=32)
    hold, marker = tmp_path / "hold", tmp_path / "holding"
    hold.touch()
    cfg = write_config(
        tmp_path / "slurm.yaml",
        inputs,
        tmp_path / "slurm",
        extra={"cluster": _slurm_cluster(tmp_path)},
    )
    env = cli_env(
        MONODIR_KERNELS=kernels,
        MONODIR_FAULT_DIRECTION=str(DIRECTION),
        MONODIR_FAULT_HOLD_FLAG=str(hold),
        MONODIR_FAULT_HOLD_MARKER=str(marker),
        # notice the lost job after 2 s instead of 15 s
        DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT="2s",
    )
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "monodir", "run", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        _wait_for(marker.exists, 240, "direction 5 to start on a SLURM worker", proc)
        _pid, job_id = marker.read_text().split()
        first = submitted_jobs_since(t0, name="dask-worker")
        assert int(job_id) in [j.job_id for j in first], first
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        _wait_for(
            lambda: (rec := job_record(int(job_id), since=t0)) is not None and rec.finished,
            120,
            f"job {job_id} to end after scancel",
            proc,
        )
        hold.unlink()  # the replacement may compute direction 5 freely
        _, err = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
    assert proc.returncode == 0, err[-5000:]
    assert "submitting replacement" in err, err[-5000:]
    jobs = submitted_jobs_since(t0, name="dask-worker")
    assert any(j.job_id > int(job_id) for j in jobs), f"no replacement job: {jobs}"
    assert job_record(int(job_id), since=t0).state.startswith("CANCELLED")
    store = RunStore.open(tmp_path / "slurm" / "run.zarr", mode="r")
    assert store.status == "complete" and store.attrs["attempts"] == 1

    local = write_config(tmp_path / "local.yaml", inputs, tmp_path / "local", n_workers=1)
    ref = run_cli(["run", str(local)], timeout=600)
    assert ref.returncode == 0, ref.stderr
    assert_same_outputs(tmp_path / "slurm", tmp_path / "local")


class _FakeJobCluster:
    """What :class:`JobKeeper` reads of a ``SpecCluster``: one planned job, no worker now."""

    def __init__(self, scheduler):
        from distributed.core import Status

        self.status = Status.running
        self.scheduler = scheduler
        self.scheduler_info = {"workers": {}}
        self.worker_spec = {"job-0": {"cls": object, "options": {}}}
        self.workers: dict = {}
        self.scaled: list[int] = []

    def scale(self, jobs: int) -> None:
        self.scaled.append(jobs)


class _FakeScheduler:
    def __init__(self):
        self.workers: dict = {}
        self.plugins: dict = {}

    def add_plugin(self, plugin, name=None):
        self.plugins[name] = plugin


def test_job_keeper_replaces_a_job_that_came_and_went_between_checks():
    """A worker job that connected and ended between two checks (cancelled a second after it
    started) is replaced: its connection was recorded by the scheduler plugin. Without that
    record the keeper cannot tell it from a job still waiting in the queue (the run used to
    wait for ever)."""
    from types import SimpleNamespace

    from monodir.pipeline.cluster import JobKeeper

    scheduler = _FakeScheduler()
    cluster = _FakeJobCluster(scheduler)
    keeper = JobKeeper(cluster, interval=3600, grace=0.0)
    keeper._watch(scheduler)
    assert keeper.check() == []  # never connected: left alone (queued, or broken)
    plugin = scheduler.plugins["monodir-job-keeper"]
    scheduler.workers["tcp://10.0.0.1:1234"] = SimpleNamespace(name="job-0")
    plugin.add_worker(scheduler, "tcp://10.0.0.1:1234")
    del scheduler.workers["tcp://10.0.0.1:1234"]  # gone before any check saw it
    assert keeper.check() == ["job-0"]
    assert cluster.scaled == [1] and keeper.replaced == ["job-0"]
    assert keeper.check() == []  # the replacement has not connected yet: not lost again
