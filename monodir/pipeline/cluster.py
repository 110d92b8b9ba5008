"""Dask clusters: a LocalCluster, a dask-jobqueue SLURMCluster, or an existing scheduler.

:func:`open_cluster` is a context manager yielding a :class:`ClusterHandle` (client, the
cluster object when we started it, and how tasks should ask for worker threads). Everything
that can be checked without starting anything is checked by :func:`check_cluster_config`,
which the runner calls before any file is written.

Threads. Each heavy task (MonoRes, one direction, ...) runs FFTs with as many FFTW threads
as its worker has. To keep a worker from running several such tasks at once (which would
oversubscribe the cores and multiply the memory), the workers we start get one unit of the
abstract resource ``monodir`` and every heavy task asks for it. Workers of a scheduler we
only connect to (``kind: address``) may not have that resource; then tasks run as many at
a time as the worker has threads, each with ``run.threads`` (default 1) FFT threads.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monodir.config import ADDRESS_KEYS, LOCAL_KEYS, SLURM_KEYS, ClusterConfig
from monodir.errors import InputError

__all__ = [
    "RESOURCE",
    "ClusterHandle",
    "JobKeeper",
    "check_cluster_config",
    "ignored_keys",
    "local_cluster_kwargs",
    "memory_advice",
    "open_cluster",
    "slurm_cluster_kwargs",
    "worker_memory_limit",
]

log = logging.getLogger(__name__)

#: Abstract worker resource held by one heavy monodir task at a time.
RESOURCE = "monodir"


@dataclass
class ClusterHandle:
    """A connected Dask client and what the pipeline needs to know about its workers.

    Attributes
    ----------
    client
        The ``distributed.Client``.
    cluster
        The cluster object we started (``None`` for ``kind: address``).
    kind
        ``"local"``, ``"slurm"`` or ``"address"``.
    resources
        Task resource restriction for heavy tasks (``{"monodir": 1}``) or ``None``.
    threads
        FFT threads per heavy task: ``None`` = the executing worker's thread count.
    description
        One line for the log.
    dashboard
        Whether the scheduler serves the dashboard (``cluster.dashboard`` not null).
    """

    client: Any
    cluster: Any
    kind: str
    resources: dict[str, float] | None = None
    threads: int | None = None
    description: str = ""
    dashboard: bool = True

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard URL (``.../status``) or ``None`` when there is none."""
        if not self.dashboard:
            return None
        try:
            link = self.client.dashboard_link
        except Exception:  # pragma: no cover - no dashboard
            return None
        return link or None


# --------------------------------------------------------------------------------------------
# keyword arguments
# --------------------------------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def local_cluster_kwargs(cfg: ClusterConfig) -> dict[str, Any]:
    """Keyword arguments of ``distributed.LocalCluster`` for a ``kind: local`` config.

    By default the machine's cores are split into single-threaded worker processes, so
    ``n_workers * threads_per_worker <= cores``.
    """
    cores = _cpu_count()
    threads = cfg.threads_per_worker or 1
    n_workers = cfg.n_workers or max(1, cores // threads)
    if n_workers * threads > cores:
        log.warning(
            "cluster: %d workers x %d threads exceed the %d cores of this machine",
            n_workers,
            threads,
            cores,
        )
    kwargs: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": threads,
        "processes": True,
        "dashboard_address": cfg.dashboard,
        "resources": {RESOURCE: 1},
    }
    if cfg.dashboard is None:  # no dashboard, and no HTTP server on the default port either
        kwargs["dashboard_address"] = ":0"
        kwargs["scheduler_kwargs"] = {"dashboard": False}
    return kwargs


def _pythonpath_prologue() -> list[str]:
    """Make a source-tree monodir importable in batch jobs that do not inherit our env."""
    import monodir

    root = Path(monodir.__file__).resolve().parent.parent
    if any(part in ("site-packages", "dist-packages") for part in root.parts):
        return []
    return [f'export PYTHONPATH="{root}${{PYTHONPATH:+:$PYTHONPATH}}"']


