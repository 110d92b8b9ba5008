"""Figures (PNG) of a run, drawn headless from the result containers.

Figures are built on :class:`matplotlib.figure.Figure` objects directly, never through
``pyplot``: no global figure state, no GUI backend, safe in worker threads and on machines
without a display. Every PNG is written atomically.

Conventions:

* histograms span their data's own range (Xmipp histograms the degree of anisotropy on a
  fixed [0, 1], which drops every voxel above 1 Å; here every value is counted) and mark the
  median;
* resolution colour maps run from blue (low Å, better) to red (high Å, worse), ``RdYlBu_r``;
  voxels outside the mask (or not estimated) are drawn light grey;
* directions are axes (``d`` and ``-d`` are the same direction), so they are shown on the
  upper hemisphere in a Lambert azimuthal equal-area projection (equal areas on the sphere
  stay equal on the page; the pole is the centre, the equator the rim).
"""

from __future__ import annotations

import io
import os
from collections.abc import Collection
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from monodir.core.results import DirectionalResult, MonoResResult
from monodir.report.summary import (
    MAP_INFO,
    available_maps,
    map_values,
    map_volume,
    percentile_range,
)
from monodir.report.tables import atomic_write_bytes, preferred_counts

__all__ = [
    "HISTOGRAM_MAPS",
    "SLICE_MAPS",
    "figure_names",
    "histogram_counts",
    "lambert_projection",
    "make_all_figures",
    "plot_central_slices",
    "plot_direction_distribution",
    "plot_direction_resolution",
    "plot_histogram",
    "plot_radial_averages",
]

#: Maps that get a histogram (in this order).
HISTOGRAM_MAPS: tuple[str, ...] = ("monores", "radial", "azimuthal", "doa", "anisotropy")
#: Maps that get central slices (in this order).
SLICE_MAPS: tuple[str, ...] = (
    "monores",
    "radial",
    "azimuthal",
    "highest",
    "lowest",
    "doa",
    "anisotropy",
)

_BAD_COLOUR = "#d9d9d9"
_DPI = 100


def _cmap(name: str):
    return matplotlib.colormaps[name].with_extremes(bad=_BAD_COLOUR)


def _map_cmap(name: str) -> str:
    info = MAP_INFO.get(name)
    if info is not None and info.is_resolution:
        return "RdYlBu_r"
    if name == "zscore":
        return "magma"
    return "viridis"


