"""MRC reading and writing: header conventions, axis orders, refusals, atomic writes."""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest

import monodir.io.mrc as mrc_mod
from monodir.errors import InputError
from monodir.io.mrc import MapInfo, read_map, write_map

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = DATA / "real"


def need(path: Path) -> Path:
    """Skip when the shared data are absent, except on CI where that is a failure."""
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared test data missing: {path}")
        pytest.skip(f"shared test data missing: {path}")
    return path


def asymmetric(shape: tuple[int, int, int] = (5, 6, 7)) -> np.ndarray:
    """A non-cubic array whose every voxel value is distinct."""
    rng = np.random.default_rng(7)
    return rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32)


def write_raw(path: Path, data: np.ndarray, voxel_size=1.0, **header) -> Path:
    """Write with mrcfile directly, then patch header fields."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mrcfile warns about NaN data
        m = mrcfile.new(path, data, overwrite=True)
    with m:
        if voxel_size is not None:
            m.voxel_size = voxel_size
        for key, value in header.items():
            setattr(m.header, key, value)
    return path


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------------
# real files from ../shared
# --------------------------------------------------------------------------------------------


def test_real_map_with_nonzero_origin():
    info = read_map(need(REAL / "simulated" / "1ake_molmap45_chimera.mrc"))
    assert info.shape == (49, 46, 48)  # (nz, ny, nx) for a 48 x 46 x 49 box
    assert info.data.dtype == np.float32 and info.data.flags.c_contiguous
    assert info.voxel_size == pytest.approx(1.5)
    assert info.origin == pytest.approx((-10.994, 11.881, -9.91), abs=1e-3)
    assert info.nstart == (0, 0, 0)
    assert info.voxel_size_source == "header"
    assert info.box_xyz == "48x46x49"


def test_real_map_with_nonzero_nstart():
    info = read_map(need(REAL / "maps" / "emd_3197.map"))
    assert info.shape == (20, 20, 20)
    assert info.nstart == (-2, 0, 0)
    assert info.origin == (0.0, 0.0, 0.0)
    assert info.voxel_size == pytest.approx(11.4)
    assert any("EMD-3197" in lab for lab in info.labels)


def test_real_map_and_contour_mask_shapes():
    m = read_map(need(REAL / "maps" / "emd_3488.mrc"))
    k = read_map(need(REAL / "maps" / "emd_3488_contour_mask.mrc"), role="mask")
    assert m.shape == (100, 100, 100)
    assert k.shape == (100, 91, 91)
    assert m.voxel_size == pytest.approx(1.05) and k.voxel_size == pytest.approx(1.05)
    assert set(np.unique(k.data)) <= {0.0, 1.0}


# --------------------------------------------------------------------------------------------
# axis order
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", list(itertools.permutations((1, 2, 3))))
def test_all_axis_orders_come_back_as_zyx(tmp_path, order):
    truth = asymmetric((5, 6, 7))  # [z, y, x]: nz=5, ny=6, nx=7
    mapc, mapr, maps = order
    # The file stores [section, row, column]; column runs along spatial axis mapc, etc.
    # Array axis of `truth` for spatial axis s (1=x, 2=y, 3=z) is 3 - s.
    stored = np.ascontiguousarray(truth.transpose(3 - maps, 3 - mapr, 3 - mapc))
    nstart_xyz = (-3, 4, 11)
    crs_start = tuple(nstart_xyz[s - 1] for s in order)
    path = tmp_path / f"order_{mapc}{mapr}{maps}.mrc"
    with mrcfile.new(path, stored) as m:
        m.header.mapc, m.header.mapr, m.header.maps = order
        # MX/MY/MZ and CELLA are in x, y, z order whatever the storage order.
        m.header.mx, m.header.my, m.header.mz = 7, 6, 5
        m.header.cella = (7 * 1.5, 6 * 1.5, 5 * 1.5)
        m.header.nxstart, m.header.nystart, m.header.nzstart = crs_start
    info = read_map(path)
    assert info.axis_order == order
    assert info.shape == (5, 6, 7)
    np.testing.assert_array_equal(info.data, truth)
    assert info.voxel_size == pytest.approx(1.5)
    assert info.nstart == nstart_xyz


def test_invalid_axis_order_is_refused(tmp_path):
    path = write_raw(tmp_path / "bad_axes.mrc", asymmetric(), mapc=1, mapr=1, maps=3)
    with pytest.raises(InputError, match="MAPC/MAPR/MAPS") as exc:
        read_map(path)
    assert str(path) in one_line(exc)


# --------------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mrc"
    with pytest.raises(InputError, match="not found") as exc:
        read_map(path, role="mask")
    msg = one_line(exc)
    assert msg.startswith("mask file") and str(path) in msg


def test_truncated_file(tmp_path):
    good = write_raw(tmp_path / "good.mrc", asymmetric((16, 16, 16)))
    bad = tmp_path / "truncated.mrc"
    bad.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(InputError, match="not a readable MRC") as exc:
        read_map(bad)
    assert str(bad) in one_line(exc)


def test_truncated_gzip_file(tmp_path):
    good = write_map(tmp_path / "good.mrc.gz", asymmetric((16, 16, 16)), voxel_size=1.0)
    bad = tmp_path / "truncated.mrc.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="not a readable MRC") as exc:
        read_map(bad)
    assert str(bad) in one_line(exc)


def test_text_file_renamed_mrc(tmp_path):
    path = tmp_path / "notes.mrc"
    path.write_text("this is not a map\n" * 100)
    with pytest.raises(InputError, match="not a readable MRC") as exc:
        read_map(path)
    assert str(path) in one_line(exc)


def test_old_file_without_map_stamp_is_read_permissively(tmp_path):
    data = asymmetric()
    path = write_raw(tmp_path / "old.mrc", data, map=b"    ")
    info = read_map(path)
    np.testing.assert_array_equal(info.data, data)
    assert any("permissive" in w for w in info.warnings)


def test_tiny_file(tmp_path):
    path = tmp_path / "tiny.mrc"
    path.write_bytes(b"MAP ")
    with pytest.raises(InputError, match="MRC") as exc:
        read_map(path)
    one_line(exc)


def test_directory_is_refused(tmp_path):
    with pytest.raises(InputError, match="not a regular file"):
        read_map(tmp_path)


def test_nan_and_inf_are_counted(tmp_path):
    data = asymmetric()
    data[0, 0, 0] = np.nan
    data[1, 2, 3] = np.nan
    data[4, 5, 6] = np.inf
    path = write_raw(tmp_path / "nan.mrc", data)
    with pytest.raises(InputError) as exc:
        read_map(path)
    msg = one_line(exc)
    assert "3 of 210 voxels are not finite (2 NaN, 1 Inf)" in msg
    assert str(path) in msg


def test_2d_data_is_refused(tmp_path):
    path = write_raw(tmp_path / "image.mrc", np.zeros((8, 9), np.float32))
    with pytest.raises(InputError, match="not a 3D volume"):
        read_map(path)


def test_complex_mode_is_refused(tmp_path):
    path = tmp_path / "complex.mrc"
    with mrcfile.new(path, np.zeros((4, 4, 4), np.complex64)) as m:
        m.voxel_size = 1.0
    with pytest.raises(InputError, match="complex"):
        read_map(path)


def test_zero_voxel_size_needs_override(tmp_path):
    path = write_raw(tmp_path / "novs.mrc", asymmetric(), voxel_size=None)
    with pytest.raises(InputError) as exc:
        read_map(path)
    msg = one_line(exc)
    assert "set input.voxel_size in the config" in msg and str(path) in msg
    info = read_map(path, voxel_size=1.2)
    assert info.voxel_size == 1.2
    assert info.voxel_size_source == "config"
    assert info.header_voxel_size == (0.0, 0.0, 0.0)


def test_override_differs_from_header(tmp_path):
    path = write_raw(tmp_path / "vs.mrc", asymmetric(), voxel_size=1.0)
    info = read_map(path, voxel_size=3.54)
    assert info.voxel_size == 3.54
    assert info.voxel_size_source == "config"
    assert info.header_voxel_size == pytest.approx((1.0, 1.0, 1.0))
    assert any("overrides" in w for w in info.warnings)
    same = read_map(path, voxel_size=1.0)
    assert same.voxel_size_source == "config" and not same.warnings
    assert read_map(path).voxel_size_source == "header"


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_override(tmp_path, bad):
    path = write_raw(tmp_path / "vs.mrc", asymmetric())
    with pytest.raises(InputError, match="not a positive number"):
        read_map(path, voxel_size=bad)


def test_anisotropic_voxel_size(tmp_path):
    path = write_raw(tmp_path / "aniso.mrc", asymmetric(), voxel_size=(1.0, 1.0, 1.2))
    with pytest.raises(InputError, match="anisotropic voxel size") as exc:
        read_map(path)
    assert str(path) in one_line(exc)
    # Within the 1e-3 relative tolerance it is accepted.
    ok = write_raw(tmp_path / "nearly.mrc", asymmetric(), voxel_size=(1.0, 1.0, 1.0005))
    assert read_map(ok).voxel_size == pytest.approx(1.0)


def test_integer_mode_is_converted(tmp_path):
    data = np.arange(210, dtype=np.int16).reshape(5, 6, 7)
    path = write_raw(tmp_path / "int16.mrc", data)
    info = read_map(path)
    assert info.data.dtype == np.float32
    np.testing.assert_array_equal(info.data, data.astype(np.float32))
    info.data[0, 0, 0] = 5.0  # a private writeable copy


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def test_round_trip_keeps_header(tmp_path):
    data = asymmetric((6, 7, 8))
    path = write_map(
        tmp_path / "out.mrc",
        data,
        voxel_size=1.3,
        origin=(-11.0, 11.9, -9.9),
        nstart=(-2, 0, 5),
        label="radial resolution (Å)",
    )
    info = read_map(path)
    np.testing.assert_array_equal(info.data, data)
    assert info.voxel_size == pytest.approx(1.3, rel=1e-6)
    assert info.origin == pytest.approx((-11.0, 11.9, -9.9), abs=1e-4)
    assert info.nstart == (-2, 0, 5)
    assert any(lab.startswith("monodir ") and "radial resolution (A)" in lab for lab in info.labels)
    with mrcfile.open(path) as m:
        assert int(m.header.mode) == 2
        assert int(m.header.ispg) == 1
        assert float(m.header.dmax) == pytest.approx(float(data.max()))
        assert float(m.header.dmin) == pytest.approx(float(data.min()))
        assert m.validate()


def test_round_trip_real_header(tmp_path):
    src = read_map(need(REAL / "maps" / "emd_3197.map"))
    out = write_map(
        tmp_path / "copy.map",
        src.data,
        voxel_size=src.voxel_size,
        origin=src.origin,
        nstart=src.nstart,
    )
    back = read_map(out)
    assert back.nstart == (-2, 0, 0)
    assert back.voxel_size == pytest.approx(11.4)
    np.testing.assert_array_equal(back.data, src.data)


def test_gzip_round_trip(tmp_path):
    data = asymmetric()
    path = write_map(tmp_path / "out.mrc.gz", data, voxel_size=2.0)
    with open(path, "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"
    np.testing.assert_array_equal(read_map(path).data, data)


def test_write_is_atomic_and_refuses_overwrite(tmp_path):
    first = asymmetric()
    path = write_map(tmp_path / "out.mrc", first, voxel_size=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mrc"]
    with pytest.raises(InputError, match="already exists") as exc:
        write_map(path, first * 2, voxel_size=1.0)
    assert str(path) in one_line(exc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mrc"]
    np.testing.assert_array_equal(read_map(path).data, first)
    write_map(path, first * 2, voxel_size=1.0, overwrite=True)
    np.testing.assert_array_equal(read_map(path).data, first * 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mrc"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_new(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mrc_mod.mrcfile, "new", broken_new)
    with pytest.raises(OSError, match="disk full"):
        write_map(tmp_path / "out.mrc", asymmetric(), voxel_size=1.0)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="3D"):
        write_map(tmp_path / "a.mrc", np.zeros((4, 4)), voxel_size=1.0)
    with pytest.raises(InputError, match="voxel size"):
        write_map(tmp_path / "a.mrc", np.zeros((4, 4, 4)), voxel_size=0.0)
    with pytest.raises(InputError, match="does not exist"):
        write_map(tmp_path / "missing" / "a.mrc", np.zeros((4, 4, 4)), voxel_size=1.0)


def test_long_label_is_cut(tmp_path):
    path = write_map(tmp_path / "l.mrc", asymmetric(), voxel_size=1.0, label="x" * 200)
    labels = read_map(path).labels
    assert any(lab.startswith("monodir") and len(lab) <= 80 for lab in labels)


def test_mapinfo_in_memory():
    info = MapInfo(np.zeros((2, 3, 4), np.float32), voxel_size=1.0)
    assert info.shape == (2, 3, 4)
    assert info.name == "map (in memory)"
    assert info.box_xyz == "4x3x2"
