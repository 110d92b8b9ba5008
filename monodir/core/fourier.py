"""FFT layer and Fourier-grid helpers.

Normalisation (algorithm.md 0.1): the forward transform is divided by the number of voxels and
the inverse is not scaled, so amplitudes are in the units of the input map.

Transforms are backed by pyFFTW when it is importable (plans are built once per shape, dtype,
kind and thread count and reused; the cache is per thread, so Dask worker threads never share a
plan) and fall back to ``scipy.fft`` otherwise.

Frequency convention (algorithm.md 0.2): index ``i`` of an axis of length ``n`` maps to
``i/n`` when ``i <= n//2`` and ``(i-n)/n`` otherwise, so for even ``n`` the Nyquist index maps to
``+0.5`` on every axis.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

try:  # pragma: no cover - exercised implicitly when pyfftw is installed
    import pyfftw
    import pyfftw.builders as _builders

    HAVE_PYFFTW = True
except ImportError:  # pragma: no cover
    pyfftw = None
    _builders = None
    HAVE_PYFFTW = False

_local = threading.local()
_PLANNER = "FFTW_ESTIMATE"


def set_planner_effort(effort: str) -> None:
    """Set the FFTW planner effort used for new plans (``FFTW_ESTIMATE``, ``FFTW_MEASURE``)."""
    global _PLANNER
    _PLANNER = effort


def _plan(kind: str, shape: tuple[int, ...], dtype: np.dtype, threads: int) -> Callable:
    cache = getattr(_local, "plans", None)
    if cache is None:
        cache = _local.plans = {}
    key = (kind, shape, np.dtype(dtype).str, threads, _PLANNER)
    plan = cache.get(key)
    if plan is None:
        arr = pyfftw.empty_aligned(shape, dtype=dtype)
        if kind == "rfftn":
            plan = _builders.rfftn(arr, threads=threads, planner_effort=_PLANNER)
        elif kind.startswith("irfftn"):
            n = int(kind.split(":")[1])
            full = (*shape[:-1], n)
            plan = _builders.irfftn(arr, s=full, threads=threads, planner_effort=_PLANNER)
        elif kind == "ifftn":
            plan = _builders.ifftn(arr, threads=threads, planner_effort=_PLANNER)
        elif kind == "fftn":
            plan = _builders.fftn(arr, threads=threads, planner_effort=_PLANNER)
        else:  # pragma: no cover
            raise ValueError(kind)
        if len(cache) > 16:
            cache.clear()
        cache[key] = plan
    return plan


def complex_dtype(real_dtype: np.dtype | type) -> np.dtype:
    """Complex dtype matching a real dtype (float32 -> complex64, float64 -> complex128)."""
    return np.result_type(real_dtype, np.complex64)


def get_plan(kind: str, shape: tuple[int, ...], dtype: np.dtype | type, threads: int = 1):
    """The cached pyFFTW plan of this thread (``kind``: rfftn, irfftn:<nx>, fftn, ifftn).

    Use ``plan.input_array`` / ``plan.output_array`` and ``plan.execute()``: no normalisation
    is applied by ``execute``.
    """
    return _plan(kind, tuple(shape), np.dtype(dtype), threads)


def rfftn(x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Forward real 3D FFT, divided by the number of voxels. Returns a new array."""
    if HAVE_PYFFTW:
        plan = _plan("rfftn", x.shape, x.dtype, threads)
        plan.input_array[...] = x
        plan.execute()
        return plan.output_array * np.asarray(1.0 / x.size, dtype=x.dtype)
    from scipy import fft as sfft

    return sfft.rfftn(x, norm="forward", workers=threads)


def irfftn(X: np.ndarray, shape: tuple[int, ...], threads: int = 1) -> np.ndarray:
    """Inverse real 3D FFT, unscaled (inverse of :func:`rfftn`). ``X`` is not modified."""
    if HAVE_PYFFTW:
        plan = _plan(f"irfftn:{shape[-1]}", X.shape, X.dtype, threads)
        plan.input_array[...] = X
        plan.execute()
        return plan.output_array.copy()
    from scipy import fft as sfft

    return sfft.irfftn(X, s=shape, norm="forward", workers=threads)


def ifftn(Z: np.ndarray, threads: int = 1) -> np.ndarray:
    """Inverse complex 3D FFT, unscaled. Returns a new array."""
    if HAVE_PYFFTW:
        plan = _plan("ifftn", Z.shape, Z.dtype, threads)
        plan.input_array[...] = Z
        plan.execute()
        return plan.output_array.copy()
    from scipy import fft as sfft

    return sfft.ifftn(Z, norm="forward", workers=threads)


