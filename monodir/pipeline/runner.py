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
from typing import Any

import numpy as np

from monodir.config import Config
from monodir.errors import InputError
from monodir.io.store import STORE_NAME, RunStore, array_digest, row_chunk
from monodir.pipeline import graph
from monodir.pipeline.cluster import (
    ClusterHandle,
    check_cluster_config,
    open_cluster,
    worker_memory_limit,
)
from monodir.pipeline.progress import Progress, track

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
    mask_info = read_map(inp.mask, role="mask", voxel_size=vs or ref.voxel_size)
    warnings += validate.check_same_grid(ref, mask_info) or []
    mask = validate.binarize_mask(mask_info, inp.mask_threshold)
    excl = None
    if inp.exclusion_mask is not None:
        excl_info = read_map(
            inp.exclusion_mask, role="exclusion mask", voxel_size=vs or ref.voxel_size
        )
        warnings += validate.check_same_grid(ref, excl_info) or []
        excl = validate.binarize_mask(excl_info, 0.5 if inp.mask_threshold is None else None)
    validate.check_box(ref.shape, ref.voxel_size, config.monores.low_resolution, name=ref.name)
    noise = validate.check_noise_region(mask, single_map=inp.half_maps is None, name=mask_info.name)
    limit, concurrent = worker_memory_limit(config.cluster)
    check_cluster_config(config.cluster)
    if limit is not None:
        validate.check_memory(ref.shape, limit, threads=concurrent)
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


# --------------------------------------------------------------------------------------------
# run directory
# --------------------------------------------------------------------------------------------


def open_run_store(
    config: Config, inputs: Inputs, argv: Sequence[str] | None
) -> tuple[RunStore, bool]:
    """Create the run store, or reopen an interrupted run of the same problem.

    Returns
    -------
    (store, resumed)

    Raises
    ------
    InputError
        The directory holds a complete run (without ``output.overwrite``), or a run of a
        different problem, or an unreadable store.
    """
    out_dir = config.output.directory
    store_path = out_dir / STORE_NAME
    numeric = config.numeric_dict()
    digest = inputs.digest()
    overwrite = config.output.overwrite
    resumed = False
    store: RunStore | None = None
    if store_path.exists():
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
        if store is None:
            log.info("removing the previous run in %s", out_dir)
            RunStore.remove(store_path)
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
            graph.monores_task, opts, key=f"monores-{tag}", pure=False, **heavy
        )
    with timer.stage("prepare"):
        setup = client.submit(graph.prepare_task, opts, key=f"prepare-{tag}", pure=False, **heavy)
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
                retries=1,
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
            client.submit(graph.reduce_task, setup, s, e, opts, key=f"reduce-{s}-{tag}", **heavy)
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


def export_outputs(store: RunStore, out_dir: Path, *, xmipp_names: bool = False) -> list[Path]:
    """Write every output of a finished computation from the store into ``out_dir``.

    MRC maps (with the input's voxel size, origin and start indices), then, through
    :mod:`monodir.report`: ``tables/`` (STAR and CSV), ``figures/`` (PNG), ``summary.json``,
    ``report.html`` and ``colour_by_resolution.cxc``. Every file is written atomically.
    """
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
                store.read_array(key).astype(np.float32),
                voxel_size=voxel_size,
                origin=origin,
                nstart=nstart,
                label=name.removesuffix(".mrc"),
                overwrite=True,
            )
        )
    written += _export_reports(store, out_dir, xmipp_names=xmipp_names)
    return written


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


def _export_reports(store: RunStore, out_dir: Path, *, xmipp_names: bool) -> list[Path]:
    """Tables, figures, summary, HTML report and ChimeraX script (monodir.report)."""
    try:
        from monodir import report
    except ImportError:  # pragma: no cover - the package is part of monodir
        return []
    attrs = store.attrs
    monores = store.load_monores() if store.has_monores() else None
    directional = store.load_directional()
    out: list[Path] = []
    t0 = time.perf_counter()
    out += [
        Path(p)
        for p in report.write_all_tables(
            out_dir / "tables", monores, directional, xmipp_names=xmipp_names
        )
    ]
    figures = report.make_all_figures(out_dir / "figures", monores, directional)
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
    store, resumed = open_run_store(config, inputs, argv)
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
        export_outputs(store, out_dir, xmipp_names=config.xmipp_compat)
    total = time.perf_counter() - t_start
    store.record_timing("total", total)
    store.set_status("complete")
    log.info("run complete in %s (%.1f s)", out_dir, total)
    return out_dir
