"""Checks on loaded inputs, run before any work is scheduled.

Each check either passes (returning any non-fatal warnings as one-line strings) or raises
:class:`monodir.errors.InputError` with one line that names the file(s), the problem and the
fix. The checks work on :class:`monodir.io.mrc.MapInfo` objects or plain arrays, so the
pipeline, the CLI and notebooks share them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from monodir.errors import InputError
from monodir.io.mrc import VOXEL_SIZE_RTOL, MapInfo

__all__ = [
    "WORKER_OVERHEAD_BYTES",
    "NoiseRegion",
    "binarize_mask",
    "check_box",
    "check_half_maps",
    "check_memory",
    "check_noise_region",
    "check_same_grid",
    "estimate_memory",
]

#: Smallest box edge (voxels) monodir accepts.
MIN_BOX = 16
#: Fourier index the low-resolution end of the sweep must reach at least.
MIN_LOW_INDEX = 2.0
#: Fixed per-worker memory (interpreter, numpy/scipy/dask, FFT plans) in the estimate.
WORKER_OVERHEAD_BYTES = 200 * 2**20
#: float32 volumes a running task holds at once (map, band-passed map, Riesz components,
#: amplitude, thresholds, state arrays, FFT work buffers), see :func:`estimate_memory`.
VOLUMES_PER_TASK = 12


def _box_xyz(shape: tuple[int, ...]) -> str:
    """``(nz, ny, nx)`` as ``"NXxNYxNZ"``, the order MRC headers and viewers show."""
    return "x".join(str(int(s)) for s in tuple(shape)[::-1])


def binarize_mask(mask_info: MapInfo | np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Return the mask as a boolean array.

    Parameters
    ----------
    mask_info : MapInfo or numpy.ndarray
        The mask as read by :func:`monodir.io.mrc.read_map` (or a bare array).
    threshold : float, optional
        ``input.mask_threshold``: voxels with ``mask >= threshold`` are inside. Needed for
        soft (non-binary) masks; a strictly 0/1 mask is used as is when it is None.

    Returns
    -------
    numpy.ndarray
        Boolean array, same shape.

    Raises
    ------
    monodir.errors.InputError
        The mask is not binary and no threshold is given, or it selects no voxel.
    """
    if isinstance(mask_info, MapInfo):
        data, name = mask_info.data, mask_info.name
    else:
        data, name = np.asarray(mask_info), "mask"
    if threshold is not None:
        if not np.isfinite(threshold):
            raise InputError(f"{name}: mask threshold {threshold!r} is not a finite number")
        out = data >= threshold
        if not out.any():
            raise InputError(
                f"{name}: no voxel is >= the mask threshold {threshold:g} (values range "
                f"{float(data.min()):g} to {float(data.max()):g}); lower input.mask_threshold"
            )
        return out
    is_binary = bool(np.all((data == 0) | (data == 1)))
    if not is_binary:
        distinct = np.unique(data)
        raise InputError(
            f"{name}: the mask is not binary ({distinct.size} distinct values from "
            f"{float(distinct[0]):g} to {float(distinct[-1]):g}); set input.mask_threshold "
            "(e.g. 0.5) to binarise it"
        )
    out = data == 1
    if not out.any():
        raise InputError(
            f"{name}: the mask is empty (all voxels are 0); give a mask that covers the molecule"
        )
    return out


def check_same_grid(a: MapInfo, b: MapInfo) -> list[str]:
    """Require two maps on the same grid (shape and voxel size).

    Parameters
    ----------
    a, b : MapInfo
        E.g. the map and the mask. ``a`` is taken as the reference grid.

    Returns
    -------
    list of str
        Warnings: different origins or start indices (the arrays are still used voxel by
        voxel, so outputs follow ``a``'s placement).

    Raises
    ------
    monodir.errors.InputError
        Different shapes or voxel sizes (relative difference above 1e-3).
    """
    if a.shape != b.shape:
        raise InputError(
            f"{b.name} has box {b.box_xyz} (nx x ny x nz) but {a.name} has {a.box_xyz}: "
            f"resample or pad the {b.role} onto the {a.role}'s grid (e.g. ChimeraX "
            f"`volume resample #2 onGrid #1`, then save it) and point the config at it"
        )
    if not math.isclose(a.voxel_size, b.voxel_size, rel_tol=VOXEL_SIZE_RTOL):
        raise InputError(
            f"{b.name} has voxel size {b.voxel_size:g} A but {a.name} has {a.voxel_size:g} A: "
            f"resample the {b.role} onto the {a.role}'s grid, or set input.voxel_size if a "
            "header is wrong"
        )
    warns: list[str] = []
    tol = 1e-3 * a.voxel_size
    if any(abs(x - y) > tol for x, y in zip(a.origin, b.origin)):
        warns.append(
            f"{b.name} has origin {tuple(round(v, 3) for v in b.origin)} A but {a.name} has "
            f"{tuple(round(v, 3) for v in a.origin)} A; the arrays are used voxel by voxel "
            f"and outputs take the {a.role}'s origin"
        )
    if tuple(a.nstart) != tuple(b.nstart):
        warns.append(
            f"{b.name} has start indices {tuple(b.nstart)} but {a.name} has "
            f"{tuple(a.nstart)}; the arrays are used voxel by voxel and outputs take the "
            f"{a.role}'s"
        )
    return warns


