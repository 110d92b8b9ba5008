"""``monodir run``: validate, stage, compute on a Dask cluster, export.

:func:`run_pipeline` is the whole run:

1. load and validate the inputs (:func:`load_inputs`) and the cluster settings, and decide
   what to do with an existing run directory: all before anything is written or started;
2. stage the inputs into ``<output>/run.zarr`` (or reopen it to resume);
3. start the cluster, print ``Dashboard: <link>``;
4. MonoRes (one task) and ``prepare_directional`` (one task) run side by side; then one task
   per direction (or per ``run.batch_size`` directions) that is not yet marked done in the
   store; then the reduction over voxel blocks and the finalisation (see
   :mod:`monodir.pipeline.graph`);
5. export the MRC maps (with the input's voxel size, origin and start indices), tables,
   figures and report; set the store's status to ``complete``, last.

A run killed at any point resumes with the same command: finished directions (and a finished
MonoRes) are read back from the store instead of being recomputed, and since every row is
computed by a deterministic kernel and the reduction order is fixed, the outputs are the
same as those of an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monodir.config import Config
from monodir.errors import InputError
from monodir.io.store import STORE_NAME, RunStore, array_digest, row_chunk
from monodir.pipeline import graph
from monodir.pipeline.cluster import (
    ClusterHandle,
    check_cluster_config,
    memory_advice,
    open_cluster,
    worker_memory_limit,
)
from monodir.pipeline.progress import Progress, track

if TYPE_CHECKING:
    from monodir.io.mrc import MapInfo

__all__ = [
    "MRC_OUTPUTS",
    "Inputs",
    "export_outputs",
    "load_inputs",
    "regenerate_outputs",
    "remove_outputs",
    "run_pipeline",
]

log = logging.getLogger(__name__)

#: output file name -> (store array, description)
MRC_OUTPUTS: dict[str, str] = {
    "monores_resolution.mrc": "monores/resolution",
    "monores_chimera.mrc": "monores/chimera",
    "radial_resolution.mrc": "maps/radial",
    "azimuthal_resolution.mrc": "maps/azimuthal",
    "highest_resolution.mrc": "maps/highest",
    "lowest_resolution.mrc": "maps/lowest",
    "doa.mrc": "maps/doa",
    "mean_doa.mrc": "maps/mean_doa",
    "anisotropy.mrc": "maps/anisotropy",
    "zscore.mrc": "maps/zscore",
}


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """The validated inputs of a run, in memory.

    Attributes
    ----------
    volumes
        ``{"map": ...}`` or ``{"half1": ..., "half2": ...}``, float32 ``[z, y, x]``.
    mask
        Binarised protein mask.
    exclusion_mask
        Binarised exclusion mask, or ``None``.
    voxel_size, origin, nstart
        Grid of the (first) map; the outputs get the same.
    files
        The input files by config key.
    warnings
        Non-fatal remarks from reading and checking.
    """

    volumes: dict[str, np.ndarray]
    mask: np.ndarray
    exclusion_mask: np.ndarray | None
    voxel_size: float
    origin: tuple[float, float, float]
    nstart: tuple[int, int, int]
    files: dict[str, Path]
    warnings: list[str] = field(default_factory=list)
    noise: Any = None
    shape: tuple[int, ...] = ()
    half_maps: bool = False

    def __post_init__(self) -> None:
        if self.volumes:
            self.shape = tuple(int(s) for s in next(iter(self.volumes.values())).shape)
            self.half_maps = "half1" in self.volumes

    def digest(self) -> str:
        """Digest of all staged data (used to decide whether a run can resume)."""
        arrays = [self.volumes[k] for k in sorted(self.volumes)]
        return array_digest(*arrays, self.mask, self.exclusion_mask)

    def describe(self) -> list[str]:
        """Lines for ``monodir validate``."""
        n = self.shape
        lines = [f"{key}: {path}" for key, path in self.files.items()]
        lines.append(
            f"box {n[2]}x{n[1]}x{n[0]} voxels, {self.voxel_size:g} Å/voxel, "
            f"{'two half maps' if self.half_maps else 'single map'}"
        )
        lines.append(f"mask: {int(self.mask.sum())} voxels")
        if self.exclusion_mask is not None:
            lines.append(f"exclusion mask: {int(self.exclusion_mask.sum())} voxels")
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


def load_inputs(config: Config) -> Inputs:
    """Read and validate every input file of ``config`` (nothing is written).

    Raises
    ------
    InputError
        Missing or unreadable file, inconsistent grids, bad mask, box too small, no noise
        region, not enough memory, bad cluster settings.
    """
    from monodir.io import validate
    from monodir.io.mrc import read_map

    config.check_files()
    check_cluster_config(config.cluster)  # cheap: before reading any map
    inp = config.input
    vs = inp.voxel_size
    warnings: list[str] = []
    if inp.half_maps is not None:
        h1 = read_map(inp.half_maps[0], role="half map 1", voxel_size=vs)
        h2 = read_map(inp.half_maps[1], role="half map 2", voxel_size=vs)
        warnings += validate.check_half_maps(h1, h2) or []
        ref = h1
        volumes = {"half1": h1.data, "half2": h2.data}
    else:
        ref = read_map(inp.map, role="map", voxel_size=vs)
        volumes = {"map": ref.data}
    warnings += list(ref.warnings)
    mask_info = _read_mask(inp.mask, "mask", vs, ref, warnings)
    warnings += validate.check_same_grid(ref, mask_info) or []
    mask = validate.binarize_mask(mask_info, inp.mask_threshold)
    excl = None
    if inp.exclusion_mask is not None:
        excl_info = _read_mask(inp.exclusion_mask, "exclusion mask", vs, ref, warnings)
        warnings += validate.check_same_grid(ref, excl_info) or []
        excl = validate.binarize_mask(excl_info, 0.5 if inp.mask_threshold is None else None)
    validate.check_box(ref.shape, ref.voxel_size, config.monores.low_resolution, name=ref.name)
    noise = validate.check_noise_region(mask, single_map=inp.half_maps is None, name=mask_info.name)
    limit, concurrent = worker_memory_limit(config.cluster)
    if limit is not None:
        need = validate.estimate_memory(ref.shape, threads=concurrent)
        validate.check_memory(
            ref.shape, limit, threads=concurrent, fix=memory_advice(config.cluster, need)
        )
    return Inputs(
        volumes=volumes,
        mask=np.asarray(mask, bool),
        exclusion_mask=None if excl is None else np.asarray(excl, bool),
        voxel_size=float(ref.voxel_size),
        origin=tuple(float(v) for v in ref.origin),  # type: ignore[arg-type]
        nstart=tuple(int(v) for v in ref.nstart),  # type: ignore[arg-type]
        files=dict(config.input.files),
        warnings=warnings,
        noise=noise,
    )


def _read_mask(
    path: Path, role: str, voxel_size: float | None, ref: MapInfo, warnings: list[str]
) -> MapInfo:
    """Read a mask on the map's grid.

    With ``input.voxel_size`` set, that value applies to every input file (the user vouches
    for it; a header that says otherwise is only a warning). Without it, a mask whose header
    gives a different voxel size from the map's is refused: it was made for another grid. A
    mask header without any voxel size (0, as some tools write) takes the map's, with a
    warning.
    """
    import math

    from monodir.io.mrc import VOXEL_SIZE_RTOL, read_map

    info = read_map(path, role=role, voxel_size=voxel_size or ref.voxel_size)
    notes = [w for w in info.warnings if "from the config overrides" not in w]
    header = [h for h in info.header_voxel_size if h > 0]
    shown = " x ".join(f"{h:g}" for h in info.header_voxel_size)
    if voxel_size is not None:
        if any(not math.isclose(h, voxel_size, rel_tol=VOXEL_SIZE_RTOL) for h in header):
            notes.append(
                f"{info.name}: header voxel size {shown} A ignored; input.voxel_size "
                f"{voxel_size:g} A is used for every input file"
            )
    elif not header:
        notes.append(f"{info.name}: no voxel size in the header; using the {ref.role}'s")
    elif any(not math.isclose(h, ref.voxel_size, rel_tol=VOXEL_SIZE_RTOL) for h in header):
        raise InputError(
            f"{info.name} has voxel size {shown} A in its header but {ref.name} has "
            f"{ref.voxel_size:g} A: the {role} was made for another grid; resample it onto the "
            f"{ref.role}'s grid, or set input.voxel_size if a header is wrong"
        )
    warnings += notes
    return info


# --------------------------------------------------------------------------------------------
# run directory
# --------------------------------------------------------------------------------------------


#: Lock file in the output directory, held (``flock``) by the driver for the whole run.
LOCK_NAME = ".monodir.lock"


@contextmanager
def lock_run_directory(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a run directory, so two drivers never share one.

    The lock is an ``flock`` on ``<out_dir>/.monodir.lock`` (which names the holder): the
    operating system releases it when the driver exits, however it exits, so a killed run
    never leaves a stale lock behind. On a file system without ``flock`` support the run goes
    ahead with a warning.

    Raises
    ------
    InputError
        Another process holds the lock.
    """
    import fcntl
    import socket

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_NAME
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = " ".join(fh.read().split()) or "unknown process"
            raise InputError(
                f"output.directory: {out_dir} is in use by another monodir run ({holder}); "
                "wait for it to finish or choose another directory"
            ) from None
        except OSError as exc:
            log.warning(
                "cannot lock %s (%s); make sure no other run uses this directory", path, exc
            )
        else:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            fh.flush()
        yield


