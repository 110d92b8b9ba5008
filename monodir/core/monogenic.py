"""Band-pass monogenic amplitude (algorithm.md 1.4 and 2.6).

For a tested frequency ``f`` the spectrum ``V`` is high-passed with a raised-cosine ramp on
``[fH, f]``; the monogenic signal is the band-passed map ``w`` and its three Riesz components
``R_a = IFFT(-i u_a/|u| W)``; the amplitude ``sqrt(w^2 + R_x^2 + R_y^2 + R_z^2)`` is optionally
tapered in real space and then low-passed with a raised cosine on ``[f, fL]``.

Packing: the four real inverse transforms are done as two complex ones,
``w + i R_x = IFFT(W (g + h_x))`` and ``R_y + i R_z = IFFT(W (h_z - i h_y))`` where ``g`` is the
(real) scalar filter and ``-i h_a`` the Riesz multipliers, expressed on the full Fourier grid by
:func:`monodir.core.fourier.full_from_half` so that the result is exactly what four real inverse
transforms of the half spectrum give.

The coefficients that can be non-zero are stored compactly (``flat_index``): for a directional
cone that is a few percent of Fourier space, which makes building the two complex spectra cheap.

Two ways to evaluate it: :meth:`AmplitudeWorkspace.amplitude` transforms the whole grid at each
call (MonoRes); :class:`ShellSweep` follows one sparse basis through an increasing frequency
sweep with pruned transforms, updated shell by shell (the directional pass; see
docs/performance.md). Both low-pass with :class:`monodir.core.fourier.PrunedLowPass`.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np

from monodir.core import fourier, kernels


@dataclass
class SpectralBasis:
    """Fourier coefficients (and their filters) feeding a monogenic amplitude.

    Attributes
    ----------
    shape
        Real-space shape ``(nz, ny, nx)``.
    flat_index
        Flat indices into the full ``(nz, ny, nx)`` Fourier grid of the stored coefficients, or
        ``None`` when every coefficient is stored (arrays then have the full grid's shape).
    spectrum
        Complex coefficients of the analysed map (forward-normalised).
    radius
        ``|u|`` at those coefficients (cycles/voxel).
    g
        Real scalar filter (for example a cone), or ``None`` for 1.
    hx, hy, hz
        Real factors of the Riesz multipliers ``-i h_a`` (``u_a/|u|`` times the filter).
    """

    shape: tuple[int, int, int]
    flat_index: np.ndarray | None
    spectrum: np.ndarray
    radius: np.ndarray
    g: np.ndarray | None
    hx: np.ndarray
    hy: np.ndarray
    hz: np.ndarray

    def with_spectrum(self, spectrum: np.ndarray) -> SpectralBasis:
        """Same filters applied to another spectrum (e.g. the half-map difference)."""
        return SpectralBasis(
            self.shape, self.flat_index, spectrum, self.radius, self.g, self.hx, self.hy, self.hz
        )


def riesz_factors_half(
    shape: tuple[int, int, int], *, xmipp_nyquist: bool, dtype: type = np.float64
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(|u|, u_x/|u|, u_y/|u|, u_z/|u|)`` on the half grid.

    ``xmipp_nyquist=True`` keeps Xmipp's ``+0.5`` at the Nyquist index of every axis (quirk Q20);
    ``False`` sets the Riesz factor of a Nyquist component to 0 along that axis, which makes the
    multiplier exactly odd. DC gets 0.
    """
    fz, fy, fx = fourier.half_grid(shape, np.float64)
    r = np.sqrt(fz * fz + fy * fy + fx * fx)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(r > 0, 1.0 / np.where(r > 0, r, 1.0), 0.0)
    comps = []
    for f, n, axis in ((fx, shape[2], 2), (fy, shape[1], 1), (fz, shape[0], 0)):
        fa = f.copy()
        if not xmipp_nyquist and n % 2 == 0:
            sl = [slice(None)] * 3
            sl[axis] = n // 2
            fa[tuple(sl)] = 0.0
        comps.append((fa * inv).astype(dtype))
    return r.astype(dtype), comps[0], comps[1], comps[2]


def full_basis(
    spec_half: np.ndarray, shape: tuple[int, int, int], *, xmipp_nyquist: bool
) -> SpectralBasis:
    """Basis holding every Fourier coefficient (no cone), as full-grid arrays.

    Six to seven volumes of arrays; MonoRes uses :class:`HalfBasis`, which gives the same
    values a few planes at a time.
    """
    real_dtype = spec_half.real.dtype
    nx = shape[2]
    _, hx, hy, hz = riesz_factors_half(shape, xmipp_nyquist=xmipp_nyquist, dtype=real_dtype)
    return SpectralBasis(
        shape=shape,
        flat_index=None,
        spectrum=fourier.full_spectrum(spec_half, nx),
        radius=_full_radius(shape, 0, shape[0], real_dtype),
        g=None,
        hx=fourier.full_from_half(hx, nx, odd=True),
        hy=fourier.full_from_half(hy, nx, odd=True),
        hz=fourier.full_from_half(hz, nx, odd=True),
    )


def _full_radius(shape: tuple[int, int, int], z0: int, z1: int, dtype) -> np.ndarray:
    """``|u|`` on the planes ``z0:z1`` of the full grid."""
    az2, ay2, ax2 = (fourier.axis_frequencies(n) ** 2 for n in shape)
    return kernels.grid_radius(az2[z0:z1], ay2, ax2, dtype)


@dataclass
class HalfBasis:
    """Every Fourier coefficient of a map, held as its half spectrum (MonoRes).

    :meth:`planes` returns the arrays of :func:`full_basis` on a few z-planes, made from the
    half spectrum and the frequencies when they are needed (the Riesz factors by a compiled
    loop with :func:`riesz_factors_half`'s float64 operations): the same values, bit for
    bit, in one volume instead of eight. :meth:`AmplitudeWorkspace.amplitude` fills its
    transform's input plane by plane from it.
    """

    spectrum_half: np.ndarray
    shape: tuple[int, int, int]
    xmipp_nyquist: bool
    flat_index: None = None

    def __post_init__(self) -> None:
        fz, fy, fx = (a.reshape(-1) for a in fourier.half_grid(self.shape, np.float64))
        numerators = []
        for f, n in ((fx, self.shape[2]), (fy, self.shape[1]), (fz, self.shape[0])):
            g = f.copy()
            if not self.xmipp_nyquist and n % 2 == 0:
                g[n // 2] = 0.0  # the Riesz factor of a Nyquist component (riesz_factors_half)
            numerators.append(g)
        self._freqs = (fz, fy, fx)
        self._numerators = tuple(numerators)

    def with_spectrum(self, spectrum_half: np.ndarray) -> HalfBasis:
        """Same filters applied to another half spectrum (e.g. the half-map difference)."""
        return HalfBasis(spectrum_half, self.shape, self.xmipp_nyquist)

    def _riesz(self, planes: np.ndarray, comps: tuple[int, ...]) -> np.ndarray:
        fz, fy, fx = self._freqs
        ax, ay, az = self._numerators
        dtype = self.spectrum_half.real.dtype
        return kernels.riesz_planes(fz[planes], fy, fx, (ax, ay, az[planes]), comps, dtype)

    def planes(self, z0: int, z1: int, riesz: tuple[int, ...] = (0, 1, 2)) -> tuple:
        """``(spectrum, radius, hx, hy, hz)`` of :func:`full_basis` on the planes ``z0:z1``;
        the Riesz factors not listed in ``riesz`` (0: x, 1: y, 2: z) are ``None``."""
        shape, nx = self.shape, self.shape[2]
        comps = tuple(sorted(riesz))
        direct = self._riesz(np.arange(z0, z1), comps)
        mirror = self._riesz(fourier.mirror_planes(shape[0], z0, z1), comps)
        h: list[np.ndarray | None] = [None, None, None]
        for j, a in enumerate(comps):
            h[a] = fourier.full_from_half_planes(direct[j], mirror[j], nx, odd=True)
        spectrum = fourier.full_spectrum_planes(self.spectrum_half, nx, z0, z1)
        radius = _full_radius(shape, z0, z1, self.spectrum_half.real.dtype)
        return (spectrum, radius, *h)


def high_pass(r: np.ndarray, f: float, f_h: float) -> np.ndarray:
    """Raised-cosine high-pass: 0 below ``f_h``, 1 above ``f``."""
    out = np.ones_like(r)
    out[r < f_h] = 0.0
    ramp = (r >= f_h) & (r <= f)
    if f > f_h:
        out[ramp] = 0.5 * (1.0 + np.cos(np.pi * (r[ramp] - f) / (f - f_h)))
    return out


def low_pass(r: np.ndarray, f: float, f_l: float, *, nan_at_zero_width: bool) -> np.ndarray:
    """Raised-cosine low-pass: 1 below ``f``, 0 above ``f_l``.

    When ``f_l == f`` (only at Nyquist) Xmipp divides by zero and the coefficients with
    ``|u| == f`` become NaN (quirk Q1); ``nan_at_zero_width`` reproduces that, otherwise the
    cut is hard (``|u| <= f`` kept).
    """
    out = np.zeros_like(r)
    out[r < f] = 1.0
    ramp = (r >= f) & (r <= f_l)
    if f_l > f:
        out[ramp] = 0.5 * (1.0 + np.cos(np.pi * (r[ramp] - f) / (f_l - f)))
    elif nan_at_zero_width:
        out[ramp] = np.nan
    else:
        out[ramp] = 1.0
    return out


def _add_abs2(z: np.ndarray, acc: np.ndarray, first: bool) -> None:
    """``acc (+)= |z|^2``, squaring ``z``'s real and imaginary parts in place (``z`` is
    scratch)."""
    parts = z.view(acc.dtype).reshape(*z.shape, 2)
    np.square(parts, out=parts)
    if first:
        np.add(parts[..., 0], parts[..., 1], out=acc)
    else:
        acc += parts[..., 0]
        acc += parts[..., 1]


class LineSamples:
    """Voxels at which an amplitude is wanted, grouped by the lines along x that hold them.

    The last (inverse, along x) pass of the low-pass then runs only on those lines, in blocks
    of ``block`` lines, and the amplitude is read at the voxels straight from each block
    (:meth:`ShellSweep.amplitude` with ``samples``). Each pass along x is a batch of
    independent 1D transforms, so the values are the same bits as the whole volume's at
    those voxels.

    Parameters
    ----------
    shape
        Grid ``(nz, ny, nx)``.
    indices
        Arrays of C-order flat voxel indices (for example the mask and a noise region); the
        values come back in the same order, one array per entry.
    block
        Lines per block of the pass (``None``: about 1 MiB of real output per block).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        indices: list[np.ndarray],
        block: int | None = None,
    ):
        nz, ny, nx = (int(n) for n in shape)
        self.shape = (nz, ny, nx)
        self.block = int(block or max(16, (1 << 18) // nx))
        itype = np.int32 if nz * ny * nx < 2**31 else np.int64
        step = 1 << 18  # indices handled in chunks: the temporaries stay small
        used = np.zeros(nz * ny, dtype=bool)
        for idx in indices:
            for a in range(0, idx.size, step):
                used[np.asarray(idx[a : a + step], dtype=itype) // nx] = True
        lines = np.flatnonzero(used)
        self.z, self.y = (a.astype(np.intp) for a in np.divmod(lines, ny))
        rank = (np.cumsum(used, dtype=np.int64) - 1).astype(itype)
        del used
        n_blocks = -(-lines.size // self.block)
        #: per index array: positions in a block's flat output (``block * nx`` fits int32),
        #: where each block's run starts, and (when the indices are not in line order) the
        #: order they were sorted in
        self.sets: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        for idx in indices:
            local = np.empty(idx.size, dtype=np.int32)
            blk = np.empty(idx.size, dtype=np.int32)
            for a in range(0, idx.size, step):
                part = np.asarray(idx[a : a + step], dtype=itype)
                ln = part // nx
                r = rank[ln]
                b = r // self.block
                blk[a : a + step] = b
                local[a : a + step] = (r - b * self.block) * nx + (part - ln * nx)
            order = None
            if blk.size > 1 and np.any(blk[1:] < blk[:-1]):
                order = np.argsort(blk, kind="stable")
                blk, local = blk[order], local[order]
            # (block numbers of blk's own type: no int64 copy of blk)
            bounds = np.searchsorted(blk, np.arange(n_blocks + 1, dtype=blk.dtype))
            self.sets.append((local, bounds, order))
        self._values: dict[np.dtype, list[np.ndarray]] = {}

    def with_own_outputs(self) -> LineSamples:
        """The same voxels with output arrays of its own (for a second sweep read at the same
        voxels in the same step)."""
        other = copy.copy(self)
        other._values = {}
        return other

    def values(self, dtype: np.dtype) -> list[np.ndarray]:
        """Output arrays (one per index array), allocated once and reused by every call."""
        dtype = np.dtype(dtype)
        out = self._values.get(dtype)
        if out is None:
            out = self._values[dtype] = [np.empty(s[0].size, dtype=dtype) for s in self.sets]
        return out

    @property
    def n_lines(self) -> int:
        return int(self.z.size)


class AmplitudeWorkspace:
    """Reusable plans and buffers for repeated amplitude evaluations on one grid.

    Not thread-safe: use one workspace per thread.
    """

    def __init__(
        self, shape: tuple[int, int, int], dtype: type, threads: int = 1, *, dense: bool = False
    ):
        """``dense=True``: for whole-volume amplitudes only (MonoRes), with the dense inverse
        transform's output and the low-pass's half spectrum in one buffer (they are never in
        use at the same time): one volume less."""
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.cdtype = fourier.complex_dtype(self.dtype)
        self.threads = threads
        self._inv_plan: fourier.InverseC2C | None = None
        self._shared: np.ndarray | None = None
        if dense and fourier.HAVE_PYFFTW:
            half = (*self.shape[:2], self.shape[2] // 2 + 1)
            size = max(
                fourier.padded_nbytes(self.shape, self.cdtype),
                fourier.padded_nbytes(half, self.cdtype),
            )
            self._shared = fourier.aligned_empty((size,), np.uint8)
        self._partials: dict[int, np.ndarray] = {}
        self._slab: np.ndarray | None = None  # the last pass's output (pair of slabs)
        self._slab_in: np.ndarray | None = None  # ... and its input
        self._slab_rows: np.ndarray | None = None  # rows of _slab_in that may be non-zero
        self._row_runs: list[tuple[int, int]] | None = None  # ... as runs
        self._ranges: tuple | None = None
        self._support: tuple | None = None
        self._slab_plans: dict[tuple[int, int], fourier.AxisInverse] = {}
        self.partial_inverse = fourier.PartialInverse(self.shape, self.cdtype, threads)
        self._lp = fourier.PrunedLowPass(self.shape, self.dtype, threads, h_buffer=self._shared)
        self._freq = fourier.half_grid(self.shape, np.float64)
        self._radial = kernels.RadialLowPass(self.dtype)
        self._filled: tuple[np.ndarray, np.ndarray] | None = None
        self._line_pass: tuple[int, np.ndarray, fourier.AxisInverse | None, np.ndarray] | None
        self._line_pass = None

    @property
    def acc(self) -> np.ndarray:
        """The amplitude volume (the low-pass's real buffer; allocated at first use, which
        the sampled sweeps of the directional pass never make)."""
        return self._lp.x

    def _low_pass(
        self,
        f: float,
        f_l: float,
        nan_at_zero_width: bool,
        samples: LineSamples | None = None,
        *,
        forward_done: bool = False,
        y_done: bool = False,
    ) -> np.ndarray | list[np.ndarray]:
        """Low-pass ``acc`` in place (:func:`low_pass`, pruned beyond ``f_l``); with
        ``samples``, return the result at those voxels instead (``acc`` is then spent).
        ``forward_done``: the amplitude went straight into the half spectrum
        (:meth:`last_pass_amplitude` with ``fused=True``); ``acc`` is not used. ``y_done``:
        its pass along y too (``k_max=`` :meth:`low_pass_k_max` given to that call)."""
        scale = self._lp.scale

        fz, fy, fx = (a.reshape(-1) for a in self._freq)

        def ramp(r: np.ndarray) -> np.ndarray:
            return low_pass(r, f, f_l, nan_at_zero_width=nan_at_zero_width)

        def factor(zs: slice, ys: slice, xs: slice) -> np.ndarray:
            r = np.sqrt(
                fz[zs, None, None] ** 2 + fy[None, ys, None] ** 2 + fx[None, None, xs] ** 2
            ).astype(self.dtype)
            out = low_pass(r, f, f_l, nan_at_zero_width=nan_at_zero_width)
            out *= scale
            return out

        def apply(block: np.ndarray, zs: slice, ys: slice, xs: slice) -> bool:
            return self._radial.apply(block, fz[zs], fy[ys], fx[xs], f, f_l, scale, ramp)

        k_max = self.low_pass_k_max(f_l)
        done = {"forward_done": forward_done, "y_done": y_done}
        if samples is None:
            return self._lp.run(k_max, factor, apply=apply, **done)
        h = self._lp.run(k_max, factor, apply=apply, last_pass=False, **done)
        return self._sample_lines(h, self._lp.kx_stop(k_max), samples)

    def low_pass_k_max(self, f_l: float) -> int:
        """Largest Fourier index at which the amplitude low-pass ending at ``f_l`` can be
        non-zero (on every axis)."""
        return int(np.floor(f_l * max(self.shape))) + 1

    def _sample_lines(self, h: np.ndarray, stop: int, samples: LineSamples) -> list[np.ndarray]:
        """Inverse real pass along x of the lines of ``samples`` only (columns ``>= stop`` of
        ``h`` taken as 0), block by block, read at the sampled voxels."""
        nx = self.shape[2]
        block = samples.block
        if self._line_pass is None or self._line_pass[0] != block:
            src = fourier.aligned_empty((block, nx // 2 + 1), self.cdtype)
            out = fourier.aligned_empty((block, nx), self.dtype)
            plan = None
            if fourier.HAVE_PYFFTW:
                plan = fourier._fftw(
                    src, out, (1,), forward=False, threads=self.threads, destroy=True
                )
            self._line_pass = (block, src, plan, out)
        _, src, plan, out = self._line_pass
        flat = out.reshape(-1)
        values = samples.values(self.dtype)
        # sets not in line order are gathered in their sorted order first
        staged = [
            v if o is None else np.empty_like(v) for v, (_, _, o) in zip(values, samples.sets)
        ]
        for k, j0 in enumerate(range(0, samples.n_lines, block)):
            j1 = min(j0 + block, samples.n_lines)
            kernels.gather_lines(h, samples.z[j0:j1], samples.y[j0:j1], stop, src)
            if plan is not None:
                fourier._execute(plan)
            else:
                from scipy import fft as sfft

                out[: j1 - j0] = sfft.irfft(src[: j1 - j0], n=nx, axis=1, norm="forward")
            for v, (local, bounds, _) in zip(staged, samples.sets):
                a, b = bounds[k], bounds[k + 1]
                if b > a:
                    np.take(flat, local[a:b], out=v[a:b])
        for v, w, (_, _, order) in zip(values, staged, samples.sets):
            if order is not None:
                v[order] = w
        return values

    @property
    def _inv(self) -> fourier.InverseC2C:
        if self._inv_plan is None:
            self._inv_plan = fourier.InverseC2C(
                self.shape, self.cdtype, self.threads, out_buffer=self._shared
            )
        return self._inv_plan

    @property
    def zin(self) -> np.ndarray:
        return self._inv.zin

    def partials(self, slot: int, zero: bool = True) -> np.ndarray:
        """Pair of partial-transform accumulators of a slot (for :class:`ShellSweep`): a
        padded ``(2, nz, ny, nx)`` complex array, zeroed unless ``zero=False`` (the caller
        then overwrites all of it).

        One slot per sweep alive at the same time (signal, half-map noise); the buffers are
        allocated once and reused.
        """
        t = self._partials.get(slot)
        if t is None:
            # stored plane by plane along y (the view is (2, nz, ny, nx)): the shells are
            # added as whole planes ky = const, which are then contiguous in memory
            nz, ny, nx = self.shape
            t = fourier.padded_empty((2, ny, nz, nx), self.cdtype).swapaxes(1, 2)
            self._partials[slot] = t
        if zero:
            t.fill(0)
        return t

    def _load(self, index: np.ndarray | None, values: np.ndarray) -> None:
        """Fill the inverse transform's (padded) input: everything, or ``values`` at the flat
        indices ``index`` with zeros elsewhere."""
        if index is None:
            self.zin[...] = values
            self._filled = None
            return
        memory = fourier.flat_memory(self.zin)
        if self._filled is None:
            self.zin[...] = 0
        elif self._filled[0] is not index and not np.array_equal(self._filled[0], index):
            memory[self._filled[1]] = 0
        else:
            memory[self._filled[1]] = values
            return
        where = fourier.memory_index(index, self.zin)
        memory[where] = values
        self._filled = (index, where)

    #: z-planes of :class:`HalfBasis` filled at a time (bounds the temporaries).
    DENSE_PLANES = 8
    #: Bytes of one signal's slab in the last pass (the pair's input and output slabs
    #: together are four times that: 1 MiB, the L2 cache of a core here).
    SLAB_BYTES = 1 << 18
    #: At most this many passes along y per step in the fused last pass (see
    #: :meth:`last_pass_amplitude`)
    Y_GROUPS = 32

    def _load_planes(self, basis: HalfBasis, f: float, f_h: float, band: bool, first: bool):
        """Fill the inverse transform's input with the first (``w + i R_x``) or second
        (``R_y + i R_z``) packed signal of ``basis``, a few planes at a time, with the float
        operations of the full-grid path."""
        nz = self.shape[0]
        for z0 in range(0, nz, self.DENSE_PLANES):
            z1 = min(z0 + self.DENSE_PLANES, nz)
            w, radius, hx, hy, hz = basis.planes(z0, z1, (0,) if first else (1, 2))
            if band:
                w = w * high_pass(radius, f, f_h).astype(self.dtype, copy=False)
            if first:
                self.zin[z0:z1] = w * (1.0 + hx)
            else:
                # NumPy's complex product is not symmetric in its last bit; the full-grid
                # expression ``w * (hz - 1j*hy)`` of earlier versions ran as ``t *= w``
                # (NumPy reuses a temporary from 256 KiB up): that order, for any box
                t = hz - 1j * hy
                np.multiply(t, w, out=t)
                self.zin[z0:z1] = t
        self._filled = None

    def _accumulate(self, first: bool) -> None:
        """Add ``|IFFT(zin)|^2`` to ``acc`` (``first``: replace it)."""
        _add_abs2(self._inv.run(), self.acc, first)

    def amplitude(
        self,
        basis: SpectralBasis,
        f: float,
        f_h: float,
        f_l: float,
        *,
        taper: np.ndarray | None = None,
        nan_at_zero_width: bool = False,
        band: bool = True,
        scratch: bool = False,
    ) -> np.ndarray:
        """Monogenic amplitude of ``basis`` at frequency ``f``.

        ``band=False`` skips both the high-pass and the low-pass (full-band amplitude).
        With ``scratch=True`` the result lives in an internal buffer that the next call
        overwrites (no copy); otherwise a new array is returned.
        """
        if isinstance(basis, HalfBasis):
            for first in (True, False):
                self._load_planes(basis, f, f_h, band, first)
                self._accumulate(first=first)
        else:
            w = basis.spectrum
            if band:
                w = w * high_pass(basis.radius, f, f_h).astype(self.dtype, copy=False)
            g = 1.0 if basis.g is None else basis.g
            self._load(basis.flat_index, w * (g + basis.hx))
            self._accumulate(first=True)
            t = basis.hz - 1j * basis.hy
            np.multiply(t, w, out=t)  # the operand order of _load_planes
            self._load(basis.flat_index, t)
            self._accumulate(first=False)
        np.sqrt(self.acc, out=self.acc)
        if taper is not None:
            self.acc *= taper
        if not band:
            return self.acc if scratch else self.acc.copy()
        out = self._low_pass(f, f_l, nan_at_zero_width)
        return out if scratch else out.copy()

    def _slab_ranges(self, taper: np.ndarray | None) -> list[tuple[int, int, int, int]]:
        """``(z0, z1, x0, x1)`` of the last-pass slabs: z-planes of about 256 KiB, and the
        columns ``x0 <= x < x1`` where ``taper`` is not zero on some line along y (the rest
        of the slab is 0 after the taper and is not transformed)."""
        if self._ranges is not None and self._ranges[0] is taper:
            return self._ranges[1]
        nz, ny, nx = self.shape
        plane = ny * nx * self.cdtype.itemsize
        nb = int(max(1, min(nz, self.SLAB_BYTES // plane)))
        if taper is None:
            lines = None
        elif hasattr(taper, "column_support"):
            lines = taper.column_support()
        else:
            lines = np.any(taper != 0, axis=1)  # (nz, nx)
        ranges = []
        for z0 in range(0, nz, nb):
            z1 = min(z0 + nb, nz)
            if lines is None:
                x0, x1 = 0, nx
            else:
                cols = np.flatnonzero(lines[z0:z1].any(axis=0))
                x0, x1 = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 0)
            ranges.append((z0, z1, x0, x1))
        self._ranges = (taper, ranges)
        return ranges

    def column_support(self, taper: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` per z-plane: the columns ``lo <= x < hi`` the last pass reads on that
        plane (those of its slab, :meth:`_slab_ranges`)."""
        ranges = self._slab_ranges(taper)
        if self._support is None or self._support[0] is not ranges:
            lo = np.zeros(self.shape[0], dtype=np.int64)
            hi = np.zeros(self.shape[0], dtype=np.int64)
            for z0, z1, x0, x1 in ranges:
                lo[z0:z1], hi[z0:z1] = x0, x1
            self._support = (ranges, (lo, hi))
        return self._support[1]

    def last_pass_amplitude(
        self,
        t: np.ndarray,
        axis: int,
        taper: np.ndarray | None,
        *,
        fused: bool = False,
        rows: np.ndarray | None = None,
        k_max: int | None = None,
    ):
        """``acc = taper * sqrt(|F t[0]|^2 + |F t[1]|^2)``, ``F`` the inverse FFT along y.

        ``t`` is a pair of partial transforms from :meth:`partials`. Done in slabs of z-planes
        of about 256 KiB: a slab of the pair is copied into a small padded input buffer and
        transformed out of place into an output buffer of the same layout, where the fused
        squares, root and taper (:func:`monodir.core.kernels.tapered_amplitude`) read it from
        cache. Columns where the taper vanishes on every line are not transformed. (The
        out-of-place plan between the two buffers is ~20 % faster than the in-place one; a
        plan reading ``t`` directly is slower.)

        ``rows``: boolean ``(ny,)``, the rows along y of ``t`` that may be non-zero (the
        others are exactly 0, e.g. the frequencies a cone never reaches); only those are
        copied. The input buffer keeps its zero rows from one call to the next, so the
        transform reads the same values as with a full copy.

        ``fused=True``: the amplitude never makes a volume. It goes into a buffer of a few
        planes, and each group of planes is transformed along x straight into the low-pass's
        half spectrum (the first pass of :meth:`_low_pass`, which is then called with
        ``forward_done=True``): the same bits, one volume less per worker. The groups hold an
        even number of planes on an even grid (see
        :meth:`monodir.core.fourier.PrunedLowPass.forward_group`). With ``k_max`` (the
        low-pass's, :meth:`low_pass_k_max`) the groups are also transformed along y while
        their planes are in cache (``_low_pass(..., y_done=True)`` then), a few groups at a
        time when there are more than :attr:`Y_GROUPS` (each pass along y keeps a plan per
        tested frequency: ~4.5 KiB each): the same bits, ~2 % less time per direction with
        two processes on two cores (betagal).
        """
        if axis != 1:
            raise ValueError("the last pass runs along y")
        ny, nx = self.shape[1], self.shape[2]
        ranges = self._slab_ranges(taper)
        if self._slab is None:
            nb = max(z1 - z0 for z0, z1, _, _ in ranges)
            # both signals in one padded buffer: one plan transforms the pair
            self._slab = fourier.aligned_empty((2, nb, ny + 1, nx + 8), self.cdtype)
            self._slab_in = fourier.aligned_empty(self._slab.shape, self.cdtype)
            self._slab_in.fill(0)
            self._slab_rows = np.zeros(ny, dtype=bool)
        runs = self._copied_rows(rows)
        nz = self.shape[0]
        if fused:
            nb = ranges[0][1] - ranges[0][0]  # every slab but the last has nb planes
            group = nb if nb % 2 == 0 or nz % 2 == 1 else 2 * nb
            out = self._lp.group_buffer(group)
            # planes per pass along y: whole groups, at most Y_GROUPS passes
            groups = -(-nz // group)
            y_planes = group * -(-groups // self.Y_GROUPS)
        else:
            out = self.acc
        g0 = 0  # first plane of the current group
        y0 = 0  # first plane not yet transformed along y
        for z0, z1, x0, x1 in ranges:
            nb, width = z1 - z0, x1 - x0
            if width:
                src = self._slab_in[:, :nb, :ny, :width]
                plan = self._slab_plans.get((nb, width))
                if plan is None:
                    plan = self._slab_plans[(nb, width)] = fourier.AxisInverse(
                        src, self._slab[:, :nb, :ny, :width], 2, self.threads
                    )
                for r0, r1 in runs:
                    np.copyto(src[:, :, r0:r1], t[:, z0:z1, r0:r1, x0:x1])
                plan.run()
            if not fused:
                kernels.tapered_amplitude(self._slab, nb, width, taper, out, z0, x0)
                continue
            kernels.tapered_amplitude(self._slab, nb, width, taper, out, z0, x0, out_z0=z0 - g0)
            if z1 - g0 == out.shape[0] or z1 == nz:
                self._lp.forward_group(g0, z1 - g0)
                g0 = z1
                if k_max is not None and (z1 - y0 >= y_planes or z1 == nz):
                    self._lp.forward_y(y0, z1 - y0, k_max)
                    y0 = z1

    def _copied_rows(self, rows: np.ndarray | None) -> list[tuple[int, int]]:
        """Runs ``(r0, r1)`` of the rows the last pass copies; rows of the input slab that a
        previous call filled and this one does not copy are zeroed first."""
        ny = self.shape[1]
        rows = np.ones(ny, dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
        if self._row_runs is not None and np.array_equal(rows, self._slab_rows):
            return self._row_runs  # the same rows as the last call (most steps of a sweep)
        stale = np.flatnonzero(self._slab_rows & ~rows)
        if stale.size:
            self._slab_in[:, :, stale] = 0
        self._slab_rows = rows.copy()
        edges = np.flatnonzero(np.diff(rows, prepend=False, append=False))
        self._row_runs = list(zip(edges[0::2].tolist(), edges[1::2].tolist()))
        return self._row_runs


_local = threading.local()


def workspace_for(shape: tuple[int, int, int], dtype: type, threads: int = 1) -> AmplitudeWorkspace:
    """This thread's workspace for a grid (kept between calls: plans and buffers are reused).

    One workspace is kept per thread; asking for another grid replaces it.
    """
    key = (tuple(shape), np.dtype(dtype).str, int(threads))
    cached = getattr(_local, "workspace", None)
    if cached is None or cached[0] != key:
        _local.workspace = None  # free the old buffers before allocating new ones
        cached = _local.workspace = (key, AmplitudeWorkspace(shape, dtype, threads))
    return cached[1]


def release_workspace() -> None:
    """Free this thread's workspace (:func:`workspace_for`), e.g. once its directions are done."""
    _local.workspace = None


class ShellSweep:
    """Monogenic amplitudes of one sparse basis at increasing frequencies, shell by shell.

    Between two tested frequencies of a sweep the high-pass filter changes only on a thin shell
    of radii. The two packed inverse transforms are therefore carried from one frequency to
    the next as partial transforms (first two passes done, :class:`fourier.PartialInverse`),
    and each step adds the pruned partial transform of the shell where the filter changed;
    only the last pass (:class:`fourier.AxisInverse`), the root and the low-pass run on the
    whole grid. The result equals :meth:`AmplitudeWorkspace.amplitude` up to rounding.

    Any sequence of frequencies gives the right amplitudes; a step costs in proportion to the
    coefficients whose filter changed, which is small for the increasing sweeps of
    algorithm.md 1.3 and 2.5.

    Parameters
    ----------
    basis
        Sparse basis (``flat_index`` set), e.g. a directional cone.
    ws
        Workspace of the grid; its accumulators of ``slot`` are taken over (and zeroed).
    slot
        Which accumulator pair to use (one per sweep alive at the same time).
    """

    def __init__(self, basis: SpectralBasis, ws: AmplitudeWorkspace, slot: int = 0):
        if basis.flat_index is None:
            raise ValueError("ShellSweep needs a sparse basis (flat_index)")
        self.ws = ws
        self.radius = basis.radius  # the sweep keeps only what it needs of the basis
        index_type = np.int16 if max(ws.shape) <= np.iinfo(np.int16).max else np.int32
        self.k = tuple(a.astype(index_type) for a in np.unravel_index(basis.flat_index, ws.shape))
        g = 1.0 if basis.g is None else basis.g
        self.c1 = (basis.spectrum * (g + basis.hx)).astype(ws.cdtype, copy=False)
        self.c2 = (basis.spectrum * (basis.hz - 1j * basis.hy)).astype(ws.cdtype, copy=False)
        self.axes = fourier.pruning_axes(self.k, ws.shape, last=(1,))
        # coefficients sorted once by (plane, line) of the pruned inverse: every shell is
        # then a sorted subset, and PartialInverse.add need not sort it again
        _, a2, a3 = self.axes
        key_type = np.int32 if ws.shape[a3] * ws.shape[a2] < 2**31 else np.int64
        key = self.k[a3].astype(key_type) * key_type(ws.shape[a2]) + self.k[a2]
        order = np.argsort(key, kind="stable")
        self.key = key[order]
        del key
        self.k = tuple(a[order] for a in self.k)
        self.c1, self.c2 = self.c1[order], self.c2[order]
        self.radius = self.radius[order]
        del order
        # not zeroed here: the last pass reads only the planes a step has written (rows)
        self.t = ws.partials(slot, zero=False)
        #: the planes of ``t`` (along its last-pass axis) that may be non-zero
        self.rows = np.zeros(ws.shape[self.axes[2]], dtype=bool)
        self.weights: np.ndarray | None = None

    def amplitude(
        self,
        f: float,
        f_h: float,
        f_l: float,
        *,
        taper: np.ndarray | None = None,
        nan_at_zero_width: bool = False,
        scratch: bool = False,
        samples: LineSamples | None = None,
    ) -> np.ndarray | list[np.ndarray]:
        """Monogenic amplitude at frequency ``f`` (as :meth:`AmplitudeWorkspace.amplitude`).

        With ``samples``, only its values at those voxels (one array per index array of
        ``samples``, overwritten by the next call with the same ``samples``): the last
        low-pass pass then runs only on the lines holding them.
        """
        ws = self.ws
        w = high_pass(self.radius, f, f_h).astype(ws.dtype, copy=False)
        delta = w if self.weights is None else w - self.weights
        first = self.weights is None
        self.weights = w
        sel = np.flatnonzero(delta)
        if sel.size:
            d = delta[sel]
            values = [self.c1[sel], self.c2[sel]]
            for v in values:  # d * c, written over the gathered c (one temporary less)
                np.multiply(d, v, out=v)
            del d
            # with the sorted key, add() reads only the indices along the first axis
            a1 = self.axes[0]
            k = tuple(a[sel] if j == a1 else a[:0] for j, a in enumerate(self.k))
            ws.partial_inverse.add(
                list(self.t),
                k,
                values,
                self.axes,
                assign=first,  # the accumulators start from nothing: write, not add
                key=self.key[sel],
                support=ws.column_support(taper),  # the last pass reads nothing else
            )
        # the planes of t written so far; the last pass reads no other (so t needs no
        # zeroing when a first step has nothing to write)
        if first:
            self.rows[:] = False
        if sel.size:
            self.rows[self.key[sel] // ws.shape[self.axes[1]]] = True
        # sampled: the amplitude goes group by group into the low-pass (no volume of it),
        # along x and y while each group is in cache
        fused = samples is not None
        k_max = ws.low_pass_k_max(f_l) if fused else None
        ws.last_pass_amplitude(
            self.t, self.axes[2], taper, fused=fused, rows=self.rows, k_max=k_max
        )
        if fused:
            return ws._low_pass(f, f_l, nan_at_zero_width, samples, forward_done=True, y_done=True)
        out = ws._low_pass(f, f_l, nan_at_zero_width)
        return out if scratch else out.copy()
