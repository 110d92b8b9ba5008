"""One self-contained HTML page summarising a run.

The page needs nothing but itself: images are embedded as base64 ``data:`` URIs, the CSS is
inline, there is no JavaScript and no reference to any external resource, so it can be mailed,
attached to a lab notebook or opened years later from an archived run folder. Every piece of
text that comes from the run (file names, config values, notes) goes through
:func:`html.escape`.

Layout: key numbers first (median MonoRes, radial and azimuthal resolution, anisotropy index,
fitted anisotropy axis, best and worst directions), then per-map statistics, the figures each
with a short "how to read this", an optional global directional FSC section (rendered only
when the summary has a ``global_fsc`` key), timings, inputs, the configuration and the
package versions.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monodir.report.tables import atomic_write_text

__all__ = ["FIGURE_HELP", "figure_help", "render_report", "write_report"]

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}

_HIST_HELP = (
    "Histogram of the voxel values inside the mask, over the data's own range (no value is "
    "clipped). The dashed line is the median. "
)

#: "How to read this" text per figure name (``hist_*`` and ``slices_*`` fall back to a
#: generic text plus the map-specific sentence).
FIGURE_HELP: dict[str, tuple[str, str]] = {
    "hist_monores": (
        "MonoRes local resolution",
        _HIST_HELP + "Each voxel's resolution (Å) is the highest frequency at which its "
        "monogenic amplitude still stands out from the noise. Lower is better; a long tail to "
        "the right usually comes from flexible or poorly ordered regions.",
    ),
    "hist_radial": (
        "Radial resolution",
        _HIST_HELP + "Mean directional resolution along directions within 45° of the line "
        "from the centre to the voxel. Compare with the azimuthal histogram: radial clearly "
        "worse than azimuthal points to a radial blur (for example an imprecise centre or "
        "conformational breathing).",
    ),
    "hist_azimuthal": (
        "Azimuthal (tangential) resolution",
        _HIST_HELP + "Mean directional resolution along directions at least 70° away from "
        "the radial line. Azimuthal much worse than radial points to rotational blur "
        "(angular assignment errors grow with the distance from the centre).",
    ),
    "hist_doa": (
        "Degree of anisotropy (Å)",
        _HIST_HELP + "Half the spread between the 17th and 83rd percentiles of the "
        "directional resolutions of a voxel, in Å. 0 means isotropic; larger means the "
        "resolution depends more on the direction. Xmipp plots this on a fixed [0, 1] range and "
        "silently drops voxels above 1 Å; here every voxel is counted.",
    ),
    "hist_anisotropy": (
        "Anisotropy index",
        _HIST_HELP + "(lowest - highest) / (lowest + highest) per voxel, dimensionless in "
        "[0, 1]: 0 is isotropic, values above about 0.3 mean the worst direction is nearly "
        "twice as bad as the best one.",
    ),
    "directions_preferred": (
        "Preferred directions",
        "Each dot is one analysed direction seen from above the z axis (Lambert equal-area "
        "projection of the upper hemisphere: centre = z, rim = directions in the xy plane; a "
        "direction and its opposite are the same). Dot size and colour give the number of mask "
        "voxels whose best resolution lies along that direction. A uniform pattern means no "
        "preferred direction; a cluster shows where the map is best resolved. The X marks the "
        "fitted anisotropy axis (worst-resolved axis).",
    ),
    "directions_resolution": (
        "Directional resolution",
        "Mean resolution of each direction over the mask on the same projection; blue is "
        "better (lower Å), red worse. With preferred particle orientations the worst "
        "directions gather around the missing view (the X marks the fitted worst axis).",
    ),
    "radial_averages": (
        "Radial averages",
        "Mean of each resolution map in spherical shells around the box centre (bottom axis in "
        "voxels, top axis in Å), with +- one standard deviation shaded. Resolution usually "
        "degrades towards the periphery; radial and azimuthal curves that separate with the "
        "radius indicate radial or rotational blur. The MonoRes curve can drop at the edge "
        "when MonoRes's refined mask is smaller than the analysis mask.",
    ),
}

_SLICE_HELP = (
    "Central xy, xz and yz slices through the box centre. Grey voxels are outside the mask "
    "(or not estimated). Colour limits are the 2nd and 98th percentiles inside the mask; for "
    "resolution maps blue is better (lower Å) and red worse."
)


def figure_help(name: str) -> tuple[str, str]:
    """(title, how-to-read text) of a figure name."""
    if name in FIGURE_HELP:
        return FIGURE_HELP[name]
    if name.startswith("slices_"):
        key = name[len("slices_") :]
        base = FIGURE_HELP.get(f"hist_{key}", (key.replace("_", " ").capitalize(), ""))[0]
        return f"{base}: central slices", _SLICE_HELP
    if name.startswith("hist_"):
        return name[len("hist_") :].replace("_", " ").capitalize(), _HIST_HELP
    return name.replace("_", " ").capitalize(), ""


# --------------------------------------------------------------------------- formatting
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    suffix = unit if unit in ("", "°") else " " + unit
    if isinstance(value, int):
        return f"{value}{suffix}"
    if isinstance(value, float):
        return f"{value:.{digits}g}{suffix}"
    return str(value)


def _vector(v: Any) -> str:
    if not isinstance(v, Sequence) or isinstance(v, str):
        return "n/a"
    return "(" + ", ".join("n/a" if x is None else f"{x:+.3f}" for x in v) + ")"


def _direction(d: Mapping | None) -> str:
    if not d:
        return "n/a"
    return (
        f"#{d.get('index')} rot {_num(d.get('rot_deg'), '°', 4)}, tilt "
        f"{_num(d.get('tilt_deg'), '°', 3)}: {_num(d.get('mean_resolution_A'), 'Å', 3)} "
        f"(angle to z {_num(d.get('angle_to_z_deg'), '°', 3)})"
    )


def _kv_table(rows: Sequence[tuple[str, str]], css_class: str = "kv") -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="{css_class}">{body}</table>'


def _map_stat(summary: Mapping, name: str, key: str = "median") -> Any:
    return (summary.get("maps") or {}).get(name, {}).get(key)


def _key_numbers(summary: Mapping) -> str:
    an = summary.get("anisotropy") or {}
    th = summary.get("thresholds") or {}
    rows = [
        ("Median MonoRes resolution", _num(_map_stat(summary, "monores"), "Å")),
        ("Median radial resolution", _num(_map_stat(summary, "radial"), "Å")),
        ("Median azimuthal resolution", _num(_map_stat(summary, "azimuthal"), "Å")),
        ("Median anisotropy index", _num(an.get("median_anisotropy_index"))),
        ("Median degree of anisotropy", _num(an.get("median_doa_A"), "Å")),
        (
            "Fitted anisotropy axis (worst resolved)",
            f"{_vector(an.get('axis'))}, {_num(an.get('axis_angle_to_z_deg'), '°')} from z",
        ),
        ("Best direction", _direction(an.get("best_direction"))),
        ("Worst direction", _direction(an.get("worst_direction"))),
        ("Worst / best direction ratio", _num(an.get("worst_to_best_ratio"))),
        (
            "Radial / azimuthal 90th percentile",
            f"{_num(th.get('radial_p90_A'), 'Å')} / {_num(th.get('azimuthal_p90_A'), 'Å')}",
        ),
        ("Voxel size", _num(summary.get("voxel_size_A"), "Å", 4)),
        (
            "Mask voxels / directions",
            f"{_num(summary.get('n_mask_voxels'))} / {_num(summary.get('n_directions'))}",
        ),
    ]
    return _kv_table(rows, "kv key")


def _map_table(summary: Mapping) -> str:
    maps = summary.get("maps") or {}
    if not maps:
        return "<p>No maps.</p>"
    head = "".join(
        f"<th>{h}</th>" for h in ("Map", "Unit", "n", "p5", "p25", "median", "p75", "p95")
    )
    rows = []
    for name, st in maps.items():
        cells = [st.get("label", name), st.get("unit") or "-", _num(st.get("n"))]
        cells += [_num(st.get(k), "", 4) for k in ("p5", "p25", "median", "p75", "p95")]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return (
        f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _data_uri(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figures(figures: Mapping[str, os.PathLike | str]) -> str:
    parts = []
    for name, p in figures.items():
        path = Path(p)
        title, text = figure_help(name)
        if not path.is_file():
            parts.append(
                f'<section class="figure"><h3>{_e(title)}</h3>'
                f'<p class="missing">Figure file missing: {_e(path.name)}</p></section>'
            )
            continue
        parts.append(
            f'<section class="figure" id="fig-{_e(name)}"><h3>{_e(title)}</h3>'
            f'<img src="{_data_uri(path)}" alt="{_e(title)}">'
            f'<p class="help"><b>How to read this.</b> {_e(text)}</p></section>'
        )
    return "\n".join(parts)


def _records_table(records: Any) -> str:
    """Table from a list of dicts or a dict of equal-length lists."""
    if isinstance(records, Mapping):
        keys = list(records)
        n = max((len(v) for v in records.values() if isinstance(v, Sequence)), default=0)
        records = [
            {
                k: (
                    records[k][i]
                    if isinstance(records[k], Sequence) and i < len(records[k])
                    else None
                )
                for k in keys
            }
            for i in range(n)
        ]
    if not isinstance(records, Sequence) or not records:
        return ""
    keys: list[str] = []
    for r in records:
        if isinstance(r, Mapping):
            keys += [k for k in r if k not in keys]
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(_num(r.get(k), '', 4))}</td>" for k in keys) + "</tr>"
        for r in records
        if isinstance(r, Mapping)
    )
    return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _global_fsc(fsc: Any) -> str:
    """Optional section: global directional FSC (only when the summary carries one)."""
    out = [
        "<!-- BEGIN optional section: global directional FSC (summary key 'global_fsc') -->",
        '<section id="global-fsc"><h2>Global directional FSC</h2>',
        "<p>Resolution from the Fourier shell correlation between the half maps restricted to "
        "cones around each direction (one number per direction for the whole map, unlike the "
        "local maps above). A sphericity close to 1 means isotropic.</p>",
    ]
    if isinstance(fsc, Mapping):
        note = fsc.get("note")
        scalars = [
            (str(k), _num(v, "", 4))
            for k, v in fsc.items()
            if k != "note" and (v is None or isinstance(v, str | int | float))
        ]
        if scalars:
            out.append(_kv_table(scalars))
        for k, v in fsc.items():
            if isinstance(v, Sequence | Mapping) and not isinstance(v, str):
                table = _records_table(v)
                if table:
                    out.append(f"<h3>{_e(k)}</h3>{table}")
        if note:
            out.append(f'<p class="note">{_e(note)}</p>')
    else:
        out.append(f"<pre>{_e(json.dumps(fsc, indent=2))}</pre>")
    out.append("</section>")
    out.append("<!-- END optional section: global directional FSC -->")
    return "\n".join(out)


def _config_text(config: Any) -> str:
    try:
        import yaml

        return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)
    except Exception:  # pragma: no cover - PyYAML missing or unrepresentable values
        return json.dumps(config, indent=2, ensure_ascii=False, default=str)


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#fafafa;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:1.2em 1.5em 3em}
h1{font-size:1.6em;margin:.3em 0 .1em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.8em}h3{margin:.2em 0 .4em}
.sub{color:#666;margin:0 0 1em}
table{border-collapse:collapse;margin:.5em 0;background:#fff}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
table.kv th{background:#f0f3f7;width:22em}table.key td{font-weight:600}
table.grid th{background:#f0f3f7}table.grid td{font-variant-numeric:tabular-nums}
section.figure{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:.8em 1em;
margin:1em 0}
section.figure img{max-width:100%;height:auto;display:block;margin:0 auto}
p.help{color:#333;font-size:.93em}p.note{color:#555;font-style:italic}
pre{background:#fff;border:1px solid #ddd;padding:.8em;overflow:auto;font-size:.88em}
.missing{color:#a00}footer{color:#888;font-size:.85em;margin-top:3em}
"""


