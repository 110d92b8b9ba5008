"""Fused elementwise kernels of the directional inner loop.

Compiled with numba when it is importable; otherwise (or with ``MONODIR_NO_NUMBA=1``) the same
arithmetic runs as NumPy array operations. Both evaluate every element with the same float
operations in the same order, so their results are bit-identical (``tests/test_kernels.py``);
numba only saves the passes over memory that NumPy needs for each operation.
"""

from __future__ import annotations

import os

import numpy as np

try:  # pragma: no cover - exercised implicitly when numba is installed
    if os.environ.get("MONODIR_NO_NUMBA"):
        raise ImportError("disabled by MONODIR_NO_NUMBA")
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    numba = None
    HAVE_NUMBA = False


def _jit(**options):
    """``numba.njit`` (no GIL held) with the compiled code cached on disk where numba finds a
    writable place (next to this file, or its user cache dir / ``NUMBA_CACHE_DIR``); without
    one, compiled in memory at the first call of each process."""

    def wrap(fn):
        try:
            return numba.njit(cache=True, nogil=True, **options)(fn)
        except RuntimeError:  # pragma: no cover - no writable cache location
            return numba.njit(cache=False, nogil=True, **options)(fn)

    return wrap


_NO_RUNS = np.zeros((1, 1, 4), dtype=np.int32)


def _tapered_amplitude_numpy(
    pair: np.ndarray,
    nb: int,
    width: int,
    taper_slab: np.ndarray | None,
    out: np.ndarray,
    oz: int,
    x0: int,
) -> None:
    ny, nx = out.shape[1], out.shape[2]
    z1, x1 = oz + nb, x0 + width
    dest = out[oz:z1, :, x0:x1]
    parts = [pair[b, :nb, :ny, :width] for b in (0, 1)]
    re0, im0, re1, im1 = parts[0].real, parts[0].imag, parts[1].real, parts[1].imag
    np.multiply(re0, re0, out=dest)
    dest += im0 * im0
    dest += re1 * re1
    dest += im1 * im1
    np.sqrt(dest, out=dest)
    if taper_slab is not None:
        dest *= taper_slab
    out[oz:z1, :, :x0] = 0
    out[oz:z1, :, x1:nx] = 0


if HAVE_NUMBA:  # pragma: no branch

    @_jit()
    def _radial_amplitude_numba(
        pair, nb, width, table, lo, centre, runs, tapered, out, z0, x0, oz
    ):  # pragma: no cover
        ny, nx = out.shape[1], out.shape[2]
        cz, cy, cx = centre
        for j in range(nb):
            z = z0 + j
            for y in range(ny):
                a = pair[0, j, y]
                b = pair[1, j, y]
                o = out[oz + j, y]
                # columns (from x0) where the taper is not 0: [oa, ob); where it is 1: [ia, ib)
                if tapered:
                    oa = min(max(runs[z, y, 0] - x0, 0), width)
                    ob = min(max(runs[z, y, 1] - x0, oa), width)
                    ia = min(max(runs[z, y, 2] - x0, oa), ob)
                    ib = min(max(runs[z, y, 3] - x0, ia), ob)
                else:
                    oa, ob, ia, ib = 0, width, 0, width
                for x in range(x0):
                    o[x] = 0.0
                if ob > oa:
                    # no branch: vectorised over the whole row. The indices are made
                    # unsigned: a signed ``x0 + i`` may be negative as far as the compiler
                    # knows, and its wrap-around check halved the loop's speed
                    for i in range(width):
                        p = a[i]
                        q = b[i]
                        s = p.real * p.real + p.imag * p.imag
                        s = s + q.real * q.real
                        s = s + q.imag * q.imag
                        o[np.uint64(x0 + i)] = np.sqrt(s)
                for x in range(x0, x0 + oa):
                    o[x] = 0.0
                for x in range(x0 + ob, nx):
                    o[x] = 0.0
                # the ramp lo <= r2 <= hi: times the table
                base = (z - cz) * (z - cz) + (y - cy) * (y - cy) - lo
                for i in range(oa, ia):
                    dx = x0 + i - cx
                    k = np.uint64(x0 + i)
                    o[k] = o[k] * table[np.uint64(base + dx * dx)]
                for i in range(ib, ob):
                    dx = x0 + i - cx
                    k = np.uint64(x0 + i)
                    o[k] = o[k] * table[np.uint64(base + dx * dx)]