def _finished_files(out_dir: Path) -> list[str]:
    """Names of final output files present in ``out_dir``."""
    if not out_dir.is_dir():
        return []
    return [name for name in (*REPORT_FILES, *MRC_OUTPUTS) if (out_dir / name).exists()]


def open_run_store(
    config: Config,
    inputs: Inputs,
    argv: Sequence[str] | None,
    *,
    stack: ExitStack | None = None,
) -> tuple[RunStore, bool]:
    """Create the run store, or reopen an interrupted run of the same problem.

    Every decision is taken before the first write, so a refusal changes nothing on disk.
    Final output files of an interrupted attempt (written before it died) are deleted when
    it resumes, so that no file looks finished before the run is.

    Parameters
    ----------
    config, inputs
        The run.
    argv
        The command line (recorded).
    stack
        When given, the directory lock (:func:`lock_run_directory`) is taken right before the
        first write and held until the stack closes.

    Returns
    -------
    (store, resumed)

    Raises
    ------
    InputError
        The directory holds a complete run, or final output files without a run store
        (both only without ``output.overwrite``), or a run of a different problem, or an
        unreadable store, or another driver is using it.
    """
    out_dir = config.output.directory
    store_path = out_dir / STORE_NAME
    numeric = config.numeric_dict()
    digest = inputs.digest()
    overwrite = config.output.overwrite
    resumed = False
    store: RunStore | None = None
    remove_previous = False
    if store_path.exists() and not RunStore.exists(store_path) and store_path.is_dir():
        # killed while the store was being created: nothing in it is of any use
        if not any(store_path.rglob("zarr.json")):
            log.warning("removing %s, left empty by an interrupted run", store_path)
            remove_previous = True
    if store_path.exists() and not remove_previous:
        try:
            existing = RunStore.open(store_path)
            status = existing.status
        except Exception as exc:
            if not overwrite:
                raise InputError(
                    f"output.directory: {out_dir} holds an unreadable run store ({exc}); "
                    "use output.overwrite: true or another directory"
                ) from None
            existing, status = None, "unreadable"
        if status == "complete":
            if not overwrite:
                raise InputError(
                    f"output.directory: {out_dir} already holds a complete run; use "
                    "output.overwrite: true or another directory"
                )
            existing = None
        elif existing is not None:
            try:
                existing.check_resumable(numeric, digest)
                store, resumed = existing, True
            except InputError:
                if not overwrite:
                    raise
                existing = None
        remove_previous = store is None
    elif not remove_previous and (found := _finished_files(out_dir)):
        if not overwrite:
            raise InputError(
                f"output.directory: {out_dir} already holds output files ({', '.join(found[:3])}"
                f"{', ...' if len(found) > 3 else ''}) but no {STORE_NAME}; use "
                "output.overwrite: true or another directory"
            )
        remove_previous = True

    # -- from here on, files are written --
    if stack is not None:
        stack.enter_context(lock_run_directory(out_dir))
    if remove_previous:
        log.info("removing the previous run in %s", out_dir)
        RunStore.remove(store_path)
        remove_outputs(out_dir)
    elif resumed and (stale := _finished_files(out_dir)):
        log.info("removing %d output file(s) of the interrupted attempt", len(stale))
        remove_outputs(out_dir)
    if store is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        store = RunStore.create(
            store_path,
            attrs={
                "voxel_size": inputs.voxel_size,
                "origin": list(inputs.origin),
                "nstart": list(inputs.nstart),
                "shape": list(inputs.shape),
                "config": config.to_dict(),
                "numeric_config": numeric,
                "input_digest": digest,
                "input_files": {k: str(v) for k, v in inputs.files.items()},
                "command_line": list(argv or []),
                "config_file": str(config.source) if config.source else None,
            },
        )
    attempts = int(store.attrs.get("attempts", 0)) + 1
    store.update_attrs(
        attempts=attempts,
        status="running",
        command_line=list(argv or []),
        config=config.to_dict(),
    )
    return store, resumed


