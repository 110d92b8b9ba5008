"""ChimeraX colouring script."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from monodir.report.chimerax import (
    DEFAULT_PALETTE,
    resolution_map_ranges,
    suggest_level,
    write_chimerax_script,
)
from monodir.report.summary import map_values

try:
    from report_fixtures import example_volume, make_example
except ImportError:  # tests run as a package
    from tests.report_fixtures import example_volume, make_example

ALLOWED = {"close", "open", "volume", "color", "key", "view"}
NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with an input map and three output maps as MRC files."""
    monores, directional = make_example(seed=6)
    vol, mask = example_volume(seed=6)
    root = tmp_path_factory.mktemp("run")
    (root / "maps").mkdir()
    (root / "input data").mkdir()
    mrcfile.write(root / "input data" / "my map.mrc", vol, voxel_size=1.2, overwrite=True)
    files = {
        "monores": (root / "maps" / "monoresResolutionChimera.mrc", monores.chimera),
        "radial": (root / "maps" / "radial_resolution.mrc", directional.maps["radial"]),
        "anisotropy": (root / "maps" / "anisotropy.mrc", directional.maps["anisotropy"]),
    }
    for path, data in files.values():
        mrcfile.write(path, np.asarray(data, np.float32), voxel_size=1.2, overwrite=True)
    ranges = resolution_map_ranges(monores, directional, list(files))
    resolution_maps = {name: (files[name][0], *ranges[name]) for name in files}
    return root, vol, mask, resolution_maps, (monores, directional)


def _commands(script: Path) -> list[str]:
    return [
        line.strip()
        for line in script.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_script_structure(run_dir):
    root, vol, mask, resolution_maps, _ = run_dir
    script = write_chimerax_script(
        root / "chimerax" / "colour_by_resolution.cxc",
        map_file=root / "input data" / "my map.mrc",
        resolution_maps=resolution_maps,
        volume=vol,
        mask=mask,
    )
    cmds = _commands(script)
    assert {c.split()[0] for c in cmds} <= ALLOWED
    assert cmds[0] == "close session"
    assert cmds[-1] == "view"

    # every opened file exists, relative to the script's folder; opened in model order
    opened = [c[len("open ") :].strip('"') for c in cmds if c.startswith("open ")]
    assert len(opened) == 1 + len(resolution_maps)
    for rel in opened:
        assert not Path(rel).is_absolute()
        assert (script.parent / rel).is_file(), rel
    assert 'open "../input data/my map.mrc"' in cmds  # paths with spaces are quoted
    for model in range(2, 2 + len(resolution_maps)):
        assert f"volume #{model} hide" in cmds

    level_cmd = [c for c in cmds if c.startswith("volume #1 ")]
    assert len(level_cmd) == 1
    m = re.fullmatch(rf"volume #1 step 1 style surface level ({NUMBER})", level_cmd[0])
    assert m and float(m.group(1)) == pytest.approx(suggest_level(vol, mask), rel=1e-5)

    # one active colouring (first map) with its key; the others as commented alternatives
    (colour,) = [c for c in cmds if c.startswith("color ")]
    palette = ":".join(DEFAULT_PALETTE)
    m = re.fullmatch(
        rf"color sample #1 map #2 palette {re.escape(palette)} range ({NUMBER}),({NUMBER})",
        colour,
    )
    assert m
    lo, hi = float(m.group(1)), float(m.group(2))
    assert (lo, hi) == pytest.approx(resolution_maps["monores"][1:], rel=1e-5)
    (key,) = [c for c in cmds if c.startswith("key ")]
    stops = re.findall(rf"(\w+):({NUMBER})", key)
    assert [s[0] for s in stops] == list(DEFAULT_PALETTE)
    assert float(stops[0][1]) == pytest.approx(lo, abs=0.01)
    assert float(stops[-1][1]) == pytest.approx(hi, abs=0.01)
    text = script.read_text(encoding="utf-8")
    assert "#   color sample #1 map #3 palette" in text
    assert "#   color sample #1 map #4 palette" in text


def test_paths_survive_moving_the_run(run_dir, tmp_path):
    root, _, _, resolution_maps, _ = run_dir
    script = write_chimerax_script(
        root / "colour.cxc",
        map_file=root / "input data" / "my map.mrc",
        resolution_maps=resolution_maps,
        level=0.25,
    )
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    cmds = _commands(moved / script.name)
    for c in cmds:
        if c.startswith("open "):
            assert (moved / c[len("open ") :].strip('"')).is_file()
    assert "volume #1 step 1 style surface level 0.25" in cmds


def test_level_from_the_map_file(run_dir):
    root, vol, _, resolution_maps, _ = run_dir
    script = write_chimerax_script(
        root / "from_file.cxc",
        map_file=root / "input data" / "my map.mrc",
        resolution_maps=dict(list(resolution_maps.items())[:1]),
    )
    (level_cmd,) = [c for c in _commands(script) if c.startswith("volume #1 ")]
    assert float(level_cmd.rsplit(" ", 1)[1]) == pytest.approx(suggest_level(vol), rel=1e-5)


def test_ranges_and_level_helpers(run_dir):
    _, vol, mask, _, (monores, directional) = run_dir
    ranges = resolution_map_ranges(monores, directional)
    assert "monores" in ranges and "zscore" in ranges
    for name, (lo, hi) in ranges.items():
        values = map_values(monores, directional, name)
        assert values.min() <= lo < hi <= values.max()
        assert (lo, hi) == pytest.approx(tuple(np.percentile(values, [2, 98])))
    level = suggest_level(vol, mask)
    assert vol.mean() < level < vol.max()
    assert 0 < np.mean(vol > level) < 0.2
    # a map that is almost empty falls back to the 99th percentile of the box
    sparse = np.zeros((20, 20, 20), np.float32)
    sparse[10, 10, 10] = 1.0
    assert suggest_level(sparse) == pytest.approx(np.percentile(sparse, 99))


def test_invalid_range(run_dir, tmp_path):
    root, _, _, resolution_maps, _ = run_dir
    file = next(iter(resolution_maps.values()))[0]
    with pytest.raises(ValueError):
        write_chimerax_script(
            tmp_path / "bad.cxc",
            map_file=root / "input data" / "my map.mrc",
            resolution_maps={"monores": (file, 5.0, 5.0)},
            level=1.0,
        )


@pytest.mark.parametrize("with_nan", [False, True])
def test_suggest_level_is_mean_plus_three_sd_of_the_finite_voxels(with_nan):
    rng = np.random.default_rng(11)
    vol = rng.standard_normal((20, 21, 22)).astype(np.float32)
    if with_nan:
        vol[3, 4, 5] = np.nan
        vol[7, :, 2] = np.inf
    finite = vol[np.isfinite(vol)].astype(np.float64)
    expected = float(finite.mean() + 3.0 * finite.std())
    if np.count_nonzero(finite > expected) < 0.001 * finite.size:
        expected = float(np.percentile(finite, 99.0))
    assert suggest_level(vol) == expected