def tapered_amplitude(
    pair: np.ndarray,
    nb: int,
    width: int,
    taper: np.ndarray | None,
    out: np.ndarray,
    z0: int,
    x0: int,
    out_z0: int | None = None,
) -> None:
    """Amplitude of a slab of two complex signals, tapered, written into a volume.

    ``out[oz+j, y, x0+i] = taper[z0+j, y, x0+i] * sqrt(|P0|^2 + |P1|^2)`` with
    ``Pb = pair[b, j, y, i]`` for ``j < nb``, ``i < width`` (every ``y``), summed in the order
    ``((re0^2 + im0^2) + re1^2) + im1^2``; the rest of those rows of ``out`` is set to 0.
    ``oz = out_z0`` (default ``z0``): ``out`` may hold only some planes of the grid.
    The compiled radial path writes 0 where the taper is 0 instead of multiplying (the same
    for the finite amplitudes a map gives) and multiplies only on the taper's ramp.

    Parameters
    ----------
    pair
        C-contiguous ``(2, >=nb, >=ny, >=width)`` complex buffer (a padded slab buffer).
    nb, width
        Planes and columns of ``pair`` in use.
    taper
        A radial taper (:class:`monodir.core.directional.RadialTaper`: evaluated on the fly,
        compiled), ``None``, or a real volume like ``out`` (NumPy path).
    out
        C-contiguous real array ``(>= oz + nb, ny, nx)``: the volume, or a group of planes.
    z0, x0
        Where the slab starts in the grid (and along x in ``out``).
    out_z0
        Plane of ``out`` that receives the slab's first plane (default ``z0``).
    """
    oz = z0 if out_z0 is None else int(out_z0)
    radial = taper is not None and not isinstance(taper, np.ndarray)
    compiled = HAVE_NUMBA and pair.flags.c_contiguous and out.flags.c_contiguous
    if compiled and (radial or taper is None):
        if taper is None:  # no taper: the whole row, unchanged
            table, lo, centre, runs = np.ones(1, out.dtype), 0, (0, 0, 0), _NO_RUNS
        else:
            table = taper.table.astype(out.dtype, copy=False)
            lo, centre = int(taper.lo), tuple(int(c) for c in taper.centre)
            runs = taper.row_runs()
        _radial_amplitude_numba(
            pair, nb, width, table, lo, centre, runs, taper is not None, out, z0, x0, oz
        )
        return
    if taper is None:
        taper_slab = None
    elif radial:
        taper_slab = taper.block(z0, z0 + nb, x0, x0 + width)
    else:
        taper_slab = taper[z0 : z0 + nb, :, x0 : x0 + width]
    _tapered_amplitude_numpy(pair, nb, width, taper_slab, out, oz, x0)


if HAVE_NUMBA:  # pragma: no branch

    @_jit(error_model="numpy")
    def _outliers_numba(res, pi, pj, dots, z, sum_le_one):  # pragma: no cover
        nb, n_dir = res.shape  # voxel-major: one voxel's directions are contiguous
        n_pairs = pi.size
        sum_i = np.empty(n_dir)
        cnt_i = np.empty(n_dir, dtype=np.int64)
        for v in range(nb):
            r = res[v]
            sum_i[:] = 0.0
            cnt_i[:] = 0
            total = 0.0
            total2 = 0.0
            cnt = 0
            for p in range(n_pairs):  # per-direction sums in pair order
                ri = r[pi[p]]
                rj = r[pj[p]]
                if ri > 0 and rj > 0:
                    e2 = ri * ri + rj * rj - 2.0 * ri * rj * dots[p]
                    if e2 < 0.0:
                        e2 = 0.0
                    ev = np.sqrt(e2)
                    cnt += 1
                    cnt_i[pi[p]] += 1
                else:
                    ev = 0.0
                sum_i[pi[p]] += ev
                total += ev
                total2 += ev * ev
            mean = total / cnt
            var = total2 / cnt - mean * mean
            if var < 0.0:
                var = 0.0
            cut = mean + z * np.sqrt(var)
            for d in range(n_dir):
                s = sum_i[d]
                b = s > 0 and s / cnt_i[d] > cut
                if sum_le_one and s > 0 and s <= 1.0:
                    b = True
                if b and r[d] > 0:
                    r[d] = -1.0


def remove_outliers_inplace(
    res: np.ndarray,
    pair_i: np.ndarray,
    pair_j: np.ndarray,
    dots: np.ndarray,
    z: float,
    sum_le_one: bool,
) -> bool:
    """The per-voxel loop of :func:`monodir.core.summaries.remove_outliers`, compiled.

    ``res`` is ``(D, nb)`` float64 (invalid entries already ``-1``) and is modified in place;
    each direction's sum runs in pair order, as in the NumPy version. Returns
    ``False`` (and does nothing) when numba is not available, so the caller runs its NumPy
    version, which does the same float operations in the same order.
    """
    if not HAVE_NUMBA:
        return False
    voxel_major = np.ascontiguousarray(res.T)
    outliers_voxel_major(voxel_major, pair_i, pair_j, dots, z, sum_le_one)
    res[...] = voxel_major.T
    return True


