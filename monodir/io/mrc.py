"""MRC/CCP4 map input and output with the checks monodir needs before any work starts.

Reading (:func:`read_map`) returns a :class:`MapInfo` whose array is always indexed
``[z, y, x]`` (x fastest), whatever the file's MAPC/MAPR/MAPS axis order, as float32, with an
isotropic voxel size in Å. Everything that would make later stages fail or silently produce
wrong numbers (missing or corrupt file, not 3D, NaN/Inf, no voxel size, anisotropic sampling,
a broken axis order) raises :class:`monodir.errors.InputError` with a one-line message that
names the file, the problem and the fix.

Writing (:func:`write_map`) produces mode-2 (float32) volumes with the voxel size, origin and
start indices of the input, header statistics and a provenance label. The file appears
atomically: it is written under a temporary name in the destination directory and then
renamed, so a reader (or an interrupted run) never sees a half-written map.

MRC axis conventions used here (MRC2014):

* NX/NY/NZ count columns, rows and sections; MAPC/MAPR/MAPS say which spatial axis
  (1 = x, 2 = y, 3 = z) the columns, rows and sections run along. ``mrcfile`` returns the
  data as ``[section, row, column]`` and does *not* apply MAPC/MAPR/MAPS, so this module
  transposes the array into ``[z, y, x]``.
* NXSTART/NYSTART/NZSTART are the first column/row/section indices; they are reported here
  in x, y, z order (permuted with the same axis mapping).
* MX/MY/MZ and CELLA are given in x, y, z order, so the voxel size is CELLA / (MX, MY, MZ).
* ORIGIN is in Å, x, y, z order.
"""

from __future__ import annotations

import bz2
import gzip
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import mrcfile
import numpy as np

from monodir.errors import InputError

__all__ = ["MapInfo", "read_map", "write_map"]

#: Relative tolerance when comparing voxel sizes (x vs y vs z, header vs config).
VOXEL_SIZE_RTOL = 1e-3

_COMPLEX_MODES = (3, 4)


@dataclass
class MapInfo:
    """A map read from disk, in monodir's conventions.

    Attributes
    ----------
    data : numpy.ndarray
        float32, C-contiguous, axes ``[z, y, x]`` (x is the fastest axis).
    voxel_size : float
        Isotropic voxel size in Å (from the header, or the override given to
        :func:`read_map`).
    origin : tuple of float
        ``header.origin`` (x, y, z) in Å.
    nstart : tuple of int
        First grid index along x, y, z (NXSTART... permuted to x, y, z order).
    path : pathlib.Path or None
        The file it came from (None for maps built in memory).
    role : str
        What the file is for ("map", "mask", "half map 1", ...); used in messages.
    voxel_size_source : {"header", "config"}
        "config" when an explicit override was given to :func:`read_map`.
    header_voxel_size : tuple of float
        The voxel size stored in the header (x, y, z), zeros if absent.
    axis_order : tuple of int
        The file's (MAPC, MAPR, MAPS).
    labels : list of str
        The header's text labels.
    warnings : list of str
        Non-fatal remarks (permissive read, overridden voxel size, ...), one line each.
    shape : tuple of int
        ``data.shape``, i.e. (nz, ny, nx); derived, not an argument.
    """

    data: np.ndarray
    voxel_size: float
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    nstart: tuple[int, int, int] = (0, 0, 0)
    path: Path | None = None
    role: str = "map"
    voxel_size_source: Literal["header", "config"] = "header"
    header_voxel_size: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axis_order: tuple[int, int, int] = (1, 2, 3)
    labels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    shape: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.data.shape)

    @property
    def name(self) -> str:
        """Role and file name for messages, e.g. ``"mask /data/mask.mrc"``."""
        return f"{self.role} {self.path}" if self.path is not None else f"{self.role} (in memory)"

    @property
    def box_xyz(self) -> str:
        """The box as ``"NXxNYxNZ"`` (the order MRC headers and viewers show)."""
        return "x".join(str(s) for s in self.shape[::-1])


