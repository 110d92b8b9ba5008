"""Synthetic test maps with known resolution, for tests, the demo and benchmarks.

Pure numpy/scipy, no file I/O, deterministic for a given seed. Arrays are indexed
``[z, y, x]`` (x fastest), like everything in monodir; vectors given by the user (axes,
coordinates) are in (x, y, z) order. The box centre is the voxel ``floor(n / 2)`` on each axis,
the same convention as the numerical core's frequency grids.

Resolution conventions: a map "band-limited to R Å" has no Fourier power at spatial
frequencies above ``1 / R``; the raised-cosine edge of :func:`band_limit` lies *below* the
cut-off (it falls from 1 at ``(1 - width) / R`` to 0 at ``1 / R``), so the limit is strict.

Main entry points:

* :func:`atomic_model_map` -- a protein-like map rendered from pseudo-atoms (helices and
  coil inside an ellipsoid), band-limited to a resolution.
* :func:`two_resolution_map` -- one half (x < n/2) at ``res_a``, the other at ``res_b``,
  with noise and a mask; :func:`two_resolution_reference` gives the expected values.
* :func:`anisotropic_map` -- a map whose resolution depends on direction
  (:func:`anisotropic_filter`), with noise and a mask.
* :func:`half_maps` -- two independent noise realisations of one truth.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

__all__ = [
    "add_noise",
    "anisotropic_filter",
    "anisotropic_map",
    "atomic_model_map",
    "band_limit",
    "frequency_components",
    "gaussian_blobs",
    "half_maps",
    "mask_from_map",
    "pseudo_atoms",
    "render_points",
    "sphere_mask",
    "two_resolution_map",
    "two_resolution_reference",
]

SeedLike = int | np.random.Generator | None

#: Semi-axes of the pseudo-protein ellipsoid (x, y, z) as fractions of the box edge.
ELLIPSOID_FRACTIONS = (0.28, 0.24, 0.20)
#: Pseudo-atoms per Å^3 of ellipsoid (loosely packed protein).
ATOM_DENSITY = 0.05
#: Atoms per residue (one "CA" plus scattered backbone/side-chain atoms).
ATOMS_PER_RESIDUE = 7
_CA_STEP = 3.8  # Å between consecutive CA atoms
_HELIX_RISE = 1.5  # Å per residue along the helix axis
_HELIX_RADIUS = 2.3  # Å
_HELIX_TURN = math.radians(100.0)  # per residue


def _as_shape(n: int | tuple[int, int, int]) -> tuple[int, int, int]:
    if isinstance(n, int | np.integer):
        return (int(n),) * 3
    shape = tuple(int(s) for s in n)
    if len(shape) != 3:
        raise ValueError(f"expected a 3D shape, got {n!r}")
    return shape  # type: ignore[return-value]


def frequency_components(
    shape: tuple[int, int, int], voxel_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spatial frequencies (1/Å) of the ``rfftn`` half grid, as broadcastable arrays.

    Parameters
    ----------
    shape : tuple of int
        Real-space shape ``(nz, ny, nx)``.
    voxel_size : float
        Å per voxel.

    Returns
    -------
    fz, fy, fx : numpy.ndarray
        Shapes ``(nz, 1, 1)``, ``(1, ny, 1)``, ``(1, 1, nx // 2 + 1)``.
    """
    nz, ny, nx = shape
    fz = sfft.fftfreq(nz, d=voxel_size)[:, None, None]
    fy = sfft.fftfreq(ny, d=voxel_size)[None, :, None]
    fx = sfft.rfftfreq(nx, d=voxel_size)[None, None, :]
    return fz, fy, fx