def _axis_label(label: str, unit: str) -> str:
    return f"{label} ({unit})" if unit else f"{label} (dimensionless)"


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- histograms
def histogram_counts(values: np.ndarray, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Histogram over the data's own range; every finite value is counted.

    Parameters
    ----------
    values
        Values (any shape); non-finite entries are ignored.
    bins
        Number of bins; by default ``sqrt(n)`` clipped to [10, 60].

    Returns
    -------
    counts, edges
        ``counts.sum()`` equals the number of finite values. The range is ``[min, max]``
        (the last bin includes ``max``), widened by 0.5 either side when all values are
        equal.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if bins is None:
        bins = int(np.clip(np.sqrt(max(v.size, 1)), 10, 60))
    if v.size == 0:
        return np.zeros(bins, dtype=np.int64), np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return counts.astype(np.int64), edges


def plot_histogram(
    path: str | os.PathLike,
    values: np.ndarray,
    *,
    label: str,
    unit: str = "",
    title: str | None = None,
    bins: int | None = None,
    dpi: int = _DPI,
) -> Path:
    """Histogram PNG of ``values`` over their own range with the median marked.

    Parameters
    ----------
    path
        Output PNG.
    values
        Values inside the mask (non-finite ignored).
    label, unit
        Quantity name and unit for the x axis (``""`` = dimensionless).
    title
        Figure title (defaults to ``label``).
    bins
        See :func:`histogram_counts`.
    dpi
        Resolution of the PNG.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    counts, edges = histogram_counts(v, bins)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.stairs(counts, edges, fill=True, color="#4c72b0", alpha=0.85)
    if v.size:
        med = float(np.median(v))
        ax.axvline(med, color="black", linestyle="--", linewidth=1.2)
        suffix = f" {unit}" if unit else ""
        ax.text(
            0.98,
            0.95,
            f"median = {med:.3g}{suffix}\nn = {v.size}\n"
            f"range {v.min():.3g} to {v.max():.3g}{suffix}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel(_axis_label(label, unit))
    ax.set_ylabel("Voxels")
    ax.set_title(title or label)
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------- directions
def lambert_projection(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lambert azimuthal equal-area projection of axes onto the upper-hemisphere disc.

    Parameters
    ----------
    vectors
        ``(n, 3)`` vectors ``(x, y, z)``; a vector with ``z < 0`` is replaced by its
        opposite (same axis).

    Returns
    -------
    px, py
        Coordinates in the unit disc: the pole (z) maps to the centre, the equator to radius 1.
    """
    v = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    n = np.linalg.norm(v, axis=1, keepdims=True)
    n[n == 0] = 1.0
    v = v / n
    v = np.where(v[:, 2:3] < 0, -v, v)
    theta = np.arccos(np.clip(v[:, 2], -1.0, 1.0))
    phi = np.arctan2(v[:, 1], v[:, 0])
    r = np.sin(theta / 2.0) / np.sin(np.pi / 4.0)
    return r * np.cos(phi), r * np.sin(phi)


def _draw_hemisphere(ax) -> None:
    t = np.linspace(0, 2 * np.pi, 361)
    for tilt in (30, 60, 90):
        rr = np.sin(np.radians(tilt) / 2) / np.sin(np.pi / 4)
        ax.plot(
            rr * np.cos(t),
            rr * np.sin(t),
            color="0.6" if tilt < 90 else "0.2",
            linewidth=0.6 if tilt < 90 else 1.0,
            zorder=0,
        )
        ax.text(
            rr * np.cos(np.radians(100)),
            rr * np.sin(np.radians(100)),
            f"{tilt}°",
            fontsize=7,
            color="0.4",
            ha="center",
            va="bottom",
        )
    ax.plot([-1, 1], [0, 0], color="0.8", linewidth=0.5, zorder=0)
    ax.plot([0, 0], [-1, 1], color="0.8", linewidth=0.5, zorder=0)
    ax.text(1.04, 0, "x", ha="left", va="center", fontsize=9)
    ax.text(0, 1.04, "y", ha="center", va="bottom", fontsize=9)
    ax.text(0.0, 0.0, "z", ha="left", va="bottom", fontsize=8, color="0.3")
    ax.set_xlim(-1.15, 1.15)
    ax.set_ylim(-1.15, 1.15)
    ax.set_aspect("equal")
    ax.set_axis_off()


def _mark_axis(ax, directional: DirectionalResult) -> None:
    axis = np.asarray(directional.anisotropy_axis, dtype=np.float64)
    if not np.all(np.isfinite(axis)) or not np.any(axis):
        return
    ax_x, ax_y = lambert_projection(axis[None, :])
    ax.scatter(
        ax_x,
        ax_y,
        marker="X",
        s=160,
        color="black",
        edgecolors="white",
        linewidths=1.0,
        zorder=5,
        label=f"anisotropy axis ({directional.axis_angle_to_z:.0f}° from z)",
    )


def plot_direction_distribution(
    path: str | os.PathLike, directional: DirectionalResult, *, dpi: int = _DPI
) -> Path:
    """Preferred-direction counts on the hemisphere (Lambert equal-area projection).

    Each analysed direction is a dot; its colour and size show how many mask voxels have
    their best resolution along it. The fitted anisotropy axis is marked with an X.
    """
    px, py = lambert_projection(directional.directions)
    counts = preferred_counts(directional).astype(np.float64)
    cmax = counts.max() if counts.size and counts.max() > 0 else 1.0
    sizes = 15 + 250 * counts / cmax
    fig = Figure(figsize=(6.2, 5.4), layout="constrained")
    ax = fig.add_subplot()
    _draw_hemisphere(ax)
    sc = ax.scatter(
        px,
        py,
        c=counts,
        s=sizes,
        cmap="viridis",
        edgecolors="0.3",
        linewidths=0.4,
        zorder=3,
        vmin=0,
    )
    _mark_axis(ax, directional)
    fig.colorbar(sc, ax=ax, shrink=0.8, label="Voxels whose best direction this is")
    ax.set_title("Preferred (best-resolved) directions")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8, frameon=False, bbox_to_anchor=(-0.05, -0.08))
    return _save(fig, path, dpi)


