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


def _hermitian_extension(g_half, nx, sign, planes_rule):
    """Full grid from a half grid by explicit index arithmetic (the definition)."""
    nz, ny, nh = g_half.shape
    full = np.empty((nz, ny, nx), dtype=g_half.dtype)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if x < nh:
                    full[z, y, x] = g_half[z, y, x]
                else:
                    full[z, y, x] = sign(g_half[-z % nz, -y % ny, nx - x])
    if planes_rule:
        for p in [0] + ([nx // 2] if nx % 2 == 0 else []):
            for z in range(nz):
                for y in range(ny):
                    m = g_half[-z % nz, -y % ny, p]
                    full[z, y, p] = 0.5 * (g_half[z, y, p] + sign(m))
    return full


@pytest.mark.parametrize("shape", [(6, 7, 8), (7, 6, 5)])
def test_hermitian_extensions_follow_their_definition(shape):
    rng = np.random.default_rng(7)
    half = (shape[0], shape[1], shape[2] // 2 + 1)
    spec = (rng.standard_normal(half) + 1j * rng.standard_normal(half)).astype(np.complex64)
    g = rng.standard_normal(half).astype(np.float32)
    nx = shape[2]
    assert np.array_equal(
        fourier.full_spectrum(spec, nx), _hermitian_extension(spec, nx, np.conj, False)
    )
    for odd, sign in ((False, lambda v: np.float32(1.0) * v), (True, lambda v: -v)):
        ref = _hermitian_extension(g, nx, sign, True)
        assert np.array_equal(fourier.full_from_half(g, nx, odd=odd), ref)


@pytest.mark.parametrize(
    ("shape", "dtype", "xmipp_nyquist"),
    [
        ((32, 32, 32), np.float32, False),
        ((33, 30, 31), np.float32, True),
        ((20, 22, 24), np.float64, True),
        ((21, 20, 19), np.float64, False),
    ],
)
def test_half_basis_planes_are_the_full_basis(shape, dtype, xmipp_nyquist):
    """MonoRes' plane-by-plane basis holds the full-grid basis' values, bit for bit."""
    rng = np.random.default_rng(3)
    spec = fourier.rfftn(rng.standard_normal(shape).astype(dtype))
    full = monogenic.full_basis(spec, shape, xmipp_nyquist=xmipp_nyquist)
    half = monogenic.HalfBasis(spec, shape, xmipp_nyquist)
    for z0 in range(0, shape[0], 5):
        z1 = min(z0 + 5, shape[0])
        got = half.planes(z0, z1)
        for a, b in zip(got, (full.spectrum, full.radius, full.hx, full.hy, full.hz)):
            assert a.dtype == b.dtype
            assert a.tobytes() == np.ascontiguousarray(b[z0:z1]).tobytes()
        assert half.planes(z0, z1, (1,))[2] is None


@pytest.mark.parametrize("shape", [(32, 32, 32), (21, 22, 23)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_amplitude_from_half_basis_is_the_full_basis_amplitude(shape, dtype):
    """The plane-by-plane fill and the shared output buffer give the same bytes as the
    full-grid arrays in a plain workspace, with and without the band filters."""
    rng = np.random.default_rng(4)
    spec = fourier.rfftn(rng.standard_normal(shape).astype(dtype))
    full = monogenic.full_basis(spec, shape, xmipp_nyquist=False)
    half = monogenic.HalfBasis(spec, shape, False)
    plain = monogenic.AmplitudeWorkspace(shape, dtype)
    dense = monogenic.AmplitudeWorkspace(shape, dtype, dense=True)
    for band in ((0.0, 0.0, 0.0), (0.2, 0.18, 0.22), (0.45, 0.43, 0.5)):
        kw = {"band": band[0] > 0}
        a = plain.amplitude(full, *band, **kw)
        b = dense.amplitude(half, *band, **kw)
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("shape", [(32, 32, 32), (17, 18, 19)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_filter_is_the_plain_product(shape, dtype):
    """The in-place, plane-by-plane filter is the whole-spectrum product, bit for bit."""
    rng = np.random.default_rng(5)
    vol = rng.standard_normal(shape).astype(dtype)
    spec = fourier.rfftn(vol)
    r2 = fourier.half_radius(shape, np.float64) ** 2
    spec *= np.exp(-(np.pi**2) * 3.0 * 3.0 * r2).astype(spec.real.dtype)
    ref = fourier.irfftn(spec, shape)
    out = fourier.gaussian_filter_fourier(vol, 3.0)
    assert out.dtype == dtype and out.flags.c_contiguous
    assert out.tobytes() == ref.tobytes()
