"""MonoRes and the directional pass on synthetic maps with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

import monodir
from monodir.core.directional import NoNoiseRegionError, prepare_directional
from monodir.synthetic import anisotropic_map, half_maps, two_resolution_map


def _step_around(tested: np.ndarray, truth: float) -> float:
    """Largest gap between the tested resolutions that bracket ``truth``."""
    t = np.sort(tested)
    i = int(np.searchsorted(t, truth))
    lo, hi = t[max(i - 1, 0)], t[min(i, len(t) - 1)]
    return float(max(hi - lo, t[min(i + 1, len(t) - 1)] - t[min(i, len(t) - 1)]))


@pytest.mark.parametrize("seed", [0, 1])
def test_monores_two_halves_within_one_step(seed):
    n, res_a, res_b = 64, 4.0, 8.0
    vol, mask = two_resolution_map(n, 1.0, res_a, res_b, noise=0.1, seed=seed)
    out = monodir.monores(vol, mask, 1.0)
    x = np.broadcast_to(np.arange(n)[None, None, :], vol.shape)
    sel = out.refined_mask
    med_a = np.median(out.resolution[sel & (x < n // 2 - 4)])
    med_b = np.median(out.resolution[sel & (x > n // 2 + 4)])
    assert abs(med_a - res_a) <= _step_around(out.resolutions, res_a) + 1e-4
    assert abs(med_b - res_b) <= _step_around(out.resolutions, res_b) + 1e-4
    assert med_b > med_a + 2.0
    # outputs: zero outside the refined mask, finite and above Nyquist inside
    assert (out.resolution[~sel] == 0).all()
    assert (out.resolution[sel] >= 2.0).all()


def test_monores_half_maps_mode():
    n = 64
    vol, mask = two_resolution_map(n, 1.0, 4.0, 8.0, noise=0.0, seed=3)
    h1, h2 = half_maps(vol, sigma=0.1 * float(vol[mask].std()), seed=4)
    out = monodir.monores(h1, mask, 1.0, half_map2=h2)
    x = np.broadcast_to(np.arange(n)[None, None, :], vol.shape)
    sel = out.refined_mask
    assert np.median(out.resolution[sel & (x > n // 2 + 4)]) > np.median(
        out.resolution[sel & (x < n // 2 - 4)]
    )


def _axis_angle(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, float) / np.linalg.norm(a)
    b = np.asarray(b, float) / np.linalg.norm(b)
    return float(np.degrees(np.arccos(min(1.0, abs(a @ b)))))


@pytest.fixture(scope="module")
def isotropic_control():
    vol, mask = anisotropic_map(
        64, 1.0, axis=(0, 0, 1), res_along=4.0, res_across=4.0, noise=0.1, seed=0
    )
    return monodir.directional(vol, mask, 1.0, fast=True), mask


@pytest.mark.parametrize("axis", [(1.0, 0.0, 0.0), (0.6, 0.0, 0.8), (0.5, -0.5, 0.7071)])
def test_directional_recovers_anisotropy_axis(axis, isotropic_control):
    vol, mask = anisotropic_map(
        64, 1.0, axis=axis, res_along=8.0, res_across=4.0, noise=0.1, seed=0
    )
    out = monodir.directional(vol, mask, 1.0, fast=True)
    # fitted worst axis within 20 degrees of the attenuated axis
    assert _axis_angle(out.anisotropy_axis, axis) < 20.0
    # resolution along the axis is worse than across it
    ax = np.asarray(axis) / np.linalg.norm(axis)
    c = np.abs(out.directions @ ax)
    along = np.nanmean(out.direction_means[c > np.cos(np.radians(30))])
    across = np.nanmean(out.direction_means[c < np.sin(np.radians(30))])
    assert along > across + 2.0
    # the anisotropy index is clearly higher than for the isotropic control made the same way
    iso, iso_mask = isotropic_control
    iso_med = np.median(iso.maps["anisotropy"][iso_mask & (iso.maps["highest"] > 0)])
    med = np.median(out.maps["anisotropy"][mask & (out.maps["highest"] > 0)])
    assert med > 1.5 * iso_med
    assert 0.0 <= out.maps["anisotropy"].min() and out.maps["anisotropy"].max() <= 1.0


def test_directional_half_maps_need_no_solvent():
    n = 48
    vol, _ = anisotropic_map(
        n, 1.0, axis=(0, 0, 1), res_along=8.0, res_across=4.0, noise=0.0, seed=1
    )
    big = np.zeros(vol.shape, bool)
    big[2:-2, 2:-2, 2:-2] = True  # no solvent shell left
    with pytest.raises(NoNoiseRegionError, match="half maps"):
        prepare_directional(vol, big, 1.0)
    h1, h2 = half_maps(vol, sigma=0.1 * float(vol.std()), seed=2)
    out = monodir.directional(None, big, 1.0, half_maps=(h1, h2), fast=True)
    assert np.isfinite(out.direction_means).all()
    assert _axis_angle(out.anisotropy_axis, (0, 0, 1)) < 20.0
    fsc = out.extra["global_fsc"]
    assert len(fsc["directions"]) == out.directions.shape[0]
    assert 2.0 <= fsc["global_resolution_A"] <= 48.0


def test_default_mode_outputs_are_bounded():
    vol, mask = anisotropic_map(
        48, 1.5, axis=(0, 1, 0), res_along=9.0, res_across=6.0, noise=0.1, seed=5
    )
    out = monodir.directional(vol, mask, 1.5, fast=True)
    sel = out.maps["highest"] > 0
    for name in ("radial", "azimuthal", "highest", "lowest", "mean_doa"):
        vals = out.maps[name][sel]
        assert np.isfinite(vals).all()
        assert vals.min() >= 2 * 1.5 - 1e-6
        assert vals.max() <= 18.0 * 1.1
    assert out.resolution_matrix.shape == (46, out.mask_indices.size)


@pytest.mark.parametrize("halves", [False, True])
def test_monores_lets_go_of_maps_handed_over(monkeypatch, halves):
    """A caller that hands its maps over (the pipeline's MonoRes task) gets their memory
    back before the sweep: once the spectra are taken MonoRes holds no reference to them;
    the result is the one a caller keeping its arrays gets."""
    import weakref

    from monodir.core import monores as mr

    vol, mask = two_resolution_map(40, 1.0, 4.0, 8.0, noise=0.1, seed=5)
    h1, h2 = half_maps(vol, sigma=0.1 * float(vol[mask].std()), seed=6)

    class Tracked(np.ndarray):
        pass

    maps = {"a": (h1 if halves else vol).view(Tracked)}
    if halves:
        maps["b"] = h2.view(Tracked)
    refs = [weakref.ref(m) for m in maps.values()]
    alive: list[list[bool]] = []
    real_workspace = mr.AmplitudeWorkspace

    def spy(*args, **kwargs):
        alive.append([r() is not None for r in refs])
        return real_workspace(*args, **kwargs)

    monkeypatch.setattr(mr, "AmplitudeWorkspace", spy)
    handed = mr.monores(maps.pop("a"), mask, 1.0, half_map2=maps.pop("b") if halves else None)
    assert alive and not any(any(a) for a in alive)  # every workspace: maps already freed
    monkeypatch.setattr(mr, "AmplitudeWorkspace", real_workspace)
    kept = mr.monores(h1 if halves else vol, mask, 1.0, half_map2=h2 if halves else None)
    assert np.array_equal(handed.resolution, kept.resolution)
    assert handed.stop_reason == kept.stop_reason


@pytest.mark.parametrize("leaf", [130, 1000, 1 << 16])
def test_variance64_is_numpy_var_bit_for_bit(leaf):
    """MonoRes' variance without a float64 copy of the sample walks NumPy's pairwise tree:
    the same bits as ``np.var(dtype=np.float64)`` for sizes around every split rule."""
    from monodir.core.monores import variance64

    rng = np.random.default_rng(leaf)
    for n in (1, 2, 7, 8, 9, 127, 128, 129, 1000, 4099, 65539, 300_017, 1_048_581):
        x = (rng.standard_normal(n) * 3 + 1).astype(np.float32)
        assert variance64(x, leaf=leaf) == x.var(dtype=np.float64), n
    x = rng.random(70_001)  # float64 samples too (xmipp_compat)
    assert variance64(x, leaf=leaf) == x.var(dtype=np.float64)


def test_variance64_keeps_no_reference_to_its_sample():
    """No reference cycle (which would hold the sample until the garbage collector runs:
    MonoRes drops one noise sample per step): a call leaves nothing for the collector."""
    import gc

    from monodir.core.monores import variance64

    x = np.arange(5000, dtype=np.float32)
    gc.disable()
    try:
        gc.collect()
        variance64(x, leaf=130)
        assert gc.collect() == 0
    finally:
        gc.enable()