def slurm_cluster_kwargs(cfg: ClusterConfig) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for a ``kind: slurm`` config.

    Keys left unset in the config are not passed, so dask-jobqueue falls back to
    ``~/.config/dask/jobqueue.yaml``. The workers get the ``monodir`` resource (see the
    module docstring) and, when monodir runs from a source tree, a ``PYTHONPATH`` line.
    """
    import dask.config

    def conf(key: str) -> Any:
        return dask.config.get(f"jobqueue.slurm.{key}", None)

    kwargs: dict[str, Any] = {}
    for key in (
        "cores",
        "memory",
        "processes",
        "walltime",
        "queue",
        "account",
        "interface",
        "local_directory",
        "python",
        "death_timeout",
    ):
        value = getattr(cfg, key)
        if value is not None:
            kwargs[key] = value
    if cfg.log_directory is not None:
        kwargs["log_directory"] = str(cfg.log_directory)
    if cfg.job_extra_directives:
        kwargs["job_extra_directives"] = list(cfg.job_extra_directives)
    extra = list(cfg.worker_extra_args or conf("worker-extra-args") or [])
    if "--resources" not in extra:
        extra += ["--resources", f"{RESOURCE}=1"]
    kwargs["worker_extra_args"] = extra
    prologue = list(cfg.job_script_prologue or conf("job-script-prologue") or [])
    kwargs["job_script_prologue"] = prologue + _pythonpath_prologue()
    scheduler_options = dict(conf("scheduler-options") or {})
    scheduler_options.update(cfg.scheduler_options)
    if cfg.dashboard is not None:
        scheduler_options.setdefault("dashboard_address", cfg.dashboard)
    else:
        scheduler_options.setdefault("dashboard", False)
        scheduler_options.setdefault("dashboard_address", ":0")
    kwargs["scheduler_options"] = scheduler_options
    return kwargs


def _slurm_value(cfg: ClusterConfig, key: str) -> Any:
    import dask.config

    value = getattr(cfg, key)
    if value is None:
        value = dask.config.get(f"jobqueue.slurm.{key.replace('_', '-')}", None)
    return value


def worker_memory_limit(cfg: ClusterConfig) -> tuple[int | None, int]:
    """Memory (bytes) of one worker and the number of concurrent heavy tasks on it.

    ``(None, 1)`` when unknown (``kind: address``).
    """
    from dask.utils import parse_bytes

    if cfg.kind == "local":
        kw = local_cluster_kwargs(cfg)
        return int(_machine_memory() // kw["n_workers"]), 1
    if cfg.kind == "slurm":
        memory = _slurm_value(cfg, "memory")
        processes = _slurm_value(cfg, "processes") or 1
        if memory is None:
            return None, 1
        return int(parse_bytes(str(memory)) // int(processes)), 1
    return None, 1


def _machine_memory() -> int:
    """Memory a LocalCluster shares between its workers (``memory_limit="auto"``).

    Dask's own figure: the machine's memory, or less under a cgroup or rlimit.
    """
    try:
        from distributed.system import MEMORY_LIMIT

        return int(MEMORY_LIMIT)
    except ImportError:  # pragma: no cover - distributed is a dependency
        import psutil

        return int(psutil.virtual_memory().total)


def memory_advice(cfg: ClusterConfig, need_bytes: int) -> str:
    """What to change in the ``cluster`` section so that one worker gets ``need_bytes``.

    The second half of the message of :func:`monodir.io.validate.check_memory`.
    """
    gib = 2.0**30
    if cfg.kind == "local":
        total = _machine_memory()
        fits = total // max(1, int(need_bytes))
        if fits >= 1:
            return (
                f"each local worker gets an equal share of this machine's {total / gib:.1f} GiB, "
                f"so set cluster.n_workers to at most {fits} (or run on SLURM with "
                "cluster.kind: slurm and enough cluster.memory per job)"
            )
        return (
            f"this machine has only {total / gib:.1f} GiB; run on a larger machine or on "
            f"SLURM (cluster.kind: slurm, cluster.memory of at least {need_bytes / gib:.1f}GiB "
            "per worker process)"
        )
    processes = int(_slurm_value(cfg, "processes") or 1)
    job = math.ceil(need_bytes * processes / gib)
    return (
        f"give each job at least {job}GiB (cluster.memory, shared by its {processes} worker "
        "process(es)) or run fewer worker processes per job (cluster.processes)"
    )


def ignored_keys(cfg: ClusterConfig) -> list[str]:
    """Keys of ``cfg`` given a non-default value but unused by its ``kind``."""
    from dataclasses import fields

    used = {"kind", "dashboard"} | set(
        {"local": LOCAL_KEYS, "slurm": SLURM_KEYS, "address": ADDRESS_KEYS}[cfg.kind]
    )
    default = ClusterConfig()
    return [
        f.name
        for f in fields(cfg)
        if f.name not in used and getattr(cfg, f.name) != getattr(default, f.name)
    ]


def _check_address(address: str) -> None:
    """Refuse a ``cluster.scheduler`` that is not a Dask address (``tcp://host:port``)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"cluster.scheduler: {address!r} is not a scheduler address ({exc}); write e.g. "
            "tcp://host:8786"
        ) from None