def outliers_voxel_major(
    vm: np.ndarray,
    pair_i: np.ndarray,
    pair_j: np.ndarray,
    dots: np.ndarray,
    z: float,
    sum_le_one: bool,
) -> None:
    """:func:`remove_outliers_inplace` on voxel-major ``(nb, D)`` float64 resolutions (numba
    only)."""
    _outliers_numba(
        vm,
        np.ascontiguousarray(pair_i, dtype=np.int64),
        np.ascontiguousarray(pair_j, dtype=np.int64),
        np.ascontiguousarray(dots, dtype=np.float64),
        float(z),
        bool(sum_le_one),
    )


if HAVE_NUMBA:  # pragma: no branch

    @_jit()
    def _first_at_least(s, fx, real, limit, strict):  # pragma: no cover
        """First ``c`` with ``r(c) >= limit`` (``> limit`` if ``strict``); ``r`` grows with
        ``c`` (``fx >= 0`` increasing), so a binary search finds it."""
        lo, hi = 0, fx.size
        while lo < hi:
            mid = (lo + hi) // 2
            r = real(np.sqrt(s + fx[mid] * fx[mid]))
            if r > limit or (not strict and r == limit):
                hi = mid
            else:
                lo = mid + 1
        return lo

    @_jit()
    def _radial_filter_numba(
        block, fz, fy, fx, f, f_l, scale, pos, ramp_r, start
    ):  # pragma: no cover
        """Filter the rows of ``block`` from flat row ``start`` on, until the ramp entries of
        the next row would not fit in ``pos``/``ramp_r``; returns (entries, next row)."""
        nz, ny, nx = block.shape
        real = ramp_r.dtype.type
        zero = real(0.0)
        capacity = ramp_r.size
        count = 0
        for row in range(start, nz * ny):
            a = row // ny
            b = row - a * ny
            s = fz[a] * fz[a] + fy[b] * fy[b]
            c1 = _first_at_least(s, fx, real, f, False)  # r < f before c1
            c2 = _first_at_least(s, fx, real, f_l, True)  # r <= f_l before c2
            if c2 < c1:
                c2 = c1
            if count + (c2 - c1) > capacity:
                return count, row
            line = block[a, b]
            for c in range(c1):
                line[c] = line[c] * scale
            for c in range(c1, c2):  # the ramp: its values are computed by the caller
                pos[count, 0] = a
                pos[count, 1] = b
                pos[count, 2] = c
                ramp_r[count] = real(np.sqrt(s + fx[c] * fx[c]))
                count += 1
            for c in range(c2, nx):
                k = np.uint64(c)  # unsigned: no wrap-around check (see the amplitude kernel)
                line[k] = line[k] * zero
        return count, nz * ny

    @_jit()
    def _scale_at_numba(block, pos, values, count):  # pragma: no cover
        for k in range(count):
            a, b, c = pos[k, 0], pos[k, 1], pos[k, 2]
            block[a, b, c] = block[a, b, c] * values[k]


class RadialLowPass:
    """Multiply blocks of a half spectrum by a raised-cosine low-pass of ``|u|`` (times a
    scale), computing ``|u|`` on the fly.

    ``ramp(r)`` gives the filter on the ramp ``f <= r <= f_l`` (it is called on the few
    coefficients there, so the caller's own NumPy formula, and its rounding, is used); below
    ``f`` the filter is 1, above ``f_l`` 0. ``|u|`` is ``sqrt(fz^2 + fy^2 + fx^2)`` in float64,
    rounded to the working precision, as :func:`monodir.core.fourier.half_grid` gives it. The
    result equals multiplying by ``scale * low_pass(r)`` computed with NumPy, bit for bit.
    """

    def __init__(self, real_dtype: np.dtype, capacity: int = 1 << 16):
        self.dtype = np.dtype(real_dtype)
        self.capacity = int(capacity)
        self._pos = np.empty((0, 3), dtype=np.int32)
        self._r = np.empty(0, dtype=self.dtype)

    def apply(self, block, fz, fy, fx, f: float, f_l: float, scale, ramp) -> bool:
        """Filter ``block`` in place; ``False`` (nothing done) without numba.

        The rows are filtered in order; the ramp entries are collected until ``capacity``
        of them (at least one row's worth) are waiting, then ``ramp`` is called on them
        all at once: a call or two per block at 100^3.
        """
        if not HAVE_NUMBA:
            return False
        size = max(self.capacity, block.shape[2])
        if self._r.size != size:
            self._pos = np.empty((size, 3), dtype=np.int32)
            self._r = np.empty(size, dtype=self.dtype)
        t = self.dtype.type
        # NumPy compares a float32 array with a Python float in float32 (NEP 50): same here
        row, rows = 0, block.shape[0] * block.shape[1]
        while row < rows:
            count, row = _radial_filter_numba(
                block, fz, fy, fx, t(f), t(f_l), t(scale), self._pos, self._r, row
            )
            if count:
                values = ramp(self._r[:count])
                values *= t(scale)
                _scale_at_numba(block, self._pos, values, count)
        return True


