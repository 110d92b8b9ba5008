"""Result tables as STAR (Xmipp-compatible column names) and CSV files.

Every table is first turned into an :class:`OutputTable`: an ordered list of columns, each
with a STAR label (Xmipp's metadata label where one exists, so that tools that read Xmipp's
``thresholds.xmd``, ``Radial_averages.xmd`` and ``hist_prefdir.xmd`` read ours) and a readable
CSV name carrying the unit (``radius_vox``, ``radial_A``, ...). The same numbers, formatted the
same way, go to both files, so the STAR and CSV versions of a table always agree.

The STAR writer is deliberately tiny (one ``data_<name>`` block with one ``loop_``); the output
parses with the ``starfile`` package. All files are written atomically (temporary file in the
same folder, then :func:`os.replace`), so a reader never sees a half-written table.

Column names expected in the result containers (see :mod:`monodir.core.results`):

* ``DirectionalResult.radial_averages``: ``radius`` (voxels) and, per map ``m`` in
  ``radial, azimuthal, highest, lowest, monores``, the shell mean as ``m_mean`` (or ``m``,
  ``mean_m``) and the shell standard deviation as ``m_std`` (or ``std_m``). Missing maps are
  left out of the written table.
* ``DirectionalResult.preferred_directions``: ``rot``, ``tilt``, ``count``,
  ``mean_resolution`` and optionally ``index``.
* ``MonoResResult.stats``: ``resolution``, ``frequency``, ``mean_signal``, ``var_signal``,
  ``n_signal``, ``mean_noise``, ``var_noise``, ``n_noise``, ``threshold``, ``z``; further
  columns are written under their own names.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monodir.core.results import DirectionalResult, MonoResResult

__all__ = [
    "XMIPP_FILE_NAMES",
    "Column",
    "OutputTable",
    "atomic_write_bytes",
    "atomic_write_text",
    "directions_table",
    "format_value",
    "monores_stats_table",
    "preferred_counts",
    "preferred_directions_table",
    "radial_averages_table",
    "thresholds_table",
    "write_all_tables",
    "write_csv",
    "write_star",
    "write_table",
]

#: File names Xmipp's MonoDir uses for the tables that have an Xmipp counterpart.
XMIPP_FILE_NAMES: dict[str, str] = {
    "thresholds": "thresholds.xmd",
    "radial_averages": "Radial_averages.xmd",
    "preferred_directions": "hist_prefdir.xmd",
}

_RADIAL_MAPS: tuple[tuple[str, str, str, str, str], ...] = (
    # key in the result table, Xmipp STAR label, our STAR std label, CSV mean, CSV std
    ("radial", "_volScore1", "_volScore1Std", "radial_A", "radial_std_A"),
    ("azimuthal", "_volScore2", "_volScore2Std", "azimuthal_A", "azimuthal_std_A"),
    ("highest", "_volScore3", "_volScore3Std", "highest_A", "highest_std_A"),
    ("lowest", "_volScore4", "_volScore4Std", "lowest_A", "lowest_std_A"),
    ("monores", "_avg", "_avgStd", "monores_A", "monores_std_A"),
)

_MONORES_STATS: dict[str, tuple[str, str]] = {
    # kernel column -> (STAR label, CSV name)
    "resolution": ("_resolution", "resolution_A"),
    "frequency": ("_frequency", "frequency"),
    "mean_signal": ("_signalMean", "mean_signal"),
    "var_signal": ("_signalVariance", "var_signal"),
    "n_signal": ("_signalCount", "n_signal"),
    "mean_noise": ("_noiseMean", "mean_noise"),
    "var_noise": ("_noiseVariance", "var_noise"),
    "n_noise": ("_noiseCount", "n_noise"),
    "threshold": ("_threshold", "threshold"),
    "z": ("_zScore", "z"),
}


# --------------------------------------------------------------------------- atomic writes
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + rename).

    Parameters
    ----------
    path
        Destination file; its folder is created if needed.
    data
        The complete file content.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- table model
@dataclass(frozen=True)
class Column:
    """One table column.

    Attributes
    ----------
    star
        STAR label including the leading underscore (``_volScore1``).
    csv
        CSV header name, lower case with the unit as suffix (``radial_A``).
    values
        1-D array of values.
    """

    star: str
    csv: str
    values: np.ndarray


@dataclass
class OutputTable:
    """An ordered set of equal-length columns with a name (STAR block and file stem).

    Attributes
    ----------
    name
        Block name (``data_<name>``) and file stem.
    columns
        The columns, in output order.
    """

    name: str
    columns: list[Column] = field(default_factory=list)

    def add(self, star: str, csv_name: str, values: object) -> None:
        """Append a column (``values`` is converted to a 1-D array)."""
        arr = np.atleast_1d(np.asarray(values))
        if arr.ndim != 1:
            raise ValueError(f"column {csv_name!r} of table {self.name!r} is not 1-D")
        if self.columns and arr.shape[0] != self.n_rows:
            raise ValueError(
                f"column {csv_name!r} of table {self.name!r} has {arr.shape[0]} rows, "
                f"expected {self.n_rows}"
            )
        self.columns.append(Column(star, csv_name, arr))

    @property
    def n_rows(self) -> int:
        """Number of rows (0 for a table without columns)."""
        return int(self.columns[0].values.shape[0]) if self.columns else 0

    def as_dict(self, names: str = "csv") -> dict[str, np.ndarray]:
        """Columns as ``{name: array}`` with ``names`` = ``"csv"`` or ``"star"``."""
        if names not in ("csv", "star"):
            raise ValueError("names must be 'csv' or 'star'")
        return {getattr(c, names): c.values for c in self.columns}

    def formatted_rows(self) -> list[list[str]]:
        """Rows of formatted cells (the exact text written to both STAR and CSV)."""
        cols = [[format_value(v) for v in c.values.tolist()] for c in self.columns]
        return [list(row) for row in zip(*cols)] if cols else []


def format_value(value: object) -> str:
    """Format one cell: integers exactly, floats with 10 significant digits, NaN as ``nan``.

    Parameters
    ----------
    value
        A Python or numpy scalar.

    Returns
    -------
    str
        Text without spaces (safe for whitespace-separated STAR rows).
    """
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        text = f"{v:.10g}"
        return "0" if text == "-0" else text
    text = str(value)
    if not text or any(ch.isspace() for ch in text):
        return '"' + text.replace('"', "'") + '"'
    return text


# --------------------------------------------------------------------------- writers
def star_text(table: OutputTable, *, header_comment: str | None = None) -> str:
    """Render ``table`` as the text of a single-block STAR file.

    Parameters
    ----------
    table
        The table.
    header_comment
        Optional first comment line (without ``#``), e.g. ``XMIPP_STAR_1 *``.

    Returns
    -------
    str
        STAR text: ``data_<name>``, ``loop_``, one ``_label #i`` line per column and one
        right-aligned row per table row.
    """
    out = io.StringIO()
    if header_comment:
        out.write(f"# {header_comment}\n#\n")
    out.write(f"\ndata_{table.name}\n\nloop_\n")
    for i, col in enumerate(table.columns, start=1):
        out.write(f"{col.star} #{i}\n")
    rows = table.formatted_rows()
    if rows:
        widths = [max(len(r[j]) for r in rows) for j in range(len(table.columns))]
        for row in rows:
            out.write(" ".join(cell.rjust(w) for cell, w in zip(row, widths)) + "\n")
    out.write("\n")
    return out.getvalue()


def write_star(
    path: str | os.PathLike, table: OutputTable, *, header_comment: str | None = None
) -> Path:
    """Write ``table`` as a STAR file, atomically; see :func:`star_text`."""
    return atomic_write_text(path, star_text(table, header_comment=header_comment))


def csv_text(table: OutputTable) -> str:
    """Render ``table`` as CSV text (header of readable names, same cell text as STAR)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.csv for c in table.columns])
    for row in table.formatted_rows():
        writer.writerow([cell.strip('"') for cell in row])
    return out.getvalue()