def check_cluster_config(cfg: ClusterConfig) -> None:
    """Check what can be checked about the cluster without starting it.

    Raises
    ------
    InputError
        SLURM without ``cores``/``memory`` (in the config or jobqueue.yaml), a malformed or
        non-positive memory size, more ``processes`` than ``cores``; a malformed scheduler
        address.

    Keys set for another kind of cluster (e.g. ``n_workers`` with ``kind: slurm``) are
    ignored with a warning.
    """
    for key in ignored_keys(cfg):
        log.warning("cluster.%s is ignored with cluster.kind: %s", key, cfg.kind)
    if cfg.kind == "address":
        _check_address(str(cfg.scheduler))
    if cfg.kind != "slurm":
        return
    from dask.utils import parse_bytes

    for key in ("cores", "memory"):
        if _slurm_value(cfg, key) is None:
            raise InputError(
                f"cluster.{key}: required with cluster.kind: slurm (or set jobqueue.slurm."
                f"{key} in ~/.config/dask/jobqueue.yaml)"
            )
    memory = _slurm_value(cfg, "memory")
    try:
        size = parse_bytes(str(memory))
    except (ValueError, TypeError, OverflowError):
        raise InputError(
            f"cluster.memory: cannot read {memory!r} as a size; write e.g. 16GiB"
        ) from None
    if size <= 0:
        raise InputError(f"cluster.memory: {memory!r} is not a positive size; write e.g. 16GiB")
    cores = int(_slurm_value(cfg, "cores"))
    processes = int(_slurm_value(cfg, "processes") or 1)
    if processes > cores:
        raise InputError(
            f"cluster.processes: {processes} worker processes per job but only {cores} cores"
        )
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:  # pragma: no cover - it is a dependency
        raise InputError("cluster.kind: slurm needs the dask-jobqueue package") from None


# --------------------------------------------------------------------------------------------
# replacing lost SLURM jobs
# --------------------------------------------------------------------------------------------


