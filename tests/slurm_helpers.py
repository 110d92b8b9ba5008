"""Helpers for tests that need the local single-node SLURM (``deploy/slurm-start.sh``).

Typical use in a test::

    from slurm_helpers import require_slurm, submitted_jobs_since, wait_for_jobs

    @pytest.mark.slurm
    def test_something_on_slurm(tmp_path):
        require_slurm()
        t0 = time.time()
        ...                                   # run something that submits dask worker jobs
        jobs = submitted_jobs_since(t0, name="dask-worker")
        assert jobs, "no worker job went through sbatch"

How finished jobs are found: the test SLURM has no slurmdbd, so ``sacct`` answers "accounting
storage is disabled". Every finished job is instead appended by the ``jobcomp/filetxt`` plugin to
a text file (``JobCompLoc``, /var/log/slurm/jobcomp.log), one ``Key=Value`` line per job.
:func:`submitted_jobs_since` merges three sources, the most final one winning:

1. ``sacct`` when accounting works (a real cluster with slurmdbd),
2. the jobcomp file (finished jobs: COMPLETED, CANCELLED, FAILED, TIMEOUT, ...),
3. ``squeue`` (jobs still pending or running).

Times in SLURM's records are local wall-clock times with one-second resolution; a job counts as
"since t0" when its submit time is at or after ``floor(t0)``.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: Where deploy/slurm-start.sh makes SLURM log finished jobs (used when scontrol cannot say).
DEFAULT_JOBCOMP_LOG = Path("/var/log/slurm/jobcomp.log")

#: Node states (sinfo %T) in which the node accepts work.
USABLE_NODE_STATES = frozenset({"idle", "mixed", "allocated", "completing"})

#: Job states after which a job will not run any more.
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)

_SLURM_TIME = "%Y-%m-%dT%H:%M:%S"


@dataclass
class SlurmJob:
    """One job as seen in SLURM's records (``source`` says which record)."""

    job_id: int
    name: str
    state: str
    submit_time: float | None = None
    start_time: float | None = None
    end_time: float | None = None
    exit_code: str | None = None
    source: str = ""
    raw: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        return self.state.split()[0].rstrip("+") in FINAL_STATES if self.state else False


def _run(cmd: list[str], timeout: float = 15.0) -> subprocess.CompletedProcess[str] | None:
    """Run a command, returning None when it cannot be run or times out."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def parse_slurm_time(value: str | None) -> float | None:
    """``2026-01-31T12:00:00`` (local time) -> POSIX seconds; None for Unknown/None/empty."""
    if not value or value in {"Unknown", "None", "N/A", "(null)"}:
        return None
    try:
        return time.mktime(time.strptime(value, _SLURM_TIME))
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------
# availability
# ----------------------------------------------------------------------------------------------
def node_states() -> list[str]:
    """sinfo's per-node states (e.g. ``["idle"]``); empty when SLURM does not answer."""
    proc = _run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10)
    if proc is None or proc.returncode != 0:
        return []
    return [s.strip() for s in proc.stdout.splitlines() if s.strip()]


_unavailable_until = 0.0  # sinfo takes ~10 s to give up on a dead controller: remember that


def slurm_available() -> bool:
    """True when ``sinfo`` answers and at least one node is idle/mixed/allocated and responding.

    sinfo marks a node that does not respond with a trailing ``*``; such a node does not count.
    A negative answer is remembered for a minute, so a session without SLURM does not pay
    sinfo's connection timeout in every test.
    """
    global _unavailable_until
    if time.monotonic() < _unavailable_until:
        return False
    for state in node_states():
        if state.endswith("*"):
            continue
        if state.rstrip("~#!%$@^-+") in USABLE_NODE_STATES:
            return True
    _unavailable_until = time.monotonic() + 60.0
    return False


