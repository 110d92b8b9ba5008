"""FFT layer and Fourier-grid helpers.

Normalisation (algorithm.md 0.1): the forward transform is divided by the number of voxels and
the inverse is not scaled, so amplitudes are in the units of the input map.

Transforms are backed by pyFFTW when it is importable and fall back to ``scipy.fft``
otherwise. The classes below keep their plans and buffers for repeated use (one instance per
thread); the one-off whole-volume functions build a plan per call and free it.

Frequency convention (algorithm.md 0.2): index ``i`` of an axis of length ``n`` maps to
``i/n`` when ``i <= n//2`` and ``(i-n)/n`` otherwise, so for even ``n`` the Nyquist index maps to
``+0.5`` on every axis.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from monodir.core import kernels


def _import_pyfftw():
    """Import pyFFTW, or return ``None`` when it is not installed.

    Importing the ``pyfftw`` package also imports its optional ``dask.array`` interface, which
    costs every worker process ~0.15 s and ~14 MiB for an interface monodir never uses; while
    ``dask.array`` is not imported yet it is hidden for the duration of the import, so that
    pyFFTW skips that interface (``dask.array`` itself stays importable afterwards). Another
    thread importing ``dask.array`` during that import (once per process, ~0.2 s) would get
    an ImportError; monodir's own code never does.
    """
    hide = "dask.array" not in sys.modules
    if hide:
        sys.modules["dask.array"] = None  # type: ignore[assignment]  # import -> ImportError
    try:
        import pyfftw
    except ImportError:  # pragma: no cover
        return None
    finally:
        if hide and sys.modules.get("dask.array", False) is None:
            del sys.modules["dask.array"]
    return pyfftw


pyfftw = _import_pyfftw()
HAVE_PYFFTW = pyfftw is not None

_PLANNER = "FFTW_ESTIMATE"

#: Seconds spent inside FFT executions of the plans below, accumulated only while a benchmark
#: has set this to a one-element list (``None``: no timing, no overhead).
fft_clock: list[float] | None = None


def _execute(plan) -> None:
    """Run a pyFFTW plan (timed when :data:`fft_clock` is set)."""
    if fft_clock is None:
        plan.execute()
        return
    t0 = time.perf_counter()
    plan.execute()
    fft_clock[0] += time.perf_counter() - t0


def _fftw(src: np.ndarray, out: np.ndarray, axes, *, forward: bool, threads: int, destroy=False):
    """A pyFFTW plan from ``src`` to ``out`` over ``axes`` with the current planner effort."""
    flags = (_PLANNER, "FFTW_DESTROY_INPUT") if destroy else (_PLANNER,)
    return pyfftw.FFTW(
        src,
        out,
        axes=tuple(axes),
        direction="FFTW_FORWARD" if forward else "FFTW_BACKWARD",
        flags=flags,
        threads=threads,
    )


def set_planner_effort(effort: str) -> None:
    """Set the FFTW planner effort used for new plans (``FFTW_ESTIMATE``, ``FFTW_MEASURE``)."""
    global _PLANNER
    _PLANNER = effort


def _plan(kind: str, shape: tuple[int, ...], dtype: np.dtype, threads: int):
    """A new pyFFTW plan between padded buffers (see :func:`padded_empty`), not cached: the
    one-off whole-volume transforms that use it would otherwise keep two volumes alive per
    shape, and with FFTW_ESTIMATE a plan costs milliseconds."""
    if kind == "rfftn":
        half = (*shape[:-1], shape[-1] // 2 + 1)
        a, b = padded_empty(shape, dtype), padded_empty(half, complex_dtype(dtype))
    elif kind.startswith("irfftn"):
        n = int(kind.split(":")[1])
        a = padded_empty(shape, dtype)
        b = padded_empty((*shape[:-1], n), np.empty(0, dtype).real.dtype)
    elif kind in ("ifftn", "fftn"):
        a, b = padded_empty(shape, dtype), padded_empty(shape, dtype)
    else:  # pragma: no cover
        raise ValueError(kind)
    forward = kind in ("rfftn", "fftn")
    return _fftw(
        a,
        b,
        range(len(shape)),
        forward=forward,
        threads=threads,
        destroy=kind.startswith("irfftn"),
    )


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """Uninitialised array, SIMD-aligned when pyFFTW is available."""
    if HAVE_PYFFTW:
        return pyfftw.empty_aligned(shape, dtype=dtype)
    return np.empty(shape, dtype=dtype)


def padded_empty(
    shape: tuple[int, ...], dtype: np.dtype | type, buffer: np.ndarray | None = None
) -> np.ndarray:
    """Uninitialised aligned array whose rows (and, in 3D and up, planes) are padded.

    The result is a view of shape ``shape`` into a buffer 8 elements longer per row and one
    row longer per plane. Transforms along a strided axis of a power-of-two box otherwise hit
    the same cache sets over and over: FFTW_ESTIMATE's 3D inverse of a 256^3 complex64 volume
    took 918 ms in a dense buffer and 86 ms in a padded one here, a 1D pass along y of a 256^3
    slab 324 ms instead of 26 ms.

    ``buffer``, an aligned byte array of at least :func:`padded_nbytes` bytes, holds the
    array instead of a new allocation: the same strides and alignment, so FFTW plans the same
    transforms on it; two arrays that are never in use at the same time can share one buffer.
    """
    dtype = np.dtype(dtype)
    raw_shape = _padded_shape(shape)
    if buffer is None:
        raw = aligned_empty(raw_shape, dtype)
    else:
        size = padded_nbytes(shape, dtype)
        if buffer.nbytes < size:
            raise ValueError(f"buffer of {buffer.nbytes} bytes, {size} needed")
        raw = buffer.reshape(-1).view(np.uint8)[:size].view(dtype).reshape(raw_shape)
    return raw[tuple(slice(0, n) for n in shape)]


def _padded_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    pad = [0] * len(shape)
    pad[-1] = 8
    if len(shape) >= 3:
        pad[-2] = 1
    return tuple(n + p for n, p in zip(shape, pad))


def padded_nbytes(shape: tuple[int, ...], dtype: np.dtype | type) -> int:
    """Bytes of the buffer behind :func:`padded_empty` ``(shape, dtype)``."""
    return int(np.prod(_padded_shape(shape))) * np.dtype(dtype).itemsize


def flat_memory(view: np.ndarray) -> np.ndarray:
    """1D view of the memory spanned by a (padded) 3D view, starting at its first element."""
    span = sum((n - 1) * st for n, st in zip(view.shape, view.strides)) // view.itemsize + 1
    return np.lib.stride_tricks.as_strided(view, shape=(span,), strides=(view.itemsize,))


def memory_index(flat_index: np.ndarray, view: np.ndarray) -> np.ndarray:
    """Positions in :func:`flat_memory` of ``view`` of the C-order flat indices of its shape."""
    flat = np.asarray(flat_index, dtype=np.int64)
    steps = [st // view.itemsize for st in view.strides]
    out = np.zeros(flat.shape, dtype=np.int64)
    rem = flat
    for axis in range(view.ndim - 1, -1, -1):
        rem, k = np.divmod(rem, view.shape[axis])
        out += k * steps[axis]
    return out


def complex_dtype(real_dtype: np.dtype | type) -> np.dtype:
    """Complex dtype matching a real dtype (float32 -> complex64, float64 -> complex128)."""
    return np.result_type(real_dtype, np.complex64)


def rfftn(x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Forward real 3D FFT, divided by the number of voxels. Returns a new array."""
    if HAVE_PYFFTW:
        plan = _plan("rfftn", x.shape, x.dtype, threads)
        plan.input_array[...] = x
        plan.execute()
        out = plan.output_array
        del plan  # its input buffer is spent: one volume less while the result is made
        return out * np.asarray(1.0 / x.size, dtype=x.dtype)
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

    def __init__(
        self,
        shape: tuple[int, int, int],
        cdtype: np.dtype,
        threads: int = 1,
        *,
        out_buffer: np.ndarray | None = None,
    ):
        """``out_buffer``: aligned bytes (:func:`padded_nbytes`) to hold the output in."""
        self.threads = threads
        if HAVE_PYFFTW:
            self.zin = padded_empty(shape, cdtype)
            self.out = padded_empty(shape, cdtype, out_buffer)
            self._plan = _fftw(self.zin, self.out, (0, 1, 2), forward=False, threads=threads)
            self.zin[...] = 0
        else:
            self._plan = None
            self.zin = np.zeros(shape, dtype=cdtype)

    def run(self) -> np.ndarray:
        if self._plan is not None:
            _execute(self._plan)
            return self.out
        from scipy import fft as sfft

        return sfft.ifftn(self.zin, norm="forward", workers=self.threads)