def _raised_cosine(rho: np.ndarray, width: float) -> np.ndarray:
    """1 for rho <= 1 - width, cosine fall to 0 at rho = 1, 0 beyond."""
    if not 0.0 <= width < 1.0:
        raise ValueError(f"width must be in [0, 1), got {width}")
    if width == 0.0:
        return (rho <= 1.0).astype(np.float64)
    t = np.clip((rho - (1.0 - width)) / width, 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def _apply_filter(volume: np.ndarray, weights: np.ndarray) -> np.ndarray:
    vol = np.asarray(volume, dtype=np.float64)
    spec = sfft.rfftn(vol)
    spec *= weights
    return sfft.irfftn(spec, s=vol.shape).astype(np.float32)


def band_limit(
    volume: np.ndarray,
    voxel_size: float,
    resolution: float,
    *,
    kind: str = "cosine",
    width: float = 0.1,
) -> np.ndarray:
    """Low-pass a volume so that it has no power beyond ``1 / resolution``.

    Parameters
    ----------
    volume : numpy.ndarray
        3D array ``[z, y, x]``.
    voxel_size : float
        Å per voxel.
    resolution : float
        Cut-off in Å; frequencies above ``1 / resolution`` are zeroed.
    kind : {"cosine", "ideal"}, optional
        "cosine": raised-cosine edge from ``(1 - width) / resolution`` (gain 1) to
        ``1 / resolution`` (gain 0); "ideal": sharp cut at ``1 / resolution``.
    width : float, optional
        Relative width of the cosine edge.

    Returns
    -------
    numpy.ndarray
        float32, same shape.
    """
    if resolution <= 0 or voxel_size <= 0:
        raise ValueError("resolution and voxel_size must be positive")
    fz, fy, fx = frequency_components(np.shape(volume), voxel_size)
    rho = np.sqrt(fz**2 + fy**2 + fx**2) * resolution
    if kind == "ideal":
        weights = (rho <= 1.0).astype(np.float64)
    elif kind == "cosine":
        weights = _raised_cosine(rho, width)
    else:
        raise ValueError(f"kind must be 'cosine' or 'ideal', got {kind!r}")
    return _apply_filter(volume, weights)


def anisotropic_filter(
    volume: np.ndarray,
    voxel_size: float,
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0),
    res_along: float = 8.0,
    res_across: float = 4.0,
    *,
    width: float = 0.1,
) -> np.ndarray:
    """Direction-dependent low-pass: an ellipsoidal band limit in Fourier space.

    A Fourier component ``k`` with parallel part ``k_par = k . axis`` and perpendicular
    part ``k_perp`` is kept (gain 1) inside the ellipsoid
    ``(k_par * res_along)^2 + (k_perp * res_across)^2 <= (1 - width)^2``, falls off with a
    raised cosine, and is zero outside the ellipsoid of radius 1. Along ``axis`` the
    cut-off is therefore ``1 / res_along``, perpendicular to it ``1 / res_across``, and in
    between it varies smoothly with the angle.

    Parameters
    ----------
    volume : numpy.ndarray
        3D array ``[z, y, x]``.
    voxel_size : float
        Å per voxel.
    axis : tuple of float, optional
        Direction (x, y, z); x is the fastest array axis. Normalised here.
    res_along, res_across : float, optional
        Resolution (Å) for Fourier components parallel / perpendicular to ``axis``.
    width : float, optional
        Relative width of the cosine edge.

    Returns
    -------
    numpy.ndarray
        float32, same shape.
    """
    a = np.asarray(axis, dtype=np.float64)
    norm = float(np.linalg.norm(a))
    if a.shape != (3,) or norm == 0.0:
        raise ValueError(f"axis must be a non-zero (x, y, z) vector, got {axis!r}")
    if res_along <= 0 or res_across <= 0 or voxel_size <= 0:
        raise ValueError("res_along, res_across and voxel_size must be positive")
    ax, ay, az = a / norm
    fz, fy, fx = frequency_components(np.shape(volume), voxel_size)
    k_par = fx * ax + fy * ay + fz * az
    k2 = fx**2 + fy**2 + fz**2
    k_perp2 = np.maximum(k2 - k_par**2, 0.0)
    rho = np.sqrt((k_par * res_along) ** 2 + k_perp2 * res_across**2)
    return _apply_filter(volume, _raised_cosine(rho, width))