def _axis_permutation(axis_order: tuple[int, int, int]) -> tuple[int, int, int]:
    """Transpose that takes mrcfile's ``[section, row, column]`` array to ``[z, y, x]``.

    Parameters
    ----------
    axis_order : tuple of int
        (MAPC, MAPR, MAPS): the spatial axis (1 = x, 2 = y, 3 = z) of columns, rows, sections.

    Returns
    -------
    tuple of int
        ``perm`` such that ``data.transpose(perm)`` is indexed ``[z, y, x]``.
    """
    mapc, mapr, maps = axis_order
    # Spatial axis carried by each array axis of the mrcfile array [section, row, column].
    spatial_of_array_axis = (maps, mapr, mapc)
    # Output array axes are z, y, x = spatial axes 3, 2, 1.
    return tuple(spatial_of_array_axis.index(s) for s in (3, 2, 1))  # type: ignore[return-value]


def _fail(path: Path, role: str, problem: str, fix: str) -> InputError:
    return InputError(f"{role} file {path}: {problem}; {fix}")


_MAGIC = {b"\x1f\x8b": "gzip", b"BZ": "bzip2"}
_READABLE_MODES = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}  # mode -> bytes per voxel


def _plausible_header(path: Path) -> bool:
    """Whether the first 1024 bytes look like an MRC header describing this file's data.

    Used before a permissive retry (e.g. an old CCP4 file without the "MAP " stamp), so that
    a text file or garbage is refused at once instead of letting the permissive reader try
    to allocate whatever sizes the garbage encodes.
    """
    with open(path, "rb") as fh:
        magic = fh.read(2)
    compression = next((c for m, c in _MAGIC.items() if magic.startswith(m)), None)
    opener = {"gzip": gzip.open, "bzip2": bz2.open}.get(compression or "", open)
    try:
        with opener(path, "rb") as fh:
            raw = fh.read(1024)
    except (OSError, EOFError):
        return False
    if len(raw) < 1024:
        return False
    size = path.stat().st_size
    for order in ("<", ">"):
        h = np.frombuffer(raw, dtype=mrcfile.dtypes.HEADER_DTYPE.newbyteorder(order))[0]
        nx, ny, nz = int(h["nx"]), int(h["ny"]), int(h["nz"])
        mode, nsymbt = int(h["mode"]), int(h["nsymbt"])
        if mode not in _READABLE_MODES or min(nx, ny, nz) < 1 or max(nx, ny, nz) > 100_000:
            continue
        if not 0 <= nsymbt <= 2**31:
            continue
        needed = 1024 + nsymbt + nx * ny * nz * _READABLE_MODES[mode]
        if compression is None and needed > size:
            continue
        return True
    return False


def _open_checked(path: Path, role: str) -> tuple[mrcfile.mrcfile.MrcFile, list[str]]:
    """Open strictly; retry permissively only when the header is plausible.

    Returns the open file and any warnings mrcfile emitted (as strings).
    """
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mrc = mrcfile.open(path, mode="r", permissive=False)
            notes.extend(str(w.message) for w in caught)
            return mrc, notes
        except (ValueError, OSError, EOFError) as exc:
            strict_error = " ".join(str(exc).split()) or type(exc).__name__
        mrc = None
        if _plausible_header(path):
            caught.clear()
            try:
                mrc = mrcfile.open(path, mode="r", permissive=True)
            except (ValueError, OSError, EOFError):
                mrc = None
        permissive_notes = [str(w.message) for w in caught]
    if mrc is None or mrc.data is None:
        if mrc is not None:
            mrc.close()
        raise _fail(
            path,
            role,
            f"not a readable MRC/CCP4 map ({strict_error})",
            "check that it is readable and a complete MRC map (re-download or re-export it)",
        )
    notes.append(f"read in permissive mode: {strict_error}")
    notes.extend(n for n in permissive_notes if " ".join(n.split()) != strict_error)
    return mrc, notes


def _header_voxel_size(header: np.recarray) -> tuple[float, float, float]:
    """CELLA / (MX, MY, MZ), with 0 where the sampling or the cell is missing."""
    out = []
    for axis in ("x", "y", "z"):
        cell = float(header.cella[axis])
        m = int(header["m" + axis])
        # CELLA is float32: keep 7 significant digits so 9.1 / 7 reads back as 1.3, not
        # 1.30000005.
        out.append(float(f"{cell / m:.7g}") if m > 0 and np.isfinite(cell) and cell > 0 else 0.0)
    return out[0], out[1], out[2]