class JobKeeper:
    """Resubmit SLURM worker jobs that end while the run still needs them.

    dask-jobqueue does not do this itself: its cluster keeps the lost job's entry in its
    worker plan, so ``cluster.scale(jobs=N)`` and ``cluster.adapt(...)`` both believe they
    still have it (``distributed.deploy.SpecCluster`` only forgets the job's process handle
    after ``distributed.deploy.lost-worker-timeout`` and never starts a new one). A job can
    end early when it is cancelled (``scancel``), preempted, killed at its time limit, its
    node fails, or its workers retire on their own (``--lifetime``).

    Every ``interval`` seconds, on the cluster's event loop, a job whose workers were
    connected once and have all been gone for longer than the lost-worker timeout is
    cancelled (in case it is still queued or hanging) and the same entry of the plan is
    started again: a new ``sbatch``. A job that never connected is left alone (it may still
    be waiting in the queue, or be broken, which resubmitting would not fix). The tasks the
    lost workers were running are retried on the others by Dask itself.

    Connections are recorded by a plugin on the cluster's own scheduler as they happen, so a
    job whose workers came and went between two checks (cancelled within a second or two of
    starting) is replaced too; polling alone missed it and the run waited for ever.

    Parameters
    ----------
    cluster
        A running ``dask_jobqueue.SLURMCluster`` (any ``SpecCluster``).
    interval
        Seconds between checks.
    grace
        Seconds a job's workers must have been gone; default
        ``distributed.deploy.lost-worker-timeout`` (15 s).
    """

    def __init__(self, cluster: Any, *, interval: float = 2.0, grace: float | None = None) -> None:
        import threading

        import dask.config
        from dask.utils import parse_timedelta

        self.cluster = cluster
        self.interval = float(interval)
        if grace is None:
            grace = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
        self.grace = float(grace or 0.0)
        self.replaced: list[str] = []
        self._seen: set[str] = set()
        #: names of the workers that have connected since their job was (re)started
        self._connected_once: set[str] = set()
        self._missing_since: dict[str, float] = {}
        self._tasks: set[Any] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monodir-job-keeper", daemon=True)

    def start(self) -> JobKeeper:
        """Start checking (returns self)."""
        scheduler = getattr(self.cluster, "scheduler", None)
        if scheduler is not None and hasattr(scheduler, "add_plugin"):
            self.cluster.loop.add_callback(self._watch, scheduler)
        self._thread.start()
        return self

    def _watch(self, scheduler: Any) -> None:
        """Record every worker that connects to ``scheduler`` (on its event loop)."""
        from distributed.diagnostics.plugin import SchedulerPlugin

        keeper = self

        class _Connections(SchedulerPlugin):
            def add_worker(self, scheduler: Any, worker: str) -> None:
                state = scheduler.workers.get(worker)
                if state is not None:
                    keeper._connected_once.add(str(state.name))

        for state in list(scheduler.workers.values()):  # those that came first
            self._connected_once.add(str(state.name))
        scheduler.add_plugin(_Connections(), name="monodir-job-keeper")

    def stop(self) -> None:
        """Stop checking (before the cluster is closed)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5 * self.interval)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.cluster.loop.add_callback(self.check)
            except Exception:  # pragma: no cover - loop closed under us
                return

    def check(self) -> list[str]:
        """One check, on the cluster's event loop; return the names of the jobs replaced."""
        import asyncio
        import time

        from distributed.core import Status

        cluster = self.cluster
        if self._stop.is_set() or cluster.status != Status.running:
            return []
        workers = (cluster.scheduler_info or {}).get("workers", {})
        connected = {str(w.get("name")) for w in workers.values()}
        now = time.monotonic()
        lost = []
        for job, spec in list(cluster.worker_spec.items()):
            job = str(job)
            group = spec.get("group") if isinstance(spec, dict) else None
            names = {job + str(sfx) for sfx in group} if group else {job}
            if names & connected:
                self._seen.add(job)
                self._missing_since.pop(job, None)
                continue
            if job not in self._seen and not names & self._connected_once:
                continue  # never connected: queued, starting, or broken
            since = self._missing_since.setdefault(job, now)
            if now - since >= self.grace:
                lost.append(job)
                self._connected_once -= names  # the replacement has not connected yet
        if not lost:
            return []
        for job in lost:
            self._seen.discard(job)
            self._missing_since.pop(job, None)
            old = cluster.workers.pop(job, None)
            if old is not None:  # cancel it, in case it is still queued or hanging
                task = asyncio.ensure_future(old.close())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        self.replaced += lost
        log.warning(
            "SLURM: worker job(s) %s ended before the run did (cancelled, failed, time limit "
            "or --lifetime); submitting replacement(s)",
            ", ".join(lost),
        )
        # same number of jobs: starts a new job for every planned entry without one
        cluster.scale(jobs=len(cluster.worker_spec))
        return lost


