"""Mask states and real-space geometry shared by MonoRes and the directional pass.

Logical coordinates put the origin at index ``floor(n/2)`` on every axis (algorithm.md 0.4).
"""

from __future__ import annotations

import numpy as np


def logical_coords(shape: tuple[int, int, int], center: float | None = None):
    """Broadcastable ``(z, y, x)`` coordinates relative to the centre (default ``floor(n/2)``)."""
    nz, ny, nx = shape
    cz, cy, cx = (nz // 2, ny // 2, nx // 2) if center is None else (center,) * 3
    z = (np.arange(nz) - cz)[:, None, None].astype(np.float64)
    y = (np.arange(ny) - cy)[None, :, None].astype(np.float64)
    x = (np.arange(nx) - cx)[None, None, :].astype(np.float64)
    return z, y, x


def radius2(shape: tuple[int, int, int]) -> np.ndarray:
    """Squared distance (voxels^2) of every voxel to the centre voxel (int32, or int64 for
    boxes too large for int32)."""
    nz, ny, nx = shape
    it = np.int32 if 3 * max(shape) ** 2 < 2**31 else np.int64
    z = (np.arange(nz, dtype=it) - nz // 2)[:, None, None]
    y = (np.arange(ny, dtype=it) - ny // 2)[None, :, None]
    x = (np.arange(nx, dtype=it) - nx // 2)[None, None, :]
    return z * z + y * y + x * x


def protein_radius(mask: np.ndarray, r2: np.ndarray) -> int:
    """``int(sqrt(max r^2))`` over mask voxels (0 for an empty mask)."""
    if not mask.any():
        return 0
    return int(np.sqrt(float(r2[mask].max())))


def cliff_radius(volume: np.ndarray, r2: np.ndarray, r_prot: int) -> tuple[int, bool]:
    """Radius beyond which the map has (almost) no variance: an automatic spherical pre-mask.

    Shells ``rad^2 <= r^2 < (rad+1)^2`` for ``rad = r_prot .. n//2 - 1``; the first shell whose
    variance is below 1 % of the previous one's gives ``rad - 1`` (algorithm.md 1.2.2). Returns
    ``(radius, found)``; when no cliff is found the radius is ``n//2``.
    """
    n = volume.shape[2]
    rmax = n // 2
    nb = max(rmax - r_prot, 0)
    if nb == 0:
        return rmax, False
    sel = (r2 >= r_prot * r_prot) & (r2 < rmax * rmax)
    r2s = r2[sel].astype(np.int64)
    v = volume[sel].astype(np.float64)
    del sel
    shell = np.floor(np.sqrt(r2s.astype(np.float64))).astype(np.int64)
    # make shell membership exact in integers: rad^2 <= r2 < (rad+1)^2
    shell += (shell + 1) ** 2 <= r2s
    shell -= shell**2 > r2s
    idx = shell - r_prot
    cnt = np.bincount(idx, minlength=nb).astype(np.float64)
    s1 = np.bincount(idx, weights=v, minlength=nb)
    s2 = np.bincount(idx, weights=v * v, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / cnt
        var = s2 / cnt - mean * mean
    prev = 1e-38
    for k in range(nb):
        cur = var[k] if cnt[k] > 0 else 0.0
        if cur / prev < 0.01:
            return r_prot + k - 1, True
        prev = cur
    return rmax, False


def normal_quantile(p: float) -> float:
    """Standard normal quantile of ``p`` (``scipy.stats.norm.ppf``, via ``scipy.special``,
    which imports in a fraction of the time)."""
    from scipy.special import ndtri

    return float(ndtri(p))


def percentile(values: np.ndarray, p: float, *, overwrite: bool = False) -> float:
    """Xmipp's empirical percentile ``sorted(values)[int(n*p)]`` (algorithm.md 0.5).

    Quirk Q12: ``p = 1`` takes the largest value (Xmipp's index would be out of range) and
    an empty sample raises ``ValueError``. ``overwrite=True`` reorders ``values`` in place
    instead of partitioning a copy.
    """
    n = values.size
    if n == 0:
        raise ValueError("percentile of an empty sample")
    k = int(n * p)
    if k >= n:
        k = n - 1
    if overwrite:
        values.partition(k)
        return float(values[k])
    return float(np.partition(values, k)[k])


def prepare_states(
    volume: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, int, int, int, bool, np.ndarray]:
    """Initial state array: 1 protein, 0 noise, -1 beyond the cliff radius.

    Returns ``(state, r_prot, n_mask, r_lim, cliff_found, r2)``.
    """
    r2 = radius2(volume.shape)
    state = np.asarray(mask, dtype=bool).astype(np.int8)  # 1 protein, 0 elsewhere
    r_prot = protein_radius(mask, r2)
    n_mask = int(mask.sum())
    r_lim, found = cliff_radius(volume, r2, r_prot)
    state[r2 >= r_lim * r_lim] = -1
    return state, r_prot, n_mask, r_lim, found, r2
