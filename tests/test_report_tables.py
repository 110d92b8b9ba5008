"""Tables (STAR + CSV) and the run summary JSON."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import starfile

from monodir.report.summary import (
    MAP_INFO,
    PERCENTILES,
    build_summary,
    map_values,
    to_jsonable,
    write_summary,
)
from monodir.report.tables import (
    OutputTable,
    directions_table,
    format_value,
    preferred_directions_table,
    radial_averages_table,
    thresholds_table,
    write_all_tables,
    write_star,
)

try:
    from report_fixtures import N_DIRECTIONS, make_example
except ImportError:  # tests run as a package
    from tests.report_fixtures import N_DIRECTIONS, make_example


@pytest.fixture(scope="module")
def example():
    return make_example(seed=1, with_global_fsc=True)


@pytest.fixture(scope="module")
def written(example, tmp_path_factory):
    monores, directional = example
    out = tmp_path_factory.mktemp("tables")
    return out, write_all_tables(out, monores, directional, xmipp_names=True)


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    return {h: np.array([float(r[i]) for r in body]) for i, h in enumerate(header)}


def _read_star(path: Path):
    df = starfile.read(path)
    if isinstance(df, dict):  # older starfile versions always return a dict
        assert len(df) == 1
        df = next(iter(df.values()))
    return df


def test_expected_files(written):
    out, paths = written
    names = {p.name for p in paths}
    for stem in ("thresholds", "radial_averages", "preferred_directions", "directions"):
        assert f"{stem}.star" in names and f"{stem}.csv" in names
    assert {"monores_stats.star", "monores_stats.csv"} <= names
    assert {"thresholds.xmd", "Radial_averages.xmd", "hist_prefdir.xmd"} <= names
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    # atomic writes leave no temporary files behind
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_star_parses_and_agrees_with_csv(written):
    _, paths = written
    for star in [p for p in paths if p.suffix in (".star", ".xmd")]:
        df = _read_star(star)
        stem = {"Radial_averages": "radial_averages", "hist_prefdir": "preferred_directions"}.get(
            star.stem, star.stem
        )
        table = _read_csv(star.parent / f"{stem}.csv")
        assert len(df) == len(next(iter(table.values())))
        assert len(df.columns) == len(table)
        for star_col, csv_col in zip(df.columns, table):
            np.testing.assert_allclose(
                df[star_col].to_numpy(dtype=np.float64),
                table[csv_col],
                rtol=1e-12,
                equal_nan=True,
                err_msg=f"{star.name}: {star_col} vs {csv_col}",
            )


def test_xmipp_column_names(written):
    out, _ = written
    assert list(_read_star(out / "thresholds.star").columns) == [
        "resolutionFreqFourier",
        "resolutionFreqFourier2",
    ]
    ra = list(_read_star(out / "radial_averages.star").columns)
    assert ra[:6] == ["index", "volScore1", "volScore2", "volScore3", "volScore4", "avg"]
    assert {"volScore1Std", "avgStd", "radiusAngstrom"} <= set(ra)
    assert list(_read_star(out / "preferred_directions.star").columns) == [
        "angleRot",
        "angleTilt",
        "weight",
        "resolutionFreqFourier",
        "x",
        "count",
    ]
    csv_ra = _read_csv(out / "radial_averages.csv")
    assert list(csv_ra)[:6] == [
        "radius_vox",
        "radial_A",
        "azimuthal_A",
        "highest_A",
        "lowest_A",
        "monores_A",
    ]


def test_values_match_results(example, written):
    monores, directional = example
    out, _ = written
    th = _read_star(out / "thresholds.star")
    assert th["resolutionFreqFourier"][0] == pytest.approx(directional.thresholds["radial_p90"])
    assert th["resolutionFreqFourier2"][0] == pytest.approx(directional.thresholds["azimuthal_p90"])
    ra = _read_star(out / "radial_averages.star")
    np.testing.assert_array_equal(ra["index"], directional.radial_averages["radius"])
    np.testing.assert_allclose(
        ra["volScore1"], directional.radial_averages["radial_mean"], rtol=1e-9
    )
    np.testing.assert_allclose(ra["avg"], directional.radial_averages["monores_mean"], rtol=1e-9)
    np.testing.assert_allclose(
        ra["radiusAngstrom"], directional.radial_averages["radius"] * directional.voxel_size
    )
    pref = _read_star(out / "preferred_directions.star")
    assert len(pref) == N_DIRECTIONS
    np.testing.assert_array_equal(pref["count"], directional.preferred_directions["count"])
    np.testing.assert_array_equal(pref["weight"], directional.preferred_directions["count"])
    empty = directional.preferred_directions["count"] == 0
    assert empty.any()  # the fixture has directions nobody prefers: NaN must round-trip
    assert np.all(np.isnan(pref["resolutionFreqFourier"].to_numpy()[empty]))

    dirs = _read_star(out / "directions.star")
    assert len(dirs) == N_DIRECTIONS
    np.testing.assert_allclose(dirs["resolutionMean"], directional.direction_means, rtol=1e-9)
    np.testing.assert_allclose(
        dirs[["dx", "dy", "dz"]].to_numpy(), directional.directions, atol=1e-9
    )
    np.testing.assert_array_equal(dirs["count"], directional.preferred_directions["count"])
    assert np.all((dirs["angleToZ"] >= 0) & (dirs["angleToZ"] <= 90))

    stats = _read_csv(out / "monores_stats.csv")
    np.testing.assert_allclose(stats["resolution_A"], monores.stats["resolution"], rtol=1e-9)
    np.testing.assert_array_equal(stats["n_signal"], monores.stats["n_signal"])


def test_without_monores(example, tmp_path):
    _, directional = example
    paths = write_all_tables(tmp_path, None, directional)
    names = {p.name for p in paths}
    assert "monores_stats.star" not in names
    assert "thresholds.xmd" not in names  # Xmipp copies only on request
    # 4 tables x (STAR + CSV), plus the per-direction global FSC table of half-map runs
    assert len(paths) == 10
    assert {"global_fsc_directions.star", "global_fsc_directions.csv"} <= names


def test_global_fsc_table_round_trip(example, tmp_path):
    import starfile

    _, directional = example
    write_all_tables(tmp_path, None, directional)
    star = starfile.read(tmp_path / "global_fsc_directions.star")
    csv_rows = _read_csv(tmp_path / "global_fsc_directions.csv")
    expected = [d["resolution_A"] for d in directional.extra["global_fsc"]["directions"]]
    np.testing.assert_allclose(star["resolutionFSC0143"], expected, rtol=1e-5)
    np.testing.assert_allclose(csv_rows["fsc0143_resolution_A"], expected, rtol=1e-5)


def test_tables_in_memory(example):
    _, directional = example
    assert thresholds_table(directional).n_rows == 1
    assert preferred_directions_table(directional).n_rows == N_DIRECTIONS
    assert directions_table(directional).n_rows == N_DIRECTIONS
    ra = radial_averages_table(directional)
    assert ra.as_dict("star")["_index"].dtype.kind == "i"


def test_format_value_and_writer_edge_cases(tmp_path):
    assert format_value(3) == "3"
    assert format_value(np.int64(-2)) == "-2"
    assert format_value(float("nan")) == "nan"
    assert format_value(np.float32(0.5)) == "0.5"
    assert format_value(-0.0) == "0"
    assert format_value(True) == "1"
    assert format_value("a b") == '"a b"'
    t = OutputTable("edge")
    t.add("_a", "a", [1, 2])
    t.add("_b", "b", [np.inf, -1e-12])
    with pytest.raises(ValueError):
        t.add("_c", "c", [1.0])
    df = _read_star(write_star(tmp_path / "edge.star", t))
    assert list(df.columns) == ["a", "b"]
    assert math.isinf(df["b"][0])


# --------------------------------------------------------------------------- summary
def _summary(example):
    monores, directional = example
    return build_summary(
        monores,
        directional,
        config={"input": {"map": "maps/x.mrc"}, "directional": {"fast": False}},
        versions={"monodir": "0.1.0", "numpy": np.__version__},
        timings={"monores": 1.5, "directional": np.float64(20.25)},
        inputs={"map": Path("maps/x.mrc"), "shape": (32, 32, 32)},
    )


def test_summary_keys_and_values(example):
    monores, directional = example
    s = _summary(example)
    for key in (
        "schema",
        "voxel_size_A",
        "shape",
        "n_mask_voxels",
        "n_directions",
        "maps",
        "thresholds",
        "anisotropy",
        "monores",
        "directional",
        "timings",
        "timings_total_s",
        "config",
        "versions",
        "inputs",
        "global_fsc",
    ):
        assert key in s, key
    assert set(s["maps"]) == set(MAP_INFO)
    for name, st in s["maps"].items():
        for p in PERCENTILES:
            assert f"p{p}" in st
        assert st["p5"] <= st["p25"] <= st["median"] <= st["p75"] <= st["p95"]
        assert st["median"] == pytest.approx(np.median(map_values(monores, directional, name)))
    assert s["maps"]["monores"]["median"] == pytest.approx(monores.median)
    assert s["maps"]["monores"]["n"] == int(monores.refined_mask.sum())
    assert s["maps"]["radial"]["n"] == directional.mask_indices.size
    an = s["anisotropy"]
    assert an["axis_angle_to_z_deg"] == pytest.approx(directional.axis_angle_to_z)
    assert len(an["axis"]) == 3
    assert an["best_direction"]["mean_resolution_A"] == pytest.approx(
        np.nanmin(directional.direction_means)
    )
    assert an["worst_direction"]["mean_resolution_A"] == pytest.approx(
        np.nanmax(directional.direction_means)
    )
    assert 0 <= an["worst_direction"]["angle_to_z_deg"] <= 90
    assert an["median_anisotropy_index"] == pytest.approx(s["maps"]["anisotropy"]["median"])
    assert s["timings_total_s"] == pytest.approx(21.75)
    assert 0 < s["directional"]["rejected_fraction"] < 0.1
    assert s["inputs"]["shape"] == [32, 32, 32]


def test_summary_json_round_trip(example, tmp_path):
    s = _summary(example)
    path = write_summary(tmp_path / "summary.json", s)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert back == s
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_summary_without_monores_and_nan(example):
    _, directional = example
    s = build_summary(None, directional, config={}, versions={}, timings={}, inputs={})
    assert s["monores"] is None
    assert "monores" not in s["maps"]
    assert s["timings_total_s"] is None
    s = build_summary(
        None, directional, config={}, versions={}, timings={"a": 1, "total": 5}, inputs={}
    )
    assert s["timings_total_s"] == 5.0
    assert to_jsonable({"a": float("nan"), "b": np.array([1.0, np.inf])}) == {
        "a": None,
        "b": [1.0, None],
    }
