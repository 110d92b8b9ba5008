"""Pruned transforms and the shell-by-shell directional sweep equal their dense definitions.

Ground truth is NumPy's own FFT on the full grid (complex128), evaluated straight from the
definitions of algorithm.md 0.1 and 2.6: nothing here compares monodir with itself.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from monodir.core import fourier, kernels
from monodir.core.directional import (
    cone_basis,
    direction_resolution,
    noise_indices,
    prepare_directional,
)
from monodir.core.masks import percentile
from monodir.core.monogenic import (
    AmplitudeWorkspace,
    LineSamples,
    ShellSweep,
    high_pass,
    low_pass,
)
from monodir.synthetic import anisotropic_map


def _sparse(shape, fraction, rng, dtype):
    n = int(np.prod(shape))
    flat = np.sort(rng.choice(n, size=max(1, int(n * fraction)), replace=False))
    vals = (rng.standard_normal(flat.size) + 1j * rng.standard_normal(flat.size)).astype(dtype)
    return flat, vals


@pytest.mark.parametrize("shape", [(12, 10, 8), (16, 16, 16), (9, 11, 13)])
@pytest.mark.parametrize("axes", list(itertools.permutations(range(3))))
def test_partial_inverse_then_last_pass_is_the_3d_inverse(shape, axes):
    rng = np.random.default_rng(sum(shape) + 7 * axes[0] + axes[1])
    cdtype = np.complex128
    pi = fourier.PartialInverse(shape, cdtype, plane_chunk=3)
    targets = [np.zeros(shape, cdtype), np.zeros(shape, cdtype)]
    dense = [np.zeros(int(np.prod(shape)), complex), np.zeros(int(np.prod(shape)), complex)]
    # two additions of disjoint supports, as two shells of a sweep would be
    flat, vals = _sparse(shape, 0.06, rng, cdtype)
    halves = np.array_split(np.arange(flat.size), 2)
    for part in halves:
        k = np.unravel_index(flat[part], shape)
        values = [vals[part], 2.0 * vals[part] - 1j]
        pi.add(targets, k, values, axes)
        for b in range(2):
            dense[b][flat[part]] += values[b]
    for b in range(2):
        out = np.empty(shape, cdtype)
        got = fourier.AxisInverse(targets[b], out, axes[2]).run()
        want = np.fft.ifftn(dense[b].reshape(shape), norm="forward")
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("axes", [(2, 0, 1), (0, 2, 1)])
def test_partial_inverse_assign_overwrites_whatever_was_there(axes):
    shape = (12, 10, 8)
    rng = np.random.default_rng(11)
    cdtype = np.complex128
    pi = fourier.PartialInverse(shape, cdtype, plane_chunk=3)
    targets = [rng.standard_normal(shape) + 1j for _ in range(2)]  # garbage, not zeros
    flat, vals = _sparse(shape, 0.03, rng, cdtype)
    k = np.unravel_index(flat, shape)
    pi.add(targets, k, [vals, 1j * vals], axes, assign=True)
    for b, scale in enumerate((1.0, 1j)):
        dense = np.zeros(int(np.prod(shape)), complex)
        dense[flat] = scale * vals
        got = fourier.AxisInverse(targets[b], np.empty(shape, cdtype), axes[2]).run()
        want = np.fft.ifftn(dense.reshape(shape), norm="forward")
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("axes", [(2, 0, 1), (0, 2, 1), (1, 2, 0)])
@pytest.mark.parametrize("assign", [False, True])
def test_partial_inverse_presorted_key_gives_the_same_bits(axes, assign):
    """``add(key=...)`` (coefficients already sorted, as ShellSweep passes them) skips the
    sort but must transform exactly the same lines and planes as the unsorted call."""
    shape = (12, 10, 8)
    rng = np.random.default_rng(5 + axes[0])
    cdtype = np.complex64
    _, a2, a3 = axes
    flat, vals = _sparse(shape, 0.2, rng, cdtype)
    flat = rng.permutation(flat)  # arbitrary order for the plain call
    k = np.unravel_index(flat, shape)
    values = [vals, (1j * vals).astype(cdtype)]
    start = [rng.standard_normal(shape).astype(cdtype) for _ in range(2)]
    plain = [t.copy() for t in start]
    fourier.PartialInverse(shape, cdtype, plane_chunk=3).add(plain, k, values, axes, assign=assign)
    key = k[a3].astype(np.int64) * shape[a2] + k[a2]
    order = np.argsort(key, kind="stable")
    sorted_targets = [t.copy() for t in start]
    fourier.PartialInverse(shape, cdtype, plane_chunk=3).add(
        sorted_targets,
        tuple(a[order] for a in k),
        [v[order] for v in values],
        axes,
        assign=assign,
        key=key[order],
    )
    for got, want in zip(sorted_targets, plain, strict=True):
        assert got.tobytes() == want.tobytes()
    assert not np.array_equal(plain[0], start[0])


def test_pruning_axes_prefers_few_lines_and_planes():
    shape = (32, 32, 32)
    # a thin rod of coefficients along x: lines along x are few, planes of constant kz few
    kz = np.full(20, 3)
    ky = np.full(20, 5)
    kx = np.arange(20)
    a1, _, a3 = fourier.pruning_axes((kz, ky, kx), shape)
    assert a1 == 2
    assert a3 != 2
    assert fourier.pruning_axes((kz, ky, kx), shape, last=(1,))[2] == 1


@pytest.mark.parametrize("shape", [(16, 16, 16), (15, 15, 15), (12, 14, 10)])
@pytest.mark.parametrize("k_max", [0, 2, 5, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pruned_low_pass_equals_full_filter(shape, k_max, dtype):
    rng = np.random.default_rng(k_max + shape[0])
    lp = fourier.PrunedLowPass(shape, dtype)
    x = rng.standard_normal(shape)
    lp.x[...] = x
    fz, fy, fx = fourier.half_grid(shape, np.float64)
    kz = np.abs(np.rint(fz * shape[0]))
    ky = np.abs(np.rint(fy * shape[1]))
    kx = np.rint(fx * shape[2])
    filt = np.exp(-(kz**2 + ky**2 + kx**2) / 9.0)
    filt = np.where((kz <= k_max) & (ky <= k_max) & (kx <= k_max), filt, 0.0)

    def factor(zs, ys, xs):
        return (filt[zs, ys, xs] * lp.scale).astype(dtype)

    got = lp.run(k_max, factor)
    want = np.fft.irfftn(
        np.fft.rfftn(x, norm="forward") * filt, s=shape, axes=(0, 1, 2), norm="forward"
    )
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(x).max())


def _dense_amplitude(basis, step, taper, shape):
    """algorithm.md 2.6 on the full grid in complex128, straight from the definition."""
    w = basis.spectrum.astype(complex) * high_pass(
        basis.radius.astype(float), step.freq, step.freq_high_pass
    )
    total = np.zeros(shape)
    for filt in (basis.g + basis.hx, basis.hz - 1j * basis.hy):
        full = np.zeros(int(np.prod(shape)), complex)
        full[basis.flat_index] = w * filt
        z = np.fft.ifftn(full.reshape(shape), norm="forward")
        total += z.real**2 + z.imag**2
    a0 = np.sqrt(total) * taper
    spec = np.fft.rfftn(a0, norm="forward")
    r = fourier.half_radius(shape)
    spec *= low_pass(r, step.freq, step.freq_low_pass, nan_at_zero_width=False)
    return np.fft.irfftn(spec, s=shape, axes=(0, 1, 2), norm="forward")


@pytest.mark.parametrize("p", [0.0, 0.5, 0.95, 1.0])
def test_percentile_is_xmipps_index_with_or_without_a_copy(p):
    values = np.random.default_rng(2).random(101).astype(np.float32)
    want = float(np.sort(values)[min(int(values.size * p), values.size - 1)])
    kept = values.copy()
    assert percentile(values, p) == want
    np.testing.assert_array_equal(values, kept)  # a copy was partitioned
    assert percentile(values, p, overwrite=True) == want
    np.testing.assert_array_equal(np.sort(values), np.sort(kept))  # reordered in place
    with pytest.raises(ValueError):
        percentile(values[:0], p)


@pytest.fixture(scope="module")
def small_map():
    return anisotropic_map(48, 1.0, noise=0.1, seed=3)


@pytest.mark.parametrize("compat", [False, True])
def test_shell_sweep_equals_dense_amplitude_over_the_whole_sweep(small_map, compat):
    vol, mask = small_map
    setup = prepare_directional(vol, mask, 1.0, xmipp_compat=compat)
    ws = AmplitudeWorkspace(setup.shape, setup.dtype)
    tol = 1e-12 if compat else 3e-6
    for i in (0, 7, 40):
        basis = cone_basis(setup, i)
        sweep = ShellSweep(basis, ws)
        for step in setup.steps:
            got = sweep.amplitude(
                step.freq, step.freq_high_pass, step.freq_low_pass, taper=setup.taper
            )
            want = _dense_amplitude(basis, step, setup.taper, setup.shape)
            assert got.dtype == setup.dtype
            err = np.abs(got - want).max() / np.abs(want).max()
            assert err < tol, (i, step.resolution, err)


@pytest.mark.parametrize("shape", [(34, 32, 30), (31, 33, 35), (36, 36, 36)])
@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("slab_planes", [None, 1, 3])
@pytest.mark.parametrize("fftw", [True, False])
@pytest.mark.parametrize("y_groups", [32, 2])
def test_sampled_amplitude_is_the_volume_at_those_voxels(
    shape, compat, compiled, slab_planes, fftw, y_groups, monkeypatch
):
    """Only the lines holding the voxels go through the low-pass's last pass, block by block,
    and the amplitude goes into the low-pass group of planes by group (transformed along x
    and y there) without making a volume (slabs of one and three planes: groups of two and
    six on an even grid); the values are the whole volume's at those voxels, bit for bit, in
    the order asked (with pyFFTW and with SciPy's transforms)."""
    if not compiled:
        monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    if not fftw:
        monkeypatch.setattr(fourier, "HAVE_PYFFTW", False)
    monkeypatch.setattr(AmplitudeWorkspace, "Y_GROUPS", y_groups)
    if slab_planes is not None:
        itemsize = 16 if compat else 8
        monkeypatch.setattr(
            AmplitudeWorkspace, "SLAB_BYTES", slab_planes * shape[1] * shape[2] * itemsize
        )
    rng = np.random.default_rng(1)
    z, y, x = np.indices(shape)
    r2 = (z - shape[0] // 2) ** 2 + (y - shape[1] // 2) ** 2 + (x - shape[2] // 2) ** 2
    vol = (np.exp(-r2 / 4.5) + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    mask = r2 <= 9
    setup = prepare_directional(vol, mask, 1.0, xmipp_compat=compat)
    scattered = rng.choice(vol.size, 300, replace=True)  # unsorted, with repeats
    sets = [setup.mask_indices, scattered, noise_indices(setup, 3)]
    ws_full, ws_part = (AmplitudeWorkspace(setup.shape, setup.dtype) for _ in range(2))
    for i in (0, 9):
        basis = cone_basis(setup, i)
        full, part = ShellSweep(basis, ws_full), ShellSweep(basis, ws_part)
        for block in (7, None):
            samples = LineSamples(setup.shape, sets, block=block)
            assert samples.n_lines < shape[0] * shape[1]  # only some lines are transformed
            for step in setup.steps[:: max(1, len(setup.steps) // 4)]:
                band = (step.freq, step.freq_high_pass, step.freq_low_pass)
                want = full.amplitude(*band, taper=setup.taper).reshape(-1)
                got = part.amplitude(*band, taper=setup.taper, samples=samples)
                assert ws_part._lp._x is None  # no amplitude volume on the sampled path
                assert len(got) == len(sets)
                for g, idx in zip(got, sets, strict=True):
                    assert g.dtype == setup.dtype
                    np.testing.assert_array_equal(g, want[idx])
    # the forward pass along y ran group by group (at most y_groups passes per step), never
    # on the whole half spectrum
    assert not [key for key in ws_part._lp._plans if key[0] == "y" and key[-1]]
    assert [key for key in ws_full._lp._plans if key[0] == "y" and key[-1]]
    y_plans = ws_part._lp._y_plans
    assert y_plans and sum(z0 == 0 for z0, _, _ in y_plans) == len({k for *_, k in y_plans})
    for k_max in {k for *_, k in y_plans}:
        passes = sorted((z0, n) for z0, n, k in y_plans if k == k_max)
        assert len(passes) <= y_groups
        assert [z0 for z0, _ in passes] == [0, *np.cumsum([n for _, n in passes])[:-1]]
        assert sum(n for _, n in passes) == shape[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_last_pass_copies_only_the_rows_that_may_be_non_zero(dtype):
    """Rows along y of the partial transforms that are exactly 0 are not copied into the last
    pass's input, and rows that an earlier call copied are zeroed again: every call gives the
    bits of a full copy on a fresh workspace, and the definition (NumPy's inverse FFT)."""
    shape = (12, 16, 10)
    rng = np.random.default_rng(4)
    ws = AmplitudeWorkspace(shape, dtype)
    t = ws.partials(0)
    ny = shape[1]
    patterns = [np.ones(ny, bool), np.isin(np.arange(ny), [0, 1, 2, 3, 4, 12, 13, 14, 15])]
    patterns += [np.isin(np.arange(ny), [6, 7, 8, 9]), np.zeros(ny, bool), np.ones(ny, bool)]
    for rows in patterns:
        t[...] = rng.standard_normal(t.shape) + 1j * rng.standard_normal(t.shape)
        t[:, :, ~rows] = 0
        ws.last_pass_amplitude(t, 1, None, rows=rows)
        fresh = AmplitudeWorkspace(shape, dtype)
        tf = fresh.partials(0)
        tf[...] = t
        fresh.last_pass_amplitude(tf, 1, None)
        np.testing.assert_array_equal(ws.acc, fresh.acc)
        z = np.fft.ifft(t.astype(np.complex128), axis=2, norm="forward")
        want = np.sqrt(np.abs(z[0]) ** 2 + np.abs(z[1]) ** 2)
        np.testing.assert_allclose(ws.acc, want, rtol=0, atol=1e-5 * max(want.max(), 1e-30))
        if not rows.any():
            assert np.all(ws.acc == 0)


def test_direction_resolution_matches_the_dense_evaluation(small_map):
    """The whole per-direction state machine on dense amplitudes gives the same row.

    Float64 (compat) arithmetic: the shell-by-shell sums differ from a dense transform only by
    rounding far below any threshold margin, so the rows must be identical.
    """
    vol, mask = small_map
    setup = prepare_directional(vol, mask, 1.0, xmipp_compat=True)
    for i in (2, 30):
        basis = cone_basis(setup, i)
        noise = noise_indices(setup, i)
        res = np.full(setup.n_mask, float(setup.shape[0]))
        st = np.ones(setup.n_mask, dtype=np.int8)
        tested = []
        for step in setup.steps:
            tested.append(step.resolution)
            two_back = tested[-3] if len(tested) >= 3 else tested[0]
            active = st > 0
            if active.sum() / setup.n_mask_ref < 0.025:
                break
            amp = _dense_amplitude(basis, step, setup.taper, setup.shape).reshape(-1)
            thr = percentile(amp[noise].astype(np.float32), setup.significance)
            ok = amp[setup.mask_indices] > thr
            st[active & ok] = 1
            res[active & ok] = step.resolution
            st[active & ~ok] += 1
            done = active & ~ok & (st > 2)
            st[done] = 0
            res[done] = two_back
        got = direction_resolution(setup, i)
        np.testing.assert_array_equal(got, res.astype(np.float32))


def test_shell_sweep_any_order_of_frequencies(small_map):
    """The shell updates are exact for any sequence, not only increasing sweeps."""
    vol, mask = small_map
    setup = prepare_directional(vol, mask, 1.0, xmipp_compat=True)
    ws = AmplitudeWorkspace(setup.shape, setup.dtype)
    basis = cone_basis(setup, 11)
    sweep = ShellSweep(basis, ws)
    for step in (setup.steps[5], setup.steps[1], setup.steps[-1], setup.steps[5]):
        got = sweep.amplitude(step.freq, step.freq_high_pass, step.freq_low_pass, taper=setup.taper)
        want = _dense_amplitude(basis, step, setup.taper, setup.shape)
        assert np.abs(got - want).max() < 1e-12 * np.abs(want).max()


def test_workspace_is_kept_per_thread_and_released():
    from monodir.core.monogenic import release_workspace, workspace_for

    a = workspace_for((16, 16, 16), np.float32)
    assert workspace_for((16, 16, 16), np.float32) is a
    assert workspace_for((16, 16, 18), np.float32) is not a
    b = workspace_for((16, 16, 18), np.float32)
    release_workspace()
    assert workspace_for((16, 16, 18), np.float32) is not b


def test_repeated_direction_is_computed_once_and_copied(small_map):
    """Xmipp's fast set lists +z twice: one computation, two identical rows."""
    from monodir.core.directional import _distinct_directions, resolution_matrix

    vol, mask = small_map
    setup = prepare_directional(vol, mask, 1.0, fast=True, xmipp_compat=True)
    todo, copies = _distinct_directions(setup)
    assert setup.n_directions == 47
    assert len(todo) == 46 and copies == {1: 0}
    calls = []
    matrix = resolution_matrix(setup, progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(matrix[1], matrix[0])
    np.testing.assert_array_equal(matrix[5], direction_resolution(setup, 5))
    assert calls[-1] == (47, 47)


@pytest.mark.parametrize("parallel", ["threads", "processes"])
@pytest.mark.parametrize("compat", [False, True])
def test_resolution_matrix_in_parallel_equals_the_sequential_loop(small_map, compat, parallel):
    """Two threads, or two forked processes writing into a shared matrix (each with its own
    workspace), give the sequential loop's bytes; the compat fast set's repeated +z row is
    filled, and progress counts every row once."""
    from monodir.core.directional import resolution_matrix

    vol, mask = small_map
    setup = prepare_directional(vol, mask, 1.0, fast=True, xmipp_compat=compat)
    seen = []
    parallel_matrix = resolution_matrix(
        setup, n_jobs=2, parallel=parallel, progress=lambda done, total: seen.append(done)
    )
    sequential = resolution_matrix(setup, n_jobs=1)
    np.testing.assert_array_equal(parallel_matrix, sequential)
    assert seen[-1] == setup.n_directions and seen == sorted(seen)
    assert np.all(np.isfinite(parallel_matrix))


def test_resolution_matrix_first_forking_call_computes_one_direction_itself(small_map, monkeypatch):
    """The first forking call of a process computes its first direction before forking (its
    children then inherit the loaded kernels), later calls none; the bytes of the
    sequential loop either way."""
    import os

    from monodir.core import directional as dmod

    vol, mask = small_map
    setup = prepare_directional(vol, mask, 1.0, fast=True)
    sequential = dmod.resolution_matrix(setup, n_jobs=1)
    monkeypatch.setattr(dmod, "_PARENT_WARM", set())
    here, real = [], dmod.direction_resolution
    parent = os.getpid()

    def recorded(setup, i, threads=1, **kw):
        if os.getpid() == parent:
            here.append(i)
        return real(setup, i, threads, **kw)

    monkeypatch.setattr(dmod, "direction_resolution", recorded)
    for expected in ([0], []):
        here.clear()
        matrix = dmod.resolution_matrix(setup, n_jobs=2, parallel="processes")
        np.testing.assert_array_equal(matrix, sequential)
        assert here == expected
    assert dmod._PARENT_WARM == {(setup.dtype.str, False)}


def test_resolution_matrix_parent_direction_leaves_no_heap_behind():
    """The parent's own first direction frees its workspace and hands the heap back: the
    calling process is not left larger than before the call (glibc kept ~3 volumes of it
    resident before the trim). The kernels are loaded first (a cold numba cache compiles
    them in this process, which keeps the compiler's memory: once per machine)."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = (
        "from monodir.core.directional import prepare_directional, resolution_matrix\n"
        "from monodir.synthetic import anisotropic_map\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS'):\n"
        "            return int(line.split()[1]) * 1024\n"
        "vol, mask = anisotropic_map(128, 1.0, noise=0.1, seed=0)\n"
        "setup = prepare_directional(vol, mask, 1.0, fast=True)\n"
        "from monodir.core import heap, monogenic\n"
        "from monodir.core.directional import direction_resolution\n"
        "direction_resolution(setup, 0)\n"
        "monogenic.release_workspace()\n"
        "heap.trim_heap(0)\n"
        "before = rss()\n"
        "resolution_matrix(setup, n_jobs=2, parallel='processes')\n"
        "print(rss() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown = int(out.stdout.split()[-1])
    volume = 128**3 * 4
    assert grown < volume, f"the caller grew by {grown / volume:.2f} volumes"


def test_heap_trim_is_a_no_op_without_glibc(monkeypatch):
    """Where the C library is not glibc nothing is trimmed, even when asked for any size."""
    from monodir.core import heap

    monkeypatch.setattr(heap, "glibc", lambda: None)
    assert heap.free_heap_bytes() == 0
    assert heap.trim_heap(0) is False


def test_resolution_matrix_forks_only_where_it_is_safe(small_map, monkeypatch):
    """``parallel="auto"`` forks from a single-threaded process on Linux, uses threads while
    another thread runs (a fork would copy its locks in whatever state they are), on other
    systems or in a daemonic process (which may not have children), where ``"processes"``
    is refused; an unknown mode is refused up front."""
    import multiprocessing
    import sys
    import threading

    from monodir.core import directional as dmod

    vol, mask = small_map
    setup = prepare_directional(vol, mask, 1.0, fast=True)
    forks = []
    real = dmod._matrix_in_forks
    monkeypatch.setattr(dmod, "_matrix_in_forks", lambda *a: forks.append(1) or real(*a))
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    reference = dmod.resolution_matrix(setup, n_jobs=2, parallel="auto")
    assert forks == [1]
    monkeypatch.setattr(threading, "active_count", lambda: 3)
    np.testing.assert_array_equal(dmod.resolution_matrix(setup, n_jobs=2), reference)
    assert forks == [1]  # threads this time
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(sys, "platform", "darwin")  # system libraries not fork-safe there
    np.testing.assert_array_equal(dmod.resolution_matrix(setup, n_jobs=2), reference)
    assert forks == [1]
    monkeypatch.setattr(sys, "platform", "linux")

    class Daemon:
        daemon = True

    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(multiprocessing, "current_process", lambda: Daemon())
    np.testing.assert_array_equal(dmod.resolution_matrix(setup, n_jobs=2), reference)
    assert forks == [1]
    with pytest.raises(ValueError, match="parallel='threads'"):
        dmod.resolution_matrix(setup, n_jobs=2, parallel="processes")
    with pytest.raises(ValueError, match="auto, processes, threads"):
        dmod.directional(vol, mask, 1.0, fast=True, parallel="fork")


def test_resolution_matrix_a_failing_direction_raises_in_the_caller(small_map, monkeypatch):
    """An error in a forked child comes back as the same exception in the caller."""
    from monodir.core import directional as dmod

    vol, mask = small_map
    setup = prepare_directional(vol, mask, 1.0, fast=True)
    real = dmod.direction_resolution

    def failing(setup, i, threads=1, **kw):
        if i == 3:
            raise dmod.NoNoiseRegionError("direction 3: injected")
        return real(setup, i, threads, **kw)

    monkeypatch.setattr(dmod, "direction_resolution", failing)  # inherited by the forks
    with pytest.raises(dmod.NoNoiseRegionError, match="injected"):
        dmod.resolution_matrix(setup, n_jobs=2, parallel="processes")
    assert dmod._FORKED is None


def test_resolution_matrix_a_killed_child_fails_instead_of_hanging(small_map, monkeypatch):
    """A forked child that dies (the kernel's out-of-memory killer) ends the call with a
    clear error instead of waiting forever for its direction."""
    import os
    import signal

    from monodir.core import directional as dmod

    vol, mask = small_map
    setup = prepare_directional(vol, mask, 1.0, fast=True)
    real = dmod.direction_resolution

    def killed(setup, i, threads=1, **kw):
        if i == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(setup, i, threads, **kw)

    monkeypatch.setattr(dmod, "direction_resolution", killed)
    with pytest.raises(RuntimeError, match="died"):
        dmod.resolution_matrix(setup, n_jobs=2, parallel="processes")
    assert dmod._FORKED is None


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("tile", [None, 37])
def test_directional_threads_share_the_summaries_with_the_same_result(
    small_map, tile, compat, monkeypatch
):
    """``directional(n_jobs=2)`` summarises tiles of voxels on two threads; every output is
    the sequential call's bytes (one tile, and many small tiles), in both modes."""
    import dataclasses

    from monodir.core import directional as directional_module

    if tile is not None:
        monkeypatch.setattr(directional_module, "SUMMARY_TILE", tile)
    vol, mask = small_map
    kw = {"fast": True, "xmipp_compat": compat}
    one = directional_module.directional(vol, mask, 1.0, n_jobs=1, **kw)
    two = directional_module.directional(vol, mask, 1.0, n_jobs=2, **kw)
    compared = 0
    for field in dataclasses.fields(one):
        a, b = getattr(one, field.name), getattr(two, field.name)
        items = a.items() if isinstance(a, dict) else [(field.name, a)]
        for name, value in items:
            other = b[name] if isinstance(a, dict) else b
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, other, err_msg=name)
                compared += 1
    assert compared >= 8
    assert np.isfinite(one.maps["radial"]).sum() > 0


@pytest.mark.parametrize("fast", [False, True])
def test_voxel_summaries_split_over_threads_give_the_same_bytes(small_map, fast, monkeypatch):
    """A block's voxels summarised by three threads (outlier removal, sorts, radial and
    azimuthal means, sums over voxels) give the one-thread call's bytes."""
    from monodir.core import summaries

    vol, mask = small_map
    setup = prepare_directional(vol, mask, 1.0, fast=fast)
    rng = np.random.default_rng(11)
    block = rng.uniform(2.0, 12.0, (setup.n_directions, setup.n_mask)).astype(np.float32)
    block[rng.random(block.shape) < 0.05] = np.nan  # directions that found nothing
    monkeypatch.setattr(summaries, "MIN_VOXELS_PER_THREAD", 7)
    one = summaries.voxel_summaries(setup, block[:, 5:], 5, jobs=1)
    three = summaries.voxel_summaries(setup, block[:, 5:], 5, jobs=3)
    assert one.keys() == three.keys()
    for name, value in one.items():
        np.testing.assert_array_equal(value, three[name], err_msg=name)
    assert np.isfinite(one["radial"]).all() and one["dir_count"].sum() > 0