if HAVE_NUMBA:  # pragma: no branch

    @_jit()
    def _update_states_numba(values, st, res, thr, resolution, r_two_back):  # pragma: no cover
        active = 0
        for v in range(st.size):
            if st[v] > 0:
                if values[v] > thr:
                    st[v] = 1
                    res[v] = resolution
                else:
                    st[v] += 1
                    if st[v] > 2:
                        st[v] = 0
                        res[v] = r_two_back
                if st[v] > 0:
                    active += 1
        return active


def update_states(
    values: np.ndarray,
    st: np.ndarray,
    res: np.ndarray,
    thr: float,
    resolution: float,
    r_two_back: float,
) -> int:
    """One step of the per-voxel state machine (algorithm.md 1.6 and 2.8), in place.

    ``values`` holds the amplitude at each mask voxel. Active voxels (``st > 0``) whose
    amplitude exceeds ``thr`` take ``resolution`` and state 1; the others count a failure,
    and at the third in a row finish (state 0) with ``r_two_back``. Returns how many voxels
    are still active.
    """
    if HAVE_NUMBA:
        return int(
            _update_states_numba(
                np.ascontiguousarray(values),
                st,
                res,
                float(thr),
                float(resolution),
                float(r_two_back),
            )
        )
    active = st > 0
    ok = values > thr
    passed = active & ok
    failed = active & ~ok
    st[passed] = 1
    res[passed] = resolution
    st[failed] += 1
    done = failed & (st > 2)
    st[done] = 0
    res[done] = r_two_back
    return int(np.count_nonzero(st > 0))


def store_planes(
    target: np.ndarray,
    planes: np.ndarray,
    slab: np.ndarray,
    *,
    assign: bool,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
) -> None:
    """``target[planes[j]] (+)= slab[j]`` for every ``j`` (``assign``: write instead of add).

    ``target`` is a (strided) 3D view whose first axis is the plane; each 2D plane is walked
    in the order of its memory layout. ``lo``, ``hi`` (optional, one entry per line of a
    plane along its axis of larger stride): only ``[lo[i], hi[i])`` of line ``i`` along the
    other, contiguous axis is written (what a reader never reads is left as it was).
    """
    planes = np.asarray(planes, dtype=np.int64)
    rows = abs(target.strides[2]) <= abs(target.strides[1])
    n_lines, n_along = (target.shape[1], target.shape[2]) if rows else target.shape[2:0:-1]
    if lo is None:
        lo = np.zeros(n_lines, dtype=np.int64)
        hi = np.full(n_lines, n_along, dtype=np.int64)
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    if lo.shape != (n_lines,) or hi.shape != (n_lines,):
        raise ValueError(f"lo and hi need {n_lines} entries, one per line")
    if HAVE_NUMBA:  # clamps each line's range itself (no clipped copies per call)
        _store_planes_numba(target, planes, slab, bool(assign), lo, hi)
        return
    lo = np.clip(lo, 0, n_along)
    hi = np.clip(hi, lo, n_along)
    along = np.arange(n_along)
    keep = (along >= lo[:, None]) & (along < hi[:, None])
    keep = keep if rows else keep.T
    for j, p in enumerate(planes.tolist()):
        if assign:
            np.copyto(target[p], slab[j], where=keep)
        else:
            np.add(target[p], slab[j], out=target[p], where=keep)


