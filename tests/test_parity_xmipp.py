"""Parity with Xmipp's own outputs in ``xmipp_compat`` mode (../shared/data/xmipp_reference).

Criteria (issue: numerical core): for MonoRes and every directional map, at least 99 % of the
mask voxels within 0.01 Å of Xmipp. Tables: ``thresholds.xmd``, ``Radial_averages.xmd`` and
``hist_prefdir.xmd`` equal to Xmipp's in every row and column at the precision Xmipp prints
(6 decimals; counts exactly), both from the result and from the text our table writer
produces. This holds because every per-frequency threshold equals Xmipp's (so the directional
resolution matrix is Xmipp's) and the compat summaries repeat Xmipp's arithmetic
(``monodir.core.summaries``: float32 sampling, Abramowitz-Stegun z of the outlier cut, angle
ties in radians, shell sums in Xmipp's order, NaN standard deviations).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from monodir.core.directional import direction_resolution, prepare_directional, resolution_matrix
from monodir.core.monores import monores
from monodir.core.summaries import finalize_directional, voxel_summaries
from monodir.report.tables import (
    preferred_directions_table,
    radial_averages_table,
    thresholds_table,
)
from tests.shared_data import require_data

CASES = {"emd3488": 1.05, "betagal": 3.54}
#: Directional reference runs: (case, variant) and the voxel size (synth128 has no fast run).
DIR_RUNS = {
    ("emd3488", "xmipp"): 1.05,
    ("emd3488", "xmipp_fast"): 1.05,
    ("betagal", "xmipp"): 3.54,
    ("betagal", "xmipp_fast"): 3.54,
    ("synth128", "xmipp"): 1.0,
}
DIR_MAPS = {
    "radial": "radial_resolution",
    "azimuthal": "azimuthal_resolution",
    "highest": "highestResolution",
    "lowest": "lowestResolution",
    "doa": "doaMetric",
    "mean_doa": "meanResdoa",
    "zscore": "zscoreMap",
}


def _read_xmd(path: Path) -> tuple[list[str], list[list[str]]]:
    """Column labels and rows of an Xmipp metadata file, cells kept as the printed text."""
    cols, rows = [], []
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith("_"):
            cols.append(s[1:].split()[0])
        elif s and re.match(r"^[-0-9.n]", s):
            rows.append(s.split())
    return cols, rows


def _f6(value) -> str:
    """A value as Xmipp's metadata writer prints a double (fixed, 6 decimals)."""
    v = float(value)
    return "nan" if np.isnan(v) else f"{v:.6f}"


def _written(table) -> dict[str, list[str]]:
    """Cells of an :class:`OutputTable` as our writer formats them, keyed by STAR label."""
    rows = table.formatted_rows()
    return {c.star.lstrip("_"): [r[j] for r in rows] for j, c in enumerate(table.columns)}


def _assert_table_equal(cols, rows, ours: dict[str, list], written: dict[str, list[str]], name):
    """Every Xmipp cell equals ours printed like Xmipp (integers exactly, doubles %.6f)."""
    assert all(len(v) == len(rows) for v in ours.values()), (name, len(rows))
    for j, col in enumerate(cols):
        theirs = [r[j] for r in rows]
        integer = col in ("index", "count")
        mine = [str(int(v)) if integer else _f6(v) for v in ours[col]]
        text = [str(int(c)) if integer else _f6(c) for c in written[col]]
        bad = [(i, m, t) for i, (m, t) in enumerate(zip(mine, theirs)) if m != t]
        assert not bad, (name, col, len(bad), bad[:5])
        assert text == mine, (name, col, "written text rounds differently")


def _load(case: str):
    base = require_data(f"xmipp_reference/{case}")
    vol = mrcfile.read(base / "map.mrc").astype(np.float64)
    mask = mrcfile.read(base / "mask.mrc") > 0.5
    return base, vol, mask


@pytest.mark.parity
@pytest.mark.parametrize("case", [*CASES, "synth128"])
def test_monores_parity(case):
    base, vol, mask = _load(case)
    s = CASES.get(case, 1.0)
    out = monores(vol, mask, s, low_resolution=18.0, step=0.25, xmipp_compat=True, threads=2)
    ref = mrcfile.read(base / "xmipp" / "monoresResolutionMap.mrc.gz")
    ref_c = mrcfile.read(base / "xmipp" / "monoresResolutionChimera.mrc.gz")
    ref_m = mrcfile.read(base / "xmipp" / "refinedMask.mrc.gz") > 0.5
    assert (out.refined_mask == ref_m).mean() > 0.999
    for ours, theirs in ((out.resolution, ref), (out.chimera, ref_c)):
        close = np.abs(ours - theirs)[mask] < 0.01
        assert close.mean() >= 0.99, close.mean()


@pytest.fixture(scope="module", params=list(DIR_RUNS), ids=lambda p: "-".join(p))
def directional_case(request):
    case, variant = request.param
    base, vol, mask = _load(case)
    s = DIR_RUNS[request.param]
    setup = prepare_directional(
        vol,
        mask,
        s,
        fast=variant == "xmipp_fast",
        resolution_step=0.5,
        significance=0.95,
        xmipp_compat=True,
        threads=2,
    )
    first_log: list = []
    direction_resolution(setup, 0, 1, sweep_log=first_log)
    matrix = resolution_matrix(setup, threads=1, n_jobs=2)
    mono = mrcfile.read(base / variant / "monoresResolutionMap.mrc.gz").astype(np.float64)
    parts = [
        voxel_summaries(setup, matrix[:, a : a + 40000], a) for a in range(0, setup.n_mask, 40000)
    ]
    result = finalize_directional(setup, parts, monores_map=mono)
    return base / variant, setup, result, first_log