def plot_direction_resolution(
    path: str | os.PathLike, directional: DirectionalResult, *, dpi: int = _DPI
) -> Path:
    """Mean resolution of each direction over the mask, on the same projection.

    Blue = better (lower Å). The best and worst directions are labelled; the fitted
    anisotropy axis is marked with an X.
    """
    px, py = lambert_projection(directional.directions)
    means = np.asarray(directional.direction_means, dtype=np.float64)
    fig = Figure(figsize=(6.2, 5.4), layout="constrained")
    ax = fig.add_subplot()
    _draw_hemisphere(ax)
    finite = np.isfinite(means)
    if finite.any():
        sc = ax.scatter(
            px[finite],
            py[finite],
            c=means[finite],
            s=70,
            cmap="RdYlBu_r",
            edgecolors="0.3",
            linewidths=0.4,
            zorder=3,
        )
        fig.colorbar(sc, ax=ax, shrink=0.8, label="Mean resolution over the mask (Å)")
        idx = np.flatnonzero(finite)
        for i, tag in (
            (idx[np.argmin(means[finite])], "best"),
            (idx[np.argmax(means[finite])], "worst"),
        ):
            ax.annotate(
                f"{tag}: {means[i]:.2f} Å",
                (px[i], py[i]),
                xytext=(6, 6),
                textcoords="offset points",
                fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.5, "edgecolor": "none", "pad": 1.0},
            )
    if (~finite).any():
        ax.scatter(px[~finite], py[~finite], s=30, color=_BAD_COLOUR, edgecolors="0.5", zorder=2)
    _mark_axis(ax, directional)
    ax.set_title("Directional resolution (mean over the mask)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8, frameon=False, bbox_to_anchor=(-0.05, -0.08))
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------- radial averages
_RADIAL_CURVES: tuple[tuple[str, str, str, str], ...] = (
    ("radial", "Radial", "#d62728", "-"),
    ("azimuthal", "Azimuthal (tangential)", "#1f77b4", "--"),
    ("highest", "Highest (p5)", "#2ca02c", "-"),
    ("lowest", "Lowest (p95)", "#9467bd", "-"),
    ("monores", "MonoRes", "#ff7f0e", ":"),
)


def _radial_column(table: dict, key: str, kind: str) -> np.ndarray | None:
    names = (
        [f"{key}_mean", f"mean_{key}", key] + (["avg"] if key == "monores" else [])
        if kind == "mean"
        else [f"{key}_std", f"std_{key}"]
    )
    for name in names:
        if name in table:
            return np.asarray(table[name], dtype=np.float64)
    return None


def plot_radial_averages(
    path: str | os.PathLike, directional: DirectionalResult, *, dpi: int = _DPI
) -> Path:
    """Shell averages of the radial, azimuthal, highest, lowest and MonoRes maps vs radius.

    The bottom axis is the distance from the box centre in voxels, the top axis the same in Å;
    shaded bands are +- one standard deviation within the shell.
    """
    ra = directional.radial_averages
    radius = None
    for name in ("radius", "index", "radius_vox"):
        if name in ra:
            radius = np.asarray(ra[name], dtype=np.float64)
            break
    fig = Figure(figsize=(7.0, 4.4), layout="constrained")
    ax = fig.add_subplot()
    if radius is not None and radius.size:
        for key, label, colour, style in _RADIAL_CURVES:
            mean = _radial_column(ra, key, "mean")
            if mean is None:
                continue
            ax.plot(radius, mean, color=colour, label=label, linewidth=1.6, linestyle=style)
            std = _radial_column(ra, key, "std")
            if std is not None:
                ax.fill_between(
                    radius, mean - std, mean + std, color=colour, alpha=0.12, linewidth=0
                )
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
    vs = float(directional.voxel_size) or 1.0
    sec = ax.secondary_xaxis("top", functions=(lambda v: v * vs, lambda a: a / vs))
    sec.set_xlabel("Radius (Å)")
    ax.set_xlabel("Radius (voxels from the box centre)")
    ax.set_ylabel("Mean resolution in the shell (Å)")
    ax.grid(alpha=0.3)
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------- slices
def plot_central_slices(
    path: str | os.PathLike,
    volume: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    label: str,
    unit: str = "",
    cmap: str = "RdYlBu_r",
    vmin: float | None = None,
    vmax: float | None = None,
    dpi: int = _DPI,
) -> Path:
    """Three orthogonal central slices (xy, xz, yz) of a ``[z, y, x]`` volume.

    Parameters
    ----------
    path
        Output PNG.
    volume
        3-D map indexed ``[z, y, x]``.
    valid
        Boolean volume of the voxels to show; the others are drawn grey. All finite voxels
        when None.
    label, unit
        Colour-bar label.
    cmap
        Matplotlib colour map name (``RdYlBu_r`` puts low values in blue).
    vmin, vmax
        Colour limits; the 2nd and 98th percentiles of the shown voxels by default.
    dpi
        Resolution of the PNG.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError("volume must be 3-D")
    show = np.isfinite(vol) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(vol))
    if vmin is None or vmax is None:
        lo, hi = percentile_range(vol[show].astype(np.float64))
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    cz, cy, cx = (s // 2 for s in vol.shape)

    def plane(where: tuple) -> np.ndarray:  # float64 only on the three planes drawn
        return np.where(show[where], vol[where].astype(np.float64), np.nan)

    every = slice(None)
    panels = (
        (plane((cz, every, every)), "x", "y", f"xy plane (z = {cz})"),
        (plane((every, cy, every)), "x", "z", f"xz plane (y = {cy})"),
        (plane((every, every, cx)), "y", "z", f"yz plane (x = {cx})"),
    )
    # Fixed layout (constrained layout costs more than the drawing for these small panels).
    fig = Figure(figsize=(11.0, 4.0))
    fig.subplots_adjust(left=0.05, right=0.88, bottom=0.13, top=0.82, wspace=0.32)
    axes = fig.subplots(1, 3)
    cax = fig.add_axes((0.905, 0.13, 0.015, 0.69))
    im = None
    colormap = _cmap(cmap)
    for ax, (img, xl, yl, title) in zip(axes, panels):
        im = ax.imshow(
            np.ma.masked_invalid(img),
            origin="lower",
            cmap=colormap,
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
        )
        ax.set_xlabel(f"{xl} (voxels)")
        ax.set_ylabel(f"{yl} (voxels)")
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, cax=cax, label=_axis_label(label, unit))
    fig.suptitle(f"{label}: central slices (grey = outside the mask)", fontsize=11)
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------- all
def make_all_figures(
    out_dir: str | os.PathLike,
    monores: MonoResResult | None,
    directional: DirectionalResult,
    *,
    dpi: int = _DPI,
    include: Collection[str] | None = None,
) -> dict[str, Path]:
    """Draw every figure of a run into ``out_dir``.

    Parameters
    ----------
    out_dir
        Destination folder (created if needed).
    monores
        MonoRes result or None (its histogram and slices are then skipped).
    directional
        Directional result.
    dpi
        Resolution of the PNGs.
    include
        Only draw the figures with these names (all by default).

    Returns
    -------
    dict
        Figure name -> PNG path, in display order: ``hist_<map>`` for
        :data:`HISTOGRAM_MAPS`, ``directions_preferred``, ``directions_resolution``,
        ``radial_averages``, ``slices_<map>`` for :data:`SLICE_MAPS` (maps absent from the
        results are skipped).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = {
        "directions_preferred": plot_direction_distribution,
        "directions_resolution": plot_direction_resolution,
        "radial_averages": plot_radial_averages,
    }
    figures: dict[str, Path] = {}
    for fig in figure_names(monores, directional):
        if include is not None and fig not in include:
            continue
        path = out_dir / f"{fig}.png"
        kind, _, name = fig.partition("_")
        if fig in panels:
            figures[fig] = panels[fig](path, directional, dpi=dpi)
        elif kind == "hist":
            info = MAP_INFO[name]
            figures[fig] = plot_histogram(
                path,
                map_values(monores, directional, name),
                label=info.label,
                unit=info.unit,
                dpi=dpi,
            )
        else:  # slices_<map>
            info = MAP_INFO[name]
            vol, valid = map_volume(monores, directional, name)
            figures[fig] = plot_central_slices(
                path,
                vol,
                valid,
                label=info.label,
                unit=info.unit,
                cmap=_map_cmap(name),
                dpi=dpi,
            )
    return figures


def figure_names(monores: MonoResResult | None, directional: DirectionalResult) -> list[str]:
    """Names of the figures :func:`make_all_figures` draws for these results, in display
    order (so that figures drawn in several processes can be listed as one)."""
    present = set(available_maps(monores, directional))
    names = [f"hist_{name}" for name in HISTOGRAM_MAPS if name in present]
    names += ["directions_preferred", "directions_resolution", "radial_averages"]
    names += [f"slices_{name}" for name in SLICE_MAPS if name in present]
    return names
