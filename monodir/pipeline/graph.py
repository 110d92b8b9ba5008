"""The Dask graph: a thin map/reduce over the numerical kernels.

Tasks (all run on workers; each opens the run store by path)::

    monores_task      --------------------------------------------+
    prepare_task -> setup --+-> cone_task(i) x D  (write row i, mark done)      |
                            +-> reduce_task(block) x B (after all cones) -> finalize_task
                                                                  (reads MonoRes map)

* ``prepare_task`` runs :func:`prepare_directional` once on a worker. Its result (the
  ``DirectionalSetup``, holding the map's spectrum) stays on that worker as a future; every
  cone and reduce task depends on it, so each worker fetches it once from a peer and keeps it
  while it still has tasks that need it. This ships the spectrum once per worker, worker to
  worker, without the round trip through the client that ``client.scatter(setup,
  broadcast=True)`` would need (the setup would first have to be gathered to the client),
  and it also serves workers that join later (adaptive SLURM scaling), which a one-off
  broadcast does not.
* ``cone_task`` computes its directions with :func:`direction_resolution` and writes each
  row into ``directional/resolution`` itself, then marks it done; it returns only a tiny
  status dict. Nothing of size ``D x Nmask`` goes through the scheduler or the client.
* ``reduce_task`` reads a ``(D, nb)`` block of mask voxels from the store and returns
  :func:`voxel_summaries` of it (``O(nb)``). Blocks are fixed by ``Nmask`` and
  ``run.reduce_block`` only, and ``finalize_task`` receives the parts sorted by their first
  voxel, so the reduction order, and hence every output bit, does not depend on the number
  of workers or on the order in which tasks finish.
* ``finalize_task`` combines the parts with :func:`finalize_directional` and writes the
  result (maps, tables, matrix) into the store.
* ``figures_task`` (local clusters, during the export) draws some of the run's figures from
  the store while the client writes the other outputs.

The kernels are looked up by name on the worker (:func:`kernel`), from ``monodir.core``
unless a test substitutes a module with the same five functions (``kernels=`` argument,
or the ``MONODIR_KERNELS`` environment variable).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monodir.core.heap import glibc, trim_heap
from monodir.core.monogenic import release_workspace
from monodir.io.store import RunStore, array_digest, read_block, write_direction_row

__all__ = [
    "KERNEL_NAMES",
    "TaskOptions",
    "cone_task",
    "finalize_task",
    "kernel",
    "monores_task",
    "prepare_task",
    "reduce_blocks",
    "reduce_task",
    "setup_info",
]

log = logging.getLogger(__name__)

#: kernel name -> "module:function" in monodir.core
KERNEL_NAMES: dict[str, str] = {
    "monores": "monodir.core.monores:monores",
    "prepare_directional": "monodir.core.directional:prepare_directional",
    "direction_resolution": "monodir.core.directional:direction_resolution",
    "voxel_summaries": "monodir.core.summaries:voxel_summaries",
    "finalize_directional": "monodir.core.summaries:finalize_directional",
}

KERNELS_ENV = "MONODIR_KERNELS"


def kernel(name: str, module: str | None = None) -> Callable[..., Any]:
    """Return kernel ``name``, from ``module`` (a substitute, e.g. in tests) if given."""
    module = module or os.environ.get(KERNELS_ENV) or None
    if module:
        return getattr(importlib.import_module(module), name)
    mod_name, _, func = KERNEL_NAMES[name].partition(":")
    return getattr(importlib.import_module(mod_name), func)


@dataclass(frozen=True)
class TaskOptions:
    """What every task needs besides its data (small and picklable).

    Attributes
    ----------
    store
        Path of ``run.zarr``.
    kernels
        Substitute kernel module (``None`` = ``monodir.core``).
    threads
        FFT threads per task; ``None`` = the executing worker's thread count.
    params
        Kernel parameters from the config (see :func:`kernel_params`).
    """

    store: str
    kernels: str | None
    threads: int | None
    params: Mapping[str, Any]


def task_threads(threads: int | None) -> int:
    """FFT threads for the running task: ``threads``, or the worker's thread count."""
    if threads:
        return int(threads)
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return 1


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def kernel_params(config: Any, voxel_size: float) -> dict[str, Any]:
    """The kernel parameters of a :class:`monodir.config.Config` (plain data)."""
    inp = config.input
    sphere = None
    if inp.premasked and inp.sphere_radius != -1:
        sphere = float(inp.sphere_radius)
    return {
        "voxel_size": float(voxel_size),
        "xmipp_compat": bool(config.xmipp_compat),
        "monores": {
            "low_resolution": config.monores.low_resolution,
            "step": config.monores.step,
            "significance": config.monores.significance,
            "gaussian": config.monores.gaussian,
            "noise_only_in_halves": config.monores.noise_only_in_halves,
        },
        "directional": {
            "fast": config.directional.fast,
            "resolution_step": config.directional.resolution_step,
            "significance": config.directional.significance,
            "sphere_radius": sphere,
        },
    }