def require_slurm() -> None:
    """Skip the calling test when SLURM is not reachable; fail it instead when ``CI=true``.

    In CI, ``.ci/run`` starts SLURM before pytest, so an unreachable SLURM there is a broken
    setup rather than a machine without SLURM, and must not be hidden as a skip.
    """
    if slurm_available():
        return
    msg = (
        "SLURM is not reachable (sinfo shows no idle/mixed node); start the local test "
        "cluster with `sudo deploy/slurm-start.sh`"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {msg}", pytrace=False)
    pytest.skip(msg)


# ----------------------------------------------------------------------------------------------
# records of jobs
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _slurm_config() -> dict[str, str]:
    proc = _run(["scontrol", "show", "config"], timeout=10)
    out: dict[str, str] = {}
    if proc is None or proc.returncode != 0:
        return out
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def jobcomp_path() -> Path | None:
    """The jobcomp/filetxt log, if SLURM is configured with one (else None)."""
    env = os.environ.get("MONODIR_SLURM_JOBCOMP")
    if env:
        return Path(env)
    cfg = _slurm_config()
    if cfg:
        if cfg.get("JobCompType", "") != "jobcomp/filetxt":
            return None
        loc = cfg.get("JobCompLoc", "")
        return Path(loc) if loc.startswith("/") else None
    return DEFAULT_JOBCOMP_LOG if DEFAULT_JOBCOMP_LOG.exists() else None


@functools.lru_cache(maxsize=1)
def sacct_works() -> bool:
    """True when ``sacct`` can query an accounting database (not the case on the test SLURM)."""
    proc = _run(["sacct", "-n", "-X", "-P", "-o", "JobID", "-S", "now-1minutes"], timeout=10)
    return proc is not None and proc.returncode == 0 and "disabled" not in proc.stderr


_KV = re.compile(r"(\w+)=(\S*)")


def parse_jobcomp_line(line: str) -> SlurmJob | None:
    """Parse one jobcomp/filetxt line (``JobId=3 UserId=root(0) ... JobState=COMPLETED ...``).

    Values never contain spaces in this format except for empty values, which the regex reads
    as empty strings.
    """
    raw = dict(_KV.findall(line))
    if "JobId" not in raw:
        return None
    try:
        job_id = int(raw["JobId"])
    except ValueError:
        return None
    return SlurmJob(
        job_id=job_id,
        name=raw.get("Name", ""),
        state=raw.get("JobState", ""),
        submit_time=parse_slurm_time(raw.get("SubmitTime")),
        start_time=parse_slurm_time(raw.get("StartTime")),
        end_time=parse_slurm_time(raw.get("EndTime")),
        exit_code=raw.get("ExitCode"),
        source="jobcomp",
        raw=raw,
    )


def _jobs_from_jobcomp() -> list[SlurmJob]:
    path = jobcomp_path()
    if path is None:
        return []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [job for line in text.splitlines() if (job := parse_jobcomp_line(line))]


def _jobs_from_squeue() -> list[SlurmJob]:
    # %i id, %j name, %T state, %V submit time, %S start time
    proc = _run(["squeue", "-h", "-o", "%i|%j|%T|%V|%S"], timeout=10)
    if proc is None or proc.returncode != 0:
        return []
    jobs = []
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) != 5:
            continue
        try:
            job_id = int(parts[0].split("_")[0])
        except ValueError:
            continue
        jobs.append(
            SlurmJob(
                job_id=job_id,
                name=parts[1],
                state=parts[2],
                submit_time=parse_slurm_time(parts[3]),
                start_time=parse_slurm_time(parts[4]),
                source="squeue",
            )
        )
    return jobs


def _jobs_from_sacct(t0: float) -> list[SlurmJob]:
    start = time.strftime(_SLURM_TIME, time.localtime(math.floor(t0) - 60))
    proc = _run(
        [
            "sacct", "-n", "-X", "-P", "-S", start,
            "-o", "JobIDRaw,JobName,State,Submit,Start,End,ExitCode",
        ],
        timeout=20,
    )  # fmt: skip
    if proc is None or proc.returncode != 0:
        return []
    jobs = []
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) != 7:
            continue
        try:
            job_id = int(parts[0])
        except ValueError:
            continue
        jobs.append(
            SlurmJob(
                job_id=job_id,
                name=parts[1],
                state=parts[2],
                submit_time=parse_slurm_time(parts[3]),
                start_time=parse_slurm_time(parts[4]),
                end_time=parse_slurm_time(parts[5]),
                exit_code=parts[6],
                source="sacct",
            )
        )
    return jobs


