"""Reduction of per-direction resolutions into maps and tables (algorithm.md 2.10-2.12).

Work is split into blocks of mask voxels (:func:`voxel_summaries`, independent, run on the
workers) and a final step over whole maps (:func:`finalize_directional`: thresholds, radial
averages, z-score, tables).

Default mode versus ``xmipp_compat=True``:

* outlier removal (Q3): neighbours are found with antipodes folded, each neighbour's vector is
  sign-aligned before the distance is taken, and a direction is dropped only when its mean
  distance to its neighbours is above the cut (Xmipp also drops directions whose summed
  distance is <= 1 Å, i.e. those that agree best);
* radial/tangential classification (Q2): the correct dot product of direction and position
  (Xmipp swaps x and y of the position);
* preferred-direction sums in floating point (Q10: Xmipp truncates every addition to an integer;
  NaN for directions never preferred is reported as 0 count and NaN mean in both modes).

The anisotropy index (not in Xmipp) is ``(p83 - p17) / (p83 + p17)`` over the voxel's
directional resolutions, i.e. Xmipp's ``doa`` (half the 17-83 % range, Å) divided by the middle
of that range: dimensionless, 0 for a voxel resolved equally in every direction, approaching 1
when a third of the directions are far worse than the best third. The 17/83 percentiles (rather
than 5/95) keep the index from saturating on the few directions that fail at the first tested
frequency even in isotropic maps.
"""

from __future__ import annotations

import numpy as np

from monodir.core.directions import canonical_angles, neighbour_pairs
from monodir.core.masks import percentile, radius2
from monodir.core.results import DirectionalResult

#: Neighbour angle for the outlier test (degrees).
NEIGHBOUR_ANGLE = 20.0
#: Radial if the angle to the position vector is <= this (degrees).
RADIAL_ANGLE = 45.0
#: Tangential (azimuthal) if the angle to the position vector is >= this (degrees).
TANGENTIAL_ANGLE = 70.0
#: A direction is "preferred" at a voxel when within this many Å of the voxel's best value.
PREFERRED_TOLERANCE = 0.1
VOXEL_MAPS = ("highest", "lowest", "doa", "mean_doa", "radial", "azimuthal", "anisotropy")