def _resolve_voxel_size(
    path: Path, role: str, header_vs: tuple[float, float, float], override: float | None
) -> tuple[float, Literal["header", "config"], list[str]]:
    notes: list[str] = []
    hx, hy, hz = header_vs
    if override is not None:
        if not np.isfinite(override) or override <= 0:
            raise _fail(
                path,
                role,
                f"voxel size override {override!r} is not a positive number",
                "set input.voxel_size to the map's pixel size in Å, or null to use the header",
            )
        if max(header_vs) > 0 and not np.isclose(override, hx, rtol=VOXEL_SIZE_RTOL, atol=0.0):
            notes.append(
                f"voxel size {override:g} Å from the config overrides the header's "
                f"{hx:g} x {hy:g} x {hz:g} Å"
            )
        return float(override), "config", notes
    if min(header_vs) <= 0:
        raise _fail(
            path,
            role,
            f"the header has no voxel size (x, y, z = {hx:g}, {hy:g}, {hz:g} Å)",
            "set input.voxel_size in the config",
        )
    ref = hx
    if not (
        np.isclose(hy, ref, rtol=VOXEL_SIZE_RTOL, atol=0.0)
        and np.isclose(hz, ref, rtol=VOXEL_SIZE_RTOL, atol=0.0)
    ):
        raise _fail(
            path,
            role,
            f"anisotropic voxel size {hx:g} x {hy:g} x {hz:g} Å (x, y, z)",
            "resample the map to isotropic sampling (e.g. ChimeraX volume resample), "
            "or set input.voxel_size if the header is wrong",
        )
    return float(ref), "header", notes


def read_map(
    path: str | os.PathLike[str], *, role: str = "map", voxel_size: float | None = None
) -> MapInfo:
    """Read and check an MRC/CCP4 map (``.mrc``, ``.map``, ``.mrc.gz``, ...).

    Parameters
    ----------
    path : str or path-like
        The file. Gzip/bzip2-compressed files are recognised from their content.
    role : str, optional
        What the file is ("map", "mask", "half map 1", ...); it starts every error message.
    voxel_size : float, optional
        Voxel size in Å to use instead of the header's (``input.voxel_size``). Required
        when the header has none.

    Returns
    -------
    MapInfo
        Data as float32 ``[z, y, x]`` whatever the file's MAPC/MAPR/MAPS.

    Raises
    ------
    monodir.errors.InputError
        Missing, unreadable, truncated or non-MRC file; complex or non-3D data; NaN or Inf
        values; invalid axis order; no voxel size and no override; anisotropic voxel size.
    """
    p = Path(path)
    if not p.exists():
        raise _fail(p, role, "file not found", "check the path in the config")
    if not p.is_file():
        raise _fail(p, role, "is not a regular file", "give the path of an MRC map")
    try:
        mrc, notes = _open_checked(p, role)
    except InputError:
        raise
    except Exception as exc:  # anything else mrcfile or the OS throws on a bad file
        raise _fail(
            p,
            role,
            f"cannot be read as an MRC map ({type(exc).__name__}: {exc})",
            "check that the file is a complete MRC map",
        ) from exc
    with mrc:
        header = mrc.header
        mode = int(header.mode)
        if mode in _COMPLEX_MODES:
            raise _fail(
                p, role, f"complex data (MRC mode {mode})", "give a real-valued map (mode 2)"
            )
        raw = mrc.data
        if raw is None or raw.ndim != 3:
            ndim = 0 if raw is None else raw.ndim
            raise _fail(
                p,
                role,
                f"holds {ndim}D data, not a 3D volume",
                "give a single 3D map (not an image, image stack or volume stack)",
            )
        axis_order = (int(header.mapc), int(header.mapr), int(header.maps))
        if sorted(axis_order) != [1, 2, 3]:
            raise _fail(
                p,
                role,
                f"invalid axis order MAPC/MAPR/MAPS = {axis_order}",
                "fix the header (it must be a permutation of 1, 2, 3) or re-export the map",
            )
        perm = _axis_permutation(axis_order)
        # Always a private, writeable copy (mrcfile's array is read-only).
        data = np.array(raw.transpose(perm), dtype=np.float32, order="C", copy=True)
        crs_start = (int(header.nxstart), int(header.nystart), int(header.nzstart))
        header_vs = _header_voxel_size(header)
        origin = (
            float(header.origin.x),
            float(header.origin.y),
            float(header.origin.z),
        )
        labels = [str(lab) for lab in mrc.get_labels()]
    xyz_start = [0, 0, 0]
    for file_axis, spatial in enumerate(axis_order):
        xyz_start[spatial - 1] = crs_start[file_axis]
    if not np.isfinite(data).all():
        n_bad = int(np.count_nonzero(~np.isfinite(data)))
        n_nan = int(np.count_nonzero(np.isnan(data)))
        raise _fail(
            p,
            role,
            f"{n_bad} of {data.size} voxels are not finite ({n_nan} NaN, {n_bad - n_nan} Inf)",
            "replace them (e.g. by 0) or re-export the map",
        )
    vs, source, vs_notes = _resolve_voxel_size(p, role, header_vs, voxel_size)
    if not all(np.isfinite(origin)):
        notes.append(f"non-finite origin {origin} replaced by (0, 0, 0)")
        origin = (0.0, 0.0, 0.0)
    return MapInfo(
        data=data,
        voxel_size=vs,
        origin=origin,
        nstart=(xyz_start[0], xyz_start[1], xyz_start[2]),
        path=p,
        role=role,
        voxel_size_source=source,
        header_voxel_size=header_vs,
        axis_order=axis_order,
        labels=labels,
        warnings=notes + vs_notes,
    )


