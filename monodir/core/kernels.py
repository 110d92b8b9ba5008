"""Fused elementwise kernels of the directional inner loop.

Compiled with numba when it is importable; otherwise (or with ``MONODIR_NO_NUMBA=1``) the same
arithmetic runs as NumPy array operations. Both evaluate every element with the same float
operations in the same order, so their results are bit-identical (``tests/test_kernels.py``);
numba only saves the passes over memory that NumPy needs for each operation.
"""

from __future__ import annotations

import os

import numpy as np

try:  # pragma: no cover - exercised implicitly when numba is installed
    if os.environ.get("MONODIR_NO_NUMBA"):
        raise ImportError("disabled by MONODIR_NO_NUMBA")
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    numba = None
    HAVE_NUMBA = False


def _tapered_amplitude_numpy(
    pair: np.ndarray,
    nb: int,
    width: int,
    taper: np.ndarray | None,
    out: np.ndarray,
    z0: int,
    x0: int,
) -> None:
    ny, nx = out.shape[1], out.shape[2]
    z1, x1 = z0 + nb, x0 + width
    dest = out[z0:z1, :, x0:x1]
    parts = [pair[b, :nb, :ny, :width] for b in (0, 1)]
    re0, im0, re1, im1 = parts[0].real, parts[0].imag, parts[1].real, parts[1].imag
    np.multiply(re0, re0, out=dest)
    dest += im0 * im0
    dest += re1 * re1
    dest += im1 * im1
    np.sqrt(dest, out=dest)
    if taper is not None:
        dest *= taper[z0:z1, :, x0:x1]
    out[z0:z1, :, :x0] = 0
    out[z0:z1, :, x1:nx] = 0


if HAVE_NUMBA:  # pragma: no branch

    @numba.njit(cache=True, nogil=True)
    def _tapered_amplitude_numba(
        pair, nb, width, taper, has_taper, out, z0, x0
    ):  # pragma: no cover
        ny, nx = out.shape[1], out.shape[2]
        x1 = x0 + width
        for j in range(nb):
            z = z0 + j
            for y in range(ny):
                a = pair[0, j, y]
                b = pair[1, j, y]
                o = out[z, y]
                t = taper[z, y]
                for x in range(x0):
                    o[x] = 0.0
                for i in range(width):
                    p = a[i]
                    q = b[i]
                    s = p.real * p.real + p.imag * p.imag
                    s = s + q.real * q.real
                    s = s + q.imag * q.imag
                    v = np.sqrt(s)
                    if has_taper:
                        v = v * t[x0 + i]
                    o[x0 + i] = v
                for x in range(x1, nx):
                    o[x] = 0.0


def tapered_amplitude(
    pair: np.ndarray,
    nb: int,
    width: int,
    taper: np.ndarray | None,
    out: np.ndarray,
    z0: int,
    x0: int,
) -> None:
    """Amplitude of a slab of two complex signals, tapered, written into a volume.

    ``out[z0+j, y, x0+i] = taper[z0+j, y, x0+i] * sqrt(|P0|^2 + |P1|^2)`` with
    ``Pb = pair[b, j, y, i]`` for ``j < nb``, ``i < width`` (every ``y``), summed in the order
    ``((re0^2 + im0^2) + re1^2) + im1^2``; the rest of those rows of ``out`` is set to 0.

    Parameters
    ----------
    pair
        C-contiguous ``(2, >=nb, >=ny, >=width)`` complex buffer (a padded slab buffer).
    nb, width
        Planes and columns of ``pair`` in use.
    taper
        C-contiguous real volume like ``out``, or ``None`` for no taper.
    out
        C-contiguous real volume ``(nz, ny, nx)``.
    z0, x0
        Where the slab starts in ``out``.
    """
    if HAVE_NUMBA and pair.flags.c_contiguous and out.flags.c_contiguous:
        has_taper = taper is not None
        if has_taper and not taper.flags.c_contiguous:
            taper = np.ascontiguousarray(taper)
        _tapered_amplitude_numba(
            pair, nb, width, taper if has_taper else out, has_taper, out, z0, x0
        )
        return
    _tapered_amplitude_numpy(pair, nb, width, taper, out, z0, x0)


if HAVE_NUMBA:  # pragma: no branch

    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def _outliers_numba(res, pi, pj, dots, z, sum_le_one):  # pragma: no cover
        nb, n_dir = res.shape  # voxel-major: one voxel's directions are contiguous
        n_pairs = pi.size
        sum_i = np.empty(n_dir)
        cnt_i = np.empty(n_dir, dtype=np.int64)
        for v in range(nb):
            r = res[v]
            sum_i[:] = 0.0
            cnt_i[:] = 0
            total = 0.0
            total2 = 0.0
            cnt = 0
            for p in range(n_pairs):  # per-direction sums in pair order
                ri = r[pi[p]]
                rj = r[pj[p]]
                if ri > 0 and rj > 0:
                    e2 = ri * ri + rj * rj - 2.0 * ri * rj * dots[p]
                    if e2 < 0.0:
                        e2 = 0.0
                    ev = np.sqrt(e2)
                    cnt += 1
                    cnt_i[pi[p]] += 1
                else:
                    ev = 0.0
                sum_i[pi[p]] += ev
                total += ev
                total2 += ev * ev
            mean = total / cnt
            var = total2 / cnt - mean * mean
            if var < 0.0:
                var = 0.0
            cut = mean + z * np.sqrt(var)
            for d in range(n_dir):
                s = sum_i[d]
                b = s > 0 and s / cnt_i[d] > cut
                if sum_le_one and s > 0 and s <= 1.0:
                    b = True
                if b and r[d] > 0:
                    r[d] = -1.0


def remove_outliers_inplace(
    res: np.ndarray,
    pair_i: np.ndarray,
    pair_j: np.ndarray,
    dots: np.ndarray,
    z: float,
    sum_le_one: bool,
) -> bool:
    """The per-voxel loop of :func:`monodir.core.summaries.remove_outliers`, compiled.

    ``res`` is ``(D, nb)`` float64 (invalid entries already ``-1``) and is modified in place;
    each direction's sum runs in pair order, as in the NumPy version. Returns
    ``False`` (and does nothing) when numba is not available, so the caller runs its NumPy
    version, which does the same float operations in the same order.
    """
    if not HAVE_NUMBA:
        return False
    voxel_major = np.ascontiguousarray(res.T)
    _outliers_numba(
        voxel_major,
        np.ascontiguousarray(pair_i, dtype=np.int64),
        np.ascontiguousarray(pair_j, dtype=np.int64),
        np.ascontiguousarray(dots, dtype=np.float64),
        float(z),
        bool(sum_le_one),
    )
    res[...] = voxel_major.T
    return True