def fftn(z: np.ndarray, threads: int = 1) -> np.ndarray:
    """Forward complex 3D FFT, divided by the number of voxels. Returns a new array."""
    if HAVE_PYFFTW:
        plan = _plan("fftn", z.shape, z.dtype, threads)
        plan.input_array[...] = z
        plan.execute()
        return plan.output_array * np.asarray(1.0 / z.size, dtype=plan.output_array.real.dtype)
    from scipy import fft as sfft

    return sfft.fftn(z, norm="forward", workers=threads)


class InverseC2C:
    """An inverse complex FFT whose input buffer is filled in place by the caller.

    ``zin`` is the plan's own (aligned) input array with pyFFTW, a plain array otherwise;
    ``run()`` returns the unscaled transform in a buffer that is reused by the next ``run()``.
    The input is preserved, so coefficients outside a fixed support can stay zero across calls.
    """

    def __init__(self, shape: tuple[int, int, int], cdtype: np.dtype, threads: int = 1):
        self.threads = threads
        if HAVE_PYFFTW:
            arr = pyfftw.empty_aligned(shape, dtype=cdtype)
            self._plan = _builders.ifftn(arr, threads=threads, planner_effort=_PLANNER)
            self.zin = self._plan.input_array
            self.zin[...] = 0
        else:
            self._plan = None
            self.zin = np.zeros(shape, dtype=cdtype)

    def run(self) -> np.ndarray:
        if self._plan is not None:
            self._plan.execute()
            return self._plan.output_array
        from scipy import fft as sfft

        return sfft.ifftn(self.zin, norm="forward", workers=self.threads)