def render_report(
    summary: Mapping[str, Any],
    figures: Mapping[str, os.PathLike | str],
    *,
    title: str = "monodir report",
) -> str:
    """Render the report page as a string; see :func:`write_report`."""
    versions = summary.get("versions") or {}
    inputs = summary.get("inputs") or {}
    timings = summary.get("timings") or {}
    mono = summary.get("monores") or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">Directional local resolution and anisotropy (MonoRes + MonoDir), '
        f"monodir {_e(versions.get('monodir', 'unknown version'))}</p>",
        '<section id="key-numbers"><h2>Key numbers</h2>',
        _key_numbers(summary),
        "<p>Resolutions are in Å (lower is better). The anisotropy axis is the direction along "
        "which the map is worst resolved, fitted to the per-direction mean resolutions; "
        "directions are axes, so angles to z are between 0° and 90°.</p>",
    ]
    if mono:
        parts.append(
            "<p>MonoRes tested "
            f"{_e(_num(mono.get('n_tested')))} resolutions; it stopped because: "
            f"{_e(mono.get('stop_reason') or 'n/a')}.</p>"
        )
    parts += [
        "</section>",
        '<section id="maps"><h2>Map statistics inside the mask</h2>',
        _map_table(summary),
        "</section>",
        '<section id="figures"><h2>Figures</h2>',
        _figures(figures),
        "</section>",
    ]
    if summary.get("global_fsc") is not None:
        parts.append(_global_fsc(summary["global_fsc"]))
    if timings:
        rows = [(str(k), _num(v, "s", 4)) for k, v in timings.items()]
        if summary.get("timings_total_s") is not None and "total" not in timings:
            rows.append(("total", _num(summary["timings_total_s"], "s", 4)))
        parts += ['<section id="timings"><h2>Timings</h2>', _kv_table(rows), "</section>"]
    if inputs:
        rows = [
            (str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
            for k, v in inputs.items()
        ]
        parts += ['<section id="inputs"><h2>Inputs</h2>', _kv_table(rows), "</section>"]
    parts += [
        '<section id="config"><h2>Configuration</h2>',
        f"<pre>{_e(_config_text(summary.get('config') or {}))}</pre>",
        "</section>",
        '<section id="versions"><h2>Versions</h2>',
        _kv_table([(str(k), str(v)) for k, v in versions.items()]) if versions else "<p>n/a</p>",
        "</section>",
        "<footer>Self-contained report: all images are embedded; no network access is needed "
        "to view it.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(
    path: str | os.PathLike,
    summary: Mapping[str, Any],
    figures: Mapping[str, os.PathLike | str],
    *,
    title: str = "monodir report",
) -> Path:
    """Write the self-contained HTML report, atomically.

    Parameters
    ----------
    path
        Output ``.html`` file.
    summary
        Output of :func:`monodir.report.summary.build_summary`; a ``global_fsc`` key adds
        the optional global directional FSC section.
    figures
        Figure name -> image file (as returned by
        :func:`monodir.report.plots.make_all_figures`); embedded in this order.
    title
        Page title.

    Returns
    -------
    Path
        The file written.
    """
    return atomic_write_text(path, render_report(summary, figures, title=title))
