"""Compiled kernels equal their NumPy versions bit for bit, and their definitions.

``monodir.core.kernels`` runs numba-compiled loops when numba is importable and NumPy array
operations otherwise; both must give the same bits, so results do not depend on whether numba
is installed. The last pass of the directional sweep (which uses the amplitude kernel and skips
the columns where the taper vanishes) is checked against NumPy's FFT of the definition.
"""

from __future__ import annotations

import numpy as np
import pytest

from monodir.core import fourier, kernels, summaries
from monodir.core.directional import RadialTaper, spatial_taper
from monodir.core.directions import angles_to_vectors, direction_set
from monodir.core.monogenic import AmplitudeWorkspace

needs_numba = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")


@pytest.fixture
def numpy_only(monkeypatch):
    """Run the kernels' NumPy versions."""
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)


def _pair(rng, nb, ny, width, dtype):
    pair = fourier.aligned_empty((2, nb + 1, ny + 1, width + 8), dtype)
    pair[...] = rng.standard_normal(pair.shape) + 1j * rng.standard_normal(pair.shape)
    return pair


@needs_numba
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("with_taper", [True, False])
def test_tapered_amplitude_numba_equals_numpy(dtype, with_taper, monkeypatch):
    rng = np.random.default_rng(3)
    shape = (9, 7, 12)
    real = np.empty(0, dtype).real.dtype
    pair = _pair(rng, 3, shape[1], 8, dtype)
    taper = rng.random(shape).astype(real) if with_taper else None
    outs = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "HAVE_NUMBA", compiled)
        out = np.full(shape, 7.0, dtype=real)
        kernels.tapered_amplitude(pair, 3, 8, taper, out, 4, 2)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    # the definition, and the rows of the slab outside [x0, x0 + width) set to 0
    p = pair[:, :3, :7, :8].astype(np.complex128)
    want = np.sqrt(np.abs(p[0]) ** 2 + np.abs(p[1]) ** 2)
    if with_taper:
        want = want * taper[4:7, :, 2:10]
    rtol = 2e-6 if real == np.float32 else 1e-14
    np.testing.assert_allclose(outs[0][4:7, :, 2:10], want, rtol=rtol)
    assert np.all(outs[0][4:7, :, :2] == 0) and np.all(outs[0][4:7, :, 10:] == 0)
    assert np.all(outs[0][:4] == 7.0) and np.all(outs[0][7:] == 7.0)  # other planes untouched