class RealFilter:
    """Filter a real volume in Fourier space with two reused buffers.

    ``x`` is the real buffer (fill it in place); :meth:`run` transforms it into the half
    spectrum ``h``, multiplies ``h`` by ``factor`` (half grid) and transforms back into ``x``,
    which it returns. ``factor`` must include the forward normalisation :attr:`scale`. Only one
    real volume and one half spectrum are held (the inverse transform overwrites ``h``).
    The kernels use :class:`PrunedLowPass`; this dense version is the benchmarks' reference.
    """

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype, threads: int = 1):
        self.shape = tuple(shape)
        self.threads = threads
        dtype = np.dtype(dtype)
        cdtype = complex_dtype(dtype)
        half = (*self.shape[:-1], self.shape[-1] // 2 + 1)
        self.scale = dtype.type(1.0 / np.prod(self.shape))
        if HAVE_PYFFTW:
            self.x = padded_empty(self.shape, dtype)
            self.h = padded_empty(half, cdtype)
            axes = (0, 1, 2)
            self._fwd = _fftw(self.x, self.h, axes, forward=True, threads=threads)
            self._inv = _fftw(self.h, self.x, axes, forward=False, threads=threads, destroy=True)
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
        _execute(self._fwd)
        self.h *= factor
        _execute(self._inv)
        return self.x


class PrunedLowPass:
    """Radial low-pass of a real volume with pruned passes.

    Like :class:`RealFilter`, but the filter is known to vanish beyond ``|k| = k_max`` on every
    axis, so after the (full) pass along x only the columns ``kx <= k_max`` are transformed
    along y, and only the lines with ``|ky| <= k_max`` along z; the rest of the half spectrum is
    zeroed before the way back. The same transform as :class:`RealFilter` up to rounding, at
    a fraction of the cost when ``k_max`` is well below Nyquist.

    ``x`` is the real buffer (fill it in place); :meth:`run` returns it filtered.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        threads: int = 1,
        *,
        h_buffer: np.ndarray | None = None,
    ):
        """``h_buffer``: aligned bytes (:func:`padded_nbytes`) to hold the half spectrum in."""
        self.shape = tuple(shape)
        self.threads = threads
        dtype = np.dtype(dtype)
        self.cdtype = complex_dtype(dtype)
        nz, ny, nx = self.shape
        self.half = (nz, ny, nx // 2 + 1)
        self.dtype = dtype
        self.scale = dtype.type(1.0 / np.prod(self.shape))
        self.h = padded_empty(self.half, self.cdtype, h_buffer)
        self._x: np.ndarray | None = None
        self._plans: dict = {}
        self._group: np.ndarray | None = None
        self._group_plans: dict = {}
        self._y_plans: dict = {}

    @property
    def x(self) -> np.ndarray:
        """The real volume: the input of :meth:`run`, and its output. Allocated at first use
        (a caller that fills the half spectrum group by group, :meth:`forward_group`, and
        reads only some lines of the result never needs it)."""
        return self._volume()

    def _volume(self) -> np.ndarray:
        if self._x is None:
            self._x = aligned_empty(self.shape, self.dtype)  # contiguous: gathers reshape(-1)
            if HAVE_PYFFTW:
                t = self.threads
                self._fwd_x = _fftw(self._x, self.h, (2,), forward=True, threads=t)
                self._inv_x = _fftw(self.h, self._x, (2,), forward=False, threads=t, destroy=True)
        return self._x

    def group_buffer(self, planes: int) -> np.ndarray:
        """A contiguous real ``(planes, ny, nx)`` buffer for :meth:`forward_group` (reused)."""
        if self._group is None or self._group.shape[0] != planes:
            self._group = aligned_empty((planes, *self.shape[1:]), self.dtype)
            self._group_plans.clear()
        return self._group

    def forward_group(self, z0: int, planes: int) -> None:
        """The first pass of :meth:`run` (forward, along x) for the planes ``z0:z0+planes``,
        from the first ``planes`` planes of :meth:`group_buffer` into :attr:`h`. Those planes
        of the group buffer are spent (FFTW may overwrite them): fill them again before the
        next call.

        Each plane's lines are a batch of independent 1D transforms: FFTW gives the whole
        volume's bits for groups of an even number of planes when ``nz`` is even, and for any
        group when it is odd (checked for boxes 36-256 and both precisions, also with two
        threads; ``tests/test_core_pruned.py``). The caller keeps to those groups.
        """
        src = self._group[:planes]
        out = self.h[z0 : z0 + planes]
        if not HAVE_PYFFTW:
            from scipy import fft as sfft

            out[...] = sfft.rfft(src, axis=2)
            return
        plan = self._group_plans.get((z0, planes))
        if plan is None:
            # the group buffer is written whole before every call: FFTW may overwrite it
            # (measured ~1 % less time per direction on betagal, the same bits)
            plan = self._group_plans[(z0, planes)] = _fftw(
                src, out, (2,), forward=True, threads=self.threads, destroy=True
            )
        _execute(plan)

    def forward_y(self, z0: int, planes: int, k_max: int) -> None:
        """The second pass of :meth:`run` (forward, along y, on the columns it keeps for
        ``k_max``) for the planes ``z0:z0+planes`` of :attr:`h`, for a caller that fills
        :attr:`h` group by group (:meth:`forward_group`) and transforms each group along y
        while its planes are in cache; :meth:`run` is then called with ``y_done=True`` and
        the same ``k_max``. Each plane is transformed on its own either way: the same bits
        as the whole pass. One plan is kept per ``(z0, planes, k_max)``.
        """
        k_max = self._clamp(k_max)
        key = (z0, planes, k_max)
        plan = self._y_plans.get(key)
        if plan is None:
            cols = self.h[z0 : z0 + planes, :, self.blocks(k_max)[0][1]]
            plan = self._y_plans[key] = AxisFFT(cols, cols, 1, forward=True, threads=self.threads)
        plan.run()

    def _clamp(self, k_max: int) -> int:
        return int(min(max(k_max, 0), max(self.shape[1:]) // 2))

    def kx_stop(self, k_max: int) -> int:
        """End of the columns along x that :meth:`run` keeps for ``k_max``."""
        return self.blocks(self._clamp(k_max))[0][1].stop

    def blocks(self, k_max: int) -> list[tuple[slice, slice]]:
        """``(y, x)`` slices of the half spectrum whose lines along z are transformed."""
        ny, nx = self.shape[1], self.shape[2]
        kx = slice(0, min(k_max, nx // 2) + 1)
        if 2 * k_max + 1 >= ny:
            return [(slice(0, ny), kx)]
        return [(slice(0, k_max + 1), kx), (slice(ny - k_max, ny), kx)]

    def _c2c(self, view: np.ndarray, axis: int, forward: bool, key) -> None:
        """In-place unscaled transform of a view of ``h`` (plans kept per ``key``)."""
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = AxisFFT(
                view, view, axis, forward=forward, threads=self.threads
            )
        plan.run()

    def run(
        self,
        k_max: int,
        factor,
        apply=None,
        *,
        last_pass: bool = True,
        forward_done: bool = False,
        y_done: bool = False,
    ) -> np.ndarray:
        """Filter ``x`` in place and return it.

        Parameters
        ----------
        k_max
            Largest index (on every axis) at which the filter can be non-zero.
        factor
            Callable ``(z_slice, y_slice, x_slice) -> array`` giving the filter (times
            :attr:`scale`) on ``h[z_slice, y_slice, x_slice]``; called on slabs of the blocks
            of :meth:`blocks`, so that its temporaries stay small.
        apply
            Optional callable ``(block, z_slice, y_slice, x_slice) -> bool`` that multiplies a
            whole block by the same filter in place (a compiled kernel); when it returns
            ``False`` the block is filtered with ``factor``.
        last_pass
            ``False`` stops before the inverse pass along x and returns ``h``: the lines
            ``h[z, y, :kx_stop(k_max)]`` then hold their final half spectra (the columns beyond
            are not zeroed), for a caller that needs only some lines of the result.
        forward_done
            The first pass (along x) has been done by :meth:`forward_group` for every plane:
            ``x`` is not read.
        y_done
            The second pass (along y) too, by :meth:`forward_y` with this ``k_max`` on every
            plane.
        """
        ny = self.shape[1]
        k_max = self._clamp(k_max)
        h = self.h
        if forward_done or y_done:
            pass
        elif HAVE_PYFFTW:
            self._volume()  # the volume and its plans, at first use
            _execute(self._fwd_x)
        else:
            from scipy import fft as sfft

            h[...] = sfft.rfft(self.x, axis=2)
        blocks = self.blocks(k_max)
        cols = h[:, :, blocks[0][1]]
        if not y_done:
            self._c2c(cols, 1, True, ("y", k_max, True))
        for j, (ys, xs) in enumerate(blocks):
            v = h[:, ys, xs]
            self._c2c(v, 0, True, ("z", k_max, j, True))
            if apply is None or not apply(v, slice(0, v.shape[0]), ys, xs):
                for z0 in range(0, v.shape[0], 16):
                    zs = slice(z0, min(z0 + 16, v.shape[0]))
                    v[zs] *= factor(zs, ys, xs)
            self._c2c(v, 0, False, ("z", k_max, j, False))
        if len(blocks) == 2:
            cols[:, k_max + 1 : ny - k_max] = 0
        self._c2c(cols, 1, False, ("y", k_max, False))
        if not last_pass:
            return h
        h[:, :, blocks[0][1].stop :] = 0
        if HAVE_PYFFTW:
            self._volume()
            _execute(self._inv_x)
        else:
            from scipy import fft as sfft

            self.x[...] = sfft.irfft(h, n=self.shape[2], axis=2, norm="forward")
        return self.x


class AxisFFT:
    """Unscaled complex FFT along one axis (every line along it), from ``src`` into ``out``
    (in place when they are the same array). The building block of the pruned transforms."""

    def __init__(
        self,
        src: np.ndarray,
        out: np.ndarray,
        axis: int,
        *,
        forward: bool = False,
        threads: int = 1,
    ):
        self.src, self.out, self.axis, self.forward, self.threads = src, out, axis, forward, threads
        self._plan = None
        if HAVE_PYFFTW:
            self._plan = _fftw(src, out, (axis,), forward=forward, threads=threads)

    def run(self) -> np.ndarray:
        if self._plan is not None:
            _execute(self._plan)
            return self.out
        from scipy import fft as sfft

        fn = sfft.fft if self.forward else sfft.ifft
        norm = "backward" if self.forward else "forward"  # unscaled either way
        self.out[...] = fn(self.src, axis=self.axis, norm=norm, workers=self.threads)
        return self.out


class AxisInverse(AxisFFT):
    """Unscaled inverse FFT along one axis: the last pass of a pruned 3D inverse
    (:class:`PartialInverse` does the first two)."""

    def __init__(self, src: np.ndarray, out: np.ndarray, axis: int, threads: int = 1):
        super().__init__(src, out, axis, forward=False, threads=threads)


def pruning_axes(
    k: tuple[np.ndarray, np.ndarray, np.ndarray],
    shape: tuple[int, ...],
    last: tuple[int, ...] = (0, 1, 2),
):
    """Pass order ``(a1, a2, a3)`` that makes a pruned inverse of the support ``k`` cheapest.

    ``k`` holds the ``(kz, ky, kx)`` indices of the non-zero coefficients. Pass 1 (along
    ``a1``) touches only the lines that hold a coefficient, pass 2 (along ``a2``) only the
    planes ``k_a3 = const`` that do, pass 3 (along ``a3``, one of ``last``) everything.
    """
    best = None
    for a3 in last:
        planes = np.count_nonzero(np.bincount(k[a3], minlength=shape[a3]))
        for a1 in range(3):
            if a1 == a3:
                continue
            a2 = 3 - a1 - a3
            key = k[a3].astype(np.int64) * shape[a2] + k[a2]
            lines = np.count_nonzero(np.bincount(key, minlength=shape[a3] * shape[a2]))
            cost = lines * shape[a1] + planes * shape[a2] * shape[a1]
            if best is None or cost < best[0]:
                best = (cost, (a1, a2, a3))
    return best[1]


def _run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values starts in a sorted, non-empty array (what
    ``np.unique(..., return_index=True)`` gives for sorted input, without sorting again)."""
    change = np.flatnonzero(sorted_values[1:] != sorted_values[:-1])
    starts = np.empty(change.size + 1, dtype=np.intp)
    starts[0] = 0
    np.add(change, 1, out=starts[1:])
    return starts


class PartialInverse:
    """First two passes of a pruned inverse 3D DFT of sparse coefficients, added to targets.

    :meth:`add` inverse-transforms coefficients at full-grid indices ``k = (kz, ky, kx)``
    (unique positions) along ``axes[0]`` and ``axes[1]`` only, and adds the result (still in
    frequency along ``axes[2]``) to each target. An inverse FFT along ``axes[2]`` of a target
    then gives the inverse 3D DFT of everything added so far. Only the lines and planes that
    hold a coefficient are transformed, so a thin shell of a cone costs a small fraction of a
    full pass. The planes go through one reused buffer of ``plane_chunk`` planes per target
    (one instance per thread).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        cdtype: np.dtype,
        threads: int = 1,
        n_targets: int = 2,
        plane_chunk: int = 8,
    ):
        self.shape = tuple(shape)
        self.cdtype = np.dtype(cdtype)
        self.threads = threads
        self.n_targets = n_targets
        self.plane_chunk = plane_chunk
        self._bufs: dict = {}
        self._plans: dict = {}

    def _slab(self, c: int, n2: int, n1: int) -> np.ndarray:
        """Zeroed view ``(n_targets, c, n2, n1)`` of the reused plane buffer."""
        big = self._bufs.get((n2, n1))
        if big is None:
            self._bufs.clear()
            self._plans.clear()
            big = self._bufs[(n2, n1)] = padded_empty(
                (self.n_targets, self.plane_chunk, n2, n1), self.cdtype
            )
        view = big[:, :c]
        view.fill(0)
        return view

    def _ifft_planes(self, view: np.ndarray) -> None:
        """In-place unscaled inverse FFT along axis 2 of a view of the plane buffer."""
        plan = self._plans.get(view.shape)
        if plan is None:
            plan = self._plans[view.shape] = AxisInverse(view, view, 2, self.threads)
        plan.run()

    def add(
        self,
        targets: list[np.ndarray],
        k: tuple[np.ndarray, np.ndarray, np.ndarray],
        values: list[np.ndarray],
        axes: tuple[int, int, int],
        *,
        assign: bool = False,
        key: np.ndarray | None = None,
        support: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Add (``assign=True``: write, and zero the planes not written) the partial
        transform of the coefficients ``values`` at ``k`` to the targets.

        ``key``, if given, is ``k[a3] * n_a2 + k[a2]`` of
        coefficients already in increasing order of it (:class:`ShellSweep` sorts its basis
        once), which saves sorting them at every call; the result is the same. Only
        ``k[a1]`` is then read.

        ``support``, ``(lo, hi)`` over the planes' axis of larger stride in the targets: only
        ``[lo[i], hi[i])`` along the contiguous axis is written on its line ``i``, for a
        reader of the targets that never looks elsewhere (the last pass of
        :class:`monodir.core.monogenic.ShellSweep` reads only the taper's columns).
        """
        from scipy import fft as sfft

        if len(targets) != self.n_targets or len(values) != self.n_targets:
            raise ValueError(f"expected {self.n_targets} targets and value arrays")
        a1, a2, a3 = axes
        n1, n2 = self.shape[a1], self.shape[a2]
        nb = self.n_targets
        if key is None:
            key = k[a3].astype(np.int64) * n2 + k[a2]
            order = np.argsort(key, kind="stable")
            key = key[order]
            k1 = k[a1][order]
            values = [v[order] for v in values]
        else:
            k1 = k[a1]
        if key.size == 0:
            planes = np.empty(0, dtype=np.int64)
            bounds = [0]
        else:
            # the lines (k_a3, k_a2) that hold coefficients and the planes k_a3, found once
            # (arrays per line, not per coefficient: they stay small): where each line's
            # coefficients start, each line's plane and row, where each plane's lines start
            first = _run_starts(key)
            line_keys = key[first]
            line_plane = line_keys // n2
            line_row = line_keys - line_plane * n2
            plane_starts = _run_starts(line_plane)
            planes = line_plane[plane_starts]
            line_bounds = [*plane_starts.tolist(), line_keys.size]  # lines of each plane
            line_plane_index = np.repeat(np.arange(planes.size), np.diff(line_bounds))
            bounds = [*first[plane_starts].tolist(), key.size]  # coefficients of each plane
        views = [np.moveaxis(t, (a3, a2, a1), (0, 1, 2)) for t in targets]
        keep_lo, keep_hi = (None, None) if support is None else support
        chunk = self.plane_chunk
        for c0 in range(0, planes.size, chunk):
            c1 = min(c0 + chunk, planes.size)
            lo, hi = bounds[c0], bounds[c1]
            l0, l1 = line_bounds[c0], line_bounds[c1]
            # pass 1: the lines of this group of planes that hold coefficients
            lines = np.zeros((nb, l1 - l0, n1), dtype=self.cdtype)
            local_line = np.zeros(hi - lo, dtype=np.intp)  # each coefficient's line, from 0
            local_line[first[l0 + 1 : l1] - lo] = 1
            np.cumsum(local_line, out=local_line)
            for b in range(nb):
                lines[b, local_line, k1[lo:hi]] = values[b][lo:hi]
            if fft_clock is not None:
                t0 = time.perf_counter()
            lines = sfft.ifft(lines, axis=2, norm="forward", overwrite_x=True, workers=self.threads)
            if fft_clock is not None:
                fft_clock[0] += time.perf_counter() - t0
            # pass 2: those planes, every line along a2
            slab = self._slab(c1 - c0, n2, n1)
            slab[:, line_plane_index[l0:l1] - c0, line_row[l0:l1], :] = lines
            self._ifft_planes(slab)
            for b in range(nb):
                kernels.store_planes(
                    views[b], planes[c0:c1], slab[b], assign=assign, lo=keep_lo, hi=keep_hi
                )
        if assign:
            untouched = np.ones(self.shape[a3], dtype=bool)
            untouched[planes] = False
            for p in np.flatnonzero(untouched).tolist():
                for b in range(nb):
                    views[b][p] = 0


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
    return full_from_half_planes(g_half, g_half[mirror_planes(g_half.shape[0])], nx, odd=odd)


def mirror_planes(nz: int, z0: int = 0, z1: int | None = None) -> np.ndarray:
    """Index of the plane ``-kz`` for each plane ``kz`` in ``z0:z1``."""
    return (-np.arange(z0, nz if z1 is None else z1)) % nz


def full_from_half_planes(
    g_direct: np.ndarray, g_mirror: np.ndarray, nx: int, *, odd: bool = False
) -> np.ndarray:
    """Planes ``z0:z1`` of :func:`full_from_half` (the same values) from the half-grid planes
    ``z0:z1`` (``g_direct``) and their mirrors :func:`mirror_planes` (``g_mirror``)."""
    nzs, ny, nh = g_direct.shape
    full = np.empty((nzs, ny, nx), dtype=g_direct.dtype)
    full[:, :, :nh] = g_direct
    sign = -1.0 if odd else 1.0
    # kx in nh .. nx-1 mirrors the stored kx' = nx - kx in 1 .. nx - nh, ky the line -ky
    for dst, src in _mirror_lines(g_mirror, full, nx):
        np.multiply(sign, src, out=dst)
    planes = [0] + ([nx // 2] if nx % 2 == 0 else [])
    for p in planes:
        mirror = np.concatenate([g_mirror[:, :1, p], g_mirror[:, :0:-1, p]], axis=1)
        full[:, :, p] = 0.5 * (g_direct[:, :, p] + sign * mirror)
    return full


def _mirror_lines(g_mirror: np.ndarray, full: np.ndarray, nx: int) -> list:
    """``(destination, source)`` views: the columns ``kx >= nx//2 + 1`` of ``full`` and
    ``g_mirror[:, -ky, nx - kx]`` (line 0 maps to itself, lines 1 .. ny-1 in reverse)."""
    nh = g_mirror.shape[2]
    cols = g_mirror[:, :, nx - nh : 0 : -1]
    return [(full[:, :1, nh:], cols[:, :1]), (full[:, 1:, nh:], cols[:, :0:-1])]


def full_spectrum(spec_half: np.ndarray, nx: int) -> np.ndarray:
    """Full complex spectrum of a real signal from its half spectrum (Hermitian extension)."""
    return full_spectrum_planes(spec_half, nx, 0, spec_half.shape[0])


def full_spectrum_planes(spec_half: np.ndarray, nx: int, z0: int, z1: int) -> np.ndarray:
    """Planes ``z0:z1`` of :func:`full_spectrum` (the same values)."""
    nz, ny, nh = spec_half.shape
    full = np.empty((z1 - z0, ny, nx), dtype=spec_half.dtype)
    full[:, :, :nh] = spec_half[z0:z1]
    for dst, src in _mirror_lines(spec_half[mirror_planes(nz, z0, z1)], full, nx):
        np.conjugate(src, out=dst)
    return full


def gaussian_filter_fourier(volume: np.ndarray, sigma: float, threads: int = 1) -> np.ndarray:
    """Xmipp's ``realGaussianFilter``: multiply the spectrum by ``exp(-pi^2 sigma^2 |f|^2)``.

    This is a periodic real-space Gaussian of standard deviation ``sigma/sqrt(2)`` voxels
    (algorithm.md 0.6). With pyFFTW, the half spectrum is filtered in the forward transform's
    own output, a few planes at a time, and transformed back from there: about two volumes
    of work memory instead of five, the same plans and the same float operations.
    """
    shape = volume.shape
    if not HAVE_PYFFTW:
        spec = rfftn(volume, threads)
        spec *= _gaussian_factor(shape, sigma, 0, shape[0], spec.real.dtype)
        return irfftn(spec, shape, threads)
    fwd = _plan("rfftn", shape, volume.dtype, threads)
    fwd.input_array[...] = volume
    fwd.execute()
    spec = fwd.output_array
    del fwd  # frees the forward transform's input
    scale = np.asarray(1.0 / volume.size, dtype=volume.dtype)
    for z0 in range(0, shape[0], 8):
        z1 = min(z0 + 8, shape[0])
        part = spec[z0:z1]
        part *= scale  # rfftn's normalisation, then the filter: two roundings, as before
        part *= _gaussian_factor(shape, sigma, z0, z1, spec.real.dtype)
    out = padded_empty(shape, volume.dtype)
    inv = _fftw(spec, out, range(len(shape)), forward=False, threads=threads, destroy=True)
    inv.execute()
    del inv, spec
    return np.ascontiguousarray(out)


def _gaussian_factor(shape, sigma: float, z0: int, z1: int, dtype) -> np.ndarray:
    """Planes ``z0:z1`` of the half-grid factor of :func:`gaussian_filter_fourier`."""
    fz, fy, fx = half_grid(shape, np.float64)
    r2 = np.sqrt(fz[z0:z1] * fz[z0:z1] + fy * fy + fx * fx) ** 2
    return np.exp(-(np.pi**2) * sigma * sigma * r2).astype(dtype)
