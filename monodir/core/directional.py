"""Directional local resolution (MonoDir, algorithm.md section 2).

For every direction ``d`` of a fixed set the map's spectrum is restricted to a double cone of
half-aperture 15 degrees about ``d``; a frequency sweep then tests, voxel by voxel, whether the
cone's monogenic amplitude stands above the noise. The noise comes from

* single map: background voxels (outside the mask, beyond the protein radius, inside the usable
  sphere) within a real-space double cone of 45 degrees about ``d``;
* half maps: the half-difference map, filtered with the same cone and band, inside the mask
  (no solvent shell needed).

The unit of distributed work is :func:`direction_resolution` (one direction, all mask voxels).
:func:`prepare_directional` computes everything the directions share once;
:func:`directional` runs the whole analysis in-process.

Default mode versus ``xmipp_compat=True``: float32 (compat float64); the fast set lists +z once
(compat twice, quirk Q16); entries never updated get the first tested resolution instead of
the box-size sentinel (quirk Q17); the real-space noise cone is centred on ``floor(n/2)`` like
everything else (compat: ``n/2``, quirk Q24); Riesz multipliers exactly odd at Nyquist (Q20).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from monodir.core import fourier, heap, kernels
from monodir.core.directions import (
    angles_to_vectors,
    compare_angle,
    degrees_acos,
    direction_set,
)
from monodir.core.masks import percentile, prepare_states, radius2
from monodir.core.monogenic import (
    AmplitudeWorkspace,
    LineSamples,
    ShellSweep,
    SpectralBasis,
    workspace_for,
)
from monodir.core.results import DirectionalResult
from monodir.core.sweep import SweepStep, directional_sweep

#: Half-aperture of the Fourier cone (degrees).
CONE_ANGLE = 15.0
#: Half-aperture of the real-space noise cone (degrees).
NOISE_CONE_ANGLE = 45.0
#: Width (voxels) of the solvent shell / spatial taper.
N_SMOOTH = 7


@dataclass
class DirectionalSetup:
    """Everything the per-direction tasks share (picklable; ship once per worker).

    Attributes
    ----------
    shape, voxel_size
        Grid and sampling.
    spectrum
        Half spectrum of the analysed map (forward-normalised).
    noise_spectrum
        Half spectrum of the half-difference map, or ``None`` in single-map mode.
    angles, directions
        ``(D, 2)`` (rot, tilt) and ``(D, 3)`` unit vectors.
    mask_indices
        Flat indices (C order) of the analysed voxels.
    n_mask_ref
        Voxel count used by the "fewer than 2.5 % active" stop.
    noise_shell
        ``(lo, hi, cut)``: the background voxels that may serve as noise (single map) are
        those with ``lo < r2 < hi`` and ``r2 <= cut`` (``r2`` the squared distance to the
        voxel ``n // 2``) outside the mask; made on the fly per direction
        (:func:`noise_candidates` lists them).
    steps
        The frequency sweep.
    taper
        Real-space taper applied to the amplitude (:class:`RadialTaper`, an array, or
        ``None``).
    """

    shape: tuple[int, int, int]
    voxel_size: float
    xmipp_compat: bool
    significance: float
    resolution_step: float
    fast: bool
    spectrum: np.ndarray
    noise_spectrum: np.ndarray | None
    angles: np.ndarray
    directions: np.ndarray
    mask_indices: np.ndarray
    n_mask_ref: int
    noise_shell: tuple[int, int, float]
    r_particle: int
    r_limit: int
    steps: list[SweepStep]
    taper: RadialTaper | np.ndarray | None
    info: dict = field(default_factory=dict)

    @property
    def n_directions(self) -> int:
        return int(self.directions.shape[0])

    @property
    def n_mask(self) -> int:
        return int(self.mask_indices.size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float64 if self.xmipp_compat else np.float32)

    @property
    def half_maps(self) -> bool:
        return self.noise_spectrum is not None


class NoNoiseRegionError(ValueError):
    """Single-map mode needs a solvent shell around the protein; there is none."""


@dataclass(frozen=True)
class RadialTaper:
    """:func:`spatial_taper` stored as its few distinct values instead of a whole volume.

    The taper depends only on the integer squared distance ``r2`` of a voxel to the centre:
    1 below ``lo = (c - width)^2``, 0 above ``hi = c^2``, and ``table[r2 - lo]`` in between
    (values computed by :func:`spatial_taper`'s own formula). Compiled kernels evaluate it on
    the fly (no volume to keep or to read); :meth:`array` (or ``np.asarray``) gives the volume,
    equal to :func:`spatial_taper` bit for bit.
    """

    shape: tuple[int, int, int]
    centre: tuple[int, int, int]
    lo: int
    hi: int
    table: np.ndarray

    @classmethod
    def build(
        cls, shape: tuple[int, int, int], width: int = N_SMOOTH, dtype: type = np.float64
    ) -> RadialTaper:
        c = shape[2] // 2
        lo, hi = max(c - width, 0) ** 2, c * c
        r = np.sqrt(np.arange(lo, hi + 1, dtype=np.float64))
        table = np.ones(r.shape, dtype=dtype)
        ramp = (r >= c - width) & (r <= c)
        table[ramp] = 0.5 * (1.0 + np.cos(np.pi * (c - width - r[ramp]) / width))
        centre = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
        return cls(tuple(shape), centre, lo, hi, table)

    @property
    def dtype(self) -> np.dtype:
        return self.table.dtype

    def block(self, z0: int, z1: int, x0: int, x1: int) -> np.ndarray:
        """``array()[z0:z1, :, x0:x1]`` without building the whole volume."""
        cz, cy, cx = self.centre
        r2 = (
            (np.arange(z0, z1) - cz)[:, None, None] ** 2
            + (np.arange(self.shape[1]) - cy)[None, :, None] ** 2
            + (np.arange(x0, x1) - cx)[None, None, :] ** 2
        )
        out = np.ones(r2.shape, dtype=self.dtype)
        ramp = (r2 >= self.lo) & (r2 <= self.hi)
        out[ramp] = self.table[r2[ramp] - self.lo]
        out[r2 > self.hi] = 0.0
        return out

    def array(self) -> np.ndarray:
        """The taper volume."""
        return self.block(0, self.shape[0], 0, self.shape[2])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.array()
        return a if dtype is None else a.astype(dtype)

    def row_runs(self) -> np.ndarray:
        """``(nz, ny, 4)`` int32: per line along x, ``[a, b)`` where the taper is not 0
        (``r2 <= hi``) and, inside it, ``[c, d)`` where it is 1 (``r2 < lo``); empty runs
        have ``a == b`` (``c == d``). Computed once and kept."""
        runs = self.__dict__.get("_row_runs")
        if runs is None:
            cz, cy, cx = self.centre
            base = (
                (np.arange(self.shape[0]) - cz)[:, None] ** 2
                + (np.arange(self.shape[1]) - cy)[None, :] ** 2
            ).astype(np.int64)
            runs = np.empty((*base.shape, 4), dtype=np.int32)
            outer = _centred_run(self.hi - base + 1, cx, self.shape[2])
            inner = _centred_run(self.lo - base, cx, self.shape[2])
            runs[..., 0], runs[..., 1] = outer
            # the inner run lies inside the outer one (lo <= hi); clip for empty runs
            runs[..., 2] = np.clip(inner[0], outer[0], outer[1])
            runs[..., 3] = np.clip(inner[1], runs[..., 2], outer[1])
            object.__setattr__(self, "_row_runs", runs)
        return runs

    def column_support(self) -> np.ndarray:
        """``(nz, nx)``: where the taper is not 0 somewhere on the line along y."""
        cz, cy, cx = self.centre
        dz = (np.arange(self.shape[0]) - cz)[:, None] ** 2
        dx = (np.arange(self.shape[2]) - cx)[None, :] ** 2
        dy_min = 0 if 0 <= cy < self.shape[1] else min(cy**2, (self.shape[1] - 1 - cy) ** 2)
        nonzero = np.flatnonzero(self.table)
        last = self.lo + int(nonzero[-1]) if nonzero.size else self.lo - 1
        return dz + dx + dy_min <= last


def _centred_run(room: np.ndarray, centre: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``[a, b)`` of the ``x`` in ``[0, n)`` with ``(x - centre)^2 < room``, elementwise
    (``a == b`` when there are none); exact integer arithmetic."""
    room = np.asarray(room, dtype=np.int64)
    m = np.floor(np.sqrt(np.maximum(room, 0).astype(np.float64))).astype(np.int64)
    m -= (m * m >= room) & (m > 0)  # largest m with m^2 < room (float rounding fixed up)
    m += (m + 1) * (m + 1) < room
    empty = room <= 0
    a = np.clip(centre - m, 0, n)
    b = np.clip(centre + m + 1, a, n)
    a = np.where(empty, 0, a)
    b = np.where(empty, 0, b)
    return a, b


def spatial_taper(
    shape: tuple[int, int, int], width: int = N_SMOOTH, dtype: type = np.float64
) -> np.ndarray:
    """Raised-cosine taper from radius ``c - width`` to ``c`` (``c = floor(n/2)``), 0 beyond."""
    c = shape[2] // 2
    r = np.sqrt(radius2(shape).astype(np.float64))
    t = np.ones(shape, dtype=dtype)
    ramp = (r >= c - width) & (r <= c)
    t[ramp] = 0.5 * (1.0 + np.cos(np.pi * (c - width - r[ramp]) / width))
    del ramp
    t[r > c] = 0.0
    return t


def prepare_directional(
    volume: np.ndarray,
    mask: np.ndarray,
    voxel_size: float,
    *,
    half_maps: tuple[np.ndarray, np.ndarray] | None = None,
    fast: bool = False,
    resolution_step: float = 0.5,
    significance: float = 0.95,
    sphere_radius: float | None = None,
    xmipp_compat: bool = False,
    threads: int = 1,
) -> DirectionalSetup:
    """Shared inputs of the per-direction tasks.

    Parameters
    ----------
    volume
        The map (ignored when ``half_maps`` is given, then the analysed map is their mean).
    mask
        Boolean protein mask.
    voxel_size
        Å per voxel.
    half_maps
        ``(half1, half2)``: noise from their half difference inside the mask.
    fast
        46 directions instead of 81.
    resolution_step
        Minimum Å spacing of tested resolutions below 8 Å.
    significance
        Noise quantile of the per-direction threshold (compat: rounded to float32 like Xmipp).
    sphere_radius
        Radius (voxels) of the usable sphere; default half the box.
    xmipp_compat
        Reproduce Xmipp (float64, quirks kept).
    threads
        FFT threads.

    Raises
    ------
    NoNoiseRegionError
        Single-map mode without a solvent shell of at least 7 voxels (use half maps).
    """
    dtype = np.float64 if xmipp_compat else np.float32
    mask = np.asarray(mask).astype(bool)
    if half_maps is not None:
        h1 = np.asarray(half_maps[0], dtype=dtype)
        h2 = np.asarray(half_maps[1], dtype=dtype)
        analysed = 0.5 * (h1 + h2)
        noise_map = 0.5 * (h1 - h2)
    else:
        analysed = np.asarray(volume, dtype=dtype)
        noise_map = None
    shape = analysed.shape
    n = shape[2]
    state, r_prot, n_mask_ref, r_lim, _, r2 = prepare_states(analysed, mask)
    radius = n / 2 if sphere_radius is None or sphere_radius <= 0 else float(sphere_radius)
    if noise_map is None and r_lim - N_SMOOTH <= r_prot:
        raise NoNoiseRegionError(
            f"the mask reaches {r_prot} voxels from the centre but the map has signal out to "
            f"{r_lim} voxels: single-map mode needs at least {N_SMOOTH} voxels of solvent "
            "beyond the mask; give half maps (input.half_maps) or a larger box"
        )
    cut = (radius - N_SMOOTH) ** 2
    state[r2 > cut] = -1
    index_type = np.int32 if analysed.size < 2**31 else np.int64
    mask_indices = np.flatnonzero(state >= 1).astype(index_type)
    # the noise candidates are not kept (0.35 volumes at 256^3): every direction makes its
    # own from this shell and the mask (state 0 beyond the protein radius)
    noise_shell = (int(r_prot) * int(r_prot), int(r_lim) * int(r_lim), float(cut))
    n_noise = int(np.count_nonzero((state == 0) & (r2 > noise_shell[0])))
    del r2, state
    if noise_map is None and n_noise == 0:
        raise NoNoiseRegionError(
            "no background voxels between the mask and the edge of the usable sphere: "
            "single-map mode needs a solvent region; give half maps (input.half_maps)"
        )
    angles = direction_set(fast, xmipp_compat=xmipp_compat)
    spectrum = fourier.rfftn(analysed.astype(dtype, copy=False), threads)
    del analysed
    noise_spectrum = None
    if noise_map is not None:
        noise_spectrum = fourier.rfftn(noise_map.astype(dtype, copy=False), threads)
    return DirectionalSetup(
        shape=shape,
        voxel_size=float(voxel_size),
        xmipp_compat=xmipp_compat,
        # Xmipp parses its double options with sscanf("%f") (xmippCore textToFloat): the
        # significance is float32-rounded, so int(n*p) is one lower when n*0.95 is an integer.
        significance=float(np.float32(significance)) if xmipp_compat else float(significance),
        resolution_step=float(resolution_step),
        fast=fast,
        spectrum=spectrum,
        noise_spectrum=noise_spectrum,
        angles=angles,
        directions=angles_to_vectors(angles),
        mask_indices=mask_indices,
        n_mask_ref=n_mask_ref,
        noise_shell=noise_shell,
        r_particle=r_prot,
        r_limit=r_lim,
        steps=directional_sweep(n, voxel_size, resolution_step),
        taper=RadialTaper.build(shape, dtype=dtype),
        info={"n_mask": int(mask_indices.size), "n_noise": n_noise},
    )


def _gather_full(spec_half: np.ndarray, flat_index: np.ndarray, nx: int) -> np.ndarray:
    """Full-grid coefficients at ``flat_index`` of a real signal given its half spectrum."""
    nz, ny, nh = spec_half.shape
    kz, rem = np.divmod(flat_index, ny * nx)
    ky, kx = np.divmod(rem, nx)
    stored = kx < nh
    out = np.empty(flat_index.size, dtype=spec_half.dtype)
    out[stored] = spec_half[kz[stored], ky[stored], kx[stored]]
    m = ~stored
    out[m] = np.conj(spec_half[(-kz[m]) % nz, (-ky[m]) % ny, nx - kx[m]])
    return out


def _riesz_at(
    kz: np.ndarray,
    ky: np.ndarray,
    kx: np.ndarray,
    shape: tuple[int, int, int],
    xmipp_nyquist: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(|u|, u_x/|u|, u_y/|u|, u_z/|u|)`` at half-grid indices (same rules as
    :func:`monodir.core.monogenic.riesz_factors_half`)."""
    nz, ny, nx = shape
    f = [
        np.asarray(kx, dtype=np.float64) / nx,  # half axis: Nyquist is +0.5
        np.asarray(fourier.idx2freq(ky, ny), dtype=np.float64),
        np.asarray(fourier.idx2freq(kz, nz), dtype=np.float64),
    ]
    r = np.sqrt(f[0] * f[0] + f[1] * f[1] + f[2] * f[2])
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(r > 0, 1.0 / np.where(r > 0, r, 1.0), 0.0)
    comps = []
    for fa, k, n in ((f[0], kx, nx), (f[1], ky, ny), (f[2], kz, nz)):
        if not xmipp_nyquist and n % 2 == 0:
            fa = np.where(k == n // 2, 0.0, fa)
        comps.append(fa * inv)
    return r, comps[0], comps[1], comps[2]


def _cone_half(shape: tuple[int, int, int], d: np.ndarray, slab: int = 16) -> np.ndarray:
    """Boolean half-grid mask of the double cone (half-aperture :data:`CONE_ANGLE`) about ``d``.

    Computed in slabs of the slowest axis to keep temporaries small.
    """
    nz, ny, nx = shape
    nh = nx // 2 + 1
    fy = fourier.axis_frequencies(ny)
    fx = np.arange(nh) / nx
    limit = np.deg2rad(CONE_ANGLE)
    cos_limit = float(np.cos(limit))
    fz_all = fourier.axis_frequencies(nz)

    def inside(fz, fy, fx):  # (broadcastable) frequencies -> inside the cone, u = 0 excluded
        r = np.sqrt(fz * fz + fy * fy + fx * fx)
        dot = np.abs(fx * d[0] + fy * d[1] + fz * d[2])
        with np.errstate(divide="ignore", invalid="ignore"):
            cosang = np.clip(np.where(r > 0, dot / np.where(r > 0, r, 1.0), 0.0), -1.0, 1.0)
        return compare_angle(cosang, "<=", limit, np.arccos, cos_limit) & (r > 0)

    compiled = kernels.cone_half_codes(fz_all, fy, fx, d, cos_limit)
    if compiled is not None:  # the few cosines at the limit (if any) are decided here
        codes, n_near = compiled
        if n_near:
            a, b, c = np.nonzero(codes == 2)
            codes[a, b, c] = inside(fz_all[a], fy[b], fx[c])
        return codes.view(bool)
    out = np.empty((nz, ny, nh), dtype=bool)
    for z0 in range(0, nz, slab):
        fz = fz_all[z0 : z0 + slab][:, None, None]
        out[z0 : z0 + slab] = inside(fz, fy[None, :, None], fx[None, None, :])
    return out


def cone_basis(setup: DirectionalSetup, i: int) -> SpectralBasis:
    """Spectral basis of direction ``i``: the coefficients inside its 15-degree double cone.

    Built from index arithmetic on the few percent of coefficients inside the cone, with the
    full-grid equivalent of a real inverse transform of the half spectrum
    (:func:`monodir.core.fourier.full_from_half`): stored coefficients and their conjugate
    mirrors, and Hermitian averages on the self-mirrored planes ``kx = 0`` and ``kx = nx/2``.
    """
    shape = setup.shape
    nz, ny, nx = shape
    dtype = setup.dtype
    compat = setup.xmipp_compat
    cone = _cone_half(shape, setup.directions[i])
    planes = [0] + ([nx // 2] if nx % 2 == 0 else [])
    kz, ky, kx = kernels.nonzero_except_columns(cone, planes)
    # factors in the working precision at once: the cone holds ~1e6 coefficients at 256^3
    r, hx, hy, hz = (a.astype(dtype) for a in _riesz_at(kz, ky, kx, shape, compat))
    flat = [kz * ny * nx + ky * nx + kx, ((-kz) % nz) * ny * nx + ((-ky) % ny) * nx + (nx - kx)]
    g = [np.ones(kz.size, dtype=dtype), np.ones(kz.size, dtype=dtype)]
    hs = [(hx, hy, hz), (-hx, -hy, -hz)]
    rad = [r, r]
    spec = [setup.spectrum[kz, ky, kx], np.conj(setup.spectrum[kz, ky, kx])]
    mz = (-np.arange(nz)) % nz
    my = (-np.arange(ny)) % ny
    for p in planes:
        cz = cone[:, :, p]
        cm = cz[mz][:, my]
        pz, py = np.nonzero(cz | cm)
        c_k = cz[pz, py].astype(np.float64)
        c_m = cm[pz, py].astype(np.float64)
        px = np.full(pz.size, p)
        rk, hxk, hyk, hzk = _riesz_at(pz, py, px, shape, compat)
        _, hxm, hym, hzm = _riesz_at(mz[pz], my[py], px, shape, compat)
        flat.append(pz * ny * nx + py * nx + p)
        g.append(0.5 * (c_k + c_m))
        hs.append(tuple(0.5 * (c_k * a - c_m * b) for a, b in ((hxk, hxm), (hyk, hym), (hzk, hzm))))
        rad.append(rk)
        spec.append(setup.spectrum[pz, py, p])
    del cone, kz, ky, kx, r, hx, hy, hz

    def joined(parts: list, cast: bool = True) -> np.ndarray:
        """The parts end to end, each list emptied as soon as it is joined (the basis is
        built with fewer arrays alive at once)."""
        out = np.concatenate(parts)
        parts.clear()
        return out.astype(dtype, copy=False) if cast else out

    hs_x, hs_y, hs_z = ([h[j] for h in hs] for j in range(3))
    del hs
    return SpectralBasis(
        shape=shape,
        flat_index=joined(flat, cast=False),
        spectrum=joined(spec, cast=False),
        radius=joined(rad),
        g=joined(g),
        hx=joined(hs_x),
        hy=joined(hs_y),
        hz=joined(hs_z),
    )


def noise_candidates(setup: DirectionalSetup, z0: int = 0, z1: int | None = None) -> np.ndarray:
    """Flat indices (increasing) of the noise candidates on the planes ``z0:z1`` (all by
    default): the voxels of :attr:`DirectionalSetup.noise_shell` outside the mask."""
    nz, ny, nx = setup.shape
    z1 = nz if z1 is None else z1
    lo, hi, cut = setup.noise_shell
    z = (np.arange(z0, z1, dtype=np.int64) - nz // 2)[:, None, None]
    y = (np.arange(ny, dtype=np.int64) - ny // 2)[None, :, None]
    x = (np.arange(nx, dtype=np.int64) - nx // 2)[None, None, :]
    r2 = z * z + y * y + x * x
    flat = np.flatnonzero((r2 > lo) & (r2 < hi) & ~(r2 > cut)) + z0 * ny * nx
    m = setup.mask_indices
    a, b = np.searchsorted(m, [z0 * ny * nx, z1 * ny * nx])
    keep = ~np.isin(flat, m[a:b], assume_unique=True)
    return flat[keep].astype(m.dtype, copy=False)


def noise_indices(setup: DirectionalSetup, i: int, planes: int = 8) -> np.ndarray:
    """Background voxels inside the 45-degree real-space double cone about direction ``i``.

    The candidates are made on the fly (compiled: in one pass over the shell; NumPy: a few
    planes at a time, to keep temporaries small).
    """
    shape = setup.shape
    if setup.xmipp_compat:
        c = np.array([shape[2] / 2, shape[1] / 2, shape[0] / 2])
    else:
        c = np.array([shape[2] // 2, shape[1] // 2, shape[0] // 2], dtype=np.float64)
    d = setup.directions[i]
    cos_a = math.cos(math.radians(NOISE_CONE_ANGLE))
    # the double cone holds 29 % of the directions (1 - cos 45): room for 40 % of the
    # candidates makes one pass enough for most maps
    expected = int(0.4 * setup.info.get("n_noise", 0)) + 1024
    found = kernels.noise_shell_cone(
        shape, setup.noise_shell, setup.mask_indices, c, d, cos_a, expected
    )
    if found is not None:  # compiled; the few cosines at a limit are decided here
        idx, codes = found
        near = np.flatnonzero(codes == 2)
        if near.size:
            keep = np.ones(idx.size, dtype=bool)
            keep[near] = _noise_cone_numpy(idx[near], shape, c, d, cos_a)
            idx = idx[keep]
        return idx
    keep = []
    for z0 in range(0, shape[0], planes):
        part = noise_candidates(setup, z0, min(z0 + planes, shape[0]))
        keep.append(part[_noise_cone_numpy(part, shape, c, d, cos_a)])
    return np.concatenate(keep)


def _noise_cone_numpy(part: np.ndarray, shape, c: np.ndarray, d: np.ndarray, cos_a: float):
    """Which flat voxel indices ``part`` lie inside the 45-degree double cone about ``d``."""
    kz, rem = np.divmod(part.astype(np.int64), shape[1] * shape[2])
    ky, kx = np.divmod(rem, shape[2])
    px, py, pz = kx - c[0], ky - c[1], kz - c[2]
    norm_p = np.sqrt(px * px + py * py + pz * pz)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_p = (px * d[0] + py * d[1] + pz * d[2]) / norm_p
    return compare_angle(cos_p, "<", NOISE_CONE_ANGLE, degrees_acos, cos_a) | compare_angle(
        cos_p, ">", 180.0 - NOISE_CONE_ANGLE, degrees_acos, -cos_a
    )


def direction_resolution(
    setup: DirectionalSetup,
    i: int,
    threads: int = 1,
    *,
    workspace: AmplitudeWorkspace | None = None,
    sweep_log: list | None = None,
) -> np.ndarray:
    """Resolution (Å) of every mask voxel along direction ``i``: shape ``(n_mask,)`` float32.

    ``sweep_log``, if given, receives one dict per tested frequency (resolution, active voxels,
    signal mean, noise mean, threshold).
    """
    dtype = setup.dtype
    ws = workspace or workspace_for(setup.shape, dtype, threads)
    basis = cone_basis(setup, i)
    signal = ShellSweep(basis, ws, slot=0)
    noise = None
    if setup.half_maps:
        noise_basis = basis.with_spectrum(
            _gather_full(setup.noise_spectrum, basis.flat_index, setup.shape[2])
        )
        noise = ShellSweep(noise_basis, ws, slot=1)
        del noise_basis
        wanted = [setup.mask_indices]
    else:
        noise_idx = noise_indices(setup, i)
        if noise_idx.size == 0:
            raise NoNoiseRegionError(
                f"direction {i}: no background voxels inside its noise cone; "
                "give half maps (input.half_maps)"
            )
        wanted = [setup.mask_indices, noise_idx]
        del noise_idx
    del basis  # the sweeps hold what they need
    # the amplitudes are only read at the mask (and noise) voxels: the low-pass's last pass
    # runs on the lines holding them (each sweep has its own output arrays)
    samples = LineSamples(setup.shape, wanted)
    noise_samples = samples.with_own_outputs() if noise is not None else None
    del wanted
    n_mask = setup.n_mask
    sentinel = float(setup.shape[0]) if setup.xmipp_compat else np.nan
    res = np.full(n_mask, sentinel, dtype=np.float64)
    st = np.ones(n_mask, dtype=np.int8)
    tested: list[float] = []
    ns = n_mask
    for step in setup.steps:
        tested.append(step.resolution)
        r_two_back = tested[-3] if len(tested) >= 3 else tested[0]
        if ns / max(setup.n_mask_ref, 1) < 0.025:
            break
        band = (step.freq, step.freq_high_pass, step.freq_low_pass)
        # each sweep returns its amplitude at the sampled voxels in arrays reused every step
        if noise is not None:
            (noise_vals,) = noise.amplitude(*band, taper=setup.taper, samples=noise_samples)
            (a_mask,) = signal.amplitude(*band, taper=setup.taper, samples=samples)
        else:
            a_mask, noise_vals = signal.amplitude(*band, taper=setup.taper, samples=samples)
        if sweep_log is not None:
            entry = {
                "resolution": step.resolution,
                "n_active": ns,
                "mean_signal": float(a_mask[st > 0].mean(dtype=np.float64)),
                "mean_noise": float(noise_vals.mean(dtype=np.float64)),
            }
        # the noise values are this step's scratch: partitioned in place
        thr = percentile(
            noise_vals.astype(np.float32, copy=False), setup.significance, overwrite=True
        )
        if sweep_log is not None:
            sweep_log.append({**entry, "threshold": thr})
        ns = kernels.update_states(a_mask, st, res, thr, step.resolution, r_two_back)
    if not setup.xmipp_compat and tested:
        res[np.isnan(res)] = tested[0]
    return res.astype(np.float32)


def _distinct_directions(setup: DirectionalSetup) -> tuple[list[int], dict[int, int]]:
    """Indices to compute and, for repeated rows (compat fast set: +z twice), their source."""
    first: dict[tuple[float, float], int] = {}
    todo, copies = [], {}
    for i, (rot, tilt) in enumerate(np.asarray(setup.angles, dtype=np.float64).tolist()):
        key = (rot, tilt)
        if key in first:
            copies[i] = first[key]
        else:
            first[key] = i
            todo.append(i)
    return todo, copies


def resolution_matrix(
    setup: DirectionalSetup,
    *,
    threads: int = 1,
    n_jobs: int = 1,
    progress=None,
    parallel: str = "auto",
) -> np.ndarray:
    """``(D, n_mask)`` float32 matrix of every direction, in this process (and its forks).

    ``n_jobs > 1`` spreads the directions over that many forked processes or threads (each
    with ``threads`` FFT threads and its own workspace), one direction at a time as they free
    up; the results are identical to the sequential loop either way. ``parallel``:

    * ``"processes"``: forked children share the setup (copy-on-write) and write their rows
      into a shared matrix. No lock is shared, so they run 2-6 % faster than threads on the
      reference maps (the threads wait for each other's Python between their compiled calls).
      The first such call of a process computes one direction itself before forking, so that
      the children (of this call and every later one) inherit its loaded compiled kernels.
    * ``"threads"``: the transforms and compiled kernels release the GIL; on 2 cores, 2
      threads ran 1.85x faster than one.
    * ``"auto"`` (default): processes where forking is safe (Linux, a calling process that
      runs no other thread and is not itself a daemonic child), threads otherwise.

    A direction listed twice (Xmipp's fast set) is computed once.
    """
    _check_parallel(parallel)
    d = setup.n_directions
    todo, copies = _distinct_directions(setup)
    done = 0

    def finished(i: int) -> None:
        nonlocal done
        done += 1 + sum(1 for src in copies.values() if src == i)
        if progress is not None:
            progress(done, d)

    jobs = min(int(n_jobs), len(todo))
    if jobs > 1 and _use_processes(parallel):
        matrix = _matrix_in_forks(setup, todo, jobs, threads, finished)
    else:
        matrix = np.empty((d, setup.n_mask), dtype=np.float32)
        if jobs <= 1:
            ws = AmplitudeWorkspace(setup.shape, setup.dtype, threads)
            for i in todo:
                matrix[i] = direction_resolution(setup, i, threads, workspace=ws)
                finished(i)
        else:
            from concurrent.futures import ThreadPoolExecutor, as_completed

            def one(i: int) -> int:
                # each pool thread keeps its own workspace (workspace_for), freed with it
                matrix[i] = direction_resolution(setup, i, threads)
                return i

            with ThreadPoolExecutor(jobs, thread_name_prefix="monodir-direction") as pool:
                futures = [pool.submit(one, i) for i in todo]
                for fut in as_completed(futures):
                    finished(fut.result())
    for i, src in copies.items():
        matrix[i] = matrix[src]
    return matrix


PARALLEL_MODES = ("auto", "processes", "threads")


def _check_parallel(parallel: str) -> None:
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"parallel={parallel!r}: use one of {', '.join(PARALLEL_MODES)}")


def _use_processes(parallel: str) -> bool:
    """Whether :func:`resolution_matrix` forks (see its ``parallel``, already checked)."""
    import multiprocessing
    import sys
    import threading

    if parallel == "threads":
        return False
    can_fork = "fork" in multiprocessing.get_all_start_methods()
    daemonic = multiprocessing.current_process().daemon
    if parallel == "processes":
        if not can_fork or daemonic:
            raise ValueError(
                "parallel='processes' needs a platform with fork and a process that may "
                "have children (not a daemonic worker): use parallel='threads'"
            )
        return True
    # Linux only: macOS system libraries are not fork-safe (Python spawns there by default)
    linux = sys.platform.startswith("linux")
    return linux and can_fork and not daemonic and threading.active_count() == 1


#: ``(setup, matrix, threads)`` of the running :func:`_matrix_in_forks`, inherited by its
#: forked children (set only for the duration of the call).
_FORKED: tuple | None = None

#: ``(dtype, half maps)`` of the directions this process has computed itself before forking
#: (:func:`_matrix_in_forks`): its compiled kernels are loaded, and its children inherit them.
_PARENT_WARM: set[tuple[str, bool]] = set()
#: Free heap (bytes) above which the parent hands it back after its own direction.
HEAP_TRIM_MIN_FREE = 8 << 20


def _forked_direction(i: int) -> int:
    """Compute direction ``i`` in a forked child, writing its row into the shared matrix."""
    assert _FORKED is not None
    setup, matrix, threads = _FORKED
    matrix[i] = direction_resolution(setup, i, threads)
    return i


def _matrix_in_forks(setup: DirectionalSetup, todo: list[int], jobs: int, threads: int, finished):
    """The directions ``todo`` in ``jobs`` forked children; returns the (shared) matrix."""
    import mmap
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from monodir.core.monogenic import release_workspace

    global _FORKED
    d, n = setup.n_directions, setup.n_mask
    # anonymous shared memory: the children's rows land in the parent without a copy
    buf = mmap.mmap(-1, max(1, d * n * 4))
    matrix = np.frombuffer(buf, dtype=np.float32, count=d * n).reshape(d, n)
    for stream in (sys.stdout, sys.stderr):  # a child must not write the parent's buffers
        if stream is not None:
            stream.flush()
    key = (setup.dtype.str, setup.half_maps)
    if key not in _PARENT_WARM and len(todo) > jobs:
        # A fresh child loads the compiled kernels (numba's cache) at its first direction,
        # ~0.2 s, and every call forks fresh children. The first direction is computed here
        # instead, once per process: this call's children and every later call's inherit the
        # loaded kernels (the children no longer load them side by side: no slower for a
        # single call either). The workspace is freed before forking, and the heap handed
        # back (glibc kept ~3 volumes of it resident in this process otherwise).
        first, todo = todo[0], todo[1:]
        ws = AmplitudeWorkspace(setup.shape, setup.dtype, threads)
        matrix[first] = direction_resolution(setup, first, threads, workspace=ws)
        del ws
        heap.trim_heap(HEAP_TRIM_MIN_FREE)
        _PARENT_WARM.add(key)
        finished(first)
    _FORKED = (setup, matrix, threads)
    # a child starts without the workspace this thread may hold (it makes its own); with
    # fork the executor starts every child before its own management thread
    pool = ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("fork"), initializer=release_workspace
    )
    try:
        futures = [pool.submit(_forked_direction, i) for i in todo]
        for fut in as_completed(futures):
            finished(fut.result())
    except BrokenProcessPool as exc:  # a child killed (out of memory?): fail, never hang
        raise RuntimeError(
            "a process computing directions died (out of memory?): give it more memory, "
            "fewer n_jobs, or parallel='threads'"
        ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _FORKED = None
    return matrix


#: Mask voxels summarised at once by :func:`directional` (bounds its temporaries).
SUMMARY_TILE = 65536


def directional(
    volume: np.ndarray,
    mask: np.ndarray,
    voxel_size: float,
    *,
    monores_map: np.ndarray | None = None,
    threads: int = 1,
    n_jobs: int = 1,
    progress=None,
    parallel: str = "auto",
    **kwargs,
) -> DirectionalResult:
    """Directional resolution analysis without a cluster.

    Keyword arguments are those of :func:`prepare_directional`. ``monores_map`` (Å) enters the
    radial averages and the z-score map. ``n_jobs`` forked processes or threads (``parallel``,
    see :func:`resolution_matrix`) share the directions, then ``n_jobs`` threads the voxel
    summaries. ``progress``, if given, is called with ``(done, total)``.
    """
    from monodir.core.summaries import finalize_directional, voxel_summaries

    _check_parallel(parallel)

    setup = prepare_directional(volume, mask, voxel_size, threads=threads, **kwargs)
    matrix = resolution_matrix(
        setup, threads=threads, n_jobs=n_jobs, progress=progress, parallel=parallel
    )
    # tiles of voxels, summarised independently and combined in order; with n_jobs > 1 the
    # threads share the tiles, or a single tile's voxels (the sorts and compiled loops
    # release the GIL). The tiles do not depend on n_jobs: the per-direction sums of
    # xmipp_compat depend on the tiling
    jobs = max(1, int(n_jobs))
    block = SUMMARY_TILE
    starts = range(0, setup.n_mask, block)

    def summarise(start: int, inner: int = 1) -> dict:
        return voxel_summaries(setup, matrix[:, start : start + block], start, inner)

    if jobs > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(jobs, thread_name_prefix="monodir-summary") as pool:
            parts = list(pool.map(summarise, starts))
    else:
        parts = [summarise(start, jobs) for start in starts]
    result = finalize_directional(setup, parts, monores_map=monores_map)
    result.resolution_matrix = matrix
    return result
