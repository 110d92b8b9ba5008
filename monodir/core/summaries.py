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

In ``xmipp_compat`` mode the summaries repeat Xmipp's arithmetic step by step, so that
``thresholds.xmd``, ``hist_prefdir.xmd`` and ``Radial_averages.xmd`` come out equal to Xmipp's
at their printed precision: resolutions as the doubles ``float32(voxel size) / f`` (Xmipp parses
``--sampling_rate`` as a float), the outlier cut with Xmipp's approximate inverse normal CDF
(Abramowitz & Stegun 26.2.23), distances and sums in Xmipp's order, radial/tangential angles
from ``(d . p) * (1/|p|)`` and libm ``acos`` compared in radians (exact 45-degree ties), shell
sums in scan order, NaN shell standard deviations skipped in the z-score (-1 when all are NaN).

The anisotropy index (not in Xmipp) is ``(p83 - p17) / (p83 + p17)`` over the voxel's
directional resolutions, i.e. Xmipp's ``doa`` (half the 17-83 % range, Å) divided by the middle
of that range: dimensionless, 0 for a voxel resolved equally in every direction, approaching 1
when a third of the directions are far worse than the best third. The 17/83 percentiles (rather
than 5/95) keep the index from saturating on the few directions that fail at the first tested
frequency even in isotropic maps.
"""

from __future__ import annotations

import math

import numpy as np

from monodir.core import kernels
from monodir.core.directions import (
    canonical_angles,
    compare_angle,
    degrees_acos,
    neighbour_pairs,
)
from monodir.core.masks import normal_quantile, percentile
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


# --------------------------------------------------------------------------- xmipp_compat
# Xmipp's summaries reproduced operation by operation (algorithm.md 2.10-2.12) so that its
# tables come out equal at their printed precision: resolutions as the doubles
# float32(voxel size) / f that Xmipp stores, sums accumulated in Xmipp's order, angles compared
# in radians with libm's acos, NaN standard deviations kept as NaN.


def xmipp_icdf_gauss(p: float) -> float:
    """Xmipp's inverse normal CDF: the rational approximation of Abramowitz & Stegun 26.2.23.

    Accurate to ~4.5e-4 (1.64521 instead of 1.64485 at 0.95); the outlier cut uses it.
    """
    q = p if p < 0.5 else 1.0 - p
    t = math.sqrt(-2.0 * math.log(q))
    num = (0.010328 * t + 0.802853) * t + 2.515517
    den = ((0.001308 * t + 0.189269) * t + 1.432788) * t + 1.0
    z = t - num / den
    return -z if p < 0.5 else z


def xmipp_trig_products(angles: np.ndarray) -> np.ndarray:
    """Direction vectors ``(D, 3)`` computed as Xmipp does (``sin(tilt*PI/180)*cos(rot*PI/180)``
    ... with libm), bit for bit."""
    out = np.empty((len(angles), 3), dtype=np.float64)
    for d, (rot, tilt) in enumerate(np.asarray(angles, dtype=np.float64).tolist()):
        out[d, 0] = math.sin(tilt * math.pi / 180) * math.cos(rot * math.pi / 180)
        out[d, 1] = math.sin(tilt * math.pi / 180) * math.sin(rot * math.pi / 180)
        out[d, 2] = math.cos(tilt * math.pi / 180)
    return out


def xmipp_resolution_values(setup, block: np.ndarray) -> np.ndarray:
    """The doubles Xmipp holds for a (float32) block of the compat resolution matrix.

    Xmipp parses ``--sampling_rate`` as a float and stores ``sampling / f`` in double; every
    matrix entry is one of those sweep values or the sentinel ``N``, all far apart, so each
    float32 entry maps to exactly one of them. Entries <= 0 are kept.
    """
    s32 = float(np.float32(setup.voxel_size))
    exact = np.array([s32 / st.freq for st in setup.steps] + [float(setup.shape[0])])
    approx = np.array([st.resolution for st in setup.steps] + [float(setup.shape[0])])
    order = np.argsort(approx)
    approx, exact = approx[order], exact[order]
    vals = np.asarray(block, dtype=np.float64)
    if approx.size == 1:
        k = np.zeros(vals.shape, dtype=np.int64)
    else:
        pos = np.clip(np.searchsorted(approx, vals), 1, approx.size - 1)
        left = approx[pos - 1]
        right = approx[pos]
        k = np.where(np.abs(vals - left) <= np.abs(vals - right), pos - 1, pos)
    out = np.where(vals > 0, exact[k], vals)
    if np.any((vals > 0) & (np.abs(vals - approx[k]) > 1e-5 * approx[k])):
        raise ValueError("compat resolution matrix holds a value outside the sweep")
    return out


def _xmipp_neighbours(trig: np.ndarray, max_angle: float) -> list[list[int]]:
    d = trig.shape[0]
    out = []
    for i in range(d):
        x1, y1, z1 = trig[i].tolist()
        row = []
        for j in range(d):
            if i == j:
                continue
            x2, y2, z2 = trig[j].tolist()
            c = x1 * x2 + y1 * y2 + z1 * z2
            if -1.0 <= c <= 1.0 and (180 / math.pi) * math.acos(c) < max_angle:
                row.append(j)
        out.append(row)
    return out


def _remove_outliers_xmipp(res: np.ndarray, trig: np.ndarray, significance: float) -> np.ndarray:
    """``removeOutliers`` (algorithm.md 2.10) in Xmipp's arithmetic, vectorised over voxels.

    ``res`` is ``(D, nb)`` float64 (modified in place and returned). Sums run in Xmipp's order
    (direction ``i``, then its neighbours ``j`` ascending); a negative variance gives a NaN cut
    (no direction is then dropped by the cut, only by the ``sum <= 1`` clause).
    """
    nbrs = _xmipp_neighbours(trig, NEIGHBOUR_ANGLE)
    valid = res > 0
    nb = res.shape[1]
    total = np.zeros(nb)
    total2 = np.zeros(nb)
    counter = np.zeros(nb)
    sum_i = np.zeros_like(res)
    cnt_i = np.zeros_like(res)
    for i, js in enumerate(nbrs):
        x1, y1, z1 = trig[i].tolist()
        ri = res[i]
        ax, ay, az = ri * x1, ri * y1, ri * z1
        for j in js:
            ok = valid[i] & valid[j]
            rj = res[j]
            dx = ax - trig[j, 0] * rj
            dy = ay - trig[j, 1] * rj
            dz = az - trig[j, 2] * rj
            dist = np.where(ok, np.sqrt(dx * dx + dy * dy + dz * dz), 0.0)
            sum_i[i] += dist
            cnt_i[i] += ok
            total += dist
            counter += ok
            total2 += dist * dist
    z = xmipp_icdf_gauss(significance)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / counter
        var = total2 / counter - mean * mean
        cut = mean + z * np.sqrt(var)
        avg_i = sum_i / cnt_i
    bad = (sum_i > 0) & ((avg_i > cut[None, :]) | (sum_i <= 1))
    res[bad] = -1.0
    return res


def _acos_libm(x: np.ndarray, near: tuple[float, ...]) -> np.ndarray:
    """``arccos`` with the entries within 1e-9 of a value in ``near`` recomputed by libm
    (``math.acos``, as Xmipp's C++), so that exact ties classify as in Xmipp."""
    with np.errstate(invalid="ignore"):
        out = np.arccos(x)
    close = np.zeros(out.shape, dtype=bool)
    for v in near:
        close |= np.abs(out - v) < 1e-9
    idx = np.flatnonzero(close)
    if idx.size:
        flat = out.reshape(-1)
        src = x.reshape(-1)
        for t in idx.tolist():
            flat[t] = math.acos(float(src[t]))
    return out


def _outlier_pairs(directions: np.ndarray, xmipp_compat: bool):
    """Neighbour pairs ``(i, j)`` of the outlier test and their cosines (``|d_i . d_j|``
    with antipodes folded, raw in compat); ``None`` when no direction has a neighbour."""
    pairs = neighbour_pairs(directions, NEIGHBOUR_ANGLE, fold=not xmipp_compat)
    if pairs.size == 0:
        return None
    i, j = pairs[:, 0], pairs[:, 1]
    dots = np.einsum("pk,pk->p", directions[i], directions[j])
    if not xmipp_compat:
        dots = np.abs(dots)
    return i, j, dots


def remove_outliers(
    block: np.ndarray,
    directions: np.ndarray,
    significance: float,
    *,
    xmipp_compat: bool,
    chunk: int = 4096,
) -> np.ndarray:
    """Mark directional outliers per voxel; returns a copy with rejected entries set to -1.

    ``block`` is ``(D, nb)``; entries ``<= 0`` (or NaN) are already invalid. (With
    ``xmipp_compat`` this is Xmipp's rule in our arithmetic; :func:`voxel_summaries` in compat
    mode uses :func:`_remove_outliers_xmipp`, Xmipp's arithmetic.) The neighbour table is built
    once; voxels are processed in chunks of ``chunk`` so that the per-pair temporaries stay in
    cache.
    """
    res = np.array(block, dtype=np.float64, copy=True)
    res[~(res > 0)] = -1.0
    pairs = _outlier_pairs(directions, xmipp_compat)
    if pairs is None:
        return res
    i, j, dots = pairs
    z = normal_quantile(significance)
    if kernels.remove_outliers_inplace(res, i, j, dots, z, xmipp_compat):
        return res
    # NumPy version. Neighbour table: row d lists the pairs (i == d) in pair order, padded
    # with a zero row
    n_dir = res.shape[0]
    degree = np.bincount(i, minlength=n_dir)
    first = np.concatenate([[0], np.cumsum(degree)[:-1]])
    table = np.full((n_dir, max(int(degree.max()), 1)), i.size, dtype=np.int64)
    for d in range(n_dir):
        table[d, : degree[d]] = np.arange(first[d], first[d] + degree[d])
    for a in range(0, res.shape[1], chunk):
        r = res[:, a : a + chunk]
        ri, rj = r[i], r[j]
        valid = (ri > 0) & (rj > 0)
        e2 = ri * ri + rj * rj - 2.0 * ri * rj * dots[:, None]
        e = np.where(valid, np.sqrt(np.maximum(e2, 0.0)), 0.0)
        cnt = valid.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = e.sum(axis=0) / cnt
            var = (e * e).sum(axis=0) / cnt - mean * mean
        cut = mean + z * np.sqrt(np.maximum(var, 0.0))
        e_pad = np.vstack([e, np.zeros((1, e.shape[1]))])
        v_pad = np.vstack([valid, np.zeros((1, e.shape[1]), dtype=bool)])
        sum_i = np.zeros_like(r)
        cnt_i = np.zeros(r.shape, dtype=np.int64)
        for c in range(table.shape[1]):  # sums in pair order, as the pairs are listed
            sum_i += e_pad[table[:, c]]
            cnt_i += v_pad[table[:, c]]
        with np.errstate(invalid="ignore", divide="ignore"):
            avg_i = sum_i / cnt_i
        bad = (sum_i > 0) & (avg_i > cut[None, :])
        if xmipp_compat:
            bad |= (sum_i > 0) & (sum_i <= 1.0)
        bad &= r > 0
        r[bad] = -1.0
    return res


def _sorted_percentile(sorted_vals: np.ndarray, n: np.ndarray, p: float) -> np.ndarray:
    k = np.minimum((n * p).astype(np.int64), np.maximum(n - 1, 0))
    return np.take_along_axis(sorted_vals, k[None, :], axis=0)[0]


def voxel_summaries(setup, block: np.ndarray, start: int, jobs: int = 1) -> dict:
    """Per-voxel summaries of mask voxels ``start : start + nb``.

    Parameters
    ----------
    setup
        The :class:`~monodir.core.directional.DirectionalSetup`.
    block
        ``(D, nb)`` per-direction resolutions of those voxels.
    start
        Offset of the block in the mask-voxel order.
    jobs
        Threads sharing the block's voxels (default mode with numba; the same values).

    Returns
    -------
    dict
        ``start``, per-voxel arrays named as :data:`VOXEL_MAPS`, and the partial sums
        ``pref_count``, ``pref_sum``, ``dir_sum``, ``dir_count`` (each ``(D,)``).
    """
    compat = setup.xmipp_compat
    dirs = setup.directions
    if not compat and kernels.HAVE_NUMBA:
        return _voxel_summaries_compiled(setup, block, start, jobs)
    if compat:
        dirs = xmipp_trig_products(setup.angles)
        res = _remove_outliers_xmipp(
            xmipp_resolution_values(setup, block), dirs, setup.significance
        )
    else:
        res = remove_outliers(block, dirs, setup.significance, xmipp_compat=compat)
    valid = res > 0
    n = valid.sum(axis=0)
    # sorted per voxel: sorting the voxel-major copy along its rows is ~3x faster than along
    # the strided axis 0, and gives the same values
    srt = np.sort(np.ascontiguousarray(np.where(valid, res, np.inf).T), axis=1).T
    highest = _sorted_percentile(srt, n, 0.05)
    lowest = _sorted_percentile(srt, n, 0.95)
    p17 = _sorted_percentile(srt, n, 0.17)
    p83 = _sorted_percentile(srt, n, 0.83)
    with np.errstate(invalid="ignore"):  # inf - inf for voxels with no valid direction
        doa = 0.5 * (p83 - p17)
    mean_doa = 0.5 * (highest + lowest)
    empty = n == 0
    for arr in (highest, lowest, doa, mean_doa):
        arr[empty] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        aniso = np.where(empty, 0.0, (p83 - p17) / (p83 + p17))

    # radial / tangential
    x, y, z = _voxel_positions(setup, start, block.shape[1])
    resv = np.where(valid, res, 0.0)
    if compat:
        radial, azimuthal, pref_count, pref_sum = _radial_pref_xmipp(
            res, valid, highest, mean_doa, dirs, x, y, z
        )
    else:
        norm_p = np.sqrt(x * x + y * y + z * z)
        radial, azimuthal = _radial_azimuthal(resv, valid, mean_doa, dirs, (x, y, z), norm_p)

        # preferred directions
        pref = valid & (np.abs(res - highest[None, :]) <= PREFERRED_TOLERANCE)
        pref_count = pref.sum(axis=1).astype(np.int64)
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


_COS_RADIAL = math.cos(math.radians(RADIAL_ANGLE))
_COS_TANGENTIAL = math.cos(math.radians(TANGENTIAL_ANGLE))


def _radial_azimuthal(resv, valid, mean_doa, dirs, pos, norm_p):
    """Default mode's radial and azimuthal means of ``(D, nb)`` resolutions (``resv``: 0
    where not ``valid``): the valid directions within 45 degrees of the voxel's position
    ``pos = (x, y, z)`` (of norm ``norm_p``), and those beyond 70 degrees; ``mean_doa``
    where there are none."""
    x, y, z = pos
    dotp = np.outer(dirs[:, 0], x) + np.outer(dirs[:, 1], y) + np.outer(dirs[:, 2], z)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_p = np.abs(dotp) / norm_p[None, :]
    # as degrees(arccos(cos_p)) <= 45 and >= 70, with arccos only near the limits
    rad_sel = valid & compare_angle(cos_p, "<=", RADIAL_ANGLE, degrees_acos, _COS_RADIAL)
    tan_sel = valid & compare_angle(cos_p, ">=", TANGENTIAL_ANGLE, degrees_acos, _COS_TANGENTIAL)
    with np.errstate(invalid="ignore", divide="ignore"):
        radial = (resv * rad_sel).sum(axis=0) / rad_sel.sum(axis=0)
        azimuthal = (resv * tan_sel).sum(axis=0) / tan_sel.sum(axis=0)
    radial = np.where(rad_sel.any(axis=0), radial, mean_doa)
    azimuthal = np.where(tan_sel.any(axis=0), azimuthal, mean_doa)
    return radial, azimuthal


def _voxel_positions(setup, start: int, nb: int):
    """Positions ``(x, y, z)`` (float64, from the box centre) of mask voxels ``start:start+nb``."""
    shape = setup.shape
    idx = setup.mask_indices[start : start + nb]
    kz, rem = np.divmod(idx, shape[1] * shape[2])
    ky, kx = np.divmod(rem, shape[2])
    x = (kx - shape[2] // 2).astype(np.float64)
    y = (ky - shape[1] // 2).astype(np.float64)
    z = (kz - shape[0] // 2).astype(np.float64)
    return x, y, z


def _voxel_maps_compiled(setup, block: np.ndarray, start: int) -> tuple:
    """The per-voxel part of :func:`_voxel_summaries_compiled` for mask voxels
    ``start : start + nb`` (``block``: ``(D, nb)``): ``maps`` (7 rows), ``resv``, ``prefv``
    (``(D, nb)``) and ``counts`` (``(2, D)``), as :func:`kernels.voxel_summary_maps`, with
    the voxels at a radial/tangential limit already classified the NumPy way. Every voxel
    is independent of the others."""
    dirs = setup.directions
    # voxel-major from the start: the outlier loop and the summaries read a voxel's row
    vm = np.array(block.T, dtype=np.float64, order="C")
    vm[~(vm > 0)] = -1.0
    pairs = _outlier_pairs(dirs, False)
    if pairs is not None:
        kernels.outliers_voxel_major(vm, *pairs, normal_quantile(setup.significance), False)
    pos = _voxel_positions(setup, start, vm.shape[0])
    x, y, z = pos
    norm_p = np.sqrt(x * x + y * y + z * z)
    maps, resv, prefv, counts, near = kernels.voxel_summary_maps(
        vm, dirs, pos, norm_p, _COS_RADIAL, _COS_TANGENTIAL, PREFERRED_TOLERANCE
    )
    sel = np.flatnonzero(near)
    if sel.size:  # a cosine at a limit: classify those voxels as the NumPy version does
        res = vm[sel].T
        valid = res > 0
        maps[5, sel], maps[6, sel] = _radial_azimuthal(
            np.where(valid, res, 0.0),
            valid,
            maps[3, sel],
            dirs,
            tuple(p[sel] for p in pos),
            norm_p[sel],
        )
    return maps, resv, prefv, counts


#: Fewest voxels per thread when :func:`voxel_summaries` splits a block over threads.
MIN_VOXELS_PER_THREAD = 4096


def _voxel_summaries_compiled(setup, block: np.ndarray, start: int, jobs: int = 1) -> dict:
    """:func:`voxel_summaries` in default mode with the per-voxel work compiled
    (:func:`monodir.core.kernels.voxel_summary_maps`); the same values, bit for bit.

    With ``jobs > 1`` the voxels are split into that many runs, summarised on as many
    threads (the sorts and compiled loops release the GIL) and put back together before the
    sums over voxels, which therefore add the very same arrays."""
    nb = block.shape[1]
    jobs = max(1, min(int(jobs), nb // MIN_VOXELS_PER_THREAD))
    if jobs == 1:
        maps, resv, prefv, counts = _voxel_maps_compiled(setup, block, start)
    else:
        from concurrent.futures import ThreadPoolExecutor

        edges = np.linspace(0, nb, jobs + 1).astype(int).tolist()
        with ThreadPoolExecutor(jobs, thread_name_prefix="monodir-summary") as pool:
            runs = list(
                pool.map(
                    lambda a, b: _voxel_maps_compiled(setup, block[:, a:b], start + a),
                    edges[:-1],
                    edges[1:],
                )
            )
        maps, resv, prefv = (np.concatenate([r[k] for r in runs], axis=1) for k in range(3))
        counts = np.sum([r[3] for r in runs], axis=0)
    highest, lowest, doa, mean_doa, aniso, radial, azimuthal = maps
    return {
        "start": start,
        "highest": highest,
        "lowest": lowest,
        "doa": doa,
        "mean_doa": mean_doa,
        "radial": radial,
        "azimuthal": azimuthal,
        "anisotropy": aniso,
        "pref_count": counts[0],
        "pref_sum": prefv.sum(axis=1),
        "dir_sum": resv.sum(axis=1),
        "dir_count": counts[1],
    }


def _radial_pref_xmipp(res, valid, highest, mean_doa, trig, x, y, z):
    """Radial/tangential means and preferred-direction sums as ``radialAzimuthalResolution``.

    Position ``(i, j, k) = (y, x, z)`` against ``(d_x, d_y, d_z)`` (quirk Q2), cosine as
    ``(x*i + y*j + z*k) * (1/|p|)``, angle by libm ``acos`` compared in radians with
    ``45*PI/180`` and ``70*PI/180``; sums in direction order. Preferred: ``highest`` strictly
    within 0.1 Å of the direction's value; Xmipp's ``int`` accumulator truncates ``acc + res``
    at each addition, which equals ``acc + floor(res)`` unless ``res`` lies within the rounding
    of ``acc`` (~1e-10) below an integer (no sweep value does: they are ``s/f`` with ``s`` a
    float32).
    """
    d, nb = res.shape
    rad_angle = 45 * math.pi / 180
    az_angle = 70 * math.pi / 180
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1 / np.sqrt(y * y + x * x + z * z)
        dot = (np.outer(trig[:, 0], y) + np.outer(trig[:, 1], x) + np.outer(trig[:, 2], z)) * inv
    arc = _acos_libm(np.abs(dot), (rad_angle, az_angle))
    with np.errstate(invalid="ignore"):
        rad_sel = valid & (arc <= rad_angle)
        tan_sel = valid & (arc >= az_angle)
    rsum = np.zeros(nb)
    tsum = np.zeros(nb)
    for ii in range(d):
        rsum += np.where(rad_sel[ii], res[ii], 0.0)
        tsum += np.where(tan_sel[ii], res[ii], 0.0)
    rcnt = rad_sel.sum(axis=0)
    tcnt = tan_sel.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        radial = np.where(rcnt >= 1, rsum / rcnt, mean_doa)
        azimuthal = np.where(tcnt >= 1, tsum / tcnt, mean_doa)
    with np.errstate(invalid="ignore"):
        pref = valid & (highest[None, :] > res - 0.1) & (highest[None, :] < res + 0.1)
    pref_count = pref.sum(axis=1).astype(np.int64)
    vals = np.where(pref, res, 0.0)
    pref_sum = np.floor(vals).sum(axis=1)
    return radial, azimuthal, pref_count, pref_sum


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


_RADIAL_NAMES = ("radial", "azimuthal", "highest", "lowest", "monores")


def _mask_values(
    maps: dict[str, np.ndarray], in_mask: np.ndarray, monores_map: np.ndarray | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-voxel float64 values of the radially averaged maps, and the flat mask indices."""
    index = np.flatnonzero(in_mask)
    vals = {k: np.asarray(maps[k]).reshape(-1)[index].astype(np.float64) for k in _RADIAL_NAMES[:4]}
    vals["monores"] = _monores_values(monores_map, index)
    return vals, index


def _monores_values(monores_map: np.ndarray | None, index: np.ndarray) -> np.ndarray:
    if monores_map is None:
        return np.zeros(index.size)
    return np.asarray(monores_map).reshape(-1)[index].astype(np.float64)


def _mask_radii(shape: tuple[int, int, int], index: np.ndarray) -> np.ndarray:
    """Distance of the voxels ``index`` (flat) to the centre voxel, as ``radius2``."""
    it = np.int32 if 3 * max(shape) ** 2 < 2**31 else np.int64
    coords = np.unravel_index(index, shape)
    r2 = np.zeros(index.size, dtype=it)
    for c, n in zip(coords, shape):
        d = c.astype(it) - n // 2
        r2 += d * d
    return np.sqrt(r2.astype(np.float64))


def radial_averages_and_zscore(
    maps: dict[str, np.ndarray], in_mask: np.ndarray, monores_map: np.ndarray | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Shell means/stds of radial, azimuthal, highest, lowest and MonoRes maps; z-score map.

    Shells ``kk-1 <= r < kk+1`` (``kk = 1 .. n//2 - 1``) over mask voxels (algorithm.md 2.12).
    The z-score of a voxel is the largest of ``|v - mean| / std + 0.002`` over the radial,
    azimuthal, highest and MonoRes maps, computed in the last shell holding the voxel and capped
    at 5.
    """
    vals, index = _mask_values(maps, in_mask, monores_map)
    table, zscore = radial_averages_of_values(vals, index, in_mask.shape)
    zmap = np.zeros(in_mask.shape)
    zmap[in_mask] = zscore
    return table, zmap


def radial_averages_of_values(
    vals: dict[str, np.ndarray], index: np.ndarray, shape: tuple[int, int, int]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`radial_averages_and_zscore` from the maps' float64 values at the sorted flat
    mask indices ``index``; returns the table and the z-score of each of those voxels."""
    n = shape[2]
    r = _mask_radii(shape, index)
    names = _RADIAL_NAMES
    kmax = n // 2 - 1
    base = np.floor(r).astype(np.int64)
    table: dict[str, list] = {"radius": []}
    for k in names:
        table[f"{k}_mean"] = []
        table[f"{k}_std"] = []
    zscore = np.zeros(r.size)
    nbins = kmax + 2
    # each voxel falls in the shells floor(r) and floor(r) + 1 (where those exist): the bins
    # and the voxels are listed once, the first shells first; bincount then adds every voxel
    # to its bin in that order, as sequential float64 sums (the same sums as np.add.at)
    in_shell = []
    for off in (0, 1):
        kk = base + off
        in_shell.append((kk >= 1) & (kk <= kmax) & (kk - 1 <= r) & (r < kk + 1))
    bins = np.concatenate([base[ok] + off for off, ok in enumerate(in_shell)])
    cnt = np.bincount(bins, minlength=nbins).astype(np.float64)
    sums = {}
    for k in names:
        v = np.concatenate([vals[k][ok] for ok in in_shell])
        sums[k] = (
            np.bincount(bins, weights=v, minlength=nbins),
            np.bincount(bins, weights=v**2, minlength=nbins),
        )
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
    return {k: np.asarray(v) for k, v in table.items()}, zscore


def _radial_averages_xmipp_values(
    vals: dict[str, np.ndarray], index: np.ndarray, shape: tuple[int, int, int]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``radialAverageInMask`` (algorithm.md 2.12) in Xmipp's arithmetic, from the maps'
    float64 values at the sorted flat mask indices ``index``; returns the table and the
    z-score of each of those voxels.

    Shell sums run over the mask voxels in C order (sequential sums, as Xmipp's loop), the
    standard deviation is ``sqrt(sum2/N - mean^2)`` (NaN when rounding makes it negative; the
    lowest map adds 0.001 inside the root), and the z-score of a voxel is written by every
    shell holding it whose radial mean is > 0, the later shell overwriting: the maximum of
    ``|v - mean|/std + 0.002`` over radial, azimuthal, highest and MonoRes, NaN terms skipped
    (-1 when all are NaN), capped at 5.
    """
    n = shape[2]
    r = _mask_radii(shape, index)
    names = _RADIAL_NAMES
    table: dict[str, list] = {"radius": []}
    for k in names:
        table[f"{k}_mean"] = []
        table[f"{k}_std"] = []
    zscore = np.zeros(r.size)
    kk = 1
    while kk < n * 0.5:
        sel = np.flatnonzero((r < kk + 1) & (r >= kk - 1))
        cnt = float(sel.size)
        if sel.size:
            sums = {k: float(np.cumsum(vals[k][sel])[-1]) for k in names}
            sums2 = {k: float(np.cumsum(vals[k][sel] * vals[k][sel])[-1]) for k in names}
        else:
            sums = dict.fromkeys(names, 0.0)
            sums2 = sums
        if any(sums[k] > 0 for k in names):
            mean = {k: sums[k] / cnt for k in names}
            std = {}
            with np.errstate(invalid="ignore"):
                for k in names:
                    var = sums2[k] / cnt - mean[k] * mean[k]
                    if k == "lowest":
                        var = var + 0.001
                    std[k] = float(np.sqrt(var)) if var >= 0 else float("nan")
            table["radius"].append(kk)
            for k in names:
                table[f"{k}_mean"].append(mean[k])
                table[f"{k}_std"].append(std[k])
            if mean["radial"] > 0:
                lastz = np.full(sel.size, -1.0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    for k in ("radial", "azimuthal", "highest", "monores"):
                        aux = np.abs((vals[k][sel] - mean[k]) / std[k]) + 0.002
                        lastz = np.where(aux > lastz, aux, lastz)
                lastz = np.where(lastz > 5.0, 5.0, lastz)
                zscore[sel] = lastz
        kk += 1
    return {k: np.asarray(v) for k, v in table.items()}, zscore


def finalize_directional(
    setup, parts: list[dict], monores_map: np.ndarray | None = None
) -> DirectionalResult:
    """Combine block summaries into the :class:`DirectionalResult`."""
    parts = sorted(parts, key=lambda p: p["start"])
    shape = setup.shape
    out_dtype = np.float64 if setup.xmipp_compat else np.float32
    # every map is computed at the mask voxels in float64 and only written into a volume in
    # the output precision (one volume per map, not a float64 one and its copy)
    index = np.asarray(setup.mask_indices, dtype=np.int64)  # sorted: C order of the mask
    values = {
        name: np.concatenate([p[name] for p in parts]).astype(np.float64) for name in VOXEL_MAPS
    }
    radial_vals, az_vals = values["radial"], values["azimuthal"]
    thresholds = {
        "radial_p90": percentile(radial_vals, 0.9) if radial_vals.size else float("nan"),
        "azimuthal_p90": percentile(az_vals, 0.9) if az_vals.size else float("nan"),
    }
    averaged = {k: values[k] for k in _RADIAL_NAMES[:4]}
    averaged["monores"] = _monores_values(monores_map, index)
    if setup.xmipp_compat:
        table, values["zscore"] = _radial_averages_xmipp_values(averaged, index, shape)
    else:
        table, values["zscore"] = radial_averages_of_values(averaged, index, shape)
    del averaged
    maps: dict[str, np.ndarray] = {}
    for name, vals in values.items():
        vol = np.zeros(int(np.prod(shape)), dtype=out_dtype)
        vol[index] = vals
        maps[name] = vol.reshape(shape)
    del values
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
        maps=maps,
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