def _read_inputs(store: RunStore) -> dict[str, np.ndarray | None]:
    out: dict[str, np.ndarray | None] = {}
    for name in ("map", "half1", "half2", "mask", "exclusion_mask"):
        key = f"inputs/{name}"
        out[name] = store.read_array(key) if store.has(key) else None
    if out["mask"] is not None:
        out["mask"] = out["mask"].astype(bool)
    if out["exclusion_mask"] is not None:
        out["exclusion_mask"] = out["exclusion_mask"].astype(bool)
    return out


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------


def monores_task(opts: TaskOptions) -> dict[str, Any]:
    """Run MonoRes on the staged inputs and store its result; return a small summary."""
    tune_worker_malloc()  # 0.96 s instead of 1.44 s at 100^3 (betagal) in paired runs
    t0 = time.perf_counter()
    store = RunStore.open(opts.store)
    data = _read_inputs(store)
    trim_worker_heap()  # what came before, and the store's decoding buffers (~50 MiB at 256^3)
    p, mp = opts.params, opts.params["monores"]
    halves = data["half1"] is not None
    if halves:
        data.pop("map", None)
    # The maps (and masks) are handed over, not kept here: MonoRes drops them once spent
    # (one volume less at its peak, two with half maps). Every argument is spelt out:
    # a call with ``**kwargs`` would keep the maps alive in its argument tuple and dict.
    result = kernel("monores", opts.kernels)(
        data.pop("half1") if halves else data.pop("map"),
        data.pop("mask"),
        p["voxel_size"],
        half_map2=data.pop("half2") if halves else None,
        exclusion_mask=data.pop("exclusion_mask"),
        xmipp_compat=p["xmipp_compat"],
        threads=task_threads(opts.threads),
        low_resolution=mp["low_resolution"],
        step=mp["step"],
        significance=mp["significance"],
        gaussian=mp["gaussian"],
        noise_only_in_halves=mp["noise_only_in_halves"],
    )
    store.write_monores(result)
    return {
        "median": result.median,
        "stop_reason": result.stop_reason,
        "n_resolutions": len(result.resolutions),
        "seconds": time.perf_counter() - t0,
        "worker": _worker_name(),
    }


def prepare_task(opts: TaskOptions) -> Any:
    """Run :func:`prepare_directional` on the staged inputs; return the setup."""
    tune_worker_malloc()
    store = RunStore.open(opts.store, mode="r")
    data = _read_inputs(store)
    trim_worker_heap()
    p = opts.params
    if data["half1"] is not None:
        h1, h2 = data["half1"], data["half2"]
        volume = ((h1.astype(np.float32) + h2.astype(np.float32)) * np.float32(0.5)).astype(
            np.float32
        )
        half_maps: tuple[np.ndarray, np.ndarray] | None = (h1, h2)
    else:
        volume, half_maps = data["map"], None
    return kernel("prepare_directional", opts.kernels)(
        volume,
        data["mask"],
        p["voxel_size"],
        half_maps=half_maps,
        xmipp_compat=p["xmipp_compat"],
        threads=task_threads(opts.threads),
        **p["directional"],
    )


def setup_info(setup: Any) -> dict[str, Any]:
    """Small facts about a setup that the driver needs (sizes, mask digest)."""
    return {
        "n_directions": int(setup.n_directions),
        "n_mask": int(setup.n_mask),
        "shape": [int(s) for s in setup.shape],
        "mask_digest": array_digest(np.asarray(setup.mask_indices)),
    }


#: glibc ``mallopt`` parameter numbers of M_TRIM_THRESHOLD and M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations below this size come from the heap in cone tasks (see :func:`tune_worker_malloc`).
WORKER_MMAP_THRESHOLD = 4 << 20
#: Free memory kept at the top of the heap before it is given back (glibc's own rule: twice
#: the mmap threshold).
WORKER_TRIM_THRESHOLD = 2 * WORKER_MMAP_THRESHOLD
_malloc_tuned = False