def submitted_jobs_since(t0: float, name: str | None = None) -> list[SlurmJob]:
    """Jobs submitted at or after ``t0`` (POSIX seconds, e.g. ``time.time()`` before the action).

    ``name``: keep only jobs with this job name (dask-jobqueue names its jobs ``dask-worker``
    unless ``job_name`` is given). Returns one entry per job id, sorted by id; finished jobs
    carry their final state (from sacct or the jobcomp file), queued/running ones their squeue
    state.
    """
    floor_t0 = math.floor(t0)
    by_id: dict[int, SlurmJob] = {}
    # Later sources override earlier ones; final records (sacct, jobcomp) come last.
    sources: list[Iterable[SlurmJob]] = [_jobs_from_squeue(), _jobs_from_jobcomp()]
    if sacct_works():
        sources.append(_jobs_from_sacct(t0))
    for jobs in sources:
        for job in jobs:
            if job.submit_time is None or job.submit_time < floor_t0:
                continue
            if name is not None and job.name != name:
                continue
            previous = by_id.get(job.job_id)
            if previous is not None and previous.finished and not job.finished:
                continue
            by_id[job.job_id] = job
    return [by_id[k] for k in sorted(by_id)]


def wait_for_jobs(
    t0: float,
    predicate: Callable[[list[SlurmJob]], bool],
    *,
    name: str | None = None,
    timeout: float = 60.0,
    poll: float = 0.5,
) -> list[SlurmJob]:
    """Poll :func:`submitted_jobs_since` until ``predicate(jobs)`` holds; return those jobs.

    Raises ``TimeoutError`` (with the last list seen) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        jobs = submitted_jobs_since(t0, name=name)
        if predicate(jobs):
            return jobs
        if time.monotonic() > deadline:
            raise TimeoutError(f"SLURM jobs did not reach the expected state in {timeout}s: {jobs}")
        time.sleep(poll)


def job_record(job_id: int, since: float | None = None) -> SlurmJob | None:
    """The latest record of one job (sacct/jobcomp when finished, else squeue), or None.

    Job ids restart at 1 when slurmctld's state directory is wiped, so an old record can carry
    the same id: pass ``since`` (POSIX seconds at or before the submission) to ignore records
    of jobs submitted earlier. Among several matching records the most recently submitted and,
    for the same submission, the most final one wins.
    """
    floor_since = None if since is None else math.floor(since)
    candidates: list[SlurmJob] = []
    sources = [_jobs_from_squeue(), _jobs_from_jobcomp()]
    if sacct_works():
        sources.append(_jobs_from_sacct(time.time() - 86400 if since is None else since))
    for jobs in sources:
        for job in jobs:
            if job.job_id != job_id:
                continue
            if floor_since is not None and (job.submit_time or 0) < floor_since:
                continue
            candidates.append(job)
    if not candidates:
        return None
    return max(candidates, key=lambda j: (j.submit_time or 0, j.finished))


def wait_job_finished(
    job_id: int, since: float | None = None, timeout: float = 60.0, poll: float = 0.5
) -> SlurmJob:
    """Wait until a job has a final state; return its record. ``TimeoutError`` otherwise.

    ``since``: as in :func:`job_record` (recommended: ``time.time()`` taken before sbatch).
    """
    deadline = time.monotonic() + timeout
    while True:
        job = job_record(job_id, since=since)
        if job is not None and job.finished:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"SLURM job {job_id} not finished after {timeout}s: {job}")
        time.sleep(poll)


def sbatch(*args: str, cwd: str | os.PathLike[str] | None = None) -> int:
    """Submit with ``sbatch --parsable ARGS...`` and return the job id."""
    proc = subprocess.run(
        ["sbatch", "--parsable", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
    return int(proc.stdout.strip().split(";")[0])
