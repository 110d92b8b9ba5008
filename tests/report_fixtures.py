"""Fake but realistic result containers for the report tests.

A 32^3 box, 1.2 Å voxels, a spherical mask of radius 12 voxels and 81 directions on the upper
hemisphere. Per-direction resolutions follow a simple anisotropic model: a radial degradation
from about 3 Å at the centre to 5.5 Å at the mask edge, plus up to 2 Å extra along a tilted
"worst" axis (the kind of anisotropy preferred orientation gives), plus noise and a few
rejected entries. The summary maps and tables are derived from that matrix with the documented
definitions (algorithm.md 2.11-2.12), so numbers are mutually consistent.
"""

from __future__ import annotations

import numpy as np

from monodir.core.results import DirectionalResult, MonoResResult

N = 32
VOXEL_SIZE = 1.2
MASK_RADIUS = 12.0
N_DIRECTIONS = 81
TRUE_AXIS = np.array([0.3, 0.2, 0.93]) / np.linalg.norm([0.3, 0.2, 0.93])


def hemisphere_directions(n: int = N_DIRECTIONS) -> tuple[np.ndarray, np.ndarray]:
    """``n`` roughly uniform unit vectors with ``z >= 0`` and their (rot, tilt) in degrees."""
    k = np.arange(n) + 0.5
    z = 1.0 - k / n  # uniform in z on the hemisphere = uniform in area
    phi = np.pi * (3.0 - np.sqrt(5.0)) * np.arange(n)
    s = np.sqrt(1.0 - z**2)
    d = np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=1)
    rot = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    tilt = np.degrees(np.arccos(np.clip(d[:, 2], -1, 1)))
    return d, np.stack([rot, tilt], axis=1)


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    c = N // 2
    z, y, x = np.meshgrid(np.arange(N) - c, np.arange(N) - c, np.arange(N) - c, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    return x, y, z, r


def example_volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A density map (a few Gaussian blobs plus noise) and its spherical mask."""
    rng = np.random.default_rng(seed)
    x, y, z, r = _grid()
    vol = np.zeros((N, N, N), dtype=np.float32)
    for _ in range(6):
        cx, cy, cz = rng.uniform(-6, 6, size=3)
        vol += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * 2.5**2)).astype(
            np.float32
        )
    vol += rng.normal(0, 0.05, size=vol.shape).astype(np.float32)
    return vol, r <= MASK_RADIUS


def _shell_table(maps: dict[str, np.ndarray], mask: np.ndarray, r: np.ndarray) -> dict:
    table: dict[str, list[float]] = {"radius": []}
    for key in maps:
        table[f"{key}_mean"] = []
        table[f"{key}_std"] = []
    for kk in range(1, N // 2):
        shell = mask & (r >= kk - 1) & (r < kk + 1)
        if not shell.any():
            continue
        table["radius"].append(kk)
        for key, vol in maps.items():
            v = vol[shell]
            table[f"{key}_mean"].append(float(v.mean()))
            table[f"{key}_std"].append(float(v.std()))
    out = {k: np.asarray(v, dtype=np.float64) for k, v in table.items()}
    out["radius"] = out["radius"].astype(np.int64)
    return out


def make_example(
    seed: int = 0, *, with_global_fsc: bool = False
) -> tuple[MonoResResult, DirectionalResult]:
    """Build a consistent (MonoResResult, DirectionalResult) pair for a 32^3 example."""
    rng = np.random.default_rng(seed)
    x, y, z, r = _grid()
    mask = r <= MASK_RADIUS
    idx = np.flatnonzero(mask.ravel())
    dirs, angles = hemisphere_directions()

    base = 3.0 + 2.5 * (r.ravel()[idx] / MASK_RADIUS) ** 2  # (Nmask,)
    along = (dirs @ TRUE_AXIS) ** 2  # (D,)
    res = base[None, :] + 2.0 * along[:, None] + rng.normal(0, 0.15, (N_DIRECTIONS, idx.size))
    res = res.astype(np.float32)
    res[rng.random(res.shape) < 0.03] = np.nan  # rejected outliers

    p5, p17, p83, p95 = np.nanpercentile(res, [5, 17, 83, 95], axis=0)
    pos = np.stack([x.ravel()[idx], y.ravel()[idx], z.ravel()[idx]], axis=1).astype(np.float64)
    norm = np.linalg.norm(pos, axis=1)
    norm[norm == 0] = np.nan
    cosang = np.abs(dirs @ pos.T) / norm[None, :]  # (D, Nmask)
    radial_sel = cosang >= np.cos(np.radians(45))
    azim_sel = cosang <= np.cos(np.radians(70))
    with np.errstate(invalid="ignore", divide="ignore"):
        radial = np.nansum(np.where(radial_sel, res, np.nan), axis=0) / np.sum(
            radial_sel & np.isfinite(res), axis=0
        )
        azim = np.nansum(np.where(azim_sel, res, np.nan), axis=0) / np.sum(
            azim_sel & np.isfinite(res), axis=0
        )
    mean_doa = 0.5 * (p5 + p95)
    radial = np.where(np.isfinite(radial), radial, mean_doa)
    azim = np.where(np.isfinite(azim), azim, mean_doa)

    per_voxel = {
        "radial": radial,
        "azimuthal": azim,
        "highest": p5,
        "lowest": p95,
        "doa": 0.5 * (p83 - p17),
        "mean_doa": mean_doa,
        "anisotropy": (p95 - p5) / (p95 + p5),
        "zscore": np.minimum(np.abs(rng.normal(0, 1.2, idx.size)), 5.0),
    }
    maps: dict[str, np.ndarray] = {}
    for key, values in per_voxel.items():
        vol = np.zeros(N**3, dtype=np.float32)
        vol[idx] = values
        maps[key] = vol.reshape(N, N, N)

    # MonoRes: roughly the mean directional resolution, on a slightly smaller refined mask.
    refined = r <= MASK_RADIUS - 1
    mono = np.where(refined, 3.0 + 2.5 * (r / MASK_RADIUS) ** 2 + 0.8, 0.0)
    mono = (mono + refined * rng.normal(0, 0.1, mono.shape)).astype(np.float32)
    median = float(np.median(mono[refined]))
    chimera = np.where(refined, mono, median).astype(np.float32)
    tested = np.round(VOXEL_SIZE * N / np.arange(2, N // 2 + 1), 4)
    tested = tested[tested <= 18.0]
    nt = tested.size
    stats = {
        "resolution": tested,
        "frequency": VOXEL_SIZE / tested,
        "mean_signal": np.linspace(2.0, 0.3, nt),
        "var_signal": np.linspace(0.5, 0.05, nt),
        "n_signal": np.linspace(idx.size, 50, nt).round().astype(np.int64),
        "mean_noise": np.linspace(0.4, 0.2, nt),
        "var_noise": np.full(nt, 0.01),
        "n_noise": np.full(nt, 20000, dtype=np.int64),
        "threshold": np.linspace(0.6, 0.35, nt),
        "z": np.linspace(8.0, 0.5, nt),
    }
    monores = MonoResResult(
        resolution=mono,
        chimera=chimera,
        refined_mask=refined,
        resolutions=tested,
        stats=stats,
        voxel_size=VOXEL_SIZE,
        stop_reason="all voxels finished",
    )

    radial_averages = _shell_table(
        {
            "radial": maps["radial"],
            "azimuthal": maps["azimuthal"],
            "highest": maps["highest"],
            "lowest": maps["lowest"],
            "monores": mono,
        },
        mask,
        r,
    )

    filled = np.where(np.isfinite(res), res, np.inf)
    best = np.argmin(filled, axis=0)
    best_res = filled[best, np.arange(idx.size)]
    count = np.bincount(best, minlength=N_DIRECTIONS)
    sum_res = np.bincount(best, weights=best_res, minlength=N_DIRECTIONS)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pref = np.where(count > 0, sum_res / np.maximum(count, 1), np.nan)
    preferred = {
        "index": np.arange(N_DIRECTIONS),
        "rot": angles[:, 0].copy(),
        "tilt": angles[:, 1].copy(),
        "count": count.astype(np.int64),
        "mean_resolution": mean_pref,
    }

    direction_means = np.nanmean(res, axis=1).astype(np.float64)
    w = direction_means - direction_means.min()
    tensor = (dirs * w[:, None]).T @ dirs
    _, evecs = np.linalg.eigh(tensor)
    axis = evecs[:, -1]
    if axis[2] < 0:
        axis = -axis
    axis_angle = float(np.degrees(np.arccos(min(1.0, abs(axis[2])))))

    extra: dict = {}
    if with_global_fsc:
        extra["global_fsc"] = {
            "directions": [
                {
                    "index": int(i),
                    "rot_deg": float(angles[i, 0]),
                    "tilt_deg": float(angles[i, 1]),
                    "resolution_A": float(3.2 + 1.5 * along[i]),
                }
                for i in range(0, N_DIRECTIONS, 10)
            ],
            "global_resolution_A": 3.4,
            "sphericity": 0.82,
            "note": "Cone FSC between half maps, 20° half-angle, 0.143 threshold.",
        }

    directional = DirectionalResult(
        directions=dirs,
        angles=angles,
        mask_indices=idx,
        resolution_matrix=res,
        maps=maps,
        thresholds={
            "radial_p90": float(np.percentile(radial, 90)),
            "azimuthal_p90": float(np.percentile(azim, 90)),
        },
        radial_averages=radial_averages,
        preferred_directions=preferred,
        direction_means=direction_means,
        anisotropy_axis=axis,
        axis_angle_to_z=axis_angle,
        voxel_size=VOXEL_SIZE,
        extra=extra,
    )
    return monores, directional