class RealFilter:
    """Filter a real volume in Fourier space with two reused buffers.

    ``x`` is the real buffer (fill it in place); :meth:`run` transforms it into the half
    spectrum ``h``, multiplies ``h`` by ``factor`` (half grid) and transforms back into ``x``,
    which it returns. ``factor`` must include the forward normalisation :attr:`scale`. Only one
    real volume and one half spectrum are held (the inverse transform overwrites ``h``).
    """

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype, threads: int = 1):
        self.shape = tuple(shape)
        self.threads = threads
        dtype = np.dtype(dtype)
        cdtype = complex_dtype(dtype)
        half = (*self.shape[:-1], self.shape[-1] // 2 + 1)
        self.scale = dtype.type(1.0 / np.prod(self.shape))
        if HAVE_PYFFTW:
            self.x = pyfftw.empty_aligned(self.shape, dtype=dtype)
            self.h = pyfftw.empty_aligned(half, dtype=cdtype)
            axes = (0, 1, 2)
            self._fwd = pyfftw.FFTW(
                self.x,
                self.h,
                axes=axes,
                direction="FFTW_FORWARD",
                flags=(_PLANNER,),
                threads=threads,
            )
            self._inv = pyfftw.FFTW(
                self.h,
                self.x,
                axes=axes,
                direction="FFTW_BACKWARD",
                flags=(_PLANNER, "FFTW_DESTROY_INPUT"),
                threads=threads,
            )
        else:
            self._fwd = self._inv = None
            self.x = np.empty(self.shape, dtype=dtype)
            self.h = None

    def run(self, factor: np.ndarray) -> np.ndarray:
        if self._fwd is None:
            from scipy import fft as sfft

            spec = sfft.rfftn(self.x, workers=self.threads) * factor
            self.x[...] = sfft.irfftn(spec, s=self.shape, norm="forward", workers=self.threads)
            return self.x
        self._fwd.execute()
        self.h *= factor
        self._inv.execute()
        return self.x


# ---------------------------------------------------------------------------------------------
# Index <-> frequency


def idx2freq(idx: int | np.ndarray, n: int) -> float | np.ndarray:
    """Digital frequency of Fourier index ``idx`` on an axis of length ``n`` (Nyquist -> +0.5)."""
    idx = np.asarray(idx)
    f = np.where(idx <= n // 2, idx / n, (idx - n) / n)
    return float(f) if f.ndim == 0 else f


def round_half_away(x: float) -> int:
    """C ``round``: halves away from zero (Python's ``round`` rounds halves to even)."""
    return int(np.floor(abs(x) + 0.5) * np.sign(x)) if x != 0 else 0


def freq2idx(f: float, n: int) -> int:
    """Fourier index of digital frequency ``f`` (C rounding; negative -> ``+n``)."""
    idx = round_half_away(n * f)
    return idx + n if idx < 0 else idx


def axis_frequencies(n: int, dtype: type = np.float64) -> np.ndarray:
    """Digital frequencies of a complex FFT axis of length ``n`` (Nyquist -> +0.5)."""
    return np.asarray(idx2freq(np.arange(n), n), dtype=dtype)


def half_grid(shape: tuple[int, int, int], dtype: type = np.float64):
    """Broadcastable frequency vectors ``(fz, fy, fx)`` of the real-FFT half spectrum."""
    nz, ny, nx = shape
    fz = axis_frequencies(nz, dtype)[:, None, None]
    fy = axis_frequencies(ny, dtype)[None, :, None]
    fx = (np.arange(nx // 2 + 1) / nx).astype(dtype)[None, None, :]
    return fz, fy, fx


def half_radius(shape: tuple[int, int, int], dtype: type = np.float64) -> np.ndarray:
    """``|u|`` on the half spectrum (cycles/voxel)."""
    fz, fy, fx = half_grid(shape, np.float64)
    return np.sqrt(fz * fz + fy * fy + fx * fx).astype(dtype)


def full_from_half(g_half: np.ndarray, nx: int, *, odd: bool = False) -> np.ndarray:
    """Full-grid filter equivalent to applying ``g_half`` before a complex-to-real inverse FFT.

    A real-to-complex pipeline applies a filter on the stored half spectrum only; the inverse
    real transform then treats the stored half as authoritative, mirrors it by conjugation, and
    on the self-mirrored planes (``kx = 0`` and, for even ``nx``, ``kx = nx/2``) keeps the
    Hermitian part. This function returns the full-grid filter with the same effect on a
    Hermitian spectrum, so that the inverse transform can be done as a complex FFT (which lets
    two real outputs share one transform).

    Parameters
    ----------
    g_half
        Real filter on the half grid, shape ``(nz, ny, nx//2+1)``.
    nx
        Length of the last (real) axis.
    odd
        ``False`` for a filter multiplying the spectrum directly (``g``), ``True`` for the real
        factor ``h`` of a purely imaginary multiplier ``-i*h`` (Riesz components).
    """
    nz, ny, nh = g_half.shape
    full = np.empty((nz, ny, nx), dtype=g_half.dtype)
    full[:, :, :nh] = g_half
    # index of -k on the complex axes
    mz = (-np.arange(nz)) % nz
    my = (-np.arange(ny)) % ny
    mirror = g_half[mz][:, my]
    sign = -1.0 if odd else 1.0
    # kx in nh .. nx-1 mirrors stored kx' = nx - kx in 1 .. nx - nh
    kx_m = nx - np.arange(nh, nx)
    full[:, :, nh:] = sign * mirror[:, :, kx_m]
    planes = [0] + ([nx // 2] if nx % 2 == 0 else [])
    for p in planes:
        full[:, :, p] = 0.5 * (g_half[:, :, p] + sign * mirror[:, :, p])
    return full


def full_spectrum(spec_half: np.ndarray, nx: int) -> np.ndarray:
    """Full complex spectrum of a real signal from its half spectrum (Hermitian extension)."""
    nz, ny, nh = spec_half.shape
    full = np.empty((nz, ny, nx), dtype=spec_half.dtype)
    full[:, :, :nh] = spec_half
    mz = (-np.arange(nz)) % nz
    my = (-np.arange(ny)) % ny
    kx_m = nx - np.arange(nh, nx)
    full[:, :, nh:] = np.conj(spec_half[mz][:, my][:, :, kx_m])
    return full


def gaussian_filter_fourier(volume: np.ndarray, sigma: float, threads: int = 1) -> np.ndarray:
    """Xmipp's ``realGaussianFilter``: multiply the spectrum by ``exp(-pi^2 sigma^2 |f|^2)``.

    This is a periodic real-space Gaussian of standard deviation ``sigma/sqrt(2)`` voxels
    (algorithm.md 0.6).
    """
    spec = rfftn(volume, threads)
    r2 = half_radius(volume.shape, np.float64) ** 2
    spec *= np.exp(-(np.pi**2) * sigma * sigma * r2).astype(spec.real.dtype)
    return irfftn(spec, volume.shape, threads)