def check_half_maps(h1: MapInfo, h2: MapInfo) -> list[str]:
    """Require two genuinely independent half maps on the same grid.

    Parameters
    ----------
    h1, h2 : MapInfo
        The two half maps.

    Returns
    -------
    list of str
        Warnings from :func:`check_same_grid`.

    Raises
    ------
    monodir.errors.InputError
        Different grids, or identical arrays (their difference, the noise estimate, would
        be zero).
    """
    warns = check_same_grid(h1, h2)
    scale = float(np.max(np.abs(h1.data))) if h1.data.size else 0.0
    diff = float(np.max(np.abs(h1.data - h2.data))) if h1.data.size else 0.0
    if diff <= 1e-6 * scale:
        raise InputError(
            f"{h1.name} and {h2.name} are identical, so their difference (the noise "
            "estimate) is zero; give the two independently refined half maps"
        )
    return warns


def check_box(
    shape: tuple[int, ...],
    voxel_size: float,
    low_resolution: float = 18.0,
    *,
    name: str = "map",
) -> None:
    """Require a cubic box large enough for the resolution sweep.

    Parameters
    ----------
    shape : tuple of int
        Array shape ``(nz, ny, nx)``.
    voxel_size : float
        Å per voxel.
    low_resolution : float, optional
        ``monores.low_resolution`` in Å, where the sweep starts. Its Fourier index
        ``N * voxel_size / low_resolution`` must be at least 2.
    name : str, optional
        How to name the input in messages (e.g. ``"map /data/emd_1234.mrc"``).

    Raises
    ------
    monodir.errors.InputError
        Not 3D, not cubic, smaller than 16 voxels, low resolution finer than Nyquist, or
        low resolution too coarse for the box.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise InputError(f"{name}: data has {len(shape)} dimensions; give a 3D map")
    box = _box_xyz(shape)
    if len(set(shape)) != 1:
        m = max(shape)
        raise InputError(
            f"{name}: box {box} is not cubic and monodir needs a cubic box; pad it to "
            f"{m}x{m}x{m} (e.g. relion_image_handler --i in.mrc --o out.mrc --new_box {m}, or "
            f"ChimeraX volume resample onto a {m}^3 grid), and the mask likewise"
        )
    n = shape[0]
    if n < MIN_BOX:
        raise InputError(
            f"{name}: box {box} is too small; monodir needs at least {MIN_BOX} voxels per "
            "side, pad the map (and mask) to a larger box"
        )
    if not np.isfinite(voxel_size) or voxel_size <= 0:
        raise InputError(f"{name}: voxel size {voxel_size!r} is not positive; set input.voxel_size")
    nyquist = 2.0 * voxel_size
    if not np.isfinite(low_resolution) or low_resolution <= nyquist:
        raise InputError(
            f"{name}: monores.low_resolution {low_resolution:g} A is not coarser than Nyquist "
            f"({nyquist:g} A at {voxel_size:g} A/voxel); raise monores.low_resolution"
        )
    index = n * voxel_size / low_resolution
    if index < MIN_LOW_INDEX:
        limit = n * voxel_size / MIN_LOW_INDEX
        raise InputError(
            f"{name}: monores.low_resolution {low_resolution:g} A is Fourier index "
            f"{index:.2f} in a {n}-voxel box of {voxel_size:g} A (at least {MIN_LOW_INDEX:g} "
            f"needed); lower monores.low_resolution to at most {limit:.3g} A"
        )


@dataclass(frozen=True)
class NoiseRegion:
    """Geometry of the solvent available for noise estimation.

    Attributes
    ----------
    protein_radius : float
        Largest distance (voxels) of a mask voxel from the box centre ``floor(N/2)``.
    half_box : int
        ``N // 2`` (smallest axis).
    n_background : int
        Voxels outside the mask within radius ``half_box`` of the centre.
    n_mask : int
        Voxels inside the mask.
    """

    protein_radius: float
    half_box: int
    n_background: int
    n_mask: int


def check_noise_region(
    mask_bool: np.ndarray, *, single_map: bool, shell: int = 7, name: str = "mask"
) -> NoiseRegion:
    """Check that the box leaves enough solvent around the mask for the noise statistics.

    With a single map the noise is sampled outside the mask, within the box's inscribed
    sphere and beyond the protein radius plus a ``shell``-voxel margin, so the mask's
    extent must leave room for it. With half maps the noise comes from their difference and
    only the geometry is reported.

    Parameters
    ----------
    mask_bool : numpy.ndarray
        Boolean mask (see :func:`binarize_mask`), axes ``[z, y, x]``.
    single_map : bool
        True when no half maps are given.
    shell : int, optional
        Solvent margin (voxels) needed beyond the protein radius.
    name : str, optional
        How to name the mask in messages.

    Returns
    -------
    NoiseRegion

    Raises
    ------
    monodir.errors.InputError
        Empty mask; in single-map mode, a mask reaching within ``shell`` voxels of the
        inscribed sphere, or fewer than max(1000, 1 % of the mask) background voxels inside
        it.
    """
    mask = np.asarray(mask_bool, dtype=bool)
    if mask.ndim != 3:
        raise InputError(f"{name}: the mask has {mask.ndim} dimensions; give a 3D mask")
    n_mask = int(np.count_nonzero(mask))
    if n_mask == 0:
        raise InputError(f"{name}: the mask is empty; give a mask that covers the molecule")
    centre = [s // 2 for s in mask.shape]
    half = min(mask.shape) // 2
    # Squared distance to the centre, exact in float32 for any realistic box.
    axes = [(np.arange(s, dtype=np.float32) - c) ** 2 for s, c in zip(mask.shape, centre)]
    d2 = axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]
    protein_radius = float(np.sqrt(d2[mask].max()))
    n_background = int(np.count_nonzero((d2 <= half * half) & ~mask))
    region = NoiseRegion(protein_radius, half, n_background, n_mask)
    if not single_map:
        return region
    if protein_radius + shell >= half:
        raise InputError(
            f"{name}: the mask reaches radius {protein_radius:.1f} voxels but the box "
            f"half-size is {half} and single-map mode needs at least {shell} voxels of "
            "solvent beyond it; use half maps (input.half_maps) or a larger box"
        )
    needed = max(1000, math.ceil(0.01 * n_mask))
    if n_background < needed:
        raise InputError(
            f"{name}: only {n_background} background voxels lie outside the mask within "
            f"radius {half} of the box centre (need at least {needed}) for the noise "
            "estimate; use half maps (input.half_maps), a tighter mask or a larger box"
        )
    return region


def estimate_memory(shape: tuple[int, ...], n_workers: int = 1, threads: int = 1) -> int:
    """Estimate the peak memory of one worker, in bytes.

    Model: each worker holds the map's complex64 half spectrum once (read-only, shared by
    its tasks), and each of its ``threads`` concurrently running tasks about
    ``VOLUMES_PER_TASK`` (12) float32 volumes; plus :data:`WORKER_OVERHEAD_BYTES` for the
    interpreter and libraries.

    Parameters
    ----------
    shape : tuple of int
        Map shape ``(nz, ny, nx)``.
    n_workers : int, optional
        Number of workers. Does not change the per-worker figure; accepted (and checked)
        so callers can pass the cluster settings as they are. Multiply by it for a
        single-machine total.
    threads : int, optional
        Threads (concurrent tasks) per worker.

    Returns
    -------
    int
        Bytes per worker.
    """
    if n_workers < 1 or threads < 1:
        raise InputError(
            f"n_workers={n_workers} and threads={threads} must be at least 1; fix the "
            "cluster section of the config"
        )
    dims = [int(s) for s in shape]
    n_vox = math.prod(dims)
    spectrum = 8 * math.prod(dims[:-1]) * (dims[-1] // 2 + 1)
    return int(WORKER_OVERHEAD_BYTES + spectrum + threads * VOLUMES_PER_TASK * 4 * n_vox)


def check_memory(
    shape: tuple[int, ...],
    memory_limit_bytes: int,
    *,
    n_workers: int = 1,
    threads: int = 1,
    fix: str | None = None,
) -> int:
    """Refuse a run whose estimated per-worker memory exceeds the per-worker limit.

    Parameters
    ----------
    shape : tuple of int
        Map shape ``(nz, ny, nx)``.
    memory_limit_bytes : int
        Memory available to one worker (job memory / processes per job, or the local
        worker's memory limit).
    n_workers, threads : int, optional
        As in :func:`estimate_memory`.
    fix : str, optional
        What the user should change, for the message (it depends on the kind of cluster;
        the runner passes one). Default: advice for SLURM jobs.

    Returns
    -------
    int
        The estimate in bytes.

    Raises
    ------
    monodir.errors.InputError
        The estimate exceeds the limit.
    """
    need = estimate_memory(shape, n_workers, threads)
    if need > memory_limit_bytes:
        gib = 2.0**30
        if fix is None:
            fix = (
                "run fewer processes per job (cluster.processes) or fewer threads per worker, "
                "or give each job more memory (cluster.memory)"
            )
        raise InputError(
            f"a {_box_xyz(tuple(shape))} map needs about {need / gib:.2f} GiB per worker "
            f"({threads} thread(s)) but the limit is {memory_limit_bytes / gib:.2f} GiB; "
            f"{fix}"
        )
    return need
