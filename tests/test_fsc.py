"""Unit tests of the global and cone FSC (monodir.core.fsc) on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from monodir.core.directions import angles_to_vectors, direction_set
from monodir.core.fsc import (
    crossing_shell,
    directional_fsc,
    fsc_curve,
    resolution_to_shell,
    shell_grid,
    shell_to_resolution,
)

N = 48
VOXEL = 1.5


def _gaussian_field(rng: np.random.Generator, n: int = N) -> np.ndarray:
    return rng.standard_normal((n, n, n))


def _filtered(volume: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Apply a real, Hermitian-symmetric gain given on the rfft half grid."""
    return np.fft.irfftn(np.fft.rfftn(volume) * gain, s=volume.shape, axes=(0, 1, 2))


def _index_vectors(n: int = N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = np.fft.fftfreq(n, d=1.0 / n)
    kz = k[:, None, None]
    ky = k[None, :, None]
    kx = np.arange(n // 2 + 1, dtype=np.float64)[None, None, :]
    return kz, ky, kx


def test_shell_grid_counts_match_full_spectrum():
    """Hermitian weights make the half-spectrum counts equal the full-grid shell counts."""
    n = 16
    shell, weight, unit = shell_grid(n)
    half = np.bincount(shell.ravel(), weight.ravel())
    k = np.fft.fftfreq(n, d=1.0 / n)
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    full = np.bincount(np.rint(r).astype(int).ravel())
    np.testing.assert_allclose(half, full)
    norms = np.linalg.norm(unit.reshape(-1, 3), axis=1)
    assert np.allclose(norms[shell.ravel() > 0], 1.0, atol=1e-6)


def test_identical_halves_give_one():
    rng = np.random.default_rng(1)
    v = _gaussian_field(rng)
    curve = fsc_curve(v, v)
    np.testing.assert_allclose(curve[1:], 1.0, atol=1e-10)
    res = directional_fsc(v, v, VOXEL, directions=angles_to_vectors(direction_set(True)))
    finite = np.isfinite(res.cone_fsc)
    np.testing.assert_allclose(res.cone_fsc[finite], 1.0, atol=1e-10)
    # never below the threshold: the crossing is the last shell, Nyquist
    assert res.global_shell_0143 == pytest.approx(N // 2)
    assert res.global_resolution_0143 == pytest.approx(2 * VOXEL)
    assert res.sphericity == pytest.approx(1.0)
    assert res.cfar == pytest.approx(1.0)


def test_independent_noise_gives_zero():
    rng = np.random.default_rng(2)
    a, b = _gaussian_field(rng), _gaussian_field(rng)
    curve = fsc_curve(a, b)
    shell, weight, _ = shell_grid(N)
    n_coef = np.bincount(shell.ravel(), weight.ravel())[: N // 2 + 1]
    # FSC of independent noise has standard deviation ~ 1/sqrt(coefficients in the shell)
    # (Hermitian partners are not independent, hence the factor 2)
    sigma = np.sqrt(2.0 / n_coef[5:])
    assert np.all(np.abs(curve[5:]) < 5 * sigma)
    assert abs(float(np.mean(curve[5:]))) < 0.02


def test_masked_fsc_uses_the_mask():
    """Noise only outside a mask: FSC 1 with the mask, below 1 without."""
    rng = np.random.default_rng(3)
    z, y, x = np.indices((N, N, N)) - N // 2
    inside = (x * x + y * y + z * z) < (N // 4) ** 2
    signal = _filtered(_gaussian_field(rng), 1.0) * inside
    a = signal + (~inside) * _gaussian_field(rng)
    b = signal + (~inside) * _gaussian_field(rng)
    masked = fsc_curve(a, b, mask=inside.astype(float))
    plain = fsc_curve(a, b)
    np.testing.assert_allclose(masked[1:], 1.0, atol=1e-10)
    assert np.mean(plain[1:]) < 0.9


@pytest.mark.parametrize("cut", [9.5, 15.5])
def test_band_limited_truth_crosses_near_the_cut(cut):
    """Truth with a hard spectral cut at ``|k| = cut`` plus independent noise per half.

    Below the cut the signal-to-noise power ratio is ``1 / 0.3^2 = 11`` (expected FSC 0.92),
    above it there is no signal (expected FSC 0), so the 0.143 crossing lies between the last
    shell with signal (``floor(cut)``) and the next: within one shell of the cut.
    """
    rng = np.random.default_rng(4)
    kz, ky, kx = _index_vectors()
    r = np.sqrt(kz * kz + ky * ky + kx * kx)
    truth = _filtered(_gaussian_field(rng), (r <= cut).astype(float))
    a = truth + 0.3 * _gaussian_field(rng)
    b = truth + 0.3 * _gaussian_field(rng)
    curve = fsc_curve(a, b)
    k = crossing_shell(curve, 0.143)
    assert abs(k - cut) <= 1.0
    assert np.all(curve[1 : int(cut)] > 0.8)
    res = directional_fsc(a, b, VOXEL, directions=angles_to_vectors(direction_set(True)))
    assert res.global_shell_0143 == pytest.approx(k)
    assert res.global_resolution_0143 == pytest.approx(N * VOXEL / k)
    # an isotropic map: the cones cross at the cut as well. A 20-degree cone holds ~6 % of a
    # shell (~70-200 coefficients here), so beyond the cut its FSC scatters by ~0.1-0.17 about 0
    # and a few of the 46 cones stay above 0.143 for another shell or two: check the bulk.
    assert abs(float(np.median(res.shell_0143)) - cut) <= 1.0
    assert np.all(res.shell_0143 >= cut - 1.0)
    assert np.all(res.shell_0143 <= cut + 3.0)
    # the sphericity uses the single best cone (max), so one noisy cone lowers it: 0.85-0.99
    # over seeds for this set-up, against 0.76-0.86 for the anisotropic case below
    assert res.sphericity > 0.8
    assert res.cfar > 0.85


def test_crossing_interpolates_linearly_in_frequency():
    curve = np.array([1.0, 1.0, 0.8, 0.5, 0.1, 0.0])
    # between shell 3 (0.5) and 4 (0.1): 3 + (0.5 - 0.143) / 0.4
    assert crossing_shell(curve, 0.143) == pytest.approx(3 + 0.357 / 0.4)
    assert crossing_shell(curve, 0.5) == pytest.approx(4.0 - 1.0)  # 0.5 is not below 0.5
    # NaN shells are skipped
    gap = np.array([1.0, 0.9, np.nan, 0.1])
    assert crossing_shell(gap, 0.5) == pytest.approx(1 + 2 * 0.4 / 0.8)
    # below at shell 1 -> 0 (unresolved), never below -> last shell
    assert crossing_shell(np.array([1.0, 0.1, 0.0]), 0.143) == 0.0
    assert crossing_shell(np.array([1.0, 0.9, 0.8]), 0.143) == 2.0
    assert shell_to_resolution(0.0, 10, 1.0) == np.inf
    assert shell_to_resolution(4.0, 10, 2.0) == pytest.approx(5.0)
    assert resolution_to_shell(5.0, 10, 2.0) == pytest.approx(4.0)


def test_anisotropic_filter_along_tilted_axis():
    """Noise added mostly along a known non-z axis: the cone-FSC worst axis finds it.

    Both halves share a white truth; each half gets independent noise of amplitude
    ``gain = 2.45 exp((|k| - k_c) / 1.5)`` relative to the truth, with ``k_c = 16 - 6 cos^2``
    and ``cos`` that of the angle between the wave vector and the axis ``a`` (rot 60, tilt 50).
    The expected FSC ``1 / (1 + gain^2)`` crosses 0.143 (``gain = 2.45``) at shell ``k_c``:
    10 along ``a``, 16 perpendicular to it, and falls steeply there (0.9 three shells before).
    """
    rng = np.random.default_rng(5)
    axis = angles_to_vectors(np.array([[60.0, 50.0]]))[0]
    kz, ky, kx = _index_vectors()
    r = np.sqrt(kz * kz + ky * ky + kx * kx)
    safe = np.where(r > 0, r, 1.0)
    c = np.abs(kx * axis[0] + ky * axis[1] + kz * axis[2]) / safe
    noise_gain = 2.45 * np.exp((r - (16.0 - 6.0 * c**2)) / 1.5)
    truth = _gaussian_field(rng)
    a = truth + _filtered(_gaussian_field(rng), noise_gain)
    b = truth + _filtered(_gaussian_field(rng), noise_gain)
    res = directional_fsc(a, b, VOXEL)
    assert res.directions.shape == (81, 3)
    angle = float(np.degrees(np.arccos(min(1.0, abs(float(res.axis @ axis))))))
    assert angle < 20.0
    # the worst single cone is near the axis as well, and the figures register anisotropy
    worst = res.directions[int(np.argmax(res.resolution_0143))]
    assert np.degrees(np.arccos(min(1.0, abs(float(worst @ axis))))) < 30.0
    # per-cone crossings scatter by about a shell (few coefficients per cone shell): percentiles
    assert np.percentile(res.shell_0143, 5) == pytest.approx(10.0, abs=1.5)
    assert np.percentile(res.shell_0143, 95) == pytest.approx(16.0, abs=1.5)
    assert res.sphericity < 0.9
    assert res.cfar < 0.8


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="cubic"):
        fsc_curve(np.zeros((8, 8, 10)), np.zeros((8, 8, 10)))
    with pytest.raises(ValueError, match="equal shape"):
        fsc_curve(np.zeros((8, 8, 8)), np.zeros((10, 10, 10)))