def render_points(
    coords: np.ndarray,
    n: int | tuple[int, int, int],
    voxel_size: float = 1.0,
    *,
    sigma: float = 0.5,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Render points as 3D Gaussians sampled on the grid.

    Each Gaussian is evaluated exactly at the voxel centres within ``4 sigma`` of its point
    (separable, vectorised over points); nothing wraps around the box edges. Gaussians
    narrower than a voxel are under-sampled (their spectrum aliases); band-limit the result
    (:func:`band_limit`) when a clean spectrum matters, as :func:`atomic_model_map` does.

    Parameters
    ----------
    coords : numpy.ndarray
        ``(m, 3)`` positions (x, y, z) in Å relative to the box centre voxel ``n // 2``.
    n : int or tuple of int
        Box edge, or shape ``(nz, ny, nx)``.
    voxel_size : float, optional
        Å per voxel.
    sigma : float, optional
        Gaussian standard deviation in Å.
    weights : numpy.ndarray, optional
        ``(m,)`` amplitudes: each Gaussian integrates to its weight (in voxel units), so
        its voxel sum is close to the weight; 1 by default.

    Returns
    -------
    numpy.ndarray
        float32 ``[z, y, x]``.
    """
    if sigma <= 0 or voxel_size <= 0:
        raise ValueError("sigma and voxel_size must be positive")
    shape = _as_shape(n)
    pts = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    w = np.ones(len(pts)) if weights is None else np.asarray(weights, dtype=np.float64)
    s = sigma / voxel_size  # in voxels
    reach = max(1, math.ceil(4.0 * s))
    offsets = np.arange(-reach, reach + 1)
    norm = 1.0 / ((2.0 * np.pi) ** 1.5 * s**3)
    # Grid coordinates in array order (z, y, x).
    centre = np.array([c // 2 for c in shape], dtype=np.float64)
    g = pts[:, ::-1] / voxel_size + centre
    flat = np.zeros(math.prod(shape), dtype=np.float64)
    k = offsets.size
    chunk = max(1, 4_000_000 // k**3)
    for start in range(0, len(g), chunk):
        gc, wc = g[start : start + chunk], w[start : start + chunk]
        base = np.rint(gc).astype(np.int64)
        idx = base[:, :, None] + offsets[None, None, :]  # (m, 3, k)
        fac = np.exp(-0.5 * ((idx - gc[:, :, None]) / s) ** 2)
        ok = (idx >= 0) & (idx < np.array(shape)[None, :, None])
        fac = np.where(ok, fac, 0.0)
        idx = np.clip(idx, 0, np.array(shape)[None, :, None] - 1)
        vals = (
            (wc * norm)[:, None, None, None]
            * fac[:, 0, :, None, None]
            * fac[:, 1, None, :, None]
            * fac[:, 2, None, None, :]
        )
        lin = (
            idx[:, 0, :, None, None] * (shape[1] * shape[2])
            + idx[:, 1, None, :, None] * shape[2]
            + idx[:, 2, None, None, :]
        )
        flat += np.bincount(lin.ravel(), weights=vals.ravel(), minlength=flat.size)
    return flat.reshape(shape).astype(np.float32)


def gaussian_blobs(
    n: int = 64,
    voxel_size: float = 1.0,
    *,
    n_blobs: int = 20,
    sigma: float = 2.0,
    radius: float | None = None,
    seed: SeedLike = 0,
) -> np.ndarray:
    """Random Gaussian blobs inside a sphere.

    Parameters
    ----------
    n : int, optional
        Box edge (voxels).
    voxel_size : float, optional
        Å per voxel.
    n_blobs : int, optional
        Number of blobs.
    sigma : float, optional
        Blob standard deviation in Å.
    radius : float, optional
        Radius (Å) of the sphere holding the blob centres; ``0.3 * n * voxel_size`` by
        default.
    seed : int or numpy.random.Generator, optional
        Random seed.

    Returns
    -------
    numpy.ndarray
        float32 ``[z, y, x]``, maximum 1.
    """
    rng = np.random.default_rng(seed)
    r = 0.3 * n * voxel_size if radius is None else radius
    direction = rng.normal(size=(n_blobs, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    centres = direction * r * rng.random(n_blobs)[:, None] ** (1.0 / 3.0)
    amps = rng.uniform(0.5, 1.0, n_blobs)
    vol = render_points(centres, n, voxel_size, sigma=sigma, weights=amps)
    return (vol / float(np.max(vol))).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _inside(p: np.ndarray, semi: np.ndarray) -> bool:
    return float(np.sum((p / semi) ** 2)) <= 1.0


def pseudo_atoms(
    n: int = 64,
    voxel_size: float = 1.0,
    *,
    n_atoms: int | None = None,
    seed: SeedLike = 0,
) -> np.ndarray:
    """A compact protein-like cloud of pseudo-atoms.

    A chain of "residues" 3.8 Å apart alternates helices (1.5 Å rise, 100° per residue,
    2.3 Å radius) and persistent random-walk coil, confined to an ellipsoid with
    semi-axes :data:`ELLIPSOID_FRACTIONS` of the box (x, y, z); each residue carries
    ``ATOMS_PER_RESIDUE - 1`` further atoms scattered about 1.5 Å around it.

    Parameters
    ----------
    n : int, optional
        Box edge (voxels).
    voxel_size : float, optional
        Å per voxel.
    n_atoms : int, optional
        Number of atoms; by default :data:`ATOM_DENSITY` times the ellipsoid volume.
    seed : int or numpy.random.Generator, optional
        Random seed.

    Returns
    -------
    numpy.ndarray
        ``(n_atoms, 3)`` float64 coordinates (x, y, z) in Å relative to the box centre.
    """
    rng = np.random.default_rng(seed)
    semi = np.array(ELLIPSOID_FRACTIONS) * n * voxel_size
    if n_atoms is None:
        volume = 4.0 / 3.0 * np.pi * float(np.prod(semi))
        n_atoms = max(ATOMS_PER_RESIDUE * 4, int(ATOM_DENSITY * volume))
    n_res = max(1, math.ceil(n_atoms / ATOMS_PER_RESIDUE))
    inner = semi - 2.0  # keep CAs a little inside so scattered atoms stay in the ellipsoid
    inner = np.maximum(inner, 0.5 * semi)

    cas: list[np.ndarray] = []
    pos = rng.normal(scale=0.2, size=3) * inner
    heading = _unit(rng.normal(size=3))
    cas.append(pos.copy())
    attempts = 0
    while len(cas) < n_res:
        attempts += 1
        if attempts > 100 * n_res + 1000:
            raise ValueError(
                f"cannot place {n_res} residues in a {n}-voxel box of {voxel_size} A; "
                "use a larger box or fewer atoms"
            )
        if rng.random() < 0.5:  # helix
            length = int(rng.integers(8, 17))
            u = _unit(np.cross(heading, rng.normal(size=3)))
            v = np.cross(heading, u)
            k = np.arange(1, length + 1)[:, None]
            ang = k * _HELIX_TURN
            seg = (
                pos
                + k * _HELIX_RISE * heading
                + _HELIX_RADIUS * (np.cos(ang) * u + np.sin(ang) * v - u)
            )
            if all(_inside(p, inner) for p in seg):
                cas.extend(seg)
                pos = seg[-1].copy()
                heading = _unit(heading + 0.6 * rng.normal(size=3))
                continue
        else:  # coil
            length = int(rng.integers(3, 9))
            for _ in range(length):
                step_dir = _unit(heading + 0.8 * rng.normal(size=3))
                nxt = pos + _CA_STEP * step_dir
                if _inside(nxt, inner):
                    pos, heading = nxt, step_dir
                    cas.append(pos.copy())
                else:
                    break
            else:
                continue
        # Blocked by the boundary: turn towards the centre.
        heading = _unit(-pos / max(float(np.linalg.norm(pos)), 1e-9) + 0.5 * rng.normal(size=3))
    ca = np.array(cas[:n_res])
    extra = ca[:, None, :] + rng.normal(scale=1.5, size=(n_res, ATOMS_PER_RESIDUE - 1, 3))
    atoms = np.concatenate([ca[:, None, :], extra], axis=1).reshape(-1, 3)
    return atoms[:n_atoms]


def atomic_model_map(
    n: int = 64,
    voxel_size: float = 1.0,
    resolution: float = 4.0,
    seed: SeedLike = 0,
    n_atoms: int | None = None,
    *,
    atom_sigma: float = 0.5,
) -> np.ndarray:
    """A protein-like map: pseudo-atoms rendered as Gaussians, band-limited to a resolution.

    Parameters
    ----------
    n : int, optional
        Box edge (voxels); the box is cubic.
    voxel_size : float, optional
        Å per voxel.
    resolution : float, optional
        Band limit in Å (raised-cosine edge, zero power beyond ``1 / resolution``).
    seed : int or numpy.random.Generator, optional
        Random seed for :func:`pseudo_atoms`.
    n_atoms : int, optional
        Number of pseudo-atoms (default from the ellipsoid volume).
    atom_sigma : float, optional
        Gaussian width of each atom in Å (a small B-factor keeps the spectrum flat up to the
        band limit, so the resolution is set by ``resolution``).

    Returns
    -------
    numpy.ndarray
        float32 ``[z, y, x]``, maximum 1, zero-mean solvent.
    """
    atoms = pseudo_atoms(n, voxel_size, n_atoms=n_atoms, seed=seed)
    raw = render_points(atoms, n, voxel_size, sigma=atom_sigma)
    vol = band_limit(raw, voxel_size, resolution)
    return (vol / float(np.max(vol))).astype(np.float32)


def add_noise(volume: np.ndarray, sigma: float, seed: SeedLike = 0) -> np.ndarray:
    """Add white Gaussian noise of standard deviation ``sigma``.

    Returns
    -------
    numpy.ndarray
        float32, same shape.
    """
    rng = np.random.default_rng(seed)
    noise = rng.normal(scale=sigma, size=np.shape(volume))
    return (np.asarray(volume, dtype=np.float64) + noise).astype(np.float32)


def half_maps(truth: np.ndarray, sigma: float, seed: SeedLike = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two half maps: the same truth plus two independent white-noise realisations.

    Parameters
    ----------
    truth : numpy.ndarray
        Noise-free map.
    sigma : float
        Noise standard deviation of each half.
    seed : int or numpy.random.Generator, optional
        Random seed.

    Returns
    -------
    tuple of numpy.ndarray
        ``(half1, half2)``, float32.
    """
    rng = np.random.default_rng(seed)
    return add_noise(truth, sigma, rng), add_noise(truth, sigma, rng)


def sphere_mask(
    n: int | tuple[int, int, int],
    radius: float,
    center: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Boolean ball of ``radius`` voxels.

    Parameters
    ----------
    n : int or tuple of int
        Box edge, or shape ``(nz, ny, nx)``.
    radius : float
        Radius in voxels (voxels at distance <= radius are inside).
    center : tuple of float, optional
        Centre (x, y, z) in voxel indices; ``floor(n / 2)`` by default.

    Returns
    -------
    numpy.ndarray
        bool ``[z, y, x]``.
    """
    shape = _as_shape(n)
    c_zyx = [s // 2 for s in shape] if center is None else list(center)[::-1]
    z, y, x = (np.arange(s, dtype=np.float64) - c for s, c in zip(shape, c_zyx))
    d2 = z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2
    return d2 <= radius**2


def mask_from_map(volume: np.ndarray, threshold_sigma: float = 1.0, dilate: int = 2) -> np.ndarray:
    """Binary mask: threshold at ``mean + threshold_sigma * std``, fill holes, dilate.

    Parameters
    ----------
    volume : numpy.ndarray
        Map (ideally noise-free).
    threshold_sigma : float, optional
        Threshold in standard deviations above the mean of the whole box.
    dilate : int, optional
        Dilation iterations (voxels, 6-connected) after thresholding.

    Returns
    -------
    numpy.ndarray
        bool, same shape.
    """
    vol = np.asarray(volume, dtype=np.float64)
    mask = vol > vol.mean() + threshold_sigma * vol.std()
    mask = ndimage.binary_fill_holes(mask)
    if dilate > 0:
        mask = ndimage.binary_dilation(mask, iterations=int(dilate))
    return np.asarray(mask, dtype=bool)


def _x_split_weight(shape: tuple[int, int, int], ramp: float) -> np.ndarray:
    """Weight 1 for x well below n/2, 0 well above, cosine ramp of ``ramp`` voxels."""
    nx = shape[2]
    x = np.arange(nx, dtype=np.float64) - (nx // 2 - 0.5)
    if ramp <= 0:
        w = (x < 0).astype(np.float64)
    else:
        t = np.clip(x / ramp + 0.5, 0.0, 1.0)
        w = 0.5 * (1.0 + np.cos(np.pi * t))
    return w[None, None, :]


def two_resolution_reference(n: int, res_a: float = 4.0, res_b: float = 8.0) -> np.ndarray:
    """Expected resolution of :func:`two_resolution_map`: ``res_a`` for x < n // 2, else ``res_b``.

    Returns
    -------
    numpy.ndarray
        float32 ``[z, y, x]`` in Å.
    """
    out = np.full((n, n, n), res_b, dtype=np.float32)
    out[:, :, : n // 2] = res_a
    return out


def two_resolution_map(
    n: int = 64,
    voxel_size: float = 1.0,
    res_a: float = 4.0,
    res_b: float = 8.0,
    noise: float = 0.1,
    seed: SeedLike = 0,
    *,
    ramp: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A map whose x < n/2 half is band-limited to ``res_a`` and the other half to ``res_b``.

    The same pseudo-atomic model is filtered twice and the two versions are joined along x
    with a ``ramp``-voxel cosine blend around ``x = n/2``; then white noise is added.

    Parameters
    ----------
    n : int, optional
        Box edge (voxels).
    voxel_size : float, optional
        Å per voxel.
    res_a, res_b : float, optional
        Resolutions (Å) of the low-x and high-x halves.
    noise : float, optional
        Noise standard deviation relative to the noise-free map's standard deviation inside
        the mask.
    seed : int or numpy.random.Generator, optional
        Random seed (model and noise).
    ramp : float, optional
        Width (voxels) of the blend between the halves.

    Returns
    -------
    volume : numpy.ndarray
        float32 ``[z, y, x]``.
    mask : numpy.ndarray
        bool, from the noise-free map (:func:`mask_from_map`).
    """
    rng = np.random.default_rng(seed)
    atoms = pseudo_atoms(n, voxel_size, seed=rng)
    raw = render_points(atoms, n, voxel_size, sigma=0.5)
    vol_a = band_limit(raw, voxel_size, res_a).astype(np.float64)
    vol_b = band_limit(raw, voxel_size, res_b).astype(np.float64)
    w = _x_split_weight(vol_a.shape, ramp)
    clean = w * vol_a + (1.0 - w) * vol_b
    clean /= float(np.max(clean))
    mask = mask_from_map(band_limit(raw, voxel_size, max(res_a, res_b)))
    sigma = noise * float(np.std(clean[mask]))
    return add_noise(clean, sigma, rng), mask


def anisotropic_map(
    n: int = 64,
    voxel_size: float = 1.0,
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0),
    res_along: float = 8.0,
    res_across: float = 4.0,
    noise: float = 0.1,
    seed: SeedLike = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A protein-like map with direction-dependent resolution, plus noise and a mask.

    Parameters
    ----------
    n : int, optional
        Box edge (voxels).
    voxel_size : float, optional
        Å per voxel.
    axis : tuple of float, optional
        Direction (x, y, z) of the worse resolution ``res_along``.
    res_along, res_across : float, optional
        Resolutions (Å) parallel and perpendicular to ``axis`` (:func:`anisotropic_filter`).
    noise : float, optional
        Noise standard deviation relative to the noise-free map's standard deviation inside
        the mask.
    seed : int or numpy.random.Generator, optional
        Random seed (model and noise).

    Returns
    -------
    volume : numpy.ndarray
        float32 ``[z, y, x]``.
    mask : numpy.ndarray
        bool (:func:`mask_from_map` of a copy band-limited to the worse resolution).
    """
    rng = np.random.default_rng(seed)
    atoms = pseudo_atoms(n, voxel_size, seed=rng)
    raw = render_points(atoms, n, voxel_size, sigma=0.5)
    clean = anisotropic_filter(raw, voxel_size, axis, res_along, res_across).astype(np.float64)
    clean /= float(np.max(clean))
    mask = mask_from_map(band_limit(raw, voxel_size, max(res_along, res_across)))
    sigma = noise * float(np.std(clean[mask]))
    return add_noise(clean, sigma, rng), mask