def _ascii_label(text: str) -> str:
    """Printable-ASCII, at most 80 characters (MRC label rules)."""
    text = text.replace("Å", "A").replace("°", "deg")
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return clean[:80]


def _compression_for(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return "gzip"
    if suffix == ".bz2":
        return "bzip2"
    return None


def write_map(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    voxel_size: float,
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    nstart: tuple[int, int, int] = (0, 0, 0),
    label: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a float32 volume as an MRC map, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination (``.mrc``/``.map``; ``.gz`` or ``.bz2`` compresses). Its directory must
        exist.
    data : numpy.ndarray
        3D array indexed ``[z, y, x]``; written as mode 2 (float32).
    voxel_size : float
        Isotropic voxel size in Å.
    origin : tuple of float, optional
        ``header.origin`` (x, y, z) in Å; copy the input map's so viewers overlay them.
    nstart : tuple of int, optional
        NXSTART, NYSTART, NZSTART.
    label : str, optional
        Text appended to ``"monodir <version>: "`` in the header's first free label
        (non-ASCII characters are replaced, e.g. Å -> A; cut to 80 characters).
    overwrite : bool, optional
        Replace an existing file. Without it an existing file is an error.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    monodir.errors.InputError
        The file exists and ``overwrite`` is False, the directory is missing, or the
        arguments are not a 3D array and a positive voxel size.
    """
    from monodir import __version__

    p = Path(path)
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise InputError(f"output file {p}: data is {arr.ndim}D, expected a 3D volume")
    if not np.isfinite(voxel_size) or voxel_size <= 0:
        raise InputError(f"output file {p}: voxel size {voxel_size!r} must be positive")
    if p.exists() and not overwrite:
        raise InputError(
            f"output file {p} already exists; set output.overwrite: true or choose another path"
        )
    directory = p.parent if str(p.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"output file {p}: directory {directory} does not exist; create it")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    text = f"monodir {__version__}" + (f": {label}" if label else "")

    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with mrcfile.new(tmp, overwrite=True, compression=_compression_for(p)) as mrc:
            mrc.set_data(arr)
            mrc.set_volume()
            mrc.voxel_size = float(voxel_size)
            mrc.header.origin.x = float(origin[0])
            mrc.header.origin.y = float(origin[1])
            mrc.header.origin.z = float(origin[2])
            mrc.nstart = tuple(int(v) for v in nstart)
            mrc.update_header_stats()
            mrc.add_label(_ascii_label(text))
        if overwrite:
            os.replace(tmp, p)
        else:
            # A hard link fails atomically if the destination appeared meanwhile.
            try:
                os.link(tmp, p)
            except FileExistsError:
                raise InputError(
                    f"output file {p} already exists; set output.overwrite: true "
                    "or choose another path"
                ) from None
            except OSError:  # file system without hard links
                if p.exists():
                    raise InputError(
                        f"output file {p} already exists; set output.overwrite: true "
                        "or choose another path"
                    ) from None
                os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p