if HAVE_NUMBA:  # pragma: no branch

    @_jit()
    def _store_planes_numba(target, planes, slab, assign, lo, hi):  # pragma: no cover
        n2, n1 = target.shape[1], target.shape[2]
        rows = abs(target.strides[2]) <= abs(target.strides[1])
        n_along = n1 if rows else n2
        a = np.empty(lo.size, dtype=np.int64)  # lo and hi clamped to [0, n_along]
        b = np.empty(lo.size, dtype=np.int64)
        for i in range(lo.size):
            a[i] = min(max(lo[i], 0), n_along)
            b[i] = min(max(hi[i], a[i]), n_along)
        for j in range(planes.size):
            dst = target[planes[j]]
            src = slab[j]
            if rows:
                for u in range(n2):
                    d = dst[u]
                    s = src[u]
                    if assign:
                        for v in range(a[u], b[u]):
                            d[v] = s[v]
                    else:
                        for v in range(a[u], b[u]):
                            d[v] += s[v]
            else:
                for v in range(n1):
                    for u in range(a[v], b[v]):
                        if assign:
                            dst[u, v] = src[u, v]
                        else:
                            dst[u, v] += src[u, v]


def gather_lines(h: np.ndarray, z: np.ndarray, y: np.ndarray, stop: int, out: np.ndarray) -> None:
    """``out[j, :stop] = h[z[j], y[j], :stop]`` and ``out[j, stop:] = 0`` for ``j < len(z)``:
    lines of a (padded) 3D array copied into the rows of a transform buffer."""
    if HAVE_NUMBA:
        _gather_lines_numba(h, z, y, stop, out)
        return
    n = z.size
    out[:n, :stop] = h[z, y, :stop]
    out[:n, stop:] = 0


if HAVE_NUMBA:  # pragma: no branch

    @_jit()
    def _gather_lines_numba(h, z, y, stop, out):  # pragma: no cover
        width = out.shape[1]
        for j in range(z.size):
            src = h[z[j], y[j]]
            row = out[j]
            for i in range(stop):
                row[i] = src[i]
            for i in range(stop, width):
                row[i] = 0


# ------------------------------------------------------------------ angle classification
# Both kernels below decide "angle <op> limit" from the cosine as
# monodir.core.directions.compare_angle does, and leave the elements within 1e-9 of the
# limit (code 2) to the caller, which evaluates the angle itself with NumPy's arccos.

if HAVE_NUMBA:  # pragma: no branch

    @_jit(error_model="numpy")
    def _cone_half_numba(fz, fy, fx, d0, d1, d2, cos_limit, out):  # pragma: no cover
        lim_in = cos_limit + 1e-9
        row = np.empty(fx.size)
        n_near = 0
        for a in range(fz.size):
            for b in range(fy.size):
                s = fz[a] * fz[a] + fy[b] * fy[b]
                for c in range(fx.size):  # no branch: vectorised (u = 0 gives NaN: code 0)
                    r = np.sqrt(s + fx[c] * fx[c])
                    row[c] = abs(fx[c] * d0 + fy[b] * d1 + fz[a] * d2) / r
                for c in range(fx.size):
                    cosang = min(row[c], 1.0)
                    code = 0
                    if abs(cosang - cos_limit) <= 1e-9:
                        code = 2
                        n_near += 1
                    elif cosang > lim_in:
                        code = 1
                    out[a, b, c] = code
        return n_near

    @_jit()
    def _nonzero_except_numba(m, skip):  # pragma: no cover
        nz, ny, nx = m.shape
        keep = np.ones(nx, dtype=np.bool_)
        for c in skip:
            keep[c] = False
        n = 0
        for a in range(nz):
            for b in range(ny):
                row = m[a, b]
                for c in range(nx):
                    if row[c] != 0 and keep[c]:
                        n += 1
        kz = np.empty(n, dtype=np.int64)
        ky = np.empty(n, dtype=np.int64)
        kx = np.empty(n, dtype=np.int64)
        j = 0
        for a in range(nz):
            for b in range(ny):
                row = m[a, b]
                for c in range(nx):
                    if row[c] != 0 and keep[c]:
                        kz[j] = a
                        ky[j] = b
                        kx[j] = c
                        j += 1
        return kz, ky, kx

    @_jit()
    def _isqrt(v):  # pragma: no cover
        """Largest integer whose square is at most ``v >= 0``."""
        r = np.int64(np.sqrt(np.float64(v)))
        while r * r > v:
            r -= 1
        while (r + 1) * (r + 1) <= v:
            r += 1
        return r

    @_jit()
    def _noise_shell_numba(
        nz, ny, nx, r2_lo, r2_hi, cut, mask_idx, c0, c1, c2, d0, d1, d2, cos_a, out, codes
    ):  # pragma: no cover
        neg = -cos_a
        lim_small = cos_a + 1e-9  # angle < 45 degrees: cosine above this
        lim_large = neg - 1e-9  # angle > 135 degrees: cosine below this
        hz, hy, hx = nz // 2, ny // 2, nx // 2
        # r2 <= cut for an integer r2 is r2 <= floor(cut); with r2 < hi: r2 <= top
        top = min(r2_hi - 1, np.int64(np.floor(cut))) if cut < 4e18 else r2_hi - 1
        m = 0
        n_mask = mask_idx.size
        k = 0
        capacity = out.size  # found beyond it: counted, not stored
        for z in range(nz):
            rz = (z - hz) * (z - hz)
            for y in range(ny):
                ryz = rz + (y - hy) * (y - hy)
                if ryz > top:  # no voxel of the line lies in the shell
                    continue
                # the line's voxels in the shell: lo - ryz < dx^2 <= top - ryz, i.e.
                # inner < |dx| <= outer (two runs, or one when the line crosses the hole)
                outer = _isqrt(top - ryz)
                inner = _isqrt(r2_lo - ryz) if r2_lo - ryz >= 0 else -1
                base = (z * ny + y) * nx
                for run in range(2):
                    if inner < 0:  # one run -outer..outer
                        if run == 1:
                            break
                        a, b = hx - outer, hx + outer
                    elif run == 0:
                        a, b = hx - outer, hx - inner - 1
                    else:
                        a, b = hx + inner + 1, hx + outer
                    a = max(a, 0)
                    b = min(b, nx - 1)
                    for x in range(a, b + 1):
                        p = base + x
                        while m < n_mask and mask_idx[m] < p:
                            m += 1
                        if m < n_mask and mask_idx[m] == p:  # a protein voxel
                            continue
                        # the cone test of the NumPy version, the same float64 operations
                        px = x - c0
                        py = y - c1
                        pz = z - c2
                        norm_p = np.sqrt(px * px + py * py + pz * pz)
                        cos_p = (px * d0 + py * d1 + pz * d2) / norm_p if norm_p != 0 else np.nan
                        code = 0
                        if cos_p >= -1.0 and cos_p <= 1.0:
                            if cos_p > lim_small or cos_p < lim_large:
                                code = 1
                        if abs(cos_p - cos_a) <= 1e-9 or abs(cos_p - neg) <= 1e-9:
                            code = 2
                        if code:
                            if k < capacity:
                                out[k] = p
                                codes[k] = code
                            k += 1
        return k


