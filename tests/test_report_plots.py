"""Figures: valid PNGs, full-range histograms, the hemisphere projection."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from monodir.report.plots import (
    HISTOGRAM_MAPS,
    SLICE_MAPS,
    histogram_counts,
    lambert_projection,
    make_all_figures,
    plot_central_slices,
    plot_histogram,
)

try:
    from report_fixtures import make_example
except ImportError:  # tests run as a package
    from tests.report_fixtures import make_example

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, asserting the signature and the IHDR chunk."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND"
    return width, height


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    monores, directional = make_example(seed=2)
    return make_all_figures(tmp_path_factory.mktemp("figs"), monores, directional, dpi=60)


def test_all_figures_are_valid_pngs(figures):
    expected = (
        [f"hist_{m}" for m in HISTOGRAM_MAPS]
        + ["directions_preferred", "directions_resolution", "radial_averages"]
        + [f"slices_{m}" for m in SLICE_MAPS]
    )
    assert list(figures) == expected
    for name, path in figures.items():
        assert path.suffix == ".png"
        w, h = png_size(path)
        assert w >= 200 and h >= 150, name
        assert path.stat().st_size > 5000, name  # non-trivial content
    assert not [p for p in next(iter(figures.values())).parent.iterdir() if p.suffix == ".tmp"]


def test_figures_without_monores(tmp_path):
    _, directional = make_example(seed=3)
    wanted = {"hist_monores", "slices_monores", "hist_doa", "radial_averages"}
    figs = make_all_figures(tmp_path, None, directional, dpi=40, include=wanted)
    assert list(figs) == ["hist_doa", "radial_averages"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hist_doa.png", "radial_averages.png"]


def test_histogram_counts_every_value():
    rng = np.random.default_rng(0)
    doa = np.concatenate([rng.uniform(0.0, 1.0, 900), rng.uniform(1.0, 5.0, 100), [5.0]])
    counts, edges = histogram_counts(doa)
    assert counts.sum() == doa.size  # a fixed [0, 1] range would drop 101 values
    assert edges[0] == pytest.approx(doa.min()) and edges[-1] == pytest.approx(5.0)
    counts, _ = histogram_counts(np.append(doa, [np.nan, np.inf]), bins=17)
    assert counts.size == 17 and counts.sum() == doa.size
    counts, edges = histogram_counts(np.full(10, 2.5))
    assert counts.sum() == 10 and edges[0] < 2.5 < edges[-1]
    assert histogram_counts(np.array([]))[0].sum() == 0


def test_histogram_plot_of_wide_doa(tmp_path):
    doa = np.linspace(0.0, 5.0, 2000)
    path = plot_histogram(tmp_path / "doa.png", doa, label="Degree of anisotropy", unit="Å")
    assert png_size(path)[0] > 200
    empty = plot_histogram(tmp_path / "empty.png", np.array([np.nan]), label="nothing")
    png_size(empty)


def test_lambert_projection():
    vecs = np.array(
        [
            [0.0, 0.0, 1.0],  # pole -> centre
            [1.0, 0.0, 0.0],  # equator -> rim
            [0.0, 0.0, -1.0],  # same axis as the pole
            [0.0, np.sin(np.radians(60)), -np.cos(np.radians(60))],  # flipped to upper half
        ]
    )
    x, y = lambert_projection(vecs)
    np.testing.assert_allclose([x[0], y[0]], [0, 0], atol=1e-12)
    np.testing.assert_allclose([x[1], y[1]], [1, 0], atol=1e-12)
    np.testing.assert_allclose([x[2], y[2]], [0, 0], atol=1e-12)
    r = np.hypot(x[3], y[3])
    assert r == pytest.approx(np.sin(np.radians(30)) / np.sin(np.radians(45)))
    assert y[3] < 0  # (0, sin60, -cos60) is the axis (0, -sin60, cos60)
    # equal area: a uniform sample of the hemisphere fills the disc uniformly
    rng = np.random.default_rng(1)
    v = rng.normal(size=(20000, 3))
    px, py = lambert_projection(v)
    frac_inner = np.mean(np.hypot(px, py) < np.sqrt(0.5))
    assert frac_inner == pytest.approx(0.5, abs=0.02)


def test_central_slices_masks_and_limits(tmp_path):
    vol = np.random.default_rng(0).uniform(2, 8, (20, 24, 28))
    valid = np.zeros(vol.shape, bool)
    valid[5:15, 5:20, 5:25] = True
    path = plot_central_slices(tmp_path / "s.png", vol, valid, label="Resolution", unit="Å")
    w, h = png_size(path)
    assert w > h
    with pytest.raises(ValueError):
        plot_central_slices(tmp_path / "bad.png", vol[0], label="x")
