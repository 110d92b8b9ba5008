"""Synthetic maps: band limits hold, anisotropy points the right way, seeds are honoured."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import fft as sfft

from monodir import synthetic as syn
from monodir.io.validate import check_noise_region


def white(shape=(32, 32, 32), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


def power_and_freq(vol: np.ndarray, voxel_size: float):
    """|F|^2 on the rfft half grid and the (fz, fy, fx) frequency arrays broadcast to it."""
    power = np.abs(sfft.rfftn(np.asarray(vol, np.float64))) ** 2
    fz, fy, fx = (
        np.broadcast_to(f, power.shape) for f in syn.frequency_components(vol.shape, voxel_size)
    )
    return power, fz, fy, fx


# --------------------------------------------------------------------------------------------
# band limits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cosine", "ideal"])
@pytest.mark.parametrize(("voxel_size", "resolution"), [(1.0, 4.0), (1.5, 6.0), (2.0, 9.0)])
def test_band_limit_has_no_power_beyond_cutoff(kind, voxel_size, resolution):
    vol = white()
    out = syn.band_limit(vol, voxel_size, resolution, kind=kind)
    assert out.dtype == np.float32 and out.shape == vol.shape
    p_in, fz, fy, fx = power_and_freq(vol, voxel_size)
    p_out, *_ = power_and_freq(out, voxel_size)
    f = np.sqrt(fz**2 + fy**2 + fx**2)
    beyond = f > 1.0 / resolution * (1 + 1e-9)
    passband = f <= 0.9 / resolution
    assert beyond.any() and passband.any()
    # float32 rounding leaves ~1e-14 of the power; nothing else.
    assert p_out[beyond].sum() < 1e-10 * p_out.sum()
    np.testing.assert_allclose(p_out[passband], p_in[passband], rtol=1e-4, atol=1e-6)


def test_band_limit_rejects_bad_arguments():
    with pytest.raises(ValueError):
        syn.band_limit(white((8, 8, 8)), 1.0, 0.0)
    with pytest.raises(ValueError):
        syn.band_limit(white((8, 8, 8)), 1.0, 4.0, kind="butterworth")


def test_atomic_model_map_is_band_limited_and_compact():
    vol = syn.atomic_model_map(n=48, voxel_size=1.2, resolution=5.0, seed=3)
    assert vol.shape == (48, 48, 48) and vol.dtype == np.float32
    assert vol.max() == pytest.approx(1.0)
    p, fz, fy, fx = power_and_freq(vol, 1.2)
    f = np.sqrt(fz**2 + fy**2 + fx**2)
    assert p[f > 1.0 / 5.0 * (1 + 1e-9)].sum() < 1e-10 * p.sum()
    # There is real signal up to the edge of the band.
    band = (f > 0.6 / 5.0) & (f < 0.85 / 5.0)
    assert p[band].sum() > 1e-3 * p[f > 0].sum()
    # Compact: the density sits well inside the box.
    mask = syn.mask_from_map(vol)
    region = check_noise_region(mask, single_map=True)
    assert region.protein_radius < 0.5 * 48 - 7


def test_pseudo_atoms_are_inside_the_ellipsoid():
    atoms = syn.pseudo_atoms(64, 1.0, seed=1, n_atoms=500)
    assert atoms.shape == (500, 3)
    semi = np.array(syn.ELLIPSOID_FRACTIONS) * 64
    inside = np.sum((atoms / semi) ** 2, axis=1) <= 1.3  # scattered atoms may stray a little
    assert inside.mean() > 0.98


# --------------------------------------------------------------------------------------------
# anisotropic filter
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "axis",
    [(0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 1, 0), (1, -2, 3)],
)
def test_anisotropic_filter_attenuates_along_axis_only(axis):
    vs, res_along, res_across = 1.0, 8.0, 3.0
    vol = white((40, 40, 40), seed=2)
    out = syn.anisotropic_filter(vol, vs, axis=axis, res_along=res_along, res_across=res_across)
    assert out.dtype == np.float32
    p_in, fz, fy, fx = power_and_freq(vol, vs)
    p_out, *_ = power_and_freq(out, vs)
    u = np.asarray(axis, float) / np.linalg.norm(axis)
    f = np.sqrt(fx**2 + fy**2 + fz**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.abs(fx * u[0] + fy * u[1] + fz * u[2]) / f
    # Within 15 degrees of the axis, between the two cut-offs: removed.
    along = (cos > np.cos(np.radians(15))) & (f > 1.05 / res_along) & (f < 0.9 / res_across)
    # Within 10 degrees of the perpendicular plane, same frequencies: kept.
    across = (cos < np.sin(np.radians(10))) & (f > 1.05 / res_along) & (f < 0.85 / res_across)
    assert along.sum() > 10 and across.sum() > 100
    assert p_out[along].sum() < 1e-10 * p_in[along].sum()
    assert p_out[across].sum() == pytest.approx(p_in[across].sum(), rel=0.1)
    # Beyond the across cut-off nothing survives in any direction.
    assert p_out[f > 1.0 / res_across * (1 + 1e-9)].sum() < 1e-10 * p_out.sum()


def test_anisotropic_filter_transfer_function_on_axes():
    # A delta at the origin: the output spectrum is the filter itself.
    n, vs = 40, 1.0
    delta = np.zeros((n, n, n))
    delta[0, 0, 0] = 1.0
    out = syn.anisotropic_filter(delta, vs, axis=(1, 0, 0), res_along=8.0, res_across=3.0)
    h = sfft.rfftn(out.astype(np.float64)).real
    k = 8  # frequency 0.2 / A: beyond 1/8 along the axis, inside 0.9/3 across it
    assert abs(h[0, 0, k]) < 1e-6  # along x
    assert h[k, 0, 0] == pytest.approx(1.0, abs=1e-6)  # along z
    assert h[0, k, 0] == pytest.approx(1.0, abs=1e-6)  # along y
    assert h[0, 0, 4] == pytest.approx(1.0, abs=1e-6)  # 0.1 / A along x: below 0.9 / 8


def test_anisotropic_filter_rejects_zero_axis():
    with pytest.raises(ValueError):
        syn.anisotropic_filter(white((8, 8, 8)), 1.0, axis=(0, 0, 0))


# --------------------------------------------------------------------------------------------
# rendering, masks, noise
# --------------------------------------------------------------------------------------------


def test_render_points_places_gaussians_in_xyz_order():
    n, vs, sigma = 32, 1.0, 2.0
    vol = syn.render_points(np.array([[3.0, -2.0, 5.0]]), n, vs, sigma=sigma)
    assert vol.sum() == pytest.approx(1.0, rel=1e-3)  # cut at 4 sigma
    peak = np.unravel_index(np.argmax(vol), vol.shape)
    assert peak == (16 + 5, 16 - 2, 16 + 3)  # [z, y, x]
    expected_peak = 1.0 / ((2 * np.pi) ** 1.5 * sigma**3)
    assert vol.max() == pytest.approx(expected_peak, rel=0.01)
    # Sub-voxel position: the centroid follows the coordinate.
    off = syn.render_points(np.array([[0.5, 0.0, 0.0]]), n, vs, sigma=sigma)
    x = np.arange(n) - n // 2
    assert float((off.sum(axis=(0, 1)) * x).sum()) == pytest.approx(0.5, abs=1e-3)


def test_sphere_mask():
    m = syn.sphere_mask(32, 10)
    assert m.dtype == bool and m.shape == (32, 32, 32)
    assert m.sum() == pytest.approx(4 / 3 * np.pi * 1000, rel=0.03)
    assert m[16, 16, 16] and m[16, 16, 26] and not m[16, 16, 27]
    shifted = syn.sphere_mask((20, 24, 28), 3, center=(5, 6, 7))  # (x, y, z)
    assert shifted[7, 6, 5] and shifted.sum() == syn.sphere_mask(16, 3).sum()


def test_mask_from_map_and_blobs():
    vol = syn.gaussian_blobs(32, 1.0, n_blobs=10, sigma=2.0, seed=1)
    assert vol.max() == pytest.approx(1.0)
    mask = syn.mask_from_map(vol, threshold_sigma=1.0, dilate=2)
    assert mask.dtype == bool
    assert mask[np.unravel_index(np.argmax(vol), vol.shape)]
    assert 0 < mask.mean() < 0.5
    assert mask.sum() > syn.mask_from_map(vol, dilate=0).sum()


def test_add_noise_and_half_maps():
    truth = syn.gaussian_blobs(24, seed=0)
    noisy = syn.add_noise(truth, 0.5, seed=4)
    assert noisy.dtype == np.float32
    assert np.std(noisy - truth) == pytest.approx(0.5, rel=0.05)
    h1, h2 = syn.half_maps(truth, 0.5, seed=4)
    assert not np.array_equal(h1, h2)
    assert np.std(h1 - h2) == pytest.approx(0.5 * np.sqrt(2), rel=0.05)
    # Independent noise: uncorrelated.
    assert abs(np.corrcoef((h1 - truth).ravel(), (h2 - truth).ravel())[0, 1]) < 0.05


# --------------------------------------------------------------------------------------------
# composite maps
# --------------------------------------------------------------------------------------------


def test_two_resolution_map_halves_differ_as_intended():
    n, vs, res_a, res_b = 64, 1.0, 4.0, 8.0
    vol, mask = syn.two_resolution_map(n, vs, res_a, res_b, noise=0.0, seed=0)
    assert vol.shape == (n, n, n) and mask.dtype == bool
    # Detail finer than res_b: present on the low-x side only.
    detail = vol - syn.band_limit(vol, vs, res_b, kind="ideal")
    left = (detail[:, :, : n // 2 - 4] ** 2).sum()
    right = (detail[:, :, n // 2 + 4 :] ** 2).sum()
    assert left > 20 * right
    check_noise_region(mask, single_map=True)
    ref = syn.two_resolution_reference(n, res_a, res_b)
    assert ref[0, 0, 0] == res_a and ref[0, 0, -1] == res_b
    assert (ref == res_a).sum() == (ref == res_b).sum()


def test_two_resolution_map_noise_level():
    clean, mask = syn.two_resolution_map(32, 2.0, 5.0, 10.0, noise=0.0, seed=1)
    noisy, mask2 = syn.two_resolution_map(32, 2.0, 5.0, 10.0, noise=0.5, seed=1)
    np.testing.assert_array_equal(mask, mask2)
    ratio = np.std(noisy - clean) / np.std(clean[mask])
    assert ratio == pytest.approx(0.5, rel=0.05)


def test_anisotropic_map():
    vol, mask = syn.anisotropic_map(48, 1.0, axis=(1, 0, 0), res_along=8.0, res_across=4.0)
    assert vol.shape == (48, 48, 48) and mask.any()


# --------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda s: syn.atomic_model_map(n=32, seed=s),
        lambda s: syn.gaussian_blobs(32, seed=s),
        lambda s: syn.two_resolution_map(32, 2.0, 5.0, 10.0, seed=s)[0],
        lambda s: syn.anisotropic_map(32, 2.0, seed=s)[0],
        lambda s: syn.half_maps(np.zeros((8, 8, 8)), 1.0, seed=s)[1],
        lambda s: syn.add_noise(np.zeros((8, 8, 8)), 1.0, seed=s),
    ],
)
def test_seeds_are_deterministic(make):
    a, b, c = make(5), make(5), make(6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