def cone_half_codes(fz, fy, fx, d, cos_limit: float) -> tuple[np.ndarray, int] | None:
    """Half-grid codes of the double cone about ``d``: 1 inside (angle of ``|u . d| / |u|``
    below the limit), 0 outside or ``u = 0``, 2 within 1e-9 of ``cos_limit`` (left to the
    caller), and how many got code 2; ``None`` without numba. Same float64 operations as
    :func:`monodir.core.directional._cone_half`."""
    if not HAVE_NUMBA:
        return None
    out = np.empty((fz.size, fy.size, fx.size), dtype=np.uint8)
    n_near = _cone_half_numba(
        np.ascontiguousarray(fz, dtype=np.float64),
        np.ascontiguousarray(fy, dtype=np.float64),
        np.ascontiguousarray(fx, dtype=np.float64),
        float(d[0]),
        float(d[1]),
        float(d[2]),
        float(cos_limit),
        out,
    )
    return out, int(n_near)


def nonzero_except_columns(
    m: np.ndarray, columns: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 3D boolean array with the last-axis indices ``columns`` left out
    (same indices, same C order); one compiled pass instead of a copy and a scan."""
    if HAVE_NUMBA and m.flags.c_contiguous:
        return _nonzero_except_numba(m.view(np.uint8), np.asarray(columns, dtype=np.int64))
    kept = m.copy()
    kept[:, :, columns] = False
    return np.nonzero(kept)


def noise_shell_cone(
    shape,
    shell: tuple[int, int, float],
    mask_idx: np.ndarray,
    centre,
    d,
    cos_a: float,
    expected: int = 0,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The noise candidates of a shell (``lo < r2 < hi``, ``r2 <= cut``, not in the sorted
    ``mask_idx``; ``r2`` from the voxel ``n // 2``) inside the real-space double cone about
    ``d``, in flat order, with a code each: 1 when the angle of ``p - centre`` to ``d`` is
    below 45 degrees or above 135 (``cos_a`` = cos 45), 2 within 1e-9 of either limit (left
    to the caller); the centre itself is out. Same float64 operations as
    :func:`monodir.core.directional.noise_indices`; made on the fly instead of from a stored
    array of candidates. ``expected`` sizes the output (one pass when it is large enough; a
    second, exact one otherwise). ``None`` without numba."""
    if not HAVE_NUMBA:
        return None
    lo, hi, cut = shell
    args = [int(a) for a in shape] + [int(lo), int(hi), float(cut), mask_idx]
    args += [float(centre[0]), float(centre[1]), float(centre[2])]
    args += [float(d[0]), float(d[1]), float(d[2]), float(cos_a)]
    index_type = np.int32 if int(np.prod(shape)) < 2**31 else np.int64
    size = max(int(expected), 0)
    while True:
        out = np.empty(size, dtype=index_type)
        codes = np.empty(size, dtype=np.uint8)
        count = _noise_shell_numba(*args, out, codes)
        if count <= size:
            return out[:count], codes[:count]
        size = count


# ------------------------------------------------------------------ per-voxel summaries

if HAVE_NUMBA:  # pragma: no branch

    @_jit(error_model="numpy")
    def _summaries_numba(
        vm, srt, dirs, px, py, pz, norm_p, c_rad, c_tan, tol, maps, resv_t, prefv_t, counts, near
    ):  # pragma: no cover
        nb, n_dir = vm.shape
        q = np.empty(4)
        tile = 64  # voxels per tile: the direction-major outputs are written tile-wise
        rbuf = np.empty((tile, n_dir))
        pbuf = np.empty((tile, n_dir))
        rad_in = c_rad + 1e-9
        tan_in = c_tan - 1e-9
        for v0 in range(0, nb, tile):
            v1 = min(v0 + tile, nb)
            for v in range(v0, v1):
                r = vm[v]
                n = 0
                for d in range(n_dir):
                    if r[d] > 0:
                        n += 1
                last = max(n - 1, 0)
                for t, p in enumerate((0.05, 0.95, 0.17, 0.83)):
                    q[t] = srt[v, min(np.int64(n * p), last)]
                if n == 0:
                    highest = lowest = doa = mean_doa = aniso = 0.0
                else:
                    highest, lowest = q[0], q[1]
                    doa = 0.5 * (q[3] - q[2])
                    mean_doa = 0.5 * (highest + lowest)
                    aniso = (q[3] - q[2]) / (q[3] + q[2])
                rsum = 0.0
                tsum = 0.0
                rcnt = 0
                tcnt = 0
                for d in range(n_dir):
                    ok = r[d] > 0
                    dot = dirs[d, 0] * px[v] + dirs[d, 1] * py[v] + dirs[d, 2] * pz[v]
                    cos_p = abs(dot) / norm_p[v]
                    in_range = cos_p >= -1.0 and cos_p <= 1.0
                    if abs(cos_p - c_rad) <= 1e-9 or abs(cos_p - c_tan) <= 1e-9:
                        near[v] = True  # decided by the caller with NumPy's arccos
                    if ok and in_range and cos_p > rad_in:
                        rsum += r[d]
                        rcnt += 1
                    if ok and in_range and cos_p < tan_in:
                        tsum += r[d]
                        tcnt += 1
                    rbuf[v - v0, d] = r[d] if ok else 0.0
                    if ok and abs(r[d] - highest) <= tol:
                        pbuf[v - v0, d] = r[d]
                        counts[0, d] += 1
                    else:
                        pbuf[v - v0, d] = 0.0
                    if ok:
                        counts[1, d] += 1
                maps[0, v] = highest
                maps[1, v] = lowest
                maps[2, v] = doa
                maps[3, v] = mean_doa
                maps[4, v] = aniso
                maps[5, v] = rsum / rcnt if rcnt > 0 else mean_doa
                maps[6, v] = tsum / tcnt if tcnt > 0 else mean_doa
            for d in range(n_dir):
                for v in range(v0, v1):
                    resv_t[d, v] = rbuf[v - v0, d]
                    prefv_t[d, v] = pbuf[v - v0, d]


def voxel_summary_maps(
    vm: np.ndarray,
    dirs: np.ndarray,
    pos: tuple[np.ndarray, np.ndarray, np.ndarray],
    norm_p: np.ndarray,
    cos_radial: float,
    cos_tangential: float,
    tolerance: float,
):
    """The per-voxel part of :func:`monodir.core.summaries.voxel_summaries` (default mode),
    compiled, on the voxel-major resolutions ``vm`` (``(nb, D)`` float64, outliers already
    set to -1); ``None`` without numba.

    Returns ``maps`` (rows: highest, lowest, doa, mean_doa, anisotropy, radial, azimuthal),
    ``resv`` and ``prefv`` (``(D, nb)``: valid values and preferred values, 0 elsewhere, for
    the caller's NumPy sums over voxels), ``counts`` (``(2, D)``: preferred, valid) and
    ``near`` (voxels with a cosine within 1e-9 of a radial/tangential limit, whose radial
    and azimuthal values the caller recomputes). Sorting, percentiles and the sums over
    directions follow the NumPy version's float operations and order.
    """
    if not HAVE_NUMBA:
        return None
    nb, n_dir = vm.shape
    maps = np.empty((7, nb))
    resv = np.empty((n_dir, nb))
    prefv = np.empty((n_dir, nb))
    counts = np.zeros((2, n_dir), dtype=np.int64)
    near = np.zeros(nb, dtype=bool)
    # each voxel's values sorted (invalid ones last, as +inf) by NumPy's vectorised sort
    srt = np.sort(np.where(vm > 0, vm, np.inf), axis=1)
    _summaries_numba(
        vm,
        srt,
        np.ascontiguousarray(dirs, dtype=np.float64),
        *(np.ascontiguousarray(p, dtype=np.float64) for p in pos),
        np.ascontiguousarray(norm_p, dtype=np.float64),
        float(cos_radial),
        float(cos_tangential),
        float(tolerance),
        maps,
        resv,
        prefv,
        counts,
        near,
    )
    return maps, resv, prefv, counts, near


if HAVE_NUMBA:  # pragma: no branch

    @_jit()
    def _radius_numba(az2, ay2, ax2, out):  # pragma: no cover
        for z in range(out.shape[0]):
            for y in range(out.shape[1]):
                s = az2[z] + ay2[y]
                o = out[z, y]
                for x in range(out.shape[2]):
                    o[x] = np.sqrt(s + ax2[x])

else:  # pragma: no cover
    _radius_numba = None


def grid_radius(az2: np.ndarray, ay2: np.ndarray, ax2: np.ndarray, dtype) -> np.ndarray:
    """``sqrt((az2[z] + ay2[y]) + ax2[x])`` on the grid, rounded to ``dtype`` (float64
    arithmetic; the same bits as NumPy's broadcast expression and cast)."""
    out = np.empty((az2.size, ay2.size, ax2.size), dtype=dtype)
    if HAVE_NUMBA:
        _radius_numba(az2, ay2, ax2, out)
    else:
        out[...] = np.sqrt(az2[:, None, None] + ay2[None, :, None] + ax2[None, None, :])
    return out


if HAVE_NUMBA:  # pragma: no branch

    @_jit()
    def _riesz_numba(fz, fy, fx, az, ay, ax, comps, out):  # pragma: no cover
        inv = np.empty(fx.size)
        fx2 = fx * fx
        for a in range(fz.size):
            for b in range(fy.size):
                s = fz[a] * fz[a] + fy[b] * fy[b]
                for c in range(fx.size):  # branch-free: vectorised
                    r = np.sqrt(s + fx2[c])
                    q = 1.0 / (r if r > 0 else 1.0)
                    inv[c] = q if r > 0 else 0.0
                for j in range(comps.size):
                    o = out[j, a, b]
                    if comps[j] == 0:
                        for c in range(fx.size):
                            o[c] = ax[c] * inv[c]
                    else:
                        f = ay[b] if comps[j] == 1 else az[a]
                        for c in range(fx.size):
                            o[c] = f * inv[c]

else:  # pragma: no cover
    _riesz_numba = None


def riesz_planes(
    fz: np.ndarray,
    fy: np.ndarray,
    fx: np.ndarray,
    numerators: tuple[np.ndarray, np.ndarray, np.ndarray],
    comps: tuple[int, ...],
    dtype,
) -> np.ndarray:
    """Riesz factors ``f_a / |u|`` (0 at DC) on the grid ``fz x fy x fx``, in float64 and
    rounded to ``dtype``: ``out[j]`` for the axis ``comps[j]`` (0: x, 1: y, 2: z).

    ``numerators`` are ``(ax, ay, az)``, the frequencies above with the entries that must give
    0 (Nyquist) zeroed. The same operations as
    :func:`monodir.core.monogenic.riesz_factors_half`, bit for bit.
    """
    ax, ay, az = numerators
    out = np.empty((len(comps), fz.size, fy.size, fx.size), dtype=dtype)
    if HAVE_NUMBA:
        _riesz_numba(fz, fy, fx, az, ay, ax, np.asarray(comps, dtype=np.int64), out)
        return out
    r = np.sqrt(
        fz[:, None, None] * fz[:, None, None]
        + fy[None, :, None] * fy[None, :, None]
        + fx[None, None, :] * fx[None, None, :]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(r > 0, 1.0 / np.where(r > 0, r, 1.0), 0.0)
    grids = (ax[None, None, :], ay[None, :, None], az[:, None, None])
    for j, k in enumerate(comps):
        out[j] = grids[k] * inv
    return out