# --------------------------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------------------------


def _all_workers_have_resource(client: Any) -> bool:
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return bool(workers) and all(RESOURCE in (w.get("resources") or {}) for w in workers.values())


@contextmanager
def open_cluster(cfg: ClusterConfig, *, threads: int | None = None) -> Iterator[ClusterHandle]:
    """Start (or connect to) the configured cluster; close what we started on exit.

    Parameters
    ----------
    cfg
        The ``cluster`` config section.
    threads
        ``run.threads``: FFT threads per heavy task (``None`` = worker threads).

    Yields
    ------
    ClusterHandle
    """
    from distributed import Client

    keeper: JobKeeper | None = None
    if cfg.kind == "local":
        from distributed import LocalCluster

        kwargs = local_cluster_kwargs(cfg)
        cluster = LocalCluster(silence_logs=logging.WARNING, **kwargs)
        desc = (
            f"local cluster: {kwargs['n_workers']} worker process(es) x "
            f"{kwargs['threads_per_worker']} thread(s)"
        )
        handle_kwargs: dict[str, Any] = {"resources": {RESOURCE: 1}, "threads": threads}
    elif cfg.kind == "slurm":
        from dask_jobqueue import SLURMCluster

        kwargs = slurm_cluster_kwargs(cfg)
        cluster = SLURMCluster(**kwargs)
        if cfg.adapt is not None:
            cluster.adapt(minimum_jobs=cfg.adapt.minimum, maximum_jobs=cfg.adapt.maximum)
            scale = f"adaptive {cfg.adapt.minimum}-{cfg.adapt.maximum} job(s)"
        else:
            cluster.scale(jobs=cfg.jobs or 1)
            scale = f"{cfg.jobs or 1} job(s)"
        log.debug("SLURM job script:\n%s", cluster.job_script())
        keeper = JobKeeper(cluster).start()
        cores = kwargs.get("cores", _slurm_value(cfg, "cores"))
        desc = f"SLURM cluster: {scale} of {cores} core(s); lost jobs are resubmitted"
        handle_kwargs = {"resources": {RESOURCE: 1}, "threads": threads}
    elif cfg.kind == "address":
        cluster = None
        desc = f"scheduler at {cfg.scheduler}"
        handle_kwargs = {}
    else:  # pragma: no cover - validated in config
        raise InputError(f"cluster.kind: unknown kind {cfg.kind!r}")

    client = None
    try:
        if cluster is not None:
            client = Client(cluster)
        else:
            try:
                client = Client(cfg.scheduler)
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(
                    f"cluster.scheduler: cannot reach a Dask scheduler at {cfg.scheduler} "
                    f"({' '.join(str(exc).split())}); start it (dask scheduler) or fix the "
                    "address"
                ) from None
        if cfg.kind == "address":
            if _all_workers_have_resource(client):
                handle_kwargs = {"resources": {RESOURCE: 1}, "threads": threads}
            else:
                handle_kwargs = {"resources": None, "threads": threads or 1}
        yield ClusterHandle(
            client=client,
            cluster=cluster,
            kind=cfg.kind,
            description=desc,
            dashboard=cfg.dashboard is not None or cfg.kind == "address",
            **handle_kwargs,
        )
    finally:
        if keeper is not None:
            keeper.stop()
        if client is not None:
            with suppress(Exception):
                client.close()
        if cluster is not None:
            with suppress(Exception):
                cluster.close()
