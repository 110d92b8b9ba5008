"""Input checks: mask binarity, grids, half maps, box, noise region, memory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from monodir.errors import InputError
from monodir.io.mrc import MapInfo, read_map, write_map
from monodir.io.validate import (
    WORKER_OVERHEAD_BYTES,
    binarize_mask,
    check_box,
    check_half_maps,
    check_memory,
    check_noise_region,
    check_same_grid,
    estimate_memory,
)
from monodir.synthetic import sphere_mask

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = DATA / "real"


def need(path: Path) -> Path:
    """Skip when the shared data are absent, except on CI where that is a failure."""
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared test data missing: {path}")
        pytest.skip(f"shared test data missing: {path}")
    return path


def info(data, *, voxel_size=1.0, role="map", path=None, origin=(0.0, 0.0, 0.0), nstart=(0, 0, 0)):
    return MapInfo(
        np.asarray(data, np.float32),
        voxel_size=voxel_size,
        role=role,
        path=None if path is None else Path(path),
        origin=origin,
        nstart=nstart,
    )


def message(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------------
# binarize_mask
# --------------------------------------------------------------------------------------------


def test_binary_mask_is_returned_as_bool():
    m = sphere_mask(16, 4).astype(np.float32)
    out = binarize_mask(info(m, role="mask"))
    assert out.dtype == bool
    np.testing.assert_array_equal(out, m == 1)


def test_soft_mask_needs_threshold(tmp_path):
    soft = np.clip(1.0 - np.abs(np.linspace(-1.5, 1.5, 16)), 0, 1)
    soft = soft[:, None, None] * soft[None, :, None] * soft[None, None, :]
    path = write_map(tmp_path / "soft_mask.mrc", soft, voxel_size=1.0)
    mask = read_map(path, role="mask")
    with pytest.raises(InputError) as exc:
        binarize_mask(mask)
    msg = message(exc)
    assert str(path) in msg
    assert "not binary" in msg and "distinct values" in msg
    assert "set input.mask_threshold (e.g. 0.5)" in msg
    out = binarize_mask(mask, threshold=0.5)
    np.testing.assert_array_equal(out, mask.data >= 0.5)
    assert 0 < out.sum() < out.size


def test_empty_mask(tmp_path):
    path = write_map(tmp_path / "empty_mask.mrc", np.zeros((16, 16, 16)), voxel_size=1.0)
    with pytest.raises(InputError, match="empty") as exc:
        binarize_mask(read_map(path, role="mask"))
    assert str(path) in message(exc)


def test_threshold_selecting_nothing():
    m = info(np.full((8, 8, 8), 0.3), role="mask")
    with pytest.raises(InputError, match=r"lower input\.mask_threshold"):
        binarize_mask(m, threshold=0.5)


def test_bare_array_mask():
    assert binarize_mask(np.ones((4, 4, 4))).all()


# --------------------------------------------------------------------------------------------
# check_same_grid / check_half_maps
# --------------------------------------------------------------------------------------------


def test_contour_mask_on_a_different_grid():
    m_path = need(REAL / "maps" / "emd_3488.mrc")
    k_path = need(REAL / "maps" / "emd_3488_contour_mask.mrc")
    m = read_map(m_path)
    k = read_map(k_path, role="mask")
    with pytest.raises(InputError) as exc:
        check_same_grid(m, k)
    msg = message(exc)
    assert str(m_path) in msg and str(k_path) in msg
    assert "91x91x100" in msg and "100x100x100" in msg
    assert "volume resample" in msg


def test_contour_mask_padded_passes():
    m = read_map(need(REAL / "maps" / "emd_3488.mrc"))
    k = read_map(need(REAL / "maps" / "emd_3488_contour_mask.mrc"), role="mask")
    padded = np.zeros(m.shape, np.float32)
    padded[:, :91, :91] = k.data
    assert check_same_grid(m, info(padded, voxel_size=1.05, role="mask")) == []


def test_voxel_size_mismatch():
    a = info(np.zeros((8, 8, 8)), voxel_size=1.0, path="/x/map.mrc")
    b = info(np.zeros((8, 8, 8)), voxel_size=1.1, role="mask", path="/x/mask.mrc")
    with pytest.raises(InputError, match="voxel size") as exc:
        check_same_grid(a, b)
    msg = message(exc)
    assert "/x/map.mrc" in msg and "/x/mask.mrc" in msg
    # Within 1e-3 relative: same grid.
    c = info(np.zeros((8, 8, 8)), voxel_size=1.0005, role="mask")
    assert check_same_grid(a, c) == []


def test_origin_difference_is_only_a_warning():
    a = info(np.zeros((8, 8, 8)), path="/x/map.mrc", origin=(1.0, 2.0, 3.0))
    b = info(np.zeros((8, 8, 8)), role="mask", path="/x/mask.mrc", nstart=(-2, 0, 0))
    warns = check_same_grid(a, b)
    assert len(warns) == 2
    assert all("\n" not in w and "/x/mask.mrc" in w for w in warns)
    assert "origin" in warns[0] and "start indices" in warns[1]


def test_half_maps():
    rng = np.random.default_rng(0)
    h1 = rng.normal(size=(8, 8, 8))
    h2 = rng.normal(size=(8, 8, 8))
    assert check_half_maps(info(h1, role="half map 1"), info(h2, role="half map 2")) == []
    with pytest.raises(InputError, match="identical") as exc:
        check_half_maps(
            info(h1, role="half map 1", path="/x/h1.mrc"),
            info(h1.copy(), role="half map 2", path="/x/h2.mrc"),
        )
    msg = message(exc)
    assert "/x/h1.mrc" in msg and "/x/h2.mrc" in msg
    with pytest.raises(InputError, match="box"):
        check_half_maps(info(h1), info(h2[:, :, :7], role="half map 2"))


# --------------------------------------------------------------------------------------------
# check_box
# --------------------------------------------------------------------------------------------


def test_cubic_box_passes():
    check_box((64, 64, 64), 1.0, 18.0)
    check_box((100, 100, 100), 1.05, 18.0)


def test_non_cubic_box():
    with pytest.raises(InputError, match="not cubic") as exc:
        check_box((100, 91, 91), 1.05, name="map /x/m.mrc")
    msg = message(exc)
    assert "/x/m.mrc" in msg and "91x91x100" in msg
    assert "pad it to 100x100x100" in msg and "--new_box 100" in msg


def test_tiny_box():
    with pytest.raises(InputError, match="at least 16"):
        check_box((12, 12, 12), 1.0, 5.0)


def test_low_resolution_too_coarse_for_box():
    # 20 voxels of 1 A: 18 A is Fourier index 1.1 < 2.
    with pytest.raises(InputError) as exc:
        check_box((20, 20, 20), 1.0, 18.0)
    msg = message(exc)
    assert "lower monores.low_resolution to at most 10 A" in msg
    check_box((20, 20, 20), 1.0, 10.0)


def test_low_resolution_beyond_nyquist():
    with pytest.raises(InputError, match="Nyquist"):
        check_box((64, 64, 64), 3.0, 5.0)


# --------------------------------------------------------------------------------------------
# check_noise_region
# --------------------------------------------------------------------------------------------


def test_noise_region_ok():
    mask = sphere_mask(64, 15)
    region = check_noise_region(mask, single_map=True)
    assert region.protein_radius == pytest.approx(15.0)
    assert region.half_box == 32
    assert region.n_mask == int(mask.sum())
    assert region.n_background == int((sphere_mask(64, 32) & ~mask).sum())


def test_mask_too_large_for_single_map():
    mask = sphere_mask(64, 28)
    with pytest.raises(InputError) as exc:
        check_noise_region(mask, single_map=True, name="mask /x/mask.mrc")
    msg = message(exc)
    assert "/x/mask.mrc" in msg
    assert "radius 28.0 voxels" in msg and "half-size is 32" in msg
    assert "input.half_maps" in msg and "larger box" in msg
    # With half maps it is fine.
    assert check_noise_region(mask, single_map=False).protein_radius == pytest.approx(28.0)


def test_off_centre_mask_counts_its_far_side():
    mask = sphere_mask(64, 6, center=(50, 32, 32))  # x = 50 -> 18 voxels from the centre
    with pytest.raises(InputError, match=r"radius 24\.0"):
        check_noise_region(mask, single_map=True, shell=8)


def test_too_little_background():
    mask = np.zeros((12, 12, 12), bool)
    mask[6, 6, 6] = True
    with pytest.raises(InputError, match="background voxels"):
        check_noise_region(mask, single_map=True, shell=1)


def test_empty_mask_in_noise_check():
    with pytest.raises(InputError, match="empty"):
        check_noise_region(np.zeros((16, 16, 16), bool), single_map=False)


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------


def test_estimate_memory_model():
    n = 100
    base = estimate_memory((n, n, n), 1, 1)
    spectrum = 8 * n * n * (n // 2 + 1)
    assert base == WORKER_OVERHEAD_BYTES + spectrum + 12 * 4 * n**3
    assert estimate_memory((n, n, n), 4, 2) == base + 12 * 4 * n**3
    assert estimate_memory((200, 200, 200), 1, 1) > 7 * (base - WORKER_OVERHEAD_BYTES)
    with pytest.raises(InputError):
        estimate_memory((n, n, n), 0, 1)


def test_check_memory():
    shape = (256, 256, 256)
    need_bytes = check_memory(shape, 64 * 2**30)
    assert need_bytes == estimate_memory(shape, 1, 1)
    with pytest.raises(InputError) as exc:
        check_memory(shape, 2**30, threads=2)
    msg = message(exc)
    assert "256x256x256" in msg and "GiB" in msg
    assert "cluster.memory" in msg and "fewer processes per job" in msg
