"""Global and directional (cone) Fourier shell correlation of two half maps.

Pure numpy, no I/O. Everything is computed on the real-FFT half spectrum: a stored coefficient
with ``0 < kx < n/2`` stands for itself and its Hermitian partner at ``-k`` (same shell, same
cone, same contribution to every sum), so it is counted twice; the planes ``kx = 0`` and
``kx = n/2`` hold both members of each pair and are counted once. The sums are therefore those
of the full spectrum.

Definitions
-----------
Shell
    Shell ``k`` (``k = 0 .. n//2``, Nyquist included) holds the coefficients with
    ``round(|k|) == k``, ``|k|`` the length of the integer Fourier index vector. Its resolution is
    ``n * voxel_size / k`` Å (``inf`` for ``k = 0``). Only cubic boxes are accepted, so the index
    length is the same physical frequency on every axis.
FSC
    ``FSC(k) = Re sum F1 conj(F2) / sqrt(sum |F1|^2 sum |F2|^2)`` over the shell. With a
    real-space ``mask`` both halves are multiplied by it before the transform.
Crossing
    Searching upwards from shell 1 (shells without coefficients are skipped), the first shell
    ``k`` whose FSC is below the threshold ``t`` and the last shell ``k0`` before it with a value
    give the fractional shell ``k* = k0 + (k - k0) (FSC(k0) - t) / (FSC(k0) - FSC(k))``: linear
    interpolation of the curve in spatial frequency. The crossing resolution is
    ``n * voxel_size / k*``. A curve below ``t`` already at shell 1 gives ``k* = 0`` (resolution
    ``inf``: unresolved); a curve that never drops below ``t`` gives the last shell (Nyquist).
Cone FSC
    For a direction ``d``, the coefficients whose wave vector lies within ``cone_angle`` degrees
    of the line through ``d`` (``|u . d| >= |u| cos(cone_angle)``: antipodes folded, a double
    cone), shell by shell. Its 0.143 crossing is the resolution along ``d``. A cone shell with
    fewer than ``min_count`` coefficients (default 10, Hermitian partners counted) is treated
    as empty (NaN): in the lowest shells a 20-degree cone may hold a single pair, whose
    "correlation" is just the cosine of a phase difference and can be anything.
Worst axis
    :func:`monodir.core.summaries.fit_axis` on the per-direction 0.143 resolutions, with an
    unresolved direction (``inf``) counted as the box size ``n * voxel_size``, the coarsest
    resolution a shell can express (and likewise on the 0.5 crossings).
Sphericity
    ``mean_d(k*_d) / max_d(k*_d)`` over the per-direction 0.143 crossings expressed as
    frequencies (shells): 1 when every direction reaches the same frequency, smaller the more
    directions lag behind the best one. (Not 3DFSC's surface-area ratio of a thresholded
    volume, though it answers the same question.)
cFAR-like ratio
    The area under each cone FSC (negative values clipped to 0) over shells ``1 .. K``, ``K`` the
    last whole shell before the *global* FSC crosses 0.143, i.e. over the band the map resolves
    overall, normalised by the number of shells where the cone has coefficients (the mean
    clipped cone FSC over the band); ``cfar = min_d(area_d) / max_d(area_d)``. It is 1 for an
    isotropic map and falls when some cones lose correlation inside the resolved band.
    (Modelled on the conical FSC area ratio of cryoSPARC; not claimed to match its numbers.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monodir.core.directions import angles_to_vectors, direction_set
from monodir.core.summaries import fit_axis

#: Default half-angle (degrees) of the cones of the directional FSC.
CONE_ANGLE = 20.0
#: The two usual thresholds.
THRESHOLD_0143 = 0.143
THRESHOLD_05 = 0.5


@dataclass
class FSCResult:
    """Global and directional FSC of a half-map pair.

    Attributes
    ----------
    shells
        Resolution (Å) of each shell ``0 .. n//2`` (``inf`` for shell 0).
    shell_index
        The shell numbers ``0 .. n//2``.
    n_coefficients
        Coefficients per shell over the full sphere (both Hermitian partners counted).
    global_fsc
        FSC per shell over whole shells.
    global_shell_0143, global_shell_05
        Fractional crossing shells ``k*`` of the global curve.
    global_resolution_0143, global_resolution_05
        The same as resolutions (Å).
    directions
        ``(D, 3)`` unit vectors ``(x, y, z)`` of the cones, x the fastest array axis.
    cone_angle
        Half-angle of the cones (degrees).
    cone_fsc
        ``(D, n//2 + 1)`` FSC per cone and shell (NaN where a cone has fewer than
        ``min_count`` coefficients).
    cone_counts
        ``(D, n//2 + 1)`` coefficients per cone and shell.
    shell_0143
        ``(D,)`` fractional 0.143 crossing shell of each cone.
    resolution_0143, resolution_05
        ``(D,)`` per-direction crossing resolutions (Å; ``inf`` when unresolved).
    axis
        Fitted worst-resolved axis (unit vector, z >= 0).
    axis_angle_to_z
        Its angle to z (degrees, 0-90).
    axis_05, axis_angle_to_z_05
        The same fitted to the per-direction 0.5 crossings (less sensitive to correlated
        leakage into empty regions, which keeps the FSC low but above 0.143 there).
    sphericity
        ``mean/max`` of the per-direction 0.143 crossing frequencies.
    cfar
        ``min/max`` of the per-cone FSC areas over the globally resolved band.
    cone_area
        ``(D,)`` those areas (mean clipped cone FSC over shells ``1 .. K``).
    voxel_size
        Å per voxel.
    box
        Box size ``n``.
    """

    shells: np.ndarray
    shell_index: np.ndarray
    n_coefficients: np.ndarray
    global_fsc: np.ndarray
    global_shell_0143: float
    global_shell_05: float
    global_resolution_0143: float
    global_resolution_05: float
    directions: np.ndarray
    cone_angle: float
    cone_fsc: np.ndarray
    cone_counts: np.ndarray
    shell_0143: np.ndarray
    resolution_0143: np.ndarray
    resolution_05: np.ndarray
    axis: np.ndarray
    axis_angle_to_z: float
    axis_05: np.ndarray
    axis_angle_to_z_05: float
    sphericity: float
    cfar: float
    cone_area: np.ndarray
    voxel_size: float
    box: int

    def summary(self) -> dict[str, float]:
        """Scalar figures as a flat dict (resolutions in Å, angles in degrees)."""
        finite = np.where(np.isfinite(self.resolution_0143), self.resolution_0143, np.nan)
        return {
            "global_resolution_0143": self.global_resolution_0143,
            "global_resolution_05": self.global_resolution_05,
            "direction_best_0143": float(np.nanmin(finite)) if finite.size else float("nan"),
            "direction_worst_0143": float(np.max(self.resolution_0143)),
            "axis_angle_to_z": self.axis_angle_to_z,
            "axis_angle_to_z_05": self.axis_angle_to_z_05,
            "sphericity": self.sphericity,
            "cfar": self.cfar,
        }


def _check_pair(half1: np.ndarray, half2: np.ndarray) -> tuple[int, int, int]:
    a = np.asarray(half1)
    b = np.asarray(half2)
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"half maps must be 3-D and of equal shape, got {a.shape} and {b.shape}")
    if len(set(a.shape)) != 1:
        raise ValueError(f"the FSC needs a cubic box, got {a.shape}")
    return a.shape


def shell_grid(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shell number, weight and unit wave vector of every half-spectrum coefficient.

    Parameters
    ----------
    n
        Box size (cubic box ``n^3``).

    Returns
    -------
    shell
        ``(n, n, n//2+1)`` int64 ``round(|k|)``.
    weight
        Same shape: 2 for coefficients standing for a Hermitian pair, 1 on the self-mirrored
        planes ``kx = 0`` and ``kx = n/2``.
    unit
        ``(n, n, n//2+1, 3)`` float32 unit vectors ``(x, y, z)`` (zero at the origin).
    """
    k = np.fft.fftfreq(n, d=1.0 / n)
    kz = k[:, None, None]
    ky = k[None, :, None]
    kx = np.arange(n // 2 + 1, dtype=np.float64)[None, None, :]
    r = np.sqrt(kz * kz + ky * ky + kx * kx)
    shell = np.rint(r).astype(np.int64)
    weight = np.full(shell.shape, 2.0)
    weight[:, :, 0] = 1.0
    if n % 2 == 0:
        weight[:, :, n // 2] = 1.0
    safe = np.where(r > 0, r, 1.0)
    unit = np.empty((*shell.shape, 3), dtype=np.float32)
    unit[..., 0] = kx / safe
    unit[..., 1] = ky / safe
    unit[..., 2] = kz / safe
    unit[r == 0] = 0.0
    return shell, weight, unit


def _spectra(
    half1: np.ndarray, half2: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(half1, dtype=np.float64)
    b = np.asarray(half2, dtype=np.float64)
    if mask is not None:
        m = np.asarray(mask, dtype=np.float64)
        if m.shape != a.shape:
            raise ValueError(f"mask shape {m.shape} differs from the maps' {a.shape}")
        a = a * m
        b = b * m
    return np.fft.rfftn(a), np.fft.rfftn(b)


def _ratio(num: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    den = np.sqrt(p1 * p2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def fsc_curve(half1: np.ndarray, half2: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Global FSC per shell ``0 .. n//2`` (see the module docstring for the definition).

    Parameters
    ----------
    half1, half2
        The two half maps (cubic, same shape).
    mask
        Optional real-space mask (binary or soft) applied to both halves first.

    Returns
    -------
    numpy.ndarray
        ``(n//2 + 1,)`` FSC values; NaN where a shell has no power.
    """
    n = _check_pair(half1, half2)[0]
    f1, f2 = _spectra(half1, half2, mask)
    shell, weight, _ = shell_grid(n)
    nsh = n // 2 + 1
    sel = shell < nsh
    s = shell[sel]
    w = weight[sel]
    a, b = f1[sel], f2[sel]
    num = np.bincount(s, w * (a * np.conj(b)).real, minlength=nsh)
    p1 = np.bincount(s, w * (a.real**2 + a.imag**2), minlength=nsh)
    p2 = np.bincount(s, w * (b.real**2 + b.imag**2), minlength=nsh)
    return _ratio(num, p1, p2)


def crossing_shell(curve: np.ndarray, threshold: float) -> float:
    """Fractional shell where ``curve`` first drops below ``threshold`` (searching from shell 1).

    Linear interpolation between the last shell with a value at or above the threshold and the
    first below it; NaN shells are skipped. Returns 0.0 when shell 1 (the first with a value) is
    already below, and the last shell with a value when the curve never drops below.
    """
    c = np.asarray(curve, dtype=np.float64)
    prev: tuple[int, float] | None = None
    for k in range(1, c.size):
        v = c[k]
        if not np.isfinite(v):
            continue
        if v < threshold:
            if prev is None:
                return 0.0
            k0, v0 = prev
            return float(k0 + (k - k0) * (v0 - threshold) / (v0 - v))
        prev = (k, v)
    return float(prev[0]) if prev is not None else 0.0


def shell_to_resolution(shell: float | np.ndarray, n: int, voxel_size: float):
    """Resolution (Å) of a (fractional) shell: ``n * voxel_size / shell`` (``inf`` at 0)."""
    s = np.asarray(shell, dtype=np.float64)
    with np.errstate(divide="ignore"):
        res = np.where(s > 0, n * voxel_size / np.where(s > 0, s, 1.0), np.inf)
    return float(res) if res.ndim == 0 else res


def resolution_to_shell(resolution: float | np.ndarray, n: int, voxel_size: float):
    """Inverse of :func:`shell_to_resolution` (``inf`` -> 0)."""
    r = np.asarray(resolution, dtype=np.float64)
    out = np.where(np.isfinite(r) & (r > 0), n * voxel_size / np.where(r > 0, r, 1.0), 0.0)
    return float(out) if out.ndim == 0 else out


def cone_fsc_curves(
    half1: np.ndarray,
    half2: np.ndarray,
    directions: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    cone_angle: float = CONE_ANGLE,
    chunk: int = 8,
    min_count: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cone FSC of every direction, plus the global curve from the same sums.

    Parameters
    ----------
    half1, half2
        The half maps (cubic, same shape).
    directions
        ``(D, 3)`` directions ``(x, y, z)`` (normalised here).
    mask
        Optional real-space mask applied to both halves.
    cone_angle
        Half-angle of the double cones (degrees).
    chunk
        Directions tested at once (memory ``~ 4 * chunk * n^3 / 2`` bytes).
    min_count
        Cone shells with fewer coefficients are NaN.

    Returns
    -------
    cone_fsc
        ``(D, n//2 + 1)``.
    cone_counts
        ``(D, n//2 + 1)`` coefficients per cone and shell (Hermitian partners counted).
    global_fsc
        ``(n//2 + 1,)``.
    n_coefficients
        ``(n//2 + 1,)`` coefficients per shell.
    """
    n = _check_pair(half1, half2)[0]
    d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    f1, f2 = _spectra(half1, half2, mask)
    shell, weight, unit = shell_grid(n)
    nsh = n // 2 + 1
    sel = (shell < nsh) & (shell > 0)
    order = np.argsort(shell[sel], kind="stable")
    s = shell[sel][order]
    w = weight[sel][order]
    u = unit[sel][order]
    a, b = f1[sel][order], f2[sel][order]
    q = np.stack(
        [w * (a * np.conj(b)).real, w * (a.real**2 + a.imag**2), w * (b.real**2 + b.imag**2), w]
    )  # (4, N): cross, power 1, power 2, count
    starts = np.searchsorted(s, np.arange(1, nsh))  # every shell 1..n//2 is non-empty
    totals = np.zeros((4, nsh))
    totals[:, 1:] = np.add.reduceat(q, starts, axis=1)
    dc = (f1.flat[0] * np.conj(f2.flat[0])).real, abs(f1.flat[0]) ** 2, abs(f2.flat[0]) ** 2
    totals[:3, 0] = dc
    totals[3, 0] = 1.0
    global_fsc = _ratio(totals[0], totals[1], totals[2])
    cos_c = np.float32(np.cos(np.deg2rad(cone_angle)))
    nd = d.shape[0]
    sums = np.zeros((4, nd, nsh))
    for lo in range(0, nd, chunk):
        dd = d[lo : lo + chunk].astype(np.float32)
        inside = (np.abs(u @ dd.T) >= cos_c).astype(np.float64)  # (N, c)
        for j in range(4):
            sums[j, lo : lo + dd.shape[0], 1:] = np.add.reduceat(
                inside * q[j][:, None], starts, axis=0
            ).T
    cone = _ratio(sums[0], sums[1], sums[2])
    cone[sums[3] < max(min_count, 1)] = np.nan
    return cone, sums[3], global_fsc, totals[3]


def directional_fsc(
    half1: np.ndarray,
    half2: np.ndarray,
    voxel_size: float,
    *,
    mask: np.ndarray | None = None,
    directions: np.ndarray | None = None,
    cone_angle: float = CONE_ANGLE,
    chunk: int = 8,
    min_count: int = 10,
) -> FSCResult:
    """Global FSC, cone FSC per direction and the anisotropy figures derived from them.

    Parameters
    ----------
    half1, half2
        The half maps (cubic, same shape).
    voxel_size
        Å per voxel.
    mask
        Optional real-space mask (binary or soft) applied to both halves before the transform.
    directions
        ``(D, 3)`` unit vectors ``(x, y, z)``; default monodir's 81 directions.
    cone_angle
        Half-angle of the cones (degrees).
    chunk
        Directions per vectorised block.
    min_count
        Cone shells with fewer coefficients than this count as empty.

    Returns
    -------
    FSCResult
        See the module docstring for every definition.
    """
    n = _check_pair(half1, half2)[0]
    if directions is None:
        directions = angles_to_vectors(direction_set(False))
    d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    cone, counts, gfsc, ncoef = cone_fsc_curves(
        half1, half2, d, mask=mask, cone_angle=cone_angle, chunk=chunk, min_count=min_count
    )
    idx = np.arange(n // 2 + 1)
    g143 = crossing_shell(gfsc, THRESHOLD_0143)
    g05 = crossing_shell(gfsc, THRESHOLD_05)
    k143 = np.array([crossing_shell(c, THRESHOLD_0143) for c in cone])
    k05 = np.array([crossing_shell(c, THRESHOLD_05) for c in cone])
    res143 = shell_to_resolution(k143, n, voxel_size)
    res05 = shell_to_resolution(k05, n, voxel_size)
    capped = np.where(np.isfinite(res143), res143, n * voxel_size)
    axis, angle = fit_axis(d, capped)
    axis05, angle05 = fit_axis(d, np.where(np.isfinite(res05), res05, n * voxel_size))
    kmax = float(np.max(k143))
    sphericity = float(np.mean(k143) / kmax) if kmax > 0 else float("nan")
    band = max(int(np.floor(g143)), 1)
    clipped = np.clip(cone[:, 1 : band + 1], 0.0, None)
    with np.errstate(invalid="ignore"):
        area = np.nanmean(np.where(np.isfinite(clipped), clipped, np.nan), axis=1)
    area = np.nan_to_num(area, nan=0.0)
    cfar = float(area.min() / area.max()) if area.max() > 0 else float("nan")
    return FSCResult(
        shells=shell_to_resolution(idx, n, voxel_size),
        shell_index=idx,
        n_coefficients=ncoef,
        global_fsc=gfsc,
        global_shell_0143=g143,
        global_shell_05=g05,
        global_resolution_0143=shell_to_resolution(g143, n, voxel_size),
        global_resolution_05=shell_to_resolution(g05, n, voxel_size),
        directions=d,
        cone_angle=float(cone_angle),
        cone_fsc=cone,
        cone_counts=counts,
        shell_0143=k143,
        resolution_0143=res143,
        resolution_05=res05,
        axis=axis,
        axis_angle_to_z=angle,
        axis_05=axis05,
        axis_angle_to_z_05=angle05,
        sphericity=sphericity,
        cfar=cfar,
        cone_area=area,
        voxel_size=float(voxel_size),
        box=n,
    )