def _z_sig(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def remove_outliers(
    block: np.ndarray, directions: np.ndarray, significance: float, *, xmipp_compat: bool
) -> np.ndarray:
    """Mark directional outliers per voxel; returns a copy with rejected entries set to -1.

    ``block`` is ``(D, nb)``; entries ``<= 0`` (or NaN) are already invalid.
    """
    res = np.array(block, dtype=np.float64, copy=True)
    res[~(res > 0)] = -1.0
    pairs = neighbour_pairs(directions, NEIGHBOUR_ANGLE, fold=not xmipp_compat)
    if pairs.size == 0:
        return res
    i, j = pairs[:, 0], pairs[:, 1]
    dots = np.einsum("pk,pk->p", directions[i], directions[j])
    if not xmipp_compat:
        dots = np.abs(dots)
    ri, rj = res[i], res[j]
    valid = (ri > 0) & (rj > 0)
    e2 = ri * ri + rj * rj - 2.0 * ri * rj * dots[:, None]
    e = np.sqrt(np.maximum(e2, 0.0))
    e = np.where(valid, e, 0.0)
    cnt = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = e.sum(axis=0) / cnt
        var = (e * e).sum(axis=0) / cnt - mean * mean
    cut = mean + _z_sig(significance) * np.sqrt(np.maximum(var, 0.0))
    sum_i = np.zeros_like(res)
    cnt_i = np.zeros(res.shape, dtype=np.int64)
    np.add.at(sum_i, i, e)
    np.add.at(cnt_i, i, valid.astype(np.int64))
    with np.errstate(invalid="ignore", divide="ignore"):
        avg_i = sum_i / cnt_i
    bad = (sum_i > 0) & (avg_i > cut[None, :])
    if xmipp_compat:
        bad |= (sum_i > 0) & (sum_i <= 1.0)
    bad &= res > 0
    res[bad] = -1.0
    return res


def _sorted_percentile(sorted_vals: np.ndarray, n: np.ndarray, p: float) -> np.ndarray:
    k = np.minimum((n * p).astype(np.int64), np.maximum(n - 1, 0))
    return np.take_along_axis(sorted_vals, k[None, :], axis=0)[0]


def voxel_summaries(setup, block: np.ndarray, start: int) -> dict:
    """Per-voxel summaries of mask voxels ``start : start + nb``.

    Parameters
    ----------
    setup
        The :class:`~monodir.core.directional.DirectionalSetup`.
    block
        ``(D, nb)`` per-direction resolutions of those voxels.
    start
        Offset of the block in the mask-voxel order.

    Returns
    -------
    dict
        ``start``, per-voxel arrays named as :data:`VOXEL_MAPS`, and the partial sums
        ``pref_count``, ``pref_sum``, ``dir_sum``, ``dir_count`` (each ``(D,)``).
    """
    compat = setup.xmipp_compat
    dirs = setup.directions
    res = remove_outliers(block, dirs, setup.significance, xmipp_compat=compat)
    valid = res > 0
    n = valid.sum(axis=0)
    srt = np.sort(np.where(valid, res, np.inf), axis=0)
    highest = _sorted_percentile(srt, n, 0.05)
    lowest = _sorted_percentile(srt, n, 0.95)
    p17 = _sorted_percentile(srt, n, 0.17)
    p83 = _sorted_percentile(srt, n, 0.83)
    doa = 0.5 * (p83 - p17)
    mean_doa = 0.5 * (highest + lowest)
    empty = n == 0
    for arr in (highest, lowest, doa, mean_doa):
        arr[empty] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        aniso = np.where(empty, 0.0, (p83 - p17) / (p83 + p17))

    # radial / tangential
    shape = setup.shape
    idx = setup.mask_indices[start : start + block.shape[1]]
    kz, rem = np.divmod(idx, shape[1] * shape[2])
    ky, kx = np.divmod(rem, shape[2])
    x = (kx - shape[2] // 2).astype(np.float64)
    y = (ky - shape[1] // 2).astype(np.float64)
    z = (kz - shape[0] // 2).astype(np.float64)
    norm_p = np.sqrt(x * x + y * y + z * z)
    if compat:
        dotp = np.outer(dirs[:, 0], y) + np.outer(dirs[:, 1], x) + np.outer(dirs[:, 2], z)
    else:
        dotp = np.outer(dirs[:, 0], x) + np.outer(dirs[:, 1], y) + np.outer(dirs[:, 2], z)
    with np.errstate(invalid="ignore", divide="ignore"):
        ang = np.degrees(np.arccos(np.abs(dotp) / norm_p[None, :]))
    rad_sel = valid & (ang <= RADIAL_ANGLE)
    tan_sel = valid & (ang >= TANGENTIAL_ANGLE)
    resv = np.where(valid, res, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        radial = (resv * rad_sel).sum(axis=0) / rad_sel.sum(axis=0)
        azimuthal = (resv * tan_sel).sum(axis=0) / tan_sel.sum(axis=0)
    radial = np.where(rad_sel.any(axis=0), radial, mean_doa)
    azimuthal = np.where(tan_sel.any(axis=0), azimuthal, mean_doa)

    # preferred directions
    pref = valid & (np.abs(res - highest[None, :]) <= PREFERRED_TOLERANCE)
    pref_count = pref.sum(axis=1).astype(np.int64)
    if compat:
        pref_sum = np.where(pref, np.floor(resv), 0.0).sum(axis=1)
    else:
        pref_sum = np.where(pref, resv, 0.0).sum(axis=1)
    return {
        "start": start,
        "highest": highest,
        "lowest": lowest,
        "doa": doa,
        "mean_doa": mean_doa,
        "radial": radial,
        "azimuthal": azimuthal,
        "anisotropy": aniso,
        "pref_count": pref_count,
        "pref_sum": pref_sum,
        "dir_sum": resv.sum(axis=1),
        "dir_count": valid.sum(axis=1).astype(np.int64),
    }


def fit_axis(directions: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, float]:
    """Worst-resolved axis: principal eigenvector of ``sum_i w_i d_i d_i^T``.

    ``w_i = means_i - min(means)``. Returns the unit axis (z component >= 0) and its angle to z
    in degrees.
    """
    ok = np.isfinite(means)
    d = directions[ok]
    w = means[ok] - means[ok].min()
    tensor = (d * w[:, None]).T @ d
    _, vecs = np.linalg.eigh(tensor)
    axis = vecs[:, -1]
    if axis[2] < 0:
        axis = -axis
    angle = float(np.degrees(np.arccos(np.clip(abs(axis[2]), 0.0, 1.0))))
    return axis, angle


def radial_averages_and_zscore(
    maps: dict[str, np.ndarray], in_mask: np.ndarray, monores_map: np.ndarray | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Shell means/stds of radial, azimuthal, highest, lowest and MonoRes maps; z-score map.

    Shells ``kk-1 <= r < kk+1`` (``kk = 1 .. n//2 - 1``) over mask voxels (algorithm.md 2.12).
    The z-score of a voxel is the largest of ``|v - mean| / std + 0.002`` over the radial,
    azimuthal, highest and MonoRes maps, computed in the last shell holding the voxel and capped
    at 5.
    """
    shape = in_mask.shape
    n = shape[2]
    r = np.sqrt(radius2(shape).astype(np.float64))[in_mask]
    mono = monores_map if monores_map is not None else np.zeros(shape)
    names = ("radial", "azimuthal", "highest", "lowest", "monores")
    vals = {k: (maps[k] if k != "monores" else mono)[in_mask].astype(np.float64) for k in names}
    kmax = n // 2 - 1
    base = np.floor(r).astype(np.int64)
    table: dict[str, list] = {"radius": []}
    for k in names:
        table[f"{k}_mean"] = []
        table[f"{k}_std"] = []
    zscore = np.zeros(r.size)
    nbins = kmax + 2
    sums = {}
    for k in names:
        s1 = np.zeros(nbins)
        s2 = np.zeros(nbins)
        cnt = np.zeros(nbins)
        for off in (0, 1):
            kk = base + off
            ok = (kk >= 1) & (kk <= kmax) & (kk - 1 <= r) & (r < kk + 1)
            np.add.at(s1, kk[ok], vals[k][ok])
            np.add.at(s2, kk[ok], vals[k][ok] ** 2)
            np.add.at(cnt, kk[ok], 1)
        sums[k] = (s1, s2, cnt)
    cnt = sums["radial"][2]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = {k: sums[k][0] / cnt for k in names}
        stds = {}
        for k in names:
            var = sums[k][1] / cnt - means[k] ** 2
            if k == "lowest":
                var = var + 0.001
            stds[k] = np.sqrt(np.maximum(var, 0.0))
    for kk in range(1, kmax + 1):
        if cnt[kk] == 0 or not any(means[k][kk] > 0 for k in names):
            continue
        table["radius"].append(kk)
        for k in names:
            table[f"{k}_mean"].append(means[k][kk])
            table[f"{k}_std"].append(stds[k][kk])
    # z-score from the last shell containing each voxel
    last = np.where(base + 1 <= kmax, base + 1, base)
    last = np.clip(last, 0, nbins - 1)
    ok = (last >= 1) & (means["radial"][last] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        zs = [
            np.abs(vals[k] - means[k][last]) / stds[k][last] + 0.002
            for k in ("radial", "azimuthal", "highest", "monores")
        ]
    stacked = np.stack(zs)
    all_nan = np.isnan(stacked).all(axis=0)
    zmax = np.where(
        all_nan, np.nan, np.nanmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=0)
    )
    zmax = np.minimum(np.where(np.isnan(zmax), 5.0, zmax), 5.0)
    zscore[ok] = zmax[ok]
    zmap = np.zeros(shape)
    zmap[in_mask] = zscore
    return {k: np.asarray(v) for k, v in table.items()}, zmap


def finalize_directional(
    setup, parts: list[dict], monores_map: np.ndarray | None = None
) -> DirectionalResult:
    """Combine block summaries into the :class:`DirectionalResult`."""
    parts = sorted(parts, key=lambda p: p["start"])
    shape = setup.shape
    out_dtype = np.float64 if setup.xmipp_compat else np.float32
    maps: dict[str, np.ndarray] = {}
    for name in VOXEL_MAPS:
        vol = np.zeros(int(np.prod(shape)), dtype=np.float64)
        vol[setup.mask_indices] = np.concatenate([p[name] for p in parts])
        maps[name] = vol.reshape(shape)
    in_mask = np.zeros(int(np.prod(shape)), dtype=bool)
    in_mask[setup.mask_indices] = True
    in_mask = in_mask.reshape(shape)
    radial_vals = maps["radial"][in_mask]
    az_vals = maps["azimuthal"][in_mask]
    thresholds = {
        "radial_p90": percentile(radial_vals, 0.9) if radial_vals.size else float("nan"),
        "azimuthal_p90": percentile(az_vals, 0.9) if az_vals.size else float("nan"),
    }
    table, zmap = radial_averages_and_zscore(maps, in_mask, monores_map)
    maps["zscore"] = zmap
    pref_count = np.sum([p["pref_count"] for p in parts], axis=0)
    pref_sum = np.sum([p["pref_sum"] for p in parts], axis=0)
    dir_sum = np.sum([p["dir_sum"] for p in parts], axis=0)
    dir_count = np.sum([p["dir_count"] for p in parts], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pref_mean = pref_sum / pref_count
        dir_mean = dir_sum / dir_count
    canon = canonical_angles(setup.angles)
    preferred = {
        "rot": canon[:, 0],
        "tilt": canon[:, 1],
        "count": pref_count,
        "mean_resolution": pref_mean,
    }
    axis, angle = fit_axis(setup.directions, dir_mean)
    extra = {"n_directions": setup.n_directions, "sweep": [s.resolution for s in setup.steps]}
    if setup.half_maps:
        extra["global_fsc"] = global_fsc_summary(setup)
    return DirectionalResult(
        directions=setup.directions,
        angles=setup.angles,
        mask_indices=setup.mask_indices,
        resolution_matrix=np.empty((0, 0), dtype=np.float32),
        maps={k: v.astype(out_dtype) for k, v in maps.items()},
        thresholds=thresholds,
        radial_averages=table,
        preferred_directions=preferred,
        direction_means=dir_mean,
        anisotropy_axis=axis,
        axis_angle_to_z=angle,
        voxel_size=setup.voxel_size,
        extra=extra,
    )


#: Shown next to the global FSC: what a half-map FSC cannot see (simulated_halfmaps caveat 1).
FSC_NOTE = (
    "Cone FSC between the two half maps (20-degree cones, unmasked, 0.143 threshold): one "
    "global number per direction. A half-map FSC measures the consistency of the halves, not "
    "agreement with the truth: where both halves share leaked signal (a missing cone filled by "
    "reconstruction artefacts) it can report a good resolution although there is no "
    "information there, while the local directional test above is not fooled."
)


def global_fsc_summary(setup) -> dict:
    """Global and cone FSC of the half maps behind ``setup`` (JSON-friendly dict).

    The halves are recovered from the stored spectra of their mean and half difference.
    """
    from monodir.core import fourier
    from monodir.core.fsc import directional_fsc

    spec_sum = setup.spectrum.astype(np.complex128)
    spec_diff = setup.noise_spectrum.astype(np.complex128)
    h1 = fourier.irfftn(spec_sum + spec_diff, setup.shape)
    h2 = fourier.irfftn(spec_sum - spec_diff, setup.shape)
    fsc = directional_fsc(h1, h2, setup.voxel_size, directions=setup.directions)
    canon = canonical_angles(setup.angles)

    def _f(v: float) -> float | None:
        return float(v) if np.isfinite(v) else None

    return {
        "global_resolution_A": _f(fsc.global_resolution_0143),
        "global_resolution_05_A": _f(fsc.global_resolution_05),
        "best_direction_A": _f(
            np.nanmin(np.where(np.isfinite(fsc.resolution_0143), fsc.resolution_0143, np.nan))
        ),
        "worst_direction_A": _f(np.max(fsc.resolution_0143)),
        "axis": [float(x) for x in fsc.axis],
        "axis_angle_to_z_deg": _f(fsc.axis_angle_to_z),
        "sphericity": _f(fsc.sphericity),
        "cfar": _f(fsc.cfar),
        "directions": [
            {
                "index": int(i),
                "rot_deg": float(canon[i, 0]),
                "tilt_deg": float(canon[i, 1]),
                "resolution_A": _f(fsc.resolution_0143[i]),
            }
            for i in range(len(fsc.resolution_0143))
        ],
        "curve": [
            {"shell": int(k), "resolution_A": _f(fsc.shells[k]), "fsc": _f(fsc.global_fsc[k])}
            for k in range(1, len(fsc.global_fsc))
        ],
        "note": FSC_NOTE,
    }
