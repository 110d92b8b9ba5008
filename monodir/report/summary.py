"""Run summary: the numbers a user looks at first, as one JSON-serialisable dict.

:func:`build_summary` reads the result containers only (no recomputation of any map): it takes
percentiles of each output map over the voxels where that map is defined, and reports the
anisotropy axis and the best and worst resolved directions. The same helpers
(:data:`MAP_INFO`, :func:`map_values`, :func:`map_volume`) are used by the plots and the
ChimeraX script so that every output agrees on what "inside the mask" means:

* the MonoRes map is read over ``MonoResResult.refined_mask``;
* the directional maps are read over ``DirectionalResult.mask_indices``;
* Å-valued resolution maps additionally drop values ``<= 0`` (0 means "not estimated");
* non-finite values are always dropped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monodir.core.results import DirectionalResult, MonoResResult
from monodir.report.tables import atomic_write_text

__all__ = [
    "MAP_INFO",
    "PERCENTILES",
    "SUMMARY_SCHEMA",
    "MapInfo",
    "angle_to_z",
    "available_maps",
    "build_summary",
    "map_stats",
    "map_values",
    "map_volume",
    "mask_volume",
    "percentile_range",
    "to_jsonable",
    "write_summary",
]

SUMMARY_SCHEMA = "monodir.summary/1"
PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)


@dataclass(frozen=True)
class MapInfo:
    """Display metadata of one output map.

    Attributes
    ----------
    label
        Human-readable name.
    unit
        Unit for axis labels (``"Å"`` or ``""`` for dimensionless).
    is_resolution
        True for Å-valued resolution maps (lower is better; ``<= 0`` means not estimated).
    """

    label: str
    unit: str
    is_resolution: bool


#: Every map the report knows, in display order. ``monores`` comes from
#: :class:`MonoResResult`, the others from ``DirectionalResult.maps``.
MAP_INFO: dict[str, MapInfo] = {
    "monores": MapInfo("MonoRes local resolution", "Å", True),
    "radial": MapInfo("Radial resolution", "Å", True),
    "azimuthal": MapInfo("Azimuthal (tangential) resolution", "Å", True),
    "highest": MapInfo("Highest directional resolution (5th percentile)", "Å", True),
    "lowest": MapInfo("Lowest directional resolution (95th percentile)", "Å", True),
    "doa": MapInfo("Degree of anisotropy (half 17-83 % range)", "Å", False),
    "mean_doa": MapInfo("Mean directional resolution ((p5 + p95) / 2)", "Å", True),
    "anisotropy": MapInfo("Anisotropy index", "", False),
    "zscore": MapInfo("Z-score", "", False),
}


# --------------------------------------------------------------------------- map access
def mask_volume(directional: DirectionalResult, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Boolean volume of the directional analysis mask (from ``mask_indices``).

    Parameters
    ----------
    directional
        Directional result.
    shape
        Volume shape; taken from the first map of ``directional.maps`` when None.
    """
    if shape is None:
        if not directional.maps:
            raise ValueError("cannot infer the volume shape: directional.maps is empty")
        shape = next(iter(directional.maps.values())).shape
    mask = np.zeros(int(np.prod(shape)), dtype=bool)
    mask[np.asarray(directional.mask_indices, dtype=np.int64)] = True
    return mask.reshape(shape)


def available_maps(
    monores: MonoResResult | None, directional: DirectionalResult | None
) -> list[str]:
    """Names of :data:`MAP_INFO` present in the given results, in display order."""
    names = []
    for name in MAP_INFO:
        if name == "monores":
            if monores is not None:
                names.append(name)
        elif directional is not None and name in directional.maps:
            names.append(name)
    return names