@pytest.mark.parametrize("shape", [(20, 20, 20), (33, 33, 33), (16, 18, 14), (9, 11, 13)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_radial_taper_is_the_spatial_taper(shape, dtype):
    taper = RadialTaper.build(shape, dtype=dtype)
    want = spatial_taper(shape, dtype=dtype)
    np.testing.assert_array_equal(taper.array(), want)
    np.testing.assert_array_equal(np.asarray(taper), want)
    np.testing.assert_array_equal(taper.column_support(), np.any(want != 0, axis=1))


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("radial", [True, False])
@pytest.mark.parametrize("n", [20, 33])
def test_last_pass_with_taper_is_the_definition(n, radial, compiled, monkeypatch):
    if compiled and not kernels.HAVE_NUMBA:
        pytest.skip("numba not installed")
    monkeypatch.setattr(kernels, "HAVE_NUMBA", compiled)
    shape = (n, n, n)
    rng = np.random.default_rng(n)
    ws = AmplitudeWorkspace(shape, np.float32)
    given = RadialTaper.build(shape, dtype=np.float32) if radial else None
    taper = spatial_taper(shape, dtype=np.float32)
    given = taper if given is None else given
    # the columns skipped are exactly those where the taper is 0 on every line along y
    for z0, z1, x0, x1 in ws._slab_ranges(given):
        cols = np.any(taper[z0:z1] != 0, axis=(0, 1))
        assert cols[x0:x1].any() and not cols[:x0].any() and not cols[x1:].any()
    t = ws.partials(0)
    for _ in range(2):  # buffers and plans reused
        t[...] = rng.standard_normal(t.shape) + 1j * rng.standard_normal(t.shape)
        ws.last_pass_amplitude(t, 1, given)
        z = np.fft.ifft(t.astype(np.complex128), axis=2, norm="forward")
        want = taper * np.sqrt(np.abs(z[0]) ** 2 + np.abs(z[1]) ** 2)
        np.testing.assert_allclose(ws.acc, want, rtol=0, atol=2e-6 * want.max())
        assert np.all(ws.acc[taper == 0] == 0)


@needs_numba
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize(
    ("shape", "z0", "x0", "width"),
    [
        ((16, 16, 16), 6, 2, 12),
        ((16, 16, 16), 4, 0, 16),  # rows entirely inside, crossing and outside the sphere
        ((33, 33, 33), 11, 5, 20),  # odd box: centre 16
        ((20, 18, 22), 3, 9, 13),  # slab starting right of the centre column
        ((20, 18, 22), 12, 3, 6),  # slab ending left of it
    ],
)
def test_radial_taper_kernel_equals_array_taper(dtype, shape, z0, x0, width, monkeypatch):
    """Taper evaluated on the fly = the same taper read from its volume, compiled or not
    (the compiled kernel writes 0 outside the sphere and multiplies only on the ramp, from
    the taper's per-line runs)."""
    rng = np.random.default_rng(4)
    nb = min(5, shape[0] - z0)
    real = np.empty(0, dtype).real.dtype
    radial = RadialTaper.build(shape, dtype=real)
    pair = _pair(rng, nb, shape[1], width, dtype)
    outs = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "HAVE_NUMBA", compiled)
        for taper in (radial, radial.array()):
            out = np.full(shape, 7.0, dtype=real)
            kernels.tapered_amplitude(pair, nb, width, taper, out, z0, x0)
            outs.append(out)
    for other in outs[1:]:
        np.testing.assert_array_equal(outs[0], other)
    t = radial.array()[z0 : z0 + nb, :, x0 : x0 + width]
    assert (t == 1).any() and (t < 1).any()  # the case mixes inside and ramp/outside


@needs_numba
@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("compat", [False, True])
def test_outlier_removal_numba_equals_numpy(fast, compat, monkeypatch):
    dirs = angles_to_vectors(direction_set(fast, xmipp_compat=compat))
    rng = np.random.default_rng(5)
    levels = np.array([2.0, 2.5, 3.0, 3.5, 4.0, 6.0, 9.0, 100.0], dtype=np.float32)
    block = rng.choice(levels, size=(len(dirs), 3000))
    block[rng.random(block.shape) < 0.1] = -1.0
    block[:, :20] = 3.0  # isotropic voxels: every distance 0
    block[:, 20:40] = 3.0
    planted = rng.integers(0, len(dirs), size=20)
    block[planted, np.arange(20, 40)] = 40.0  # one direction far off its neighbours
    got = summaries.remove_outliers(block, dirs, 0.95, xmipp_compat=compat)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    want = summaries.remove_outliers(block, dirs, 0.95, xmipp_compat=compat)
    np.testing.assert_array_equal(got, want)
    if not fast:  # 81 directions have neighbours within 20 degrees: the planted outliers go
        assert np.all(got[planted, np.arange(20, 40)] == -1.0)
        assert np.all(got[:, :20] == 3.0)  # isotropic voxels stay


def test_kernels_fall_back_to_numpy(numpy_only):
    rng = np.random.default_rng(1)
    pair = _pair(rng, 2, 5, 6, np.complex64)
    out = np.zeros((4, 5, 6), np.float32)
    kernels.tapered_amplitude(pair, 2, 6, None, out, 1, 0)
    p = pair[:, :2, :5, :6].astype(np.complex128)
    np.testing.assert_allclose(out[1:3], np.sqrt(np.abs(p[0]) ** 2 + np.abs(p[1]) ** 2), rtol=2e-6)
    assert (
        kernels.remove_outliers_inplace(
            np.ones((3, 4)), np.arange(2), np.arange(2), np.ones(2), 1.6, False
        )
        is False
    )


@needs_numba
def test_state_update_numba_equals_numpy(monkeypatch):
    rng = np.random.default_rng(9)
    amp = rng.random((6, 7, 8)).astype(np.float32)
    mask_idx = np.sort(rng.choice(amp.size, 200, replace=False)).astype(np.int32)
    st0 = rng.integers(0, 3, 200).astype(np.int8)  # finished, active, one failure behind
    res0 = rng.random(200)
    thr = float(np.float32(0.5))
    got = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "HAVE_NUMBA", compiled)
        st, res = st0.copy(), res0.copy()
        active = kernels.update_states(amp.reshape(-1)[mask_idx], st, res, thr, 3.5, 4.5)
        got.append((st, res, active))
    for a, b in zip(got[0], got[1]):
        np.testing.assert_array_equal(a, b)
    st, res, active = got[0]
    a = amp.reshape(-1)[mask_idx]
    passed = (st0 > 0) & (a > thr)
    assert np.all(st[passed] == 1) and np.all(res[passed] == 3.5)
    finished = (st0 == 2) & (a <= thr)
    assert np.all(st[finished] == 0) and np.all(res[finished] == 4.5)
    assert np.all(st[st0 == 0] == 0) and np.all(res[st0 == 0] == res0[st0 == 0])
    assert active == np.count_nonzero(st > 0)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("f", "f_l", "nan"), [(0.2, 0.27, False), (0.25, 0.25, True)])