@pytest.mark.parity
def test_first_direction_log_matches(directional_case):
    ref_dir, _, _, first_log = directional_case
    lines = gzip.open(ref_dir / "logs" / "monodir.out.gz", "rt").read().split("NEW DIRECTION")[1]
    its = re.findall(
        r"Resolution= ([\d.]+),\s+Signal = ([\d.e-]+),\s+Noise = ([\d.e-]+),"
        r"\s+Threshold = ([\d.e-]+)",
        lines,
    )
    assert len(its) == len(first_log)
    for (r, sig, noise, thr), ours in zip(its, first_log):
        assert ours["resolution"] == pytest.approx(float(r), rel=1e-5)
        assert ours["mean_signal"] == pytest.approx(float(sig), rel=1e-5)
        assert ours["mean_noise"] == pytest.approx(float(noise), rel=1e-5)
        assert ours["threshold"] == pytest.approx(float(thr), rel=1e-5)


@pytest.mark.parity
def test_directional_maps_parity(directional_case):
    ref_dir, setup, result, _ = directional_case
    in_mask = np.zeros(int(np.prod(setup.shape)), bool)
    in_mask[setup.mask_indices] = True
    in_mask = in_mask.reshape(setup.shape)
    for name, fname in DIR_MAPS.items():
        ref = mrcfile.read(ref_dir / f"{fname}.mrc.gz").astype(np.float64)
        assert (ref[~in_mask] == 0).all()
        close = np.abs(result.maps[name] - ref)[in_mask] < 0.01
        assert close.mean() >= 0.99, (name, close.mean())


@pytest.mark.parity
def test_directional_tables_parity(directional_case):
    """thresholds.xmd, Radial_averages.xmd and hist_prefdir.xmd equal Xmipp's as printed."""
    ref_dir, _, result, _ = directional_case
    cols, rows = _read_xmd(ref_dir / "thresholds.xmd")
    th = result.thresholds
    ours = {
        "resolutionFreqFourier": [th["radial_p90"]],
        "resolutionFreqFourier2": [th["azimuthal_p90"]],
    }
    _assert_table_equal(cols, rows, ours, _written(thresholds_table(result)), "thresholds")

    cols, rows = _read_xmd(ref_dir / "Radial_averages.xmd")
    ra = result.radial_averages
    ours = {
        "index": ra["radius"],
        "volScore1": ra["radial_mean"],
        "volScore2": ra["azimuthal_mean"],
        "volScore3": ra["highest_mean"],
        "volScore4": ra["lowest_mean"],
        "avg": ra["monores_mean"],
    }
    _assert_table_equal(cols, rows, ours, _written(radial_averages_table(result)), "radial")

    cols, rows = _read_xmd(ref_dir / "hist_prefdir.xmd")
    pd = result.preferred_directions
    count = np.asarray(pd["count"])
    ours = {
        "angleRot": pd["rot"],
        "angleTilt": pd["tilt"],
        "count": count,
        "resolutionFreqFourier": pd["mean_resolution"],
        "weight": count.astype(np.float64),
        "x": np.arange(count.size, dtype=np.float64),
    }
    _assert_table_equal(cols, rows, ours, _written(preferred_directions_table(result)), "prefdir")


@pytest.mark.parity
@pytest.mark.parametrize("case", list(CASES))
def test_default_mode_on_reference_cases(case):
    """Default mode: finite values in [2 x voxel size, sweep start] inside the mask."""
    _, vol, mask = _load(case)
    s = CASES[case]
    mr = monores(vol, mask, s, low_resolution=18.0, step=0.25, threads=2)
    sel = mr.refined_mask
    assert np.isfinite(mr.resolution[sel]).all()
    assert mr.resolution[sel].min() >= 2 * s - 1e-4
    assert mr.resolution[sel].max() <= mr.resolutions[0] + 1e-4
    setup = prepare_directional(vol, mask, s, fast=True, threads=1)
    matrix = resolution_matrix(setup, threads=1, n_jobs=2)
    assert np.isfinite(matrix).all()
    assert matrix.min() >= 2 * s - 1e-4 and matrix.max() <= setup.steps[0].resolution + 1e-4
    parts = [
        voxel_summaries(setup, matrix[:, a : a + 40000], a) for a in range(0, setup.n_mask, 40000)
    ]
    result = finalize_directional(setup, parts, monores_map=mr.resolution)
    in_mask = np.zeros(int(np.prod(setup.shape)), bool)
    in_mask[setup.mask_indices] = True
    in_mask = in_mask.reshape(setup.shape)
    for name in ("radial", "azimuthal", "highest", "lowest", "mean_doa"):
        vals = result.maps[name][in_mask]
        assert np.isfinite(vals).all(), name
        assert vals.min() >= 2 * s - 1e-4, name
        assert vals.max() <= setup.steps[0].resolution + 1e-4, name
    aniso = result.maps["anisotropy"][in_mask]
    assert ((aniso >= 0) & (aniso < 1)).all()