def write_csv(path: str | os.PathLike, table: OutputTable) -> Path:
    """Write ``table`` as CSV, atomically."""
    return atomic_write_text(path, csv_text(table))


def write_table(
    out_dir: str | os.PathLike, table: OutputTable, *, xmipp_name: bool = False
) -> list[Path]:
    """Write ``<out_dir>/<name>.star`` and ``<out_dir>/<name>.csv``.

    Parameters
    ----------
    out_dir
        Destination folder (created if needed).
    table
        The table.
    xmipp_name
        Also write a copy under Xmipp's file name (:data:`XMIPP_FILE_NAMES`) when the table
        has one, so scripts written for Xmipp find it.

    Returns
    -------
    list of Path
        The files written.
    """
    out_dir = Path(out_dir)
    paths = [
        write_star(out_dir / f"{table.name}.star", table),
        write_csv(out_dir / f"{table.name}.csv", table),
    ]
    if xmipp_name and table.name in XMIPP_FILE_NAMES:
        paths.append(
            write_star(
                out_dir / XMIPP_FILE_NAMES[table.name], table, header_comment="XMIPP_STAR_1 *"
            )
        )
    return paths


# --------------------------------------------------------------------------- builders
def _lookup(table: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray | None:
    for name in names:
        if name in table:
            return np.asarray(table[name])
    return None


def thresholds_table(directional: DirectionalResult) -> OutputTable:
    """One-row table of the 90th percentiles of the radial and azimuthal maps (Å).

    STAR labels follow Xmipp's ``thresholds.xmd``: ``_resolutionFreqFourier`` (radial p90) and
    ``_resolutionFreqFourier2`` (azimuthal p90).
    """
    th = directional.thresholds
    t = OutputTable("thresholds")
    t.add("_resolutionFreqFourier", "radial_p90_A", [float(th.get("radial_p90", np.nan))])
    t.add("_resolutionFreqFourier2", "azimuthal_p90_A", [float(th.get("azimuthal_p90", np.nan))])
    return t


def radial_averages_table(
    directional: DirectionalResult, monores: MonoResResult | None = None
) -> OutputTable:
    """Shell averages of the summary maps against the distance from the box centre.

    STAR labels follow Xmipp's ``Radial_averages.xmd`` (``_index`` radius in voxels,
    ``_volScore1`` radial, ``_volScore2`` azimuthal, ``_volScore3`` highest, ``_volScore4``
    lowest, ``_avg`` MonoRes), followed by our extra columns: the radius in Å
    (``_radiusAngstrom``) and the shell standard deviations (``_volScore1Std`` ...
    ``_avgStd``). Maps absent from the result table are left out.

    Parameters
    ----------
    directional
        Directional result holding ``radial_averages``.
    monores
        Unused except for documentation symmetry: the MonoRes shell means are computed by the
        kernel (``monores_mean``) when it was given the MonoRes map.
    """
    del monores  # the kernel already folded the MonoRes map into radial_averages
    ra = directional.radial_averages
    radius = _lookup(ra, ("radius", "index", "radius_vox"))
    if radius is None:
        raise KeyError("radial_averages has no 'radius' column")
    t = OutputTable("radial_averages")
    if np.all(np.isfinite(radius)) and np.allclose(radius, np.round(radius)):
        t.add("_index", "radius_vox", np.round(radius).astype(np.int64))
    else:
        t.add("_index", "radius_vox", radius.astype(np.float64))
    means: list[tuple[str, str, np.ndarray]] = []
    stds: list[tuple[str, str, np.ndarray]] = []
    for key, star, star_std, csv_mean, csv_std in _RADIAL_MAPS:
        mean_names = [f"{key}_mean", f"mean_{key}", key]
        if key == "monores":
            mean_names += ["avg", "monores_avg"]
        m = _lookup(ra, mean_names)
        if m is None:
            continue
        means.append((star, csv_mean, m.astype(np.float64)))
        s = _lookup(ra, (f"{key}_std", f"std_{key}"))
        if s is not None:
            stds.append((star_std, csv_std, s.astype(np.float64)))
    for star, name, values in means:
        t.add(star, name, values)
    t.add("_radiusAngstrom", "radius_A", radius.astype(np.float64) * directional.voxel_size)
    for star, name, values in stds:
        t.add(star, name, values)
    return t


def _direction_index(directional: DirectionalResult, table: Mapping[str, np.ndarray]) -> np.ndarray:
    idx = _lookup(table, ("index", "x", "direction"))
    if idx is not None:
        return idx.astype(np.int64)
    n = len(next(iter(table.values()))) if table else directional.directions.shape[0]
    return np.arange(n, dtype=np.int64)


def preferred_directions_table(directional: DirectionalResult) -> OutputTable:
    """Per-direction "best direction" counts, Xmipp's ``hist_prefdir.xmd`` layout.

    Columns: ``_angleRot``, ``_angleTilt`` (degrees), ``_weight`` (the count as a float, as in
    Xmipp), ``_resolutionFreqFourier`` (mean resolution of the voxels that prefer this
    direction, Å; NaN when the count is 0), ``_x`` (direction index), ``_count``.
    """
    pd_ = directional.preferred_directions
    count = np.asarray(pd_["count"])
    t = OutputTable("preferred_directions")
    t.add("_angleRot", "rot_deg", np.asarray(pd_["rot"], dtype=np.float64))
    t.add("_angleTilt", "tilt_deg", np.asarray(pd_["tilt"], dtype=np.float64))
    t.add("_weight", "weight", count.astype(np.float64))
    mean_res = _lookup(pd_, ("mean_resolution", "resolution"))
    if mean_res is None:
        mean_res = np.full(count.shape, np.nan)
    t.add("_resolutionFreqFourier", "mean_resolution_A", mean_res.astype(np.float64))
    t.add("_x", "index", _direction_index(directional, pd_))
    t.add("_count", "count", np.round(count).astype(np.int64))
    return t


def preferred_counts(directional: DirectionalResult) -> np.ndarray:
    """Preferred-direction count of every direction (0 where the table has no row)."""
    n = directional.directions.shape[0]
    counts = np.zeros(n, dtype=np.int64)
    pd_ = directional.preferred_directions
    if "count" not in pd_:
        return counts
    idx = _direction_index(directional, pd_)
    c = np.round(np.asarray(pd_["count"], dtype=np.float64)).astype(np.int64)
    ok = (idx >= 0) & (idx < n)
    counts[idx[ok]] = c[ok]
    return counts


def directions_table(directional: DirectionalResult) -> OutputTable:
    """One row per analysed direction.

    Columns (CSV / STAR): ``index`` / ``_directionIndex``, ``rot_deg`` / ``_angleRot``,
    ``tilt_deg`` / ``_angleTilt``, ``dx, dy, dz`` / ``_dx, _dy, _dz`` (unit vector, x fastest
    array axis), ``angle_to_z_deg`` / ``_angleToZ`` (0-90, directions are axes),
    ``mean_resolution_A`` / ``_resolutionMean`` (mean over the mask),
    ``preferred_count`` / ``_count`` (voxels whose best direction this is).
    """
    d = np.asarray(directional.directions, dtype=np.float64)
    ang = np.asarray(directional.angles, dtype=np.float64)
    n = d.shape[0]
    t = OutputTable("directions")
    t.add("_directionIndex", "index", np.arange(n, dtype=np.int64))
    t.add("_angleRot", "rot_deg", ang[:, 0])
    t.add("_angleTilt", "tilt_deg", ang[:, 1])
    t.add("_dx", "dx", d[:, 0])
    t.add("_dy", "dy", d[:, 1])
    t.add("_dz", "dz", d[:, 2])
    norms = np.linalg.norm(d, axis=1)
    norms[norms == 0] = 1.0
    t.add(
        "_angleToZ", "angle_to_z_deg", np.degrees(np.arccos(np.clip(np.abs(d[:, 2]) / norms, 0, 1)))
    )
    t.add(
        "_resolutionMean", "mean_resolution_A", np.asarray(directional.direction_means, np.float64)
    )
    t.add("_count", "preferred_count", preferred_counts(directional))
    return t


def monores_stats_table(monores: MonoResResult) -> OutputTable:
    """Per tested frequency statistics of the MonoRes sweep.

    Known columns get camel-case STAR labels (``_resolution``, ``_frequency``,
    ``_signalMean``, ``_signalVariance``, ``_signalCount``, ``_noiseMean``,
    ``_noiseVariance``, ``_noiseCount``, ``_threshold``, ``_zScore``); other columns of
    ``monores.stats`` are written under ``_<name>``. ``frequency`` is as stored by the kernel
    (digital frequency, cycles per voxel).
    """
    t = OutputTable("monores_stats")
    stats = monores.stats
    names = [k for k in _MONORES_STATS if k in stats] + [
        k for k in stats if k not in _MONORES_STATS
    ]
    for key in names:
        star, csv_name = _MONORES_STATS.get(key, (f"_{key}", key))
        values = np.asarray(stats[key])
        if values.dtype.kind == "f" and key.startswith("n_"):
            finite = np.isfinite(values)
            if np.all(finite) and np.allclose(values, np.round(values)):
                values = np.round(values).astype(np.int64)
        t.add(star, csv_name, values)
    return t


def global_fsc_tables(fsc: dict) -> list[OutputTable]:
    """Per-direction cone-FSC resolutions and the global FSC curve (half-map runs)."""

    def col(rows: list[dict], key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)

    dirs = fsc["directions"]
    t1 = OutputTable("global_fsc_directions")
    t1.add("_x", "index", [int(r["index"]) for r in dirs])
    t1.add("_angleRot", "rot_deg", col(dirs, "rot_deg"))
    t1.add("_angleTilt", "tilt_deg", col(dirs, "tilt_deg"))
    t1.add("_resolutionFSC0143", "fsc0143_resolution_A", col(dirs, "resolution_A"))
    tables = [t1]
    curve = fsc.get("curve") or []
    if curve:
        t2 = OutputTable("global_fsc_curve")
        t2.add("_shell", "shell", [int(r["shell"]) for r in curve])
        t2.add("_resolution", "resolution_A", col(curve, "resolution_A"))
        t2.add("_fsc", "fsc", col(curve, "fsc"))
        tables.append(t2)
    return tables


def write_all_tables(
    out_dir: str | os.PathLike,
    monores: MonoResResult | None,
    directional: DirectionalResult,
    *,
    xmipp_names: bool = False,
) -> list[Path]:
    """Write every table of a run as STAR and CSV.

    Parameters
    ----------
    out_dir
        Destination folder (created if needed).
    monores
        MonoRes result, or None when MonoRes was not run (no ``monores_stats`` table then).
    directional
        Directional result.
    xmipp_names
        Also write ``thresholds.xmd``, ``Radial_averages.xmd`` and ``hist_prefdir.xmd``.

    Returns
    -------
    list of Path
        All files written, in a stable order.
    """
    tables = [
        thresholds_table(directional),
        radial_averages_table(directional, monores),
        preferred_directions_table(directional),
        directions_table(directional),
    ]
    if monores is not None and monores.stats:
        tables.append(monores_stats_table(monores))
    fsc = (directional.extra or {}).get("global_fsc")
    if isinstance(fsc, dict) and fsc.get("directions"):
        tables.extend(global_fsc_tables(fsc))
    paths: list[Path] = []
    for table in tables:
        paths.extend(write_table(out_dir, table, xmipp_name=xmipp_names))
    return paths
