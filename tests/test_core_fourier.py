"""FFT layer and monogenic amplitude."""

from __future__ import annotations

import numpy as np
import pytest

from monodir.core import fourier, monogenic


@pytest.mark.parametrize("n", [16, 15])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_round_trip_and_normalisation(n, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, n, n)).astype(dtype)
    spec = fourier.rfftn(x)
    assert spec[0, 0, 0].real == pytest.approx(x.mean(dtype=np.float64), rel=1e-5)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert np.abs(fourier.irfftn(spec, x.shape) - x).max() < tol
    full = fourier.full_spectrum(spec, n)
    assert np.abs(fourier.ifftn(full) - x).max() < tol


def test_scipy_fallback_agrees(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 12, 12))
    ref = fourier.rfftn(x)
    monkeypatch.setattr(fourier, "HAVE_PYFFTW", False)
    assert np.allclose(fourier.rfftn(x), ref, atol=1e-14)
    assert np.allclose(fourier.irfftn(ref, x.shape), x, atol=1e-12)


def _unpacked_amplitude(spec, shape, f, fh, fl, xmipp_nyquist):
    r, hx, hy, hz = monogenic.riesz_factors_half(shape, xmipp_nyquist=xmipp_nyquist)
    w = spec * monogenic.high_pass(r, f, fh)
    comps = [fourier.irfftn(w, shape)] + [fourier.irfftn(-1j * h * w, shape) for h in (hx, hy, hz)]
    a0 = np.sqrt(sum(c * c for c in comps))
    lp = monogenic.low_pass(fourier.half_radius(shape), f, fl, nan_at_zero_width=False)
    return fourier.irfftn(fourier.rfftn(a0) * lp, shape)


@pytest.mark.parametrize("n", [16, 17])
@pytest.mark.parametrize("xmipp_nyquist", [True, False])
def test_packed_transforms_equal_four_real_inverse_transforms(n, xmipp_nyquist):
    """Two complex inverse FFTs give the same amplitude as four real ones (incl. Nyquist)."""
    rng = np.random.default_rng(2)
    shape = (n, n, n)
    spec = fourier.rfftn(rng.standard_normal(shape))
    basis = monogenic.full_basis(spec, shape, xmipp_nyquist=xmipp_nyquist)
    ws = monogenic.AmplitudeWorkspace(shape, np.float64)
    for f, fh, fl in ((0.2, 0.18, 0.22), (0.05, 0.03, 0.07), (0.45, 0.43, 0.47)):
        packed = ws.amplitude(basis, f, fh, fl)
        ref = _unpacked_amplitude(spec, shape, f, fh, fl, xmipp_nyquist)
        assert np.abs(packed - ref).max() <= 1e-12 * np.abs(ref).max()


def test_plane_wave_amplitude_is_constant():
    """A plane wave in the pass band has a constant monogenic amplitude equal to its own."""
    n = 32
    z, y, x = np.meshgrid(*(np.arange(n),) * 3, indexing="ij")
    k = np.array([5, 3, 2])  # cycles per box along x, y, z: |f| = 0.19
    wave = 0.7 * np.cos(2 * np.pi * (k[0] * x + k[1] * y + k[2] * z) / n + 0.3)
    for dtype in (np.float64, np.float32):
        spec = fourier.rfftn(wave.astype(dtype))
        basis = monogenic.full_basis(spec, wave.shape, xmipp_nyquist=False)
        amp = monogenic.AmplitudeWorkspace(wave.shape, dtype).amplitude(basis, 0.1, 0.08, 0.12)
        assert amp.std() / amp.mean() < 1e-4
        assert amp.mean() == pytest.approx(0.7, rel=1e-4)
        # below the pass band the same wave disappears
        amp_hi = monogenic.AmplitudeWorkspace(wave.shape, dtype).amplitude(basis, 0.3, 0.28, 0.32)
        assert amp_hi.max() < 1e-4


def test_gaussian_filter_is_std_sigma_over_sqrt2():
    n = 64
    vol = np.zeros((n, n, n))
    vol[n // 2, n // 2, n // 2] = 1.0
    out = fourier.gaussian_filter_fourier(vol, 4.0)
    prof = out[n // 2, n // 2, :]
    x = np.arange(n) - n // 2
    var = (prof * x * x).sum() / prof.sum()
    assert np.sqrt(var) == pytest.approx(4.0 / np.sqrt(2), rel=1e-3)
