"""The Zarr run store: layout, round trips, resume markers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from monodir.core.results import DirectionalResult, MonoResResult
from monodir.errors import InputError
from monodir.io import store as store_mod
from monodir.io.store import (
    RunStore,
    array_digest,
    package_versions,
    read_block,
    write_direction_row,
)


@pytest.fixture
def store(tmp_path):
    return RunStore.create(
        tmp_path / "run.zarr",
        attrs={
            "voxel_size": 1.5,
            "origin": [1.0, 2.0, 3.0],
            "numeric_config": {"monores": {"step": 0.25}},
            "input_digest": "abc",
            "config": {"output": {"directory": str(tmp_path)}},
        },
    )


def _monores(shape=(8, 8, 8)) -> MonoResResult:
    rng = np.random.default_rng(1)
    res = rng.uniform(3, 9, shape).astype(np.float32)
    return MonoResResult(
        resolution=res,
        chimera=res * 2,
        refined_mask=res > 5,
        resolutions=np.array([9.0, 8.5, 8.0]),
        stats={"resolution": np.array([9.0, 8.5, 8.0]), "z": np.array([1.0, np.nan, 3.0])},
        voxel_size=1.5,
        stop_reason="z-test",
    )


def _directional(shape=(8, 8, 8), d=5) -> DirectionalResult:
    rng = np.random.default_rng(2)
    idx = np.flatnonzero(rng.uniform(size=np.prod(shape)) > 0.5)
    return DirectionalResult(
        directions=rng.normal(size=(d, 3)),
        angles=rng.uniform(0, 90, (d, 2)),
        mask_indices=idx,
        resolution_matrix=rng.uniform(3, 9, (d, idx.size)).astype(np.float32),
        maps={"radial": rng.uniform(size=shape).astype(np.float32), "doa": np.zeros(shape)},
        thresholds={"radial_p90": 5.5, "azimuthal_p90": float("nan")},
        radial_averages={"radius": np.arange(4.0), "radial_mean": np.ones(4)},
        preferred_directions={"rot": np.zeros(d), "count": np.arange(d)},
        direction_means=np.arange(d, dtype=float),
        anisotropy_axis=np.array([0.0, 0.6, 0.8]),
        axis_angle_to_z=36.87,
        voxel_size=1.5,
        extra={
            "note": "hello",
            "per_direction": np.arange(d),
            "fsc": {"f": np.arange(3.0), "v": np.ones(3)},
            "weird": object(),
        },
    )


def test_create_open_attributes(store, tmp_path):
    assert RunStore.exists(tmp_path / "run.zarr")
    again = RunStore.open(tmp_path / "run.zarr", mode="r")
    attrs = again.attrs
    assert attrs["status"] == "running"
    assert attrs["voxel_size"] == 1.5
    assert attrs["format_version"] == store_mod.FORMAT_VERSION
    for pkg in (
        "numpy",
        "scipy",
        "pyfftw",
        "zarr",
        "dask",
        "distributed",
        "dask_jobqueue",
        "monodir",
    ):
        assert pkg in attrs["versions"]
    # Zarr v3 on disk
    meta = json.loads((tmp_path / "run.zarr" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    with pytest.raises(FileExistsError):
        RunStore.create(tmp_path / "run.zarr")


def test_status_and_timings(store):
    store.record_timing("monores", 1.23456)
    store.record_timing("directions", 2)
    store.set_status("complete")
    assert store.status == "complete"
    assert store.attrs["timings"] == {"monores": 1.235, "directions": 2.0}
    with pytest.raises(ValueError):
        store.set_status("weird")


def test_check_resumable(store):
    store.check_resumable({"monores": {"step": 0.25}}, "abc")
    with pytest.raises(InputError, match=r"different config; use output\.overwrite"):
        store.check_resumable({"monores": {"step": 0.5}}, "abc")
    with pytest.raises(InputError, match="different input data"):
        store.check_resumable({"monores": {"step": 0.25}}, "xyz")


def test_volume_round_trip_is_compressed_and_chunked(store):
    vol = np.random.default_rng(0).normal(size=(70, 70, 70)).astype(np.float32)
    store.write_array("inputs/map", vol)
    np.testing.assert_array_equal(store.read_array("inputs/map"), vol)
    arr = store.group["inputs/map"]
    assert arr.chunks == (64, 64, 64)
    assert arr.metadata.codecs[-1].to_dict()["name"] == "blosc"
    mask = vol > 0
    store.write_array("inputs/mask", mask)
    assert store.read_array("inputs/mask").dtype == bool


def test_monores_round_trip(store):
    mr = _monores()
    assert not store.has_monores()
    store.write_monores(mr)
    assert store.has_monores()
    back = store.load_monores()
    np.testing.assert_array_equal(back.resolution, mr.resolution)
    np.testing.assert_array_equal(back.chimera, mr.chimera)
    np.testing.assert_array_equal(back.refined_mask, mr.refined_mask)
    np.testing.assert_array_equal(back.resolutions, mr.resolutions)
    assert list(back.stats) == ["resolution", "z"]
    np.testing.assert_array_equal(back.stats["z"], mr.stats["z"])
    assert back.stop_reason == "z-test" and back.voxel_size == 1.5


def test_directional_round_trip(store):
    dr = _directional()
    store.write_directional(dr)
    assert store.has_directional_result()
    back = store.load_directional()
    np.testing.assert_array_equal(back.resolution_matrix, dr.resolution_matrix)
    np.testing.assert_array_equal(back.mask_indices, dr.mask_indices)
    np.testing.assert_allclose(back.directions, dr.directions)
    assert set(back.maps) == {"radial", "doa"}
    assert back.maps["doa"].dtype == np.float32
    assert back.thresholds["radial_p90"] == 5.5 and np.isnan(back.thresholds["azimuthal_p90"])
    assert list(back.preferred_directions) == ["rot", "count"]
    np.testing.assert_allclose(back.anisotropy_axis, dr.anisotropy_axis)
    assert back.axis_angle_to_z == pytest.approx(36.87)
    assert back.extra["note"] == "hello"
    np.testing.assert_array_equal(back.extra["per_direction"], np.arange(5))
    np.testing.assert_array_equal(back.extra["fsc"]["v"], np.ones(3))
    assert "weird" not in back.extra
    light = store.load_directional(with_matrix=False)
    assert light.resolution_matrix.shape == (5, 0)


def test_lazy_maps_read_each_map_when_looked_up(store, monkeypatch):
    dr = _directional()
    store.write_directional(dr)
    lazy = store.load_directional(with_matrix=False, lazy_maps=True)
    assert set(lazy.maps) == {"radial", "doa"} and len(lazy.maps) == 2
    assert "radial" in lazy.maps and "zscore" not in lazy.maps
    with pytest.raises(KeyError):
        lazy.maps["zscore"]
    reads = []
    original = store.read_array
    monkeypatch.setattr(store, "read_array", lambda name: reads.append(name) or original(name))
    for name in ("doa", "doa", "radial"):
        np.testing.assert_array_equal(lazy.maps[name], dr.maps[name])
    assert reads == ["maps/doa", "maps/doa", "maps/radial"]  # nothing is kept


def test_rows_markers_and_blocks(store):
    n_done, d = store.init_directional(4, 10, "m1", width=4)
    assert (n_done, d) == (0, 4)
    arr = store.group["directional/resolution"]
    assert arr.shape == (4, 10) and arr.chunks == (1, 4) and arr.dtype == np.float32
    assert store.group["directional/done"].chunks == (1,)
    assert not store.done_directions().any()
    rows = np.arange(40, dtype=np.float32).reshape(4, 10)
    stamp = write_direction_row(store.path, 2, rows[2])
    write_direction_row(store.path, 0, rows[0])
    assert store.done_directions().tolist() == [True, False, True, False]
    assert store.finished_at()[2] == stamp
    np.testing.assert_array_equal(read_block(store.path, 3, 9)[[0, 2]], rows[[0, 2], 3:9])
    assert np.isnan(read_block(store.path, 0, 10)[1]).all()
    with pytest.raises(ValueError):
        write_direction_row(store.path, 1, np.zeros(9))
    # reopening the same problem keeps the finished rows
    assert store.init_directional(4, 10, "m1", width=4) == (2, 4)
    # another mask starts again
    assert store.init_directional(4, 10, "m2") == (0, 4)
    assert not store.done_directions().any()


def test_marker_written_after_row(store, monkeypatch):
    """A writer killed between the row and its marker leaves the direction not done."""
    store.init_directional(3, 5, "m")
    real_open = store_mod._open_array

    def failing_open(path, name, mode="r+"):
        if name == "directional/done":
            raise KeyboardInterrupt("killed")
        return real_open(path, name, mode)

    monkeypatch.setattr(store_mod, "_open_array", failing_open)
    with pytest.raises(KeyboardInterrupt):
        write_direction_row(store.path, 1, np.ones(5))
    monkeypatch.undo()
    assert not store.done_directions().any()
    np.testing.assert_array_equal(read_block(store.path, 0, 5)[1], np.ones(5))


def test_helpers():
    a = np.arange(6, dtype=np.float32)
    assert array_digest(a) == array_digest(a.copy())
    assert array_digest(a) != array_digest(a.reshape(2, 3))
    assert array_digest(a, None) != array_digest(a)
    versions = package_versions()
    assert versions["zarr"] == zarr.__version__
    assert store_mod.row_chunk(10) == 10
    assert store_mod.row_chunk(10**8) == store_mod.MAX_ROW_CHUNK


def test_remove(store, tmp_path):
    RunStore.remove(store.path)
    assert not store.path.exists()
    RunStore.remove(store.path)  # no error


def test_lazy_matrix_is_read_in_row_chunks(store):
    from monodir.report.summary import _rejected_fraction

    dr = _directional()
    store.write_directional(dr)
    lazy = store.load_directional(lazy_matrix=True)
    eager = store.load_directional()
    assert not isinstance(lazy.resolution_matrix, np.ndarray)
    assert lazy.resolution_matrix.shape == eager.resolution_matrix.shape
    rows = np.asarray(lazy.resolution_matrix[1:3])
    np.testing.assert_array_equal(rows, eager.resolution_matrix[1:3])
    assert _rejected_fraction(lazy.resolution_matrix, 2) == _rejected_fraction(
        eager.resolution_matrix
    )
