"""Validation of the directional analysis on the simulated half maps of known anisotropy.

The data (``shared/data/simulated_halfmaps``, see its ``MANIFEST.md``) are three half-map pairs
of the same haemoglobin map that differ only in the particles' angular distribution:
``A_isotropic`` (uniform), ``B_preferred`` (95 % of views within 30 degrees of +z) and
``C_missing_cone`` (a 40-degree missing cone about kz). For B and C the resolution is worst
along z and best in the xy plane.

:func:`validate_simulated` runs monodir's directional kernel on each pair in single-map mode
(the map is ``(half1 + half2) / 2`` and the noise comes from the solvent) and in half-map mode
(noise from the half difference inside the mask), adds the global and directional FSC of the
halves (:mod:`monodir.core.fsc`, with the soft mask the data's ``fsc.txt`` used) and returns one
row per (dataset, mode). :func:`format_table` prints the rows; ``python -m monodir.validation``
does both.

The maps can be resampled first (``crop``: Fourier cropping to a smaller box, i.e. a larger
voxel; ``pad``: zero padding back to a larger box so that single-map mode keeps a solvent
shell). The test suite does this to stay within its time budget; the FSC figures always come
from the original maps.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monodir.core.fsc import FSCResult, directional_fsc

#: The three datasets in the order of the table.
DATASETS = ("A_isotropic", "B_preferred", "C_missing_cone")
#: Where the data live relative to the repository (``../shared/data/simulated_halfmaps``).
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "simulated_halfmaps"
#: Width (voxels) of the raised-cosine edge of the FSC mask (as in the data's ``fsc.txt``).
SOFT_EDGE = 5.0
#: Permutations of the axis test.
N_PERMUTATIONS = 2000
#: Directions within this angle (degrees) of an axis are "along" it (:func:`axial_contrast`).
NEAR_AXIS = 30.0
#: Directions at least this far (degrees) from an axis are "across" it.
FAR_FROM_AXIS = 70.0


# ---------------------------------------------------------------------------------------------
# Map handling


def soft_edge_mask(mask: np.ndarray, width: float = SOFT_EDGE) -> np.ndarray:
    """Binary mask with a raised-cosine edge of ``width`` voxels outside it.

    A voxel at Euclidean distance ``t`` from the nearest mask voxel gets
    ``0.5 * (1 + cos(pi * t / width))`` for ``t < width`` and 0 beyond; mask voxels get 1.
    """
    from scipy import ndimage

    m = np.asarray(mask).astype(bool)
    if width <= 0:
        return m.astype(np.float64)
    t = ndimage.distance_transform_edt(~m)
    edge = 0.5 * (1.0 + np.cos(np.pi * np.minimum(t, width) / width))
    return np.where(m, 1.0, np.where(t < width, edge, 0.0))


def fourier_crop(volume: np.ndarray, box: int) -> np.ndarray:
    """Resample a cubic map to ``box^3`` voxels by cropping its spectrum (values preserved).

    The voxel size grows by ``n / box``; index ``i`` of the result sits at index ``i * n / box``
    of the input (the centre ``n/2`` maps to ``box/2`` for even sizes). The Nyquist planes of the
    cropped spectrum are zeroed so that it stays Hermitian.
    """
    v = np.asarray(volume, dtype=np.float64)
    n = v.shape[0]
    if v.shape != (n, n, n):
        raise ValueError(f"fourier_crop needs a cubic map, got {v.shape}")
    if box == n:
        return v.copy()
    if not 0 < box < n:
        raise ValueError(f"crop box {box} must be between 1 and {n}")
    spec = np.fft.rfftn(v)
    h = box // 2
    keep = np.r_[0 : box - h, n - h : n]
    out = spec[keep][:, keep][:, :, : h + 1].copy()
    if box % 2 == 0:
        out[h] = 0.0
        out[:, h] = 0.0
        out[:, :, h] = 0.0
    return np.fft.irfftn(out, s=(box,) * 3, axes=(0, 1, 2)) * (box / n) ** 3


def resample_mask(mask: np.ndarray, box: int) -> np.ndarray:
    """Binary mask on the grid of :func:`fourier_crop` (trilinear, threshold 0.5)."""
    from scipy import ndimage

    m = np.asarray(mask, dtype=np.float64)
    n = m.shape[0]
    if box == n:
        return m > 0.5
    pos = np.arange(box) * (n / box)
    grid = np.meshgrid(pos, pos, pos, indexing="ij")
    vals = ndimage.map_coordinates(m, grid, order=1, mode="constant", cval=0.0)
    return vals >= 0.5


def pad_centred(volume: np.ndarray, box: int) -> np.ndarray:
    """Zero-pad a cubic map to ``box^3`` keeping voxel ``n//2`` at ``box//2``."""
    v = np.asarray(volume)
    n = v.shape[0]
    if box == n:
        return v.copy()
    if box < n:
        raise ValueError(f"pad box {box} is smaller than the map ({n})")
    out = np.zeros((box,) * 3, dtype=v.dtype)
    o = box // 2 - n // 2
    out[o : o + n, o : o + n, o : o + n] = v
    return out