def tune_worker_malloc() -> bool:
    """Let this worker process serve mid-size temporaries from the heap (glibc only); the
    MonoRes, prepare and cone tasks call it first.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_`` set, which also freezes glibc's
    mmap threshold at 128 KiB: every temporary above that is then mapped and unmapped again,
    and its pages faulted in anew, at each (direction, frequency) step. That cost 17 % per step
    at 100^3 and 20 % at 256^3 here; a 4 MiB threshold removes most of it without raising the
    worker's peak memory (measured at 256^3: 11.93 -> 11.99 volumes). The nanny's 64 KiB trim
    threshold still gave the heap's top back after nearly every step, to be faulted in again
    (about 1,700 page faults per direction at 100^3); an 8 MiB one, glibc's own default
    relation to the mmap threshold, keeps it: 3-4 % less time per direction in paired runs.
    Returns whether it was applied.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return True
    libc = glibc()
    try:
        _malloc_tuned = (
            libc is not None
            and bool(libc.mallopt(_M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD))
            and bool(libc.mallopt(_M_TRIM_THRESHOLD, WORKER_TRIM_THRESHOLD))
        )
    except AttributeError:
        _malloc_tuned = False
    return _malloc_tuned


#: Free heap memory (bytes) above which a task first hands it back to the system.
TRIM_MIN_FREE = 16 << 20


def trim_worker_heap(min_free: int = TRIM_MIN_FREE) -> bool:
    """Give the heap's free pages back to the system when more than ``min_free`` bytes are
    free (glibc only); the tasks call it first. Returns whether it trimmed.

    With the tuned allocator (:func:`tune_worker_malloc`) a task's mid-size temporaries come
    from the heap, and what the previous task left free there stays resident, scattered
    between live blocks where the trim threshold (top of the heap only) does not reach it:
    ~80 MiB after a direction at 256^3, which the next task's own temporaries then add to.
    ``malloc_trim`` also releases whole free pages inside the heap. At 256^3 the largest cone
    task of a run peaked at 842 instead of 884 MiB; small boxes leave less than ``min_free``
    free and skip it (re-faulting the pages would cost more than they weigh).
    """
    return trim_heap(min_free)


def cone_task(setup: Any, indices: Sequence[int], opts: TaskOptions) -> dict[str, Any]:
    """Compute directions ``indices``; write each row into the store, then mark it done."""
    tune_worker_malloc()
    trim_worker_heap()  # what the previous task (or the setup's transfer) left free
    direction_resolution = kernel("direction_resolution", opts.kernels)
    threads = task_threads(opts.threads)
    t0 = time.perf_counter()
    stamps = []
    for i in indices:
        row = direction_resolution(setup, int(i), threads=threads)
        stamps.append(write_direction_row(opts.store, int(i), row))
    return {
        "indices": [int(i) for i in indices],
        "seconds": time.perf_counter() - t0,
        "worker": _worker_name(),
        "threads": threads,
        "finished_at": stamps,
    }


def figures_task(store: str, out_dir: str, names: Sequence[str]) -> dict[str, str]:
    """Draw the figures ``names`` of a finished run into ``out_dir`` (a worker's share of
    the export); returns figure name -> PNG path."""
    from monodir import report

    release_workspace()  # a worker that ran no reduction task still holds its FFT buffers
    trim_worker_heap()
    run = RunStore.open(store, mode="r")
    monores = run.load_monores() if run.has_monores() else None
    # each figure reads the one map it shows: a worker never holds the eight maps at once
    directional = run.load_directional(with_matrix=False, lazy_maps=True)
    drawn = report.make_all_figures(Path(out_dir), monores, directional, include=list(names))
    return {name: str(path) for name, path in drawn.items()}


def reduce_blocks(n_mask: int, block: int) -> list[tuple[int, int]]:
    """Fixed ``[start, stop)`` voxel blocks covering ``n_mask`` mask voxels."""
    block = max(1, int(block))
    return [(s, min(s + block, n_mask)) for s in range(0, n_mask, block)] or [(0, 0)]


def reduce_task(setup: Any, start: int, stop: int, opts: TaskOptions) -> dict[str, Any]:
    """Per-voxel summaries of mask voxels ``start:stop`` (block read from the store)."""
    release_workspace()  # the directions are done: free their FFT buffers on this worker
    trim_worker_heap()
    block = read_block(opts.store, start, stop)
    part = kernel("voxel_summaries", opts.kernels)(setup, block, int(start))
    return part


def finalize_task(
    setup: Any,
    parts: Sequence[Mapping[str, Any]],
    starts: Sequence[int],
    opts: TaskOptions,
    *after: Any,
) -> dict[str, Any]:
    """Combine the reduction parts (in voxel order) and store the directional result.

    ``after`` only orders this task after MonoRes (whose map it reads from the store).
    """
    release_workspace()
    trim_worker_heap()
    order = np.argsort(np.asarray(starts), kind="stable")
    ordered = [parts[i] for i in order]
    store = RunStore.open(opts.store)
    monores_map = (
        store.read_array("monores/resolution") if store.has("monores/resolution") else None
    )
    result = kernel("finalize_directional", opts.kernels)(setup, ordered, monores_map=monores_map)
    store.write_directional(result)
    return {
        "n_directions": int(np.asarray(result.directions).shape[0]),
        "thresholds": {k: float(v) for k, v in result.thresholds.items()},
        "axis_angle_to_z": float(result.axis_angle_to_z),
    }


def store_path_of(path: str | Path) -> str:
    """Normalise a store path for task arguments."""
    return str(Path(path).resolve())