def stage_inputs(store: RunStore, inputs: Inputs) -> None:
    """Write the inputs into ``inputs/`` (skipped for arrays already there)."""
    for name, volume in inputs.volumes.items():
        if not store.has(f"inputs/{name}"):
            store.write_array(f"inputs/{name}", np.asarray(volume, np.float32))
    if not store.has("inputs/mask"):
        store.write_array("inputs/mask", inputs.mask)
    if inputs.exclusion_mask is not None and not store.has("inputs/exclusion_mask"):
        store.write_array("inputs/exclusion_mask", inputs.exclusion_mask)


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------


class _Timer:
    """Per-stage wall times, logged and recorded in the store."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.times: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.times[name] = dt
        log.info("stage %s: %.2f s", name, dt)
        self.store.record_timing(name, dt)


#: Times a task that raised is tried again (a transient error such as a file-system hiccup
#: while writing the store; every task is idempotent). A task whose *worker* dies is
#: rescheduled by Dask independently of this, up to ``distributed.scheduler.allowed-failures``
#: (default 3) times, and the nanny (local) or the job keeper (SLURM) replaces the worker.
RETRIES = 1


def _submit_kwargs(handle: ClusterHandle) -> dict[str, Any]:
    return {"resources": handle.resources} if handle.resources else {}


def compute(
    handle: ClusterHandle,
    store: RunStore,
    config: Config,
    inputs: Inputs,
    timer: _Timer,
    *,
    kernels: str | None = None,
) -> None:
    """Run MonoRes, the direction tasks and the reduction on the cluster."""
    client = handle.client
    opts = graph.TaskOptions(
        store=graph.store_path_of(store.path),
        kernels=kernels,
        threads=handle.threads,
        params=graph.kernel_params(config, inputs.voxel_size),
    )
    heavy = _submit_kwargs(handle)
    tag = f"{os.getpid()}-{int(time.time() * 1000) % 10**9}"

    if store.has_monores():
        log.info("MonoRes: already done (resumed)")
        monores_future = None
    else:
        monores_future = client.submit(
            graph.monores_task, opts, key=f"monores-{tag}", pure=False, retries=RETRIES, **heavy
        )
    with timer.stage("prepare"):
        setup = client.submit(
            graph.prepare_task, opts, key=f"prepare-{tag}", pure=False, retries=RETRIES, **heavy
        )
        info = client.submit(graph.setup_info, setup, key=f"setup-info-{tag}").result()
    n_dir, n_mask = info["n_directions"], info["n_mask"]
    width = row_chunk(min(n_mask, config.run.reduce_block))
    n_done, _ = store.init_directional(n_dir, n_mask, info["mask_digest"], width=width)
    # an interrupted run keeps its chunking; the reduction blocks follow the chunks
    width = int(store.group["directional"].attrs.get("row_chunk", width))
    done = store.done_directions()
    todo = [i for i in range(n_dir) if not done[i]]
    log.info(
        "directions: %d in total, %d already done, %d to compute over %d mask voxels",
        n_dir,
        n_done,
        len(todo),
        n_mask,
    )
    store.update_attrs(n_directions=n_dir, n_mask=n_mask)

    with timer.stage("directions"):
        batch = config.run.batch_size
        batches = [todo[i : i + batch] for i in range(0, len(todo), batch)]
        futures = [
            client.submit(
                graph.cone_task,
                setup,
                b,
                opts,
                key=f"cone-{b[0]:03d}-{tag}",
                pure=False,
                retries=RETRIES,
                **heavy,
            )
            for b in batches
        ]
        with Progress(n_dir, n_done) as progress:
            for result in track(futures, progress):
                log.debug(
                    "directions %s: %.2f s on %s (%d threads)",
                    result["indices"],
                    result["seconds"],
                    result["worker"],
                    result["threads"],
                )
        del futures
    missing = np.flatnonzero(~store.done_directions())
    if missing.size:  # pragma: no cover - would be a bug
        raise RuntimeError(f"directions {missing.tolist()} not marked done")

    if monores_future is not None:
        summary = monores_future.result()
        timer.times["monores"] = summary["seconds"]
        store.record_timing("monores", summary["seconds"])
        log.info(
            "MonoRes: median %.2f Å (%d resolutions tested, %.1f s; %s)",
            summary["median"],
            summary["n_resolutions"],
            summary["seconds"],
            summary["stop_reason"] or "done",
        )

    with timer.stage("reduce"):
        blocks = graph.reduce_blocks(n_mask, width)
        parts = [
            client.submit(
                graph.reduce_task,
                setup,
                s,
                e,
                opts,
                key=f"reduce-{s}-{tag}",
                retries=RETRIES,
                **heavy,
            )
            for s, e in blocks
        ]
        after = [monores_future] if monores_future is not None else []
        final = client.submit(
            graph.finalize_task,
            setup,
            parts,
            [s for s, _ in blocks],
            opts,
            *after,
            key=f"finalize-{tag}",
            pure=False,
            retries=RETRIES,
            **heavy,
        )
        summary = final.result()
        log.info(
            "directional: thresholds %s, anisotropy axis %.1f° from z",
            {k: round(v, 2) for k, v in summary["thresholds"].items()},
            summary["axis_angle_to_z"],
        )
    del parts, final, setup


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def export_outputs(
    store: RunStore, out_dir: Path, *, xmipp_names: bool = False, client: Any = None
) -> list[Path]:
    """Write every output of a finished computation from the store into ``out_dir``.

    MRC maps (with the input's voxel size, origin and start indices), then, through
    :mod:`monodir.report`: ``tables/`` (STAR and CSV), ``figures/`` (PNG), ``summary.json``,
    ``report.html`` and ``colour_by_resolution.cxc``. Every file is written atomically.

    With ``client`` (a local cluster's, whose workers are idle by now) the central-slice
    figures are drawn on the workers while this process writes the rest; every task has
    finished (or failed, and its figures are drawn here) before this returns or raises.
    """
    remote = None
    if client is not None:
        remote = _RemoteFigures.start(client, store, out_dir / "figures")
    try:
        return _export_all(store, out_dir, xmipp_names=xmipp_names, remote=remote)
    finally:
        if remote is not None:
            remote.wait()


def _export_all(
    store: RunStore, out_dir: Path, *, xmipp_names: bool, remote: _RemoteFigures | None
) -> list[Path]:
    from monodir.io.mrc import write_map

    attrs = store.attrs
    voxel_size = float(attrs["voxel_size"])
    origin = tuple(attrs.get("origin") or (0.0, 0.0, 0.0))
    nstart = tuple(attrs.get("nstart") or (0, 0, 0))
    written = []
    for name, key in MRC_OUTPUTS.items():
        if not store.has(key):
            log.warning("no %s in the store; %s not written", key, name)
            continue
        written.append(
            write_map(
                out_dir / name,
                store.read_array(key).astype(np.float32, copy=False),
                voxel_size=voxel_size,
                origin=origin,
                nstart=nstart,
                label=name.removesuffix(".mrc"),
                overwrite=True,
            )
        )
    written += _export_reports(store, out_dir, xmipp_names=xmipp_names, remote=remote)
    return written


@dataclass
class _RemoteFigures:
    """Figures being drawn on the workers during the export (:func:`export_outputs`)."""

    names: list[str]
    futures: list[Any]
    #: seconds to wait for a worker's figures before drawing them here instead
    timeout: float = 600.0

    @classmethod
    def start(cls, client: Any, store: RunStore, figures_dir: Path) -> _RemoteFigures | None:
        from monodir.report.plots import HISTOGRAM_MAPS, SLICE_MAPS

        try:
            n_workers = len(client.scheduler_info()["workers"])
        except Exception:  # pragma: no cover - a client that cannot answer: draw here
            return None
        if n_workers < 1:
            return None
        names = [f"slices_{m}" for m in SLICE_MAPS] + [f"hist_{m}" for m in HISTOGRAM_MAPS]
        parts = [names[i::n_workers] for i in range(min(n_workers, len(names)))]
        path = graph.store_path_of(store.path)
        futures = [
            client.submit(graph.figures_task, path, str(figures_dir), part, pure=False)
            for part in parts
        ]
        return cls(names, futures)

    def gather(self) -> dict[str, Path]:
        """Figures drawn on the workers (those of a failed task are left out)."""
        drawn: dict[str, Path] = {}
        for fut in self.futures:
            try:
                drawn.update({k: Path(v) for k, v in fut.result(timeout=self.timeout).items()})
            except Exception as exc:  # drawn here instead (see _export_reports)
                log.warning("figures on a worker failed (%s); drawing them here", exc)
        return drawn

    def wait(self) -> None:
        """Block until no task can still write a file."""
        from distributed import wait

        with suppress(Exception):
            wait(self.futures, timeout=self.timeout)


#: report map name -> MRC output file (the ChimeraX script colours by these)
_REPORT_MAPS = {
    "monores": "monores_resolution.mrc",
    "radial": "radial_resolution.mrc",
    "azimuthal": "azimuthal_resolution.mrc",
    "highest": "highest_resolution.mrc",
    "lowest": "lowest_resolution.mrc",
    "mean_doa": "mean_doa.mrc",
    "doa": "doa.mrc",
    "anisotropy": "anisotropy.mrc",
    "zscore": "zscore.mrc",
}
REPORT_FILES = ("summary.json", "report.html", "colour_by_resolution.cxc")
REPORT_DIRS = {"tables": ("*.star", "*.csv", "*.xmd"), "figures": ("*.png",)}


def _export_reports(
    store: RunStore, out_dir: Path, *, xmipp_names: bool, remote: _RemoteFigures | None = None
) -> list[Path]:
    """Tables, figures, summary, HTML report and ChimeraX script (monodir.report)."""
    try:
        from monodir import report
    except ImportError:  # pragma: no cover - the package is part of monodir
        return []
    attrs = store.attrs
    monores = store.load_monores() if store.has_monores() else None
    # maps and matrix are read from the store when used: the export never holds them all
    # (at 512^3 they would be ~4 GiB of maps plus the matrix)
    directional = store.load_directional(lazy_maps=True, lazy_matrix=True)
    out: list[Path] = []
    t0 = time.perf_counter()
    out += [
        Path(p)
        for p in report.write_all_tables(
            out_dir / "tables", monores, directional, xmipp_names=xmipp_names
        )
    ]
    figures = _draw_figures(out_dir / "figures", monores, directional, remote)
    out += [Path(p) for p in figures.values()]
    inputs = {
        "files": attrs.get("input_files", {}),
        "shape": attrs.get("shape"),
        "voxel_size_A": attrs.get("voxel_size"),
        "origin_A": attrs.get("origin"),
        "nstart": attrs.get("nstart"),
        "half_maps": store.has("inputs/half1"),
    }
    timings = dict(store.attrs.get("timings", {}))
    summary = report.build_summary(
        monores,
        directional,
        config=attrs.get("config", {}),
        versions=attrs.get("versions", {}),
        timings=timings,
        inputs=inputs,
    )
    out.append(report.write_summary(out_dir / "summary.json", summary))
    out.append(report.write_report(out_dir / "report.html", summary, figures))
    out += _write_chimerax(store, out_dir, monores, directional)
    log.info("tables, figures and report written (%.1f s)", time.perf_counter() - t0)
    return out


def _draw_figures(
    figures_dir: Path, monores: Any, directional: Any, remote: _RemoteFigures | None
) -> dict[str, Path]:
    """Every figure, in display order: those not being drawn on the workers here, then the
    workers' (any they failed to draw, here too)."""
    from monodir import report

    if remote is None:
        return report.make_all_figures(figures_dir, monores, directional)
    order = report.figure_names(monores, directional)
    local = [n for n in order if n not in remote.names]
    drawn = report.make_all_figures(figures_dir, monores, directional, include=local)
    drawn.update(remote.gather())
    missing = [n for n in order if n not in drawn]
    if missing:
        drawn.update(report.make_all_figures(figures_dir, monores, directional, include=missing))
    return {n: drawn[n] for n in order if n in drawn}


def _write_chimerax(store: RunStore, out_dir: Path, monores: Any, directional: Any) -> list[Path]:
    from monodir import report

    files = store.attrs.get("input_files", {})
    map_file = files.get("input.map") or files.get("input.half_maps[0]")
    if not map_file:
        return []
    ranges = report.resolution_map_ranges(monores, directional, list(_REPORT_MAPS))
    maps = {
        name: (out_dir / _REPORT_MAPS[name], lo, hi)
        for name, (lo, hi) in ranges.items()
        if (out_dir / _REPORT_MAPS[name]).is_file()
    }
    if not maps:
        return []
    key = "inputs/map" if store.has("inputs/map") else "inputs/half1"
    volume = store.read_array(key)
    mask = store.read_array("inputs/mask").astype(bool)
    return [
        report.write_chimerax_script(
            out_dir / "colour_by_resolution.cxc",
            map_file=map_file,
            resolution_maps=maps,
            volume=volume,
            mask=mask,
        )
    ]


def regenerate_outputs(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the outputs of a complete run again from its ``run.zarr`` (``monodir report``).

    Raises
    ------
    InputError
        No run store in ``run_dir``, or the run is not complete.
    """
    run_dir = Path(run_dir)
    store_path = run_dir / STORE_NAME
    if not RunStore.exists(store_path):
        raise InputError(f"{run_dir}: no {STORE_NAME} here; give the output directory of a run")
    store = RunStore.open(store_path, mode="r")
    if store.status != "complete" or not store.has_directional_result():
        raise InputError(
            f"{run_dir}: the run is not complete; finish it first with the same "
            "`monodir run` command"
        )
    xmipp = bool((store.attrs.get("config") or {}).get("xmipp_compat", False))
    return export_outputs(store, run_dir, xmipp_names=xmipp)


def remove_outputs(out_dir: Path) -> None:
    """Delete the files a previous run wrote into ``out_dir`` (nothing else)."""
    for name in (*MRC_OUTPUTS, *REPORT_FILES):
        (out_dir / name).unlink(missing_ok=True)
    for sub, patterns in REPORT_DIRS.items():
        folder = out_dir / sub
        if not folder.is_dir():
            continue
        for pattern in patterns:
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)
        with suppress(OSError):
            folder.rmdir()


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def run_pipeline(
    config: Config,
    argv: Sequence[str] | None = None,
    *,
    kernels: str | None = None,
) -> Path:
    """Run the whole analysis as configured; return the output directory.

    Parameters
    ----------
    config
        The validated configuration.
    argv
        The command line, recorded in the store.
    kernels
        Substitute kernel module (tests); default ``monodir.core``.

    Returns
    -------
    pathlib.Path
        ``config.output.directory``.

    Raises
    ------
    InputError
        Before anything is written or started: bad inputs, bad cluster settings, a run
        directory holding a complete run (without ``output.overwrite``) or another problem.
    """
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    inputs = load_inputs(config)
    for w in inputs.warnings:
        log.warning("%s", w)
    t_validate = time.perf_counter() - t0
    argv = list(argv) if argv is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
    out_dir = config.output.directory
    with ExitStack() as run_stack:  # holds the run directory's lock
        store, resumed = open_run_store(config, inputs, argv, stack=run_stack)
        try:
            _run_stages(config, inputs, store, resumed, t_validate, kernels=kernels)
        except BaseException as exc:
            if not isinstance(exc, InputError):
                done = 0
                with suppress(Exception):
                    done = int(store.done_directions().sum())
                log.error(
                    "the run did not finish (%s); nothing in %s looks finished, and %d finished "
                    "direction(s) are kept in %s: run the same command again to resume",
                    type(exc).__name__,
                    out_dir,
                    done,
                    STORE_NAME,
                )
            raise
        total = time.perf_counter() - t_start
        store.record_timing("total", total)
        store.set_status("complete")
    log.info("run complete in %s (%.1f s)", out_dir, total)
    return out_dir


def _run_stages(
    config: Config,
    inputs: Inputs,
    store: RunStore,
    resumed: bool,
    t_validate: float,
    *,
    kernels: str | None,
) -> None:
    """Stage, compute and export (everything between opening the store and "complete")."""
    timer = _Timer(store)
    timer.times["validate"] = t_validate
    store.record_timing("validate", t_validate)
    out_dir = config.output.directory
    log.info("%s run in %s", "resuming the" if resumed else "starting a new", out_dir)
    with timer.stage("staging"):
        stage_inputs(store, inputs)
    inputs.volumes = {}  # the workers read them from the store

    with ExitStack() as stack:
        with timer.stage("cluster_start"):
            handle = stack.enter_context(open_cluster(config.cluster, threads=config.run.threads))
        link = handle.dashboard_link
        print(f"Dashboard: {link}" if link else "Dashboard: disabled", flush=True)
        log.info("%s", handle.description)
        with timer.stage("compute"):
            try:
                compute(handle, store, config, inputs, timer, kernels=kernels)
            except Exception as exc:
                if type(exc).__name__ == "NoNoiseRegionError":  # the kernels' input problem
                    raise InputError(str(exc)) from exc
                raise

        with timer.stage("export"):
            # a local cluster's idle workers draw some figures meanwhile; a SLURM cluster's
            # would first have to be scaled up again
            client = handle.client if handle.kind == "local" else None
            try:
                export_outputs(store, out_dir, xmipp_names=config.xmipp_compat, client=client)
            except BaseException:
                # no half set of final files: they would look like a finished run
                with suppress(Exception):
                    remove_outputs(out_dir)
                raise