def load_dataset(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(half1, half2, mask, voxel_size)`` of one dataset folder (mask as bool)."""
    from monodir.io.mrc import read_map

    h1 = read_map(folder / "half1.mrc", role="half map 1")
    h2 = read_map(folder / "half2.mrc", role="half map 2")
    m = read_map(folder / "mask.mrc", role="mask")
    return h1.data, h2.data, m.data > 0.5, h1.voxel_size


def prepare_grid(
    half1: np.ndarray,
    half2: np.ndarray,
    mask: np.ndarray,
    voxel_size: float,
    *,
    crop: int | None = None,
    pad: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Optionally Fourier-crop to ``crop`` voxels, then zero-pad to ``pad`` voxels."""
    n = half1.shape[0]
    if crop is not None and crop != n:
        half1 = fourier_crop(half1, crop).astype(np.float32)
        half2 = fourier_crop(half2, crop).astype(np.float32)
        mask = resample_mask(mask, crop)
        voxel_size = voxel_size * n / crop
    if pad is not None and pad != half1.shape[0]:
        half1 = pad_centred(half1, pad)
        half2 = pad_centred(half2, pad)
        mask = pad_centred(mask, pad)
    return half1, half2, mask, voxel_size


# ---------------------------------------------------------------------------------------------
# Figures


def angle_to_z(vector: np.ndarray) -> float:
    """Angle (degrees, 0-90) between the line through ``vector`` and z."""
    v = np.asarray(vector, dtype=np.float64)
    c = abs(v[2]) / np.linalg.norm(v)
    return float(np.degrees(np.arccos(np.clip(c, 0.0, 1.0))))


def axis_strength(directions: np.ndarray, values: np.ndarray) -> float:
    """How axial a per-direction pattern is: ``lambda_max / trace`` of ``sum_i w_i d_i d_i^T``.

    ``w_i = values_i - min(values)``, the weights of :func:`monodir.core.summaries.fit_axis`.
    1/3 when the excess is spread evenly over the sphere, 1 when it sits on a single axis; for
    a uniform excess on every direction within 60 degrees of an axis it is about 0.58.
    """
    ok = np.isfinite(values)
    d = directions[ok]
    w = values[ok] - values[ok].min()
    if not np.any(w > 0):
        return float("nan")
    ev = np.linalg.eigvalsh((d * w[:, None]).T @ d)
    return float(ev[-1] / ev.sum())


def axis_permutation_p(
    directions: np.ndarray,
    values: np.ndarray,
    n_perm: int = N_PERMUTATIONS,
    seed: int = 0,
) -> float:
    """Share of random re-assignments of ``values`` to ``directions`` at least as axial.

    A permutation test of :func:`axis_strength`: small when the values are arranged around an
    axis far more than the same values scattered at random over the same directions would be,
    close to uniform on [0, 1] when no axis stands out.
    """
    ok = np.isfinite(values)
    d = directions[ok]
    v = np.asarray(values, dtype=np.float64)[ok]
    obs = axis_strength(d, v)
    rng = np.random.default_rng(seed)
    w = v - v.min()
    outer = np.einsum("ik,il->ikl", d, d)  # (D, 3, 3)
    perms = np.argsort(rng.random((n_perm, v.size)), axis=1)
    tensors = np.einsum("pi,ikl->pkl", w[perms], outer)
    ev = np.linalg.eigvalsh(tensors)
    strength = ev[:, -1] / ev.sum(axis=1)
    return float((1 + np.sum(strength >= obs - 1e-12)) / (n_perm + 1))


def axial_contrast(
    directions: np.ndarray,
    values: np.ndarray,
    axis: np.ndarray,
    near: float = NEAR_AXIS,
    far: float = FAR_FROM_AXIS,
) -> float:
    """How much worse the directions near ``axis`` are than those far from it (fraction).

    ``mean(values within near degrees of the axis) / mean(values at least far degrees from it)
    - 1`` (antipodes folded): 0 when the two groups agree, 1 when the near ones are twice as
    coarse. With the 46 fast directions the groups hold about 6 and 15 directions.
    """
    d = np.asarray(directions, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    a = np.asarray(axis, dtype=np.float64)
    ang = np.degrees(np.arccos(np.clip(np.abs(d @ a) / np.linalg.norm(a), 0.0, 1.0)))
    sel_near = (ang <= near) & np.isfinite(v)
    sel_far = (ang >= far) & np.isfinite(v)
    if not sel_near.any() or not sel_far.any():
        return float("nan")
    return float(v[sel_near].mean() / v[sel_far].mean() - 1.0)


def relative_scatter(values: np.ndarray) -> float:
    """Robust relative scatter of per-direction values: ``1.4826 MAD / median``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    med = float(np.median(v))
    return float(1.4826 * np.median(np.abs(v - med)) / med)


def fsc_figures(fsc: FSCResult) -> dict[str, float]:
    """The FSC columns of a validation row."""
    return {
        "fsc_global_0143": fsc.global_resolution_0143,
        "fsc_global_05": fsc.global_resolution_05,
        "fsc_dir_best": float(np.min(fsc.resolution_0143)),
        "fsc_dir_worst": float(np.max(fsc.resolution_0143)),
        "fsc_axis_to_z": fsc.axis_angle_to_z,
        "fsc_axis_to_z_05": fsc.axis_angle_to_z_05,
        "fsc_sphericity": fsc.sphericity,
        "fsc_cfar": fsc.cfar,
    }


def directional_row(result, mask_values: dict[str, np.ndarray] | None = None) -> dict:
    """Directional columns of a row from a :class:`~monodir.core.results.DirectionalResult`."""
    shape = result.maps["anisotropy"].shape
    flat = result.mask_indices

    def in_mask(name: str) -> np.ndarray:
        return result.maps[name].reshape(-1)[flat].astype(np.float64)

    aniso = in_mask("anisotropy")
    means = np.asarray(result.direction_means, dtype=np.float64)
    dirs = np.asarray(result.directions, dtype=np.float64)
    worst = int(np.nanargmax(means))
    best = int(np.nanargmin(means))
    q1, med, q3 = np.percentile(aniso, [25, 50, 75])
    row = {
        "box": int(shape[0]),
        "n_directions": int(dirs.shape[0]),
        "n_voxels": int(flat.size),
        "anisotropy_median": float(med),
        "anisotropy_q1": float(q1),
        "anisotropy_q3": float(q3),
        "worst_resolution": float(means[worst]),
        "worst_to_z": angle_to_z(dirs[worst]),
        "best_resolution": float(means[best]),
        "best_to_z": angle_to_z(dirs[best]),
        "axis_to_z": float(result.axis_angle_to_z),
        "axis_contrast": axial_contrast(dirs, means, result.anisotropy_axis),
        "direction_scatter": relative_scatter(means),
        "axis_strength": axis_strength(dirs, means),
        "axis_p": axis_permutation_p(dirs, means),
        "radial_median": float(np.median(in_mask("radial"))),
        "azimuthal_median": float(np.median(in_mask("azimuthal"))),
        "direction_means": means,
        "directions": dirs,
        "anisotropy_values": aniso,
    }
    if mask_values:
        row.update(mask_values)
    return row


# ---------------------------------------------------------------------------------------------
# Runner


def validate_simulated(
    data_dir: str | Path = DEFAULT_DATA,
    *,
    fast: bool = True,
    modes: Sequence[str] = ("single", "half"),
    threads: int = 2,
    datasets: Sequence[str] = DATASETS,
    crop: int | None = None,
    pad: int | None = None,
    monores: bool = False,
    progress=None,
) -> list[dict]:
    """Run the directional analysis on the simulated half maps; one row per (dataset, mode).

    Parameters
    ----------
    data_dir
        The ``simulated_halfmaps`` folder.
    fast
        46 directions (default) instead of 81.
    modes
        ``"single"`` (the map is ``(half1 + half2) / 2``, solvent noise) and/or ``"half"``
        (``half_maps=(half1, half2)``).
    threads
        FFT threads.
    datasets
        Sub-folders to run.
    crop, pad
        Optional resampling before the local analysis (see :func:`prepare_grid`); the FSC is
        always computed on the original maps.
    monores
        Also run MonoRes (same mode) and pass its map to the directional pass; adds
        ``monores_median``.
    progress
        Callable receiving one line of text per finished step, or ``None``.

    Returns
    -------
    list of dict
        Keys: ``dataset``, ``mode``, ``voxel_size``, ``seconds``, the directional columns of
        :func:`directional_row` (``anisotropy_median``, ``worst_resolution``, ``worst_to_z``,
        ``best_resolution``, ``best_to_z``, ``axis_to_z``, ``axis_contrast``,
        ``direction_scatter``, ``axis_strength``, ``axis_p``,
        ``radial_median``, ``azimuthal_median``, and the arrays ``direction_means``,
        ``directions``, ``anisotropy_values``), the FSC columns of :func:`fsc_figures`, the
        :class:`~monodir.core.fsc.FSCResult` under ``fsc`` and, with ``monores``,
        ``monores_median``.
    """
    from monodir.core.directional import directional

    data_dir = Path(data_dir)
    bad = [m for m in modes if m not in ("single", "half")]
    if bad:
        raise ValueError(f"unknown mode(s) {bad}; use 'single' and/or 'half'")
    rows: list[dict] = []
    for name in datasets:
        h1, h2, mask, voxel = load_dataset(data_dir / name)
        t0 = time.perf_counter()
        fsc = directional_fsc(h1, h2, voxel, mask=soft_edge_mask(mask))
        fsc_cols = fsc_figures(fsc)
        if progress is not None:
            progress(f"{name}: directional FSC in {time.perf_counter() - t0:.1f} s")
        g1, g2, gmask, gvoxel = prepare_grid(h1, h2, mask, voxel, crop=crop, pad=pad)
        for mode in modes:
            t0 = time.perf_counter()
            extra: dict[str, float] = {}
            monores_map = None
            if monores:
                from monodir.core.monores import monores as run_monores

                if mode == "half":
                    mr = run_monores(g1, gmask, gvoxel, half_map2=g2, threads=threads)
                else:
                    mr = run_monores(0.5 * (g1 + g2), gmask, gvoxel, threads=threads)
                monores_map = mr.resolution
                extra["monores_median"] = mr.median
            kwargs = {"half_maps": (g1, g2)} if mode == "half" else {}
            result = directional(
                0.5 * (g1 + g2),
                gmask,
                gvoxel,
                fast=fast,
                threads=threads,
                monores_map=monores_map,
                **kwargs,
            )
            row = {"dataset": name, "mode": mode, "voxel_size": float(gvoxel)}
            row.update(directional_row(result, extra))
            row.update(fsc_cols)
            row["fsc"] = fsc
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            if progress is not None:
                progress(f"{name} {mode}: {row['seconds']:.1f} s")
    return rows


# ---------------------------------------------------------------------------------------------
# Table

_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("dataset", "dataset", "s"),
    ("mode", "mode", "s"),
    ("monores_median", "MonoRes", ".2f"),
    ("anisotropy_median", "aniso med", ".3f"),
    ("anisotropy_iqr", "aniso IQR", ".3f"),
    ("worst", "worst dir Å (∠z)", "s"),
    ("best", "best dir Å (∠z)", "s"),
    ("axis_to_z", "axis ∠z", ".1f"),
    ("axis_contrast", "axis contrast", ".2f"),
    ("direction_scatter", "dir. scatter", ".3f"),
    ("axis_p", "axis p", ".3f"),
    ("radial_median", "radial", ".2f"),
    ("azimuthal_median", "azimuthal", ".2f"),
    ("fsc_global_0143", "FSC 0.143", ".2f"),
    ("fsc_dirs", "cone FSC min-max", "s"),
    ("fsc_axes", "FSC axis ∠z 0.143 / 0.5", "s"),
    ("fsc_sphericity", "spher.", ".3f"),
    ("fsc_cfar", "cFAR", ".3f"),
)


def _cell(row: dict, key: str, fmt: str) -> str:
    if key == "worst":
        return f"{row['worst_resolution']:.2f} ({row['worst_to_z']:.0f}°)"
    if key == "best":
        return f"{row['best_resolution']:.2f} ({row['best_to_z']:.0f}°)"
    if key == "anisotropy_iqr":
        return f"{row['anisotropy_q3'] - row['anisotropy_q1']:.3f}"
    if key == "fsc_axes":
        return f"{row['fsc_axis_to_z']:.1f} / {row['fsc_axis_to_z_05']:.1f}"
    if key == "fsc_dirs":
        return f"{row['fsc_dir_best']:.2f}-{row['fsc_dir_worst']:.2f}"
    val = row.get(key)
    if val is None:
        return "-"
    return format(val, fmt) if fmt != "s" else str(val)


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table of validation rows (resolutions in Å, angles in degrees).

    Columns: MonoRes median (when run), median and interquartile range of the per-voxel
    anisotropy index, worst- and best-resolved direction by mean over the mask with its angle to
    z, the fitted anisotropy axis's angle to z, its :func:`axial_contrast`, the
    :func:`relative_scatter` of the direction means and the permutation p-value of
    :func:`axis_permutation_p`, median radial and azimuthal resolution, then the half-map FSC
    figures:
    global 0.143 resolution, range of the per-direction (20-degree cone) 0.143 resolutions,
    angle to z of the worst axis fitted to the per-direction 0.143 (and 0.5) crossings,
    sphericity and cFAR-like ratio.
    """
    cols = [
        c for c in _COLUMNS if c[0] != "monores_median" or any("monores_median" in r for r in rows)
    ]
    header = "| " + " | ".join(c[1] for c in cols) + " |"
    rule = "|" + "|".join("---" for _ in cols) + "|"
    lines = [header, rule]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r, k, f) for k, _, f in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m monodir.validation [--data DIR] [--full] ...``: print the validation table."""
    p = argparse.ArgumentParser(
        prog="python -m monodir.validation",
        description="Directional resolution and anisotropy on the simulated half maps "
        "(A isotropic, B preferred orientation, C missing cone; anisotropy axis z).",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="simulated_halfmaps folder")
    p.add_argument("--full", action="store_true", help="81 directions instead of 46")
    p.add_argument(
        "--modes", default="single,half", help="comma-separated: single, half (default both)"
    )
    p.add_argument("--threads", type=int, default=2, help="FFT threads (default 2)")
    p.add_argument("--crop", type=int, default=None, help="Fourier-crop to this box first")
    p.add_argument("--pad", type=int, default=None, help="then zero-pad to this box")
    p.add_argument("--no-monores", action="store_true", help="skip MonoRes")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: data folder {args.data} not found (use --data)", file=sys.stderr)
        return 2
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        rows = validate_simulated(
            args.data,
            fast=not args.full,
            modes=modes,
            threads=args.threads,
            crop=args.crop,
            pad=args.pad,
            monores=not args.no_monores,
            progress=None if args.quiet else report,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_dir = rows[0]["n_directions"] if rows else 0
    box = rows[0]["box"] if rows else 0
    vox = rows[0]["voxel_size"] if rows else 0.0
    print(f"# {n_dir} directions, box {box}, voxel {vox:.3f} Å; resolutions in Å")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