@pytest.mark.parametrize("shape", [(16, 12, 16), (40, 12, 16)])
@pytest.mark.parametrize("capacity", [1 << 16, 1, 40])  # 1: one row of ramp entries a call
def test_low_pass_kernel_equals_numpy(shape, dtype, f, f_l, nan, capacity, monkeypatch):
    """The compiled low-pass multiplies by exactly ``scale * low_pass(|u|)`` (and, with a
    zero-width ramp, gives NaN from the coefficients at ``|u| = f``, as Xmipp, quirk Q1).
    ``|u| = 4/16 = 0.25`` lies exactly on both grids. A small ``capacity`` makes the kernel
    hand its ramp entries over in many rounds, stopping between rows."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    outs = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "HAVE_NUMBA", compiled)
        ws = AmplitudeWorkspace(shape, dtype)
        ws._radial = kernels.RadialLowPass(dtype, capacity=capacity)
        ws.acc[...] = x
        outs.append(ws._low_pass(f, f_l, nan).copy())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.isnan(outs[0]).any() == nan


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# axis-aligned and diagonal directions put many grid points exactly on the cone limits
_CONE_DIRECTIONS = [(0, 0, 1), (1, 0, 0), (1, 1, 0), (1, 1, 1), (0.3, -0.5, 0.81)]


@needs_numba
@pytest.mark.parametrize("shape", [(16, 16, 16), (15, 17, 13)])
@pytest.mark.parametrize("d", _CONE_DIRECTIONS)
@pytest.mark.parametrize("tie_angle", [False, True])
def test_cone_half_numba_equals_numpy(shape, d, tie_angle, monkeypatch):
    from monodir.core import directional
    from monodir.core.directional import _cone_half

    if tie_angle:  # an aperture that grid points hit exactly (|u_z| = 2 |u_x|): arccos decides
        monkeypatch.setattr(directional, "CONE_ANGLE", float(np.degrees(np.arctan(0.5))))
    d = _unit(d)
    got = _cone_half(shape, d)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    want = _cone_half(shape, d)
    assert got.dtype == bool and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert want.any() and not want.all()


@pytest.mark.parametrize("shape", [(16, 16, 16), (31, 28, 33), (24, 30, 21)])
def test_radial_taper_row_runs_match_the_volume(shape):
    taper = RadialTaper.build(shape, width=5, dtype=np.float32)
    runs = taper.row_runs()
    cz, cy, cx = taper.centre
    z, y, x = np.indices(shape)
    r2 = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2
    cols = np.arange(shape[2])
    a, b, c, d = (runs[..., k][..., None] for k in range(4))
    np.testing.assert_array_equal((cols >= a) & (cols < b), r2 <= taper.hi)
    np.testing.assert_array_equal((cols >= c) & (cols < d), r2 < taper.lo)
    vol = taper.array()
    assert np.all(vol[r2 > taper.hi] == 0) and np.all(vol[r2 < taper.lo] == 1)


@needs_numba
@pytest.mark.parametrize("order", [(1, 0, 2), (1, 2, 0)])
@pytest.mark.parametrize("assign", [False, True])
@pytest.mark.parametrize("support", [False, True])
def test_store_planes_numba_equals_numpy(order, assign, support, monkeypatch):
    """Planes along y of a C-ordered (z, y, x) grid, walked by rows or by columns; with
    ``lo``/``hi`` only ``lo[z] <= x < hi[z]`` is written and the rest keeps its values."""
    rng = np.random.default_rng(4)
    shape = (6, 7, 9)
    base = fourier.padded_empty(shape, np.complex64)
    base[...] = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    planes = np.array([0, 2, 5])
    plane_shape = np.moveaxis(base, order, (0, 1, 2)).shape[1:]
    slab = (rng.standard_normal((3, *plane_shape)) * (1 + 2j)).astype(np.complex64)
    lo = hi = None
    keep = np.ones(shape[::2], dtype=bool)  # (z, x)
    if support:
        lo, hi = np.array([0, 2, 3, 9, 1, 4]), np.array([9, 5, 3, 9, 8, 11])  # clipped to 9
        x = np.arange(shape[2])
        keep = (x >= lo[:, None]) & (x < np.minimum(hi, 9)[:, None])
    want = base.copy()
    for j, p in enumerate(planes):
        new = np.moveaxis(slab[j], (0, 1), (0, 1) if order == (1, 0, 2) else (1, 0))
        plane = new if assign else want[:, p] + new
        want[:, p] = np.where(keep, plane, want[:, p])
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "HAVE_NUMBA", compiled)
        t = fourier.padded_empty(shape, np.complex64)
        t[...] = base
        view = np.moveaxis(t, order, (0, 1, 2))  # planes along y; rows or columns in memory
        kernels.store_planes(view, planes, slab, assign=assign, lo=lo, hi=hi)
        np.testing.assert_array_equal(t, want)
    with pytest.raises(ValueError, match="one per line"):
        kernels.store_planes(view, planes, slab, assign=assign, lo=[0], hi=[1])


@needs_numba
@pytest.mark.parametrize("shape", [(9, 12, 7), (10, 8, 9)])
@pytest.mark.parametrize("columns", [[0], [0, 3], []])
def test_nonzero_except_columns_equals_numpy(shape, columns, monkeypatch):
    m = np.random.default_rng(len(columns)).random(shape) > 0.6
    got = kernels.nonzero_except_columns(m, columns)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    want = kernels.nonzero_except_columns(m, columns)
    kept = m.copy()
    kept[:, :, columns] = False
    assert len(want[0]) == np.count_nonzero(kept) > 0
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert not np.isin(got[2], columns).any()


@needs_numba
@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("d", _CONE_DIRECTIONS)
def test_noise_cone_numba_equals_numpy(compat, d, monkeypatch):
    """Compiled noise cone (candidates made on the fly from the shell and the mask) = the
    NumPy version over listed candidates, ties at exactly 45 and 135 degrees and the centre
    (a zero vector) included."""
    from types import SimpleNamespace

    from monodir.core.directional import noise_candidates, noise_indices

    shape = (14, 16, 15)
    rng = np.random.default_rng(9)
    mask = np.flatnonzero(rng.random(shape) < 0.2).astype(np.int32)
    for shell in ((-1, 10**6, 1e6), (4, 40, 30.25), (0, 49, 20.0)):
        setup = SimpleNamespace(
            shape=shape,
            noise_shell=shell,
            mask_indices=mask,
            xmipp_compat=compat,
            directions=np.array([_unit(d)]),
            info={},
        )
        got = noise_indices(setup, 0)
        monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
        want = noise_indices(setup, 0, planes=3)
        monkeypatch.setattr(kernels, "HAVE_NUMBA", True)
        assert got.dtype == want.dtype == np.int32
        np.testing.assert_array_equal(got, want)
        cand = noise_candidates(setup)
        assert 0 < want.size < cand.size
        assert not np.isin(want, mask).any() and np.isin(want, cand).all()
        # an output sized too small for the cone: counted, then made again at its size
        centre = (7.0, 8.0, 7.0)
        full = kernels.noise_shell_cone(shape, shell, mask, centre, _unit(d), 0.5, 10**6)
        for expected in (0, 10):
            small = kernels.noise_shell_cone(shape, shell, mask, centre, _unit(d), 0.5, expected)
            np.testing.assert_array_equal(small[0], full[0])
            np.testing.assert_array_equal(small[1], full[1])
        assert full[0].size > 10


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("radius", [None, 19.5])
def test_noise_candidates_are_the_background_beyond_the_protein(compat, radius):
    """The shell kept instead of a list gives the candidates of the definition: state 0
    (not protein, inside the cliff radius and the usable sphere) beyond the protein radius."""
    from monodir.core.directional import N_SMOOTH, noise_candidates, prepare_directional
    from monodir.core.masks import prepare_states
    from monodir.synthetic import anisotropic_map

    vol, mask = anisotropic_map(40, 1.0, noise=0.1, seed=4)
    setup = prepare_directional(vol, mask, 1.0, xmipp_compat=compat, sphere_radius=radius)
    state, r_prot, _, _, _, r2 = prepare_states(vol.astype(setup.dtype), mask)
    state[r2 > ((radius or 20) - N_SMOOTH) ** 2] = -1
    want = np.flatnonzero((state == 0) & (r2 > r_prot * r_prot))
    got = noise_candidates(setup)
    np.testing.assert_array_equal(got, want)
    assert got.size == setup.info["n_noise"] > 0
    for z0, z1 in ((0, 7), (7, 23), (23, 40)):
        part = noise_candidates(setup, z0, z1)
        np.testing.assert_array_equal(part, want[(want >= z0 * 1600) & (want < z1 * 1600)])


@needs_numba
@pytest.mark.parametrize("fast", [False, True])
def test_voxel_summaries_numba_equals_numpy(fast, monkeypatch):
    """Compiled per-voxel summaries (default mode) = the NumPy version, bit for bit: outliers,
    empty voxels, ties in the sort, and voxels on exact 45/70-degree radial limits."""
    from types import SimpleNamespace

    dirs = angles_to_vectors(direction_set(fast, xmipp_compat=False))
    dirs = dirs.copy()
    dirs[0] = (0.0, 0.0, 1.0)  # positions (a, 0, a) sit exactly at 45 degrees from it
    shape = (24, 22, 20)
    rng = np.random.default_rng(12)
    # every voxel of the box, the centre (a zero position) and exact-tie positions included
    idx = np.arange(int(np.prod(shape)), dtype=np.int64)
    setup = SimpleNamespace(
        xmipp_compat=False,
        directions=dirs,
        significance=0.95,
        shape=shape,
        mask_indices=idx,
    )
    levels = np.array([2.5, 3.0, 3.5, 4.0, 6.0, 9.0], dtype=np.float32)
    block = rng.choice(levels, size=(len(dirs), idx.size)).astype(np.float32)
    block[:, ::5] = block[0, ::5]  # isotropic voxels: ties everywhere
    block[:, 1::97] = 0.0  # voxels with no valid direction
    block[rng.random(block.shape) < 0.05] = np.nan
    start = 3000
    part = block[:, start : start + 5000]
    got = summaries.voxel_summaries(setup, part, start)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    want = summaries.voxel_summaries(setup, part, start)
    assert got.keys() == want.keys()
    for key in want:
        g, w = np.asarray(got[key]), np.asarray(want[key])
        assert g.dtype == w.dtype and g.shape == w.shape, key
        assert g.tobytes() == w.tobytes(), key
    # the tie voxels exist in this block, and the empty ones
    z, rem = np.divmod(idx[start : start + 5000], shape[1] * shape[2])
    y, x = np.divmod(rem, shape[2])
    dx, dy, dz = x - shape[2] // 2, y - shape[1] // 2, z - shape[0] // 2
    assert np.any((dy == 0) & (np.abs(dx) == np.abs(dz)) & (dz != 0))
    assert np.any(np.asarray(want["highest"]) == 0.0)


def test_radial_averages_are_sequential_shell_sums():
    """Shell means and stds (algorithm.md 2.12) are float64 sums of each shell's voxels in
    voxel order, every voxel counted in the shells floor(r) and floor(r) + 1, exactly as an
    element-by-element accumulation (``np.add.at``) gives them."""
    from monodir.core.masks import radius2

    rng = np.random.default_rng(5)
    shape = (22, 22, 22)
    in_mask = rng.random(shape) < 0.6
    maps = {k: rng.uniform(2.0, 9.0, shape).astype(np.float32) for k in summaries.VOXEL_MAPS}
    monores = rng.uniform(2.0, 9.0, shape)
    table, zmap = summaries.radial_averages_and_zscore(maps, in_mask, monores)

    r = np.sqrt(radius2(shape).astype(np.float64))[in_mask]
    base = np.floor(r).astype(np.int64)
    kmax = shape[2] // 2 - 1
    order = [base + off for off in (0, 1)]
    for name in ("radial", "azimuthal", "highest", "lowest", "monores"):
        v = (monores if name == "monores" else maps[name])[in_mask].astype(np.float64)
        s1, s2, cnt = np.zeros(kmax + 2), np.zeros(kmax + 2), np.zeros(kmax + 2)
        for kk in order:
            ok = (kk >= 1) & (kk <= kmax) & (kk - 1 <= r) & (r < kk + 1)
            np.add.at(s1, kk[ok], v[ok])
            np.add.at(s2, kk[ok], v[ok] ** 2)
            np.add.at(cnt, kk[ok], 1)
        shells = table["radius"].astype(np.int64)
        mean = s1[shells] / cnt[shells]
        var = s2[shells] / cnt[shells] - mean**2 + (0.001 if name == "lowest" else 0.0)
        np.testing.assert_array_equal(table[f"{name}_mean"], mean, err_msg=name)
        np.testing.assert_array_equal(table[f"{name}_std"], np.sqrt(np.maximum(var, 0)))
    assert shells.tolist() == list(range(1, kmax + 1))
    assert np.all(zmap[~in_mask] == 0) and np.all(zmap[in_mask] <= 5.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grid_radius_numba_equals_numpy(dtype, monkeypatch):
    from monodir.core import fourier

    squares = [fourier.axis_frequencies(n) ** 2 for n in (9, 12, 15)]
    ref = np.sqrt(
        squares[0][:, None, None] + squares[1][None, :, None] + squares[2][None, None, :]
    ).astype(dtype)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    assert kernels.grid_radius(*squares, dtype).tobytes() == ref.tobytes()
    if kernels._radius_numba is not None:
        monkeypatch.setattr(kernels, "HAVE_NUMBA", True)
        assert kernels.grid_radius(*squares, dtype).tobytes() == ref.tobytes()


@pytest.mark.parametrize("shape", [(9, 10, 11), (12, 12, 12)])
def test_mask_radii_are_the_radius_volume_at_the_mask(shape):
    from monodir.core.masks import radius2

    rng = np.random.default_rng(8)
    in_mask = rng.random(shape) < 0.3
    ref = np.sqrt(radius2(shape).astype(np.float64))[in_mask]
    got = summaries._mask_radii(shape, np.flatnonzero(in_mask))
    assert got.tobytes() == ref.tobytes()


@pytest.mark.parametrize("shape", [(9, 10, 11), (12, 12, 12)])
@pytest.mark.parametrize("xmipp_nyquist", [False, True])
@pytest.mark.parametrize("compiled", [False, True])
def test_riesz_planes_are_riesz_factors_half(shape, xmipp_nyquist, compiled, monkeypatch):
    """MonoRes' Riesz factors made plane by plane are the half-grid ones, bit for bit."""
    from monodir.core import monogenic

    if compiled and kernels._riesz_numba is None:
        pytest.skip("numba not installed")
    monkeypatch.setattr(kernels, "HAVE_NUMBA", compiled)
    for dtype in (np.float32, np.float64):
        ref = monogenic.riesz_factors_half(shape, xmipp_nyquist=xmipp_nyquist, dtype=dtype)
        half = (shape[0], shape[1], shape[2] // 2 + 1)
        spectrum = np.zeros(half, fourier.complex_dtype(dtype))
        basis = monogenic.HalfBasis(spectrum, shape, xmipp_nyquist)
        planes = np.array([0, shape[0] // 2, shape[0] - 1, 3])
        got = basis._riesz(planes, (0, 1, 2))
        assert got.dtype == dtype
        for j in range(3):
            assert got[j].tobytes() == np.ascontiguousarray(ref[j + 1][planes]).tobytes()
