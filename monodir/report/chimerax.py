"""ChimeraX command script (``.cxc``) that colours the input map by the resolution maps.

The script uses only long-standing ChimeraX commands: ``close session``, ``open``,
``volume #N hide``, ``volume #1 step 1 style surface level X``, ``color sample #1 map #N
palette ... range lo,hi``, ``key ...`` and ``view``. It opens the input map as model #1 and
every resolution map as #2, #3, ... (hidden), colours the surface of #1 by the first
resolution map and adds a colour key; the equivalent two lines for every other map are
written as comments, ready to be pasted into the ChimeraX command line (only one colouring and
one key can be visible at a time).

Paths are written relative to the script's folder (ChimeraX changes into the folder of a
``.cxc`` file while it runs it), so a run folder can be moved or copied as a whole.

Colours follow the local-resolution convention: blue = low Å (better), red = high Å, with
a rainbow palette between the 2nd and 98th percentile of the map inside the mask by default
(see :func:`resolution_map_ranges`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from monodir.core.results import DirectionalResult, MonoResResult
from monodir.report.summary import MAP_INFO, available_maps, map_values, percentile_range
from monodir.report.tables import atomic_write_text

__all__ = [
    "DEFAULT_PALETTE",
    "resolution_map_ranges",
    "suggest_level",
    "write_chimerax_script",
]

#: Blue (low Å) to red (high Å), evenly spread over ``range lo,hi``; CSS colour names.
DEFAULT_PALETTE: tuple[str, ...] = ("blue", "cyan", "lime", "yellow", "red")


def resolution_map_ranges(
    monores: MonoResResult | None,
    directional: DirectionalResult | None,
    names: Sequence[str] | None = None,
    percentiles: Sequence[float] = (2.0, 98.0),
) -> dict[str, tuple[float, float]]:
    """Colour ranges of the output maps, from their values inside the mask.

    Parameters
    ----------
    monores, directional
        The results (either may be None).
    names
        Maps to include (keys of :data:`monodir.report.summary.MAP_INFO`); all available
        maps by default.
    percentiles
        Lower and upper percentile.

    Returns
    -------
    dict
        ``{name: (lo, hi)}``.
    """
    present = available_maps(monores, directional)
    wanted = present if names is None else [n for n in names if n in present]
    return {n: percentile_range(map_values(monores, directional, n), percentiles) for n in wanted}


def suggest_level(volume: np.ndarray, mask: np.ndarray | None = None) -> float:
    """A surface threshold for the input map: mean + 3 standard deviations of the box.

    If fewer than 0.1 % of the voxels (of the mask when given, else of the box) lie above that
    value (a very clean or heavily masked map), the value enclosing 1 % of the box voxels is
    used instead, which is ChimeraX's own initial choice.

    Parameters
    ----------
    volume
        The map.
    mask
        Optional boolean mask of the particle.
    """
    vol = np.asarray(volume, dtype=np.float64)
    is_finite = np.isfinite(vol)
    # a map is nearly always finite everywhere: then the values are the volume itself, not
    # a copy of it (the same values in the same order, so the same mean and deviation)
    finite = vol.reshape(-1) if is_finite.all() else vol[is_finite]
    if finite.size == 0:
        return 0.0
    level = float(finite.mean() + 3.0 * finite.std())
    region = finite
    if mask is not None:
        m = np.asarray(mask, dtype=bool) & is_finite
        del is_finite
        if m.any():
            region = vol[m]
    if np.count_nonzero(region > level) < 0.001 * region.size:
        level = float(np.percentile(finite, 99.0))
    return level


def _fmt(value: float) -> str:
    text = f"{float(value):.6g}"
    return "0" if text == "-0" else text


def _path_arg(target: str | os.PathLike, script_dir: Path) -> str:
    rel = Path(os.path.relpath(Path(target).resolve(), script_dir.resolve())).as_posix()
    if any(ch.isspace() for ch in rel) or ";" in rel:
        if '"' in rel:
            raise ValueError(f"cannot quote path for ChimeraX: {rel!r}")
        return f'"{rel}"'
    return rel


def _read_map(map_file: str | os.PathLike) -> np.ndarray:
    import mrcfile

    with mrcfile.mmap(os.fspath(map_file), mode="r", permissive=True) as mrc:
        return np.asarray(mrc.data, dtype=np.float32)


def _colour_commands(model: int, lo: float, hi: float, palette: Sequence[str]) -> list[str]:
    stops = np.linspace(lo, hi, len(palette))
    key = " ".join(f"{c}:{s:.2f}" for c, s in zip(palette, stops))
    return [
        f"color sample #1 map #{model} palette {':'.join(palette)} range {_fmt(lo)},{_fmt(hi)}",
        f"key {key} pos 0.78,0.06 size 0.20,0.03",
    ]


def write_chimerax_script(
    path: str | os.PathLike,
    *,
    map_file: str | os.PathLike,
    resolution_maps: Mapping[str, tuple[str | os.PathLike, float, float]],
    level: float | None = None,
    volume: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    palette: Sequence[str] = DEFAULT_PALETTE,
) -> Path:
    """Write a ChimeraX ``.cxc`` script colouring ``map_file`` by resolution maps.

    Parameters
    ----------
    path
        Output ``.cxc`` file; referenced files are written relative to its folder.
    map_file
        The map whose surface is coloured (model #1).
    resolution_maps
        ``{name: (file, lo, hi)}`` in the order wanted; the first one is applied, the others
        are given as commented alternatives. ``lo``/``hi`` is the colour range (e.g. from
        :func:`resolution_map_ranges`). Names that are keys of
        :data:`monodir.report.summary.MAP_INFO` get their readable label in the comments.
    level
        Surface threshold for the map; computed with :func:`suggest_level` when None, from
        ``volume`` (and ``mask``) when given, else from ``map_file`` read with mrcfile.
    volume, mask
        Optional in-memory map and particle mask for the level suggestion.
    palette
        Colour names from low to high values (ChimeraX / CSS names).

    Returns
    -------
    Path
        The script written.
    """
    path = Path(path)
    script_dir = path.parent if str(path.parent) else Path(".")
    script_dir.mkdir(parents=True, exist_ok=True)
    if len(palette) < 2:
        raise ValueError("palette needs at least two colours")
    given = level is not None
    if level is None:
        level = suggest_level(volume if volume is not None else _read_map(map_file), mask)

    lines = [
        "# ChimeraX script written by monodir: colour a map surface by local resolution.",
        "# Run it with `chimerax <this file>` or, inside ChimeraX, `open <this file>`.",
        "# Paths are relative to this file's folder (ChimeraX runs a .cxc from its folder).",
        "# Colours: blue = low values (better resolution), red = high values.",
        "close session",
        f"open {_path_arg(map_file, script_dir)}",
    ]
    models: list[tuple[int, str, float, float]] = []
    for model, (name, (file, lo, hi)) in enumerate(resolution_maps.items(), start=2):
        info = MAP_INFO.get(name)
        label = (
            f"{info.label} ({info.unit})" if info and info.unit else (info.label if info else name)
        )
        lines.append(f"# #{model}: {label}")
        lines.append(f"open {_path_arg(file, script_dir)}")
        lines.append(f"volume #{model} hide")
        if not (np.isfinite(lo) and np.isfinite(hi) and float(lo) < float(hi)):
            raise ValueError(f"colour range of {name!r} must satisfy lo < hi, got {lo}, {hi}")
        models.append((model, label, float(lo), float(hi)))
    if not np.isfinite(level):
        lines.append("# Surface threshold could not be computed; set it by hand.")
        level = 0.0
    elif given:
        lines.append("# Surface threshold as requested.")
    else:
        lines.append(
            "# Suggested surface threshold (mean + 3 sd of the map, or the level enclosing 1 %"
            " of the box when that shows almost nothing); change it to taste."
        )
    lines.append(f"volume #1 step 1 style surface level {_fmt(level)}")
    for i, (model, label, lo, hi) in enumerate(models):
        cmds = _colour_commands(model, lo, hi, palette)
        if i == 0:
            lines.append(f"# Colour by {label}, range {_fmt(lo)} to {_fmt(hi)}:")
            lines.extend(cmds)
        else:
            lines.append(f"# To colour by {label} instead, run:")
            lines.extend(f"#   {c}" for c in cmds)
    lines.append("view")
    return atomic_write_text(path, "\n".join(lines) + "\n")