def map_volume(
    monores: MonoResResult | None, directional: DirectionalResult | None, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """A map and the boolean volume of the voxels where it is defined.

    Returns
    -------
    volume, valid
        The map (as stored) and a boolean array of the same shape: inside the relevant mask,
        finite, and ``> 0`` for resolution maps.
    """
    if name == "monores":
        if monores is None:
            raise KeyError("no MonoRes result")
        vol = np.asarray(monores.resolution)
        valid = np.asarray(monores.refined_mask, dtype=bool).copy()
    else:
        if directional is None or name not in directional.maps:
            raise KeyError(f"map {name!r} not in the directional result")
        vol = np.asarray(directional.maps[name])
        valid = mask_volume(directional, vol.shape)
    valid &= np.isfinite(vol)
    info = MAP_INFO.get(name)
    if info is not None and info.is_resolution:
        valid &= vol > 0
    return vol, valid


def map_values(
    monores: MonoResResult | None, directional: DirectionalResult | None, name: str
) -> np.ndarray:
    """1-D float64 array of a map's values where it is defined (see :func:`map_volume`)."""
    if name != "monores" and directional is not None and name in directional.maps:
        # Avoid building a full boolean volume: read the mask voxels directly.
        vol = np.asarray(directional.maps[name])
        vals = vol.reshape(-1)[np.asarray(directional.mask_indices, dtype=np.int64)]
        vals = vals.astype(np.float64)
        keep = np.isfinite(vals)
        info = MAP_INFO.get(name)
        if info is not None and info.is_resolution:
            keep &= vals > 0
        return vals[keep]
    vol, valid = map_volume(monores, directional, name)
    return vol[valid].astype(np.float64)


def map_stats(values: np.ndarray) -> dict[str, float | int | None]:
    """Count, mean, min, max, median and the :data:`PERCENTILES` of ``values``.

    Empty input gives ``n = 0`` and None for every statistic.
    """
    values = np.asarray(values, dtype=np.float64)
    out: dict[str, float | int | None] = {"n": int(values.size)}
    keys = ["mean", "min", "max", "median"] + [f"p{p}" for p in PERCENTILES]
    if values.size == 0:
        out.update(dict.fromkeys(keys))
        return out
    pct = np.percentile(values, PERCENTILES)
    out["mean"] = float(values.mean())
    out["min"] = float(values.min())
    out["max"] = float(values.max())
    out["median"] = float(np.median(values))
    for p, v in zip(PERCENTILES, pct):
        out[f"p{p}"] = float(v)
    return out


def percentile_range(
    values: np.ndarray, percentiles: Sequence[float] = (2.0, 98.0)
) -> tuple[float, float]:
    """Colour range from percentiles of the finite ``values``.

    Returns ``(0, 1)`` for empty input and widens a zero-width range by 0.5 either side.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(v, list(percentiles)))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def angle_to_z(vector: np.ndarray) -> float:
    """Angle in degrees (0-90) between an axis (sign ignored) and z."""
    v = np.asarray(vector, dtype=np.float64)
    n = float(np.linalg.norm(v))
    if n == 0 or not np.isfinite(n):
        return float("nan")
    return float(np.degrees(np.arccos(min(1.0, abs(v[2]) / n))))


def _axis_angles(vector: np.ndarray) -> tuple[float, float]:
    """(rot, tilt) in degrees of an axis, flipped to the upper hemisphere."""
    v = np.asarray(vector, dtype=np.float64)
    n = float(np.linalg.norm(v))
    if n == 0 or not np.isfinite(n):
        return float("nan"), float("nan")
    v = v / n
    if v[2] < 0:
        v = -v
    rot = float(np.degrees(np.arctan2(v[1], v[0])))
    tilt = float(np.degrees(np.arccos(min(1.0, v[2]))))
    return rot, tilt


def _direction_record(directional: DirectionalResult, i: int) -> dict[str, Any]:
    d = np.asarray(directional.directions[i], dtype=np.float64)
    return {
        "index": int(i),
        "rot_deg": float(directional.angles[i][0]),
        "tilt_deg": float(directional.angles[i][1]),
        "vector": [float(x) for x in d],
        "mean_resolution_A": float(directional.direction_means[i]),
        "angle_to_z_deg": angle_to_z(d),
    }


def _rejected_fraction(matrix: np.ndarray, rows_per_chunk: int = 8) -> float | None:
    """Fraction of rejected (NaN or ``<= 0``) entries, read in row chunks (low memory; the
    matrix may be a stored Zarr array, read chunk by chunk)."""
    if not hasattr(matrix, "shape"):
        matrix = np.asarray(matrix)
    size = int(np.prod(matrix.shape))
    if size == 0:
        return None
    bad = 0
    for start in range(0, matrix.shape[0], rows_per_chunk):
        block = np.asarray(matrix[start : start + rows_per_chunk])
        bad += int(np.count_nonzero(~(block > 0)))  # NaN compares False
    return bad / size


def _anisotropy_summary(
    monores: MonoResResult | None, directional: DirectionalResult
) -> dict[str, Any]:
    means = np.asarray(directional.direction_means, dtype=np.float64)
    out: dict[str, Any] = {}
    if "anisotropy" in directional.maps:
        v = map_values(monores, directional, "anisotropy")
        out["median_anisotropy_index"] = float(np.median(v)) if v.size else None
    if "doa" in directional.maps:
        v = map_values(monores, directional, "doa")
        out["median_doa_A"] = float(np.median(v)) if v.size else None
    axis = np.asarray(directional.anisotropy_axis, dtype=np.float64)
    out["axis"] = [float(x) for x in axis]
    out["axis_angle_to_z_deg"] = float(directional.axis_angle_to_z)
    rot, tilt = _axis_angles(axis)
    out["axis_rot_deg"] = rot
    out["axis_tilt_deg"] = tilt
    finite = np.flatnonzero(np.isfinite(means))
    if finite.size:
        best = int(finite[np.argmin(means[finite])])
        worst = int(finite[np.argmax(means[finite])])
        out["best_direction"] = _direction_record(directional, best)
        out["worst_direction"] = _direction_record(directional, worst)
        lo, hi = float(means[best]), float(means[worst])
        out["direction_mean_range_A"] = [lo, hi]
        out["worst_to_best_ratio"] = hi / lo if lo > 0 else None
    else:
        out["best_direction"] = None
        out["worst_direction"] = None
    return out


# --------------------------------------------------------------------------- JSON
def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and sets to plain JSON types.

    Non-finite floats become None so the output is strict JSON.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def build_summary(
    monores: MonoResResult | None,
    directional: DirectionalResult,
    *,
    config: dict,
    versions: dict,
    timings: dict,
    inputs: dict,
    global_fsc: dict | None = None,
) -> dict:
    """Collect the key numbers of a run into a JSON-serialisable dict.

    Parameters
    ----------
    monores
        MonoRes result, or None when MonoRes was not run.
    directional
        Directional result.
    config
        The resolved run configuration.
    versions
        Package versions (``{"monodir": "...", "numpy": "...", ...}``).
    timings
        Seconds per stage (``{"monores": 12.3, "directions": 456.7, ...}``).
    inputs
        Input description (file names, shape, voxel size, ...).
    global_fsc
        Optional global directional FSC summary (per-direction resolutions, sphericity,
        note); taken from ``directional.extra["global_fsc"]`` when None.

    Returns
    -------
    dict
        Keys: ``schema``, ``voxel_size_A``, ``shape``, ``n_mask_voxels``, ``n_directions``,
        ``maps`` (per map: ``label``, ``unit``, ``n``, ``mean``, ``min``, ``max``, ``median``,
        ``p5`` ... ``p95``), ``thresholds`` (``radial_p90_A``, ``azimuthal_p90_A``),
        ``anisotropy`` (``median_anisotropy_index``, ``median_doa_A``, ``axis``,
        ``axis_angle_to_z_deg``, ``axis_rot_deg``, ``axis_tilt_deg``, ``best_direction``,
        ``worst_direction``, ``direction_mean_range_A``, ``worst_to_best_ratio``),
        ``monores`` (or None), ``directional``, ``timings``, ``timings_total_s`` (the
        ``total`` entry of ``timings`` when present, else the sum of the stages), ``config``,
        ``versions``, ``inputs`` and, when available, ``global_fsc``. NaN is stored as None.
    """
    maps: dict[str, Any] = {}
    for name in available_maps(monores, directional):
        info = MAP_INFO[name]
        stats = map_stats(map_values(monores, directional, name))
        maps[name] = {"label": info.label, "unit": info.unit, **stats}

    shape = None
    if directional.maps:
        shape = list(next(iter(directional.maps.values())).shape)
    elif monores is not None:
        shape = list(monores.resolution.shape)

    mono_section = None
    if monores is not None:
        tested = np.asarray(monores.resolutions, dtype=np.float64)
        mono_section = {
            "median_A": monores.median,
            "n_voxels": int(np.count_nonzero(monores.refined_mask)),
            "n_tested": int(tested.size),
            "tested_range_A": [float(tested.max()), float(tested.min())] if tested.size else None,
            "stop_reason": monores.stop_reason,
            "voxel_size_A": float(monores.voxel_size),
        }

    def _is_number(v: Any) -> bool:
        return isinstance(v, int | float | np.number) and not isinstance(v, bool)

    if _is_number(timings.get("total")):
        total: float | None = float(timings["total"])
    else:
        numeric = [v for v in timings.values() if _is_number(v)]
        total = float(sum(numeric)) if numeric and len(numeric) == len(timings) else None

    summary: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA,
        "voxel_size_A": float(directional.voxel_size),
        "shape": shape,
        "n_mask_voxels": int(np.asarray(directional.mask_indices).size),
        "n_directions": int(np.asarray(directional.directions).shape[0]),
        "maps": maps,
        "thresholds": {
            "radial_p90_A": directional.thresholds.get("radial_p90"),
            "azimuthal_p90_A": directional.thresholds.get("azimuthal_p90"),
        },
        "anisotropy": _anisotropy_summary(monores, directional),
        "monores": mono_section,
        "directional": {
            "n_directions": int(np.asarray(directional.directions).shape[0]),
            "n_mask_voxels": int(np.asarray(directional.mask_indices).size),
            "rejected_fraction": _rejected_fraction(directional.resolution_matrix),
        },
        "timings": dict(timings),
        "timings_total_s": total,
        "config": config,
        "versions": versions,
        "inputs": inputs,
    }
    fsc = global_fsc if global_fsc is not None else directional.extra.get("global_fsc")
    if fsc is not None:
        summary["global_fsc"] = fsc
    return to_jsonable(summary)


def write_summary(path: str | os.PathLike, summary: dict) -> Path:
    """Write ``summary`` as indented strict JSON, atomically.

    Parameters
    ----------
    path
        Destination (``summary.json``).
    summary
        Output of :func:`build_summary` (converted again with :func:`to_jsonable`).

    Returns
    -------
    Path
        The file written.
    """
    text = json.dumps(to_jsonable(summary), indent=2, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")
