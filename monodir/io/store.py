"""The run store: ``<output>/run.zarr``, a Zarr v3 group holding everything a run computes.

Layout (arrays Blosc/zstd-compressed and chunked)::

    run.zarr/
      inputs/map              float32 [z, y, x]   (or inputs/half1, inputs/half2)
      inputs/mask             bool    [z, y, x]   (binarised)
      inputs/exclusion_mask   bool    [z, y, x]   (optional)
      monores/resolution      float32 [z, y, x]
      monores/chimera         float32 [z, y, x]
      monores/refined_mask    bool    [z, y, x]
      monores/resolutions     float64 (F,)
      monores/stats/<column>  (F,)
      directional/resolution  float32 (D, Nmask)  one chunk row per direction (raw sweep)
      directional/done        bool    (D,)        one chunk per direction (resume markers)
      directional/finished_at float64 (D,)        when each row was written (Unix time)
      directional/clean       float32 (D, Nmask)  DirectionalResult.resolution_matrix (outliers
                                                  removed; empty if the kernels leave it out)
      directional/{directions, angles, mask_indices, direction_means}
      directional/extra/<key> arrays from DirectionalResult.extra
      tables/<table>/<column> radial_averages, preferred_directions
      maps/<name>             float32 [z, y, x]   radial, azimuthal, highest, ...

Root attributes: ``voxel_size``, ``origin``, ``nstart``, ``shape``, ``config`` (resolved),
``numeric_config``, ``input_digest``, ``versions``, ``command_line``, ``timings``, ``status``
(``"running"`` | ``"complete"``), ``created``, ``updated``, ``attempts``.

Resume markers. A cone task writes its row first and then sets ``done[i]``; each direction
has its own chunk in both arrays and the local store writes every chunk atomically (temporary
file + rename), so a killed writer can leave a row written but not marked, never a row marked
but half-written. Rows are written only by the task that owns the direction; root attributes
only by the driver, so there are no concurrent read-modify-write cycles on metadata.

The store must be on a file system that every worker sees (true for a LocalCluster, and for
SLURM when the output directory is on the shared file system).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from monodir.core.results import DirectionalResult, MonoResResult
from monodir.errors import InputError

__all__ = [
    "STORE_NAME",
    "RunStore",
    "array_digest",
    "package_versions",
    "read_block",
    "write_direction_row",
]

log = logging.getLogger(__name__)

STORE_NAME = "run.zarr"
FORMAT_VERSION = 1
#: widest chunk of a directional row (voxels)
MAX_ROW_CHUNK = 2**20

_VERSIONED = (
    "numpy",
    "scipy",
    "pyfftw",
    "mrcfile",
    "zarr",
    "dask",
    "distributed",
    "dask_jobqueue",
    "monodir",
)


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def package_versions() -> dict[str, str]:
    """Versions of the packages that influence the results (``"missing"`` if absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in _VERSIONED:
        if name == "monodir":
            from monodir import __version__

            out[name] = __version__
            continue
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            mod = sys.modules.get(name)
            out[name] = getattr(mod, "__version__", "missing") if mod else "missing"
    out["python"] = sys.version.split()[0]
    return out


def array_digest(*arrays: np.ndarray | None) -> str:
    """SHA-256 over the shapes, dtypes and bytes of some arrays (``None`` counts too)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    """Plain JSON data for Zarr attributes (numpy scalars -> Python, NaN -> None)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _volume_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(min(64, int(s)) for s in shape)


def row_chunk(n_mask: int) -> int:
    """Width of one chunk of a directional row (also the natural reduction block)."""
    return max(1, min(int(n_mask), MAX_ROW_CHUNK))


class _StoredMaps(Mapping):
    """Maps of a stored run, read from the store at each lookup (nothing is kept)."""

    def __init__(self, store: RunStore, names: list[str]):
        self._store, self._names = store, names

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        return self._store.read_array(f"maps/{name}")

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class RunStore:
    """A run's Zarr store (see the module docstring for the layout).

    Use :meth:`create` for a new run and :meth:`open` for an existing one.
    """

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = Path(path)
        self.group = group

    # ---- lifecycle -----------------------------------------------------------------------

    @staticmethod
    def exists(path: str | Path) -> bool:
        """Whether ``path`` holds a Zarr group (the ``zarr.json`` at its root)."""
        return (Path(path) / "zarr.json").is_file()

    @classmethod
    def create(cls, path: str | Path, *, attrs: Mapping[str, Any] | None = None) -> RunStore:
        """Create a new, empty store (fails if one exists; remove it first).

        Parameters
        ----------
        path
            The ``run.zarr`` directory.
        attrs
            Initial root attributes (JSON-able).
        """
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} exists")
        now = time.time()
        base = {
            "format_version": FORMAT_VERSION,
            "status": "running",
            "created": now,
            "updated": now,
            "timings": {},
            "attempts": 0,
            "versions": package_versions(),
        }
        base.update(_jsonable(dict(attrs or {})))
        group = zarr.open_group(str(path), mode="w-", attributes=base)
        return cls(path, group)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r+") -> RunStore:
        """Open an existing store (``mode`` ``"r"`` or ``"r+"``)."""
        path = Path(path)
        if not cls.exists(path):
            raise FileNotFoundError(f"no run store at {path}")
        return cls(path, zarr.open_group(str(path), mode=mode))

    @staticmethod
    def remove(path: str | Path) -> None:
        """Delete a store directory (no error if absent)."""
        path = Path(path)
        if path.exists():
            shutil.rmtree(path)

    # ---- attributes ----------------------------------------------------------------------

    @property
    def attrs(self) -> dict[str, Any]:
        """A copy of the root attributes."""
        return dict(self.group.attrs)

    def update_attrs(self, **values: Any) -> None:
        """Set root attributes (driver only) and bump ``updated``."""
        values = _jsonable(values)
        values["updated"] = time.time()
        self.group.attrs.update(values)

    @property
    def status(self) -> str:
        """``"running"`` or ``"complete"``."""
        return str(self.group.attrs.get("status", "running"))

    def set_status(self, status: str) -> None:
        """Set the run status; ``"complete"`` must be the very last write of a run."""
        if status not in ("running", "complete"):
            raise ValueError(status)
        self.update_attrs(status=status)

    def record_timing(self, stage: str, seconds: float) -> None:
        """Store the wall time of one stage (root attribute ``timings``)."""
        timings = dict(self.group.attrs.get("timings", {}))
        timings[stage] = round(float(seconds), 3)
        self.update_attrs(timings=timings)

    def check_resumable(self, numeric_config: Mapping[str, Any], input_digest: str) -> None:
        """Raise :class:`InputError` unless this store holds a run of the same problem.

        Compares the numerically relevant part of the config and the digest of the staged
        input data (so renamed but identical files still resume, and an edited map does
        not).
        """
        attrs = self.attrs
        same_config = attrs.get("numeric_config") == _jsonable(dict(numeric_config))
        same_inputs = attrs.get("input_digest") == input_digest
        if not (same_config and same_inputs):
            what = "config" if not same_config else "input data"
            raise InputError(
                f"output.directory: {self.path.parent} holds a run with a different {what}; "
                "use output.overwrite: true or another directory"
            )

    # ---- generic arrays ------------------------------------------------------------------

    def has(self, name: str) -> bool:
        """Whether an array or group ``name`` (``"a/b"``) exists."""
        return name in self.group

    def write_array(
        self,
        name: str,
        data: np.ndarray,
        *,
        chunks: tuple[int, ...] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Write a whole array (replacing any array of that name), compressed."""
        data = np.asarray(data)
        if data.dtype == np.float64 and data.ndim == 3:
            data = data.astype(np.float32)
        if data.ndim == 0:
            data = data.reshape(1)
        if chunks is None:
            if data.ndim == 3:
                chunks = _volume_chunks(data.shape)
            else:
                chunks = tuple(max(1, min(int(s), MAX_ROW_CHUNK)) for s in data.shape)
        compressors = _compressor() if data.size else None
        arr = self.group.create_array(
            name,
            shape=data.shape,
            chunks=chunks,
            dtype=data.dtype,
            compressors=compressors,
            overwrite=True,
            attributes=_jsonable(dict(attrs or {})),
        )
        if data.size:
            arr[...] = data

    def read_array(self, name: str) -> np.ndarray:
        """Read a whole array into memory."""
        return np.asarray(self.group[name][...])

    def write_table(self, name: str, table: Mapping[str, np.ndarray]) -> None:
        """Write a table (column -> 1-D array) as ``<name>/<column>`` arrays."""
        if name in self.group:
            del self.group[name]
        group = self.group.require_group(name)
        group.attrs.update({"columns": list(table)})
        for col, values in table.items():
            self.write_array(f"{name}/{col}", np.asarray(values))

    def read_table(self, name: str) -> dict[str, np.ndarray]:
        """Read a table written by :meth:`write_table`, columns in their original order."""
        group = self.group[name]
        cols = group.attrs.get("columns") or sorted(group.array_keys())
        return {c: self.read_array(f"{name}/{c}") for c in cols}

    # ---- MonoRes -------------------------------------------------------------------------

    def write_monores(self, result: MonoResResult) -> None:
        """Store a :class:`MonoResResult`; marks ``monores`` complete last."""
        if "monores" in self.group:
            del self.group["monores"]
        grp = self.group.require_group("monores")
        self.write_array("monores/resolution", np.asarray(result.resolution, np.float32))
        self.write_array("monores/chimera", np.asarray(result.chimera, np.float32))
        self.write_array("monores/refined_mask", np.asarray(result.refined_mask, bool))
        self.write_array("monores/resolutions", np.asarray(result.resolutions, np.float64))
        self.write_table("monores/stats", result.stats)
        grp.attrs.update(
            {
                "voxel_size": float(result.voxel_size),
                "stop_reason": str(result.stop_reason),
                "median": _jsonable(result.median),
                "complete": True,
            }
        )

    def has_monores(self) -> bool:
        """Whether a complete MonoRes result is stored."""
        return "monores" in self.group and bool(self.group["monores"].attrs.get("complete"))

    def load_monores(self) -> MonoResResult:
        """Read the stored :class:`MonoResResult`."""
        attrs = self.group["monores"].attrs
        return MonoResResult(
            resolution=self.read_array("monores/resolution"),
            chimera=self.read_array("monores/chimera"),
            refined_mask=self.read_array("monores/refined_mask").astype(bool),
            resolutions=self.read_array("monores/resolutions"),
            stats=self.read_table("monores/stats"),
            voxel_size=float(attrs["voxel_size"]),
            stop_reason=str(attrs.get("stop_reason", "")),
        )

    # ---- directional rows ----------------------------------------------------------------

    def init_directional(
        self, n_directions: int, n_mask: int, mask_digest: str, *, width: int | None = None
    ) -> tuple[int, int]:
        """Create the per-direction arrays, or keep existing ones of the same problem.

        Parameters
        ----------
        n_directions, n_mask
            Shape ``(D, Nmask)`` of the matrix.
        mask_digest
            Digest of the mask voxel indices: rows of another mask are never reused.
        width
            Chunk width of a row (default :func:`row_chunk`); the reduction reads blocks of
            this many voxels.

        Returns
        -------
        (n_done, n_directions)
            Directions already marked done (kept from an interrupted run).
        """
        d, n = int(n_directions), int(n_mask)
        if "directional/resolution" in self.group:
            arr = self.group["directional/resolution"]
            grp = self.group["directional"]
            if tuple(arr.shape) == (d, n) and grp.attrs.get("mask_digest") == mask_digest:
                done = self.done_directions()
                return int(done.sum()), d
            log.warning("stored directional rows belong to another mask; starting them again")
        if "directional" in self.group:
            del self.group["directional"]
        grp = self.group.require_group("directional")
        width = row_chunk(n) if width is None else max(1, min(int(width), row_chunk(n)))
        self.group.create_array(
            "directional/resolution",
            shape=(d, n),
            chunks=(1, width),
            dtype="float32",
            compressors=_compressor(),
            fill_value=np.nan,
        )
        self.group.create_array(
            "directional/done",
            shape=(d,),
            chunks=(1,),
            dtype="bool",
            compressors=None,
            fill_value=False,
        )
        self.group.create_array(
            "directional/finished_at",
            shape=(d,),
            chunks=(1,),
            dtype="float64",
            compressors=None,
            fill_value=0.0,
        )
        grp.attrs.update(
            {"n_directions": d, "n_mask": n, "row_chunk": width, "mask_digest": mask_digest}
        )
        return 0, d

    def done_directions(self) -> np.ndarray:
        """Boolean ``(D,)``: directions whose row is complete in the store."""
        if "directional/done" not in self.group:
            return np.zeros(0, bool)
        return np.asarray(self.group["directional/done"][...], bool)

    def finished_at(self) -> np.ndarray:
        """``(D,)`` Unix times at which each row was written (0 = not yet)."""
        return np.asarray(self.group["directional/finished_at"][...], np.float64)

    def read_rows(self) -> np.ndarray:
        """The raw ``(D, Nmask)`` matrix (for tests and small maps)."""
        return self.read_array("directional/resolution")

    # ---- directional result --------------------------------------------------------------

    def write_directional(self, result: DirectionalResult) -> None:
        """Store a :class:`DirectionalResult` (maps, tables, matrix); marks it complete last."""
        grp = self.group.require_group("directional")
        grp.attrs.update({"result_complete": False})
        n = np.asarray(result.resolution_matrix).shape[1]
        self.write_array(
            "directional/clean",
            np.asarray(result.resolution_matrix, np.float32),
            chunks=(1, row_chunk(n)),
        )
        self.write_array("directional/directions", np.asarray(result.directions, np.float64))
        self.write_array("directional/angles", np.asarray(result.angles, np.float64))
        self.write_array("directional/mask_indices", np.asarray(result.mask_indices, np.int64))
        self.write_array(
            "directional/direction_means", np.asarray(result.direction_means, np.float64)
        )
        if "maps" in self.group:
            del self.group["maps"]
        self.group.require_group("maps").attrs.update({"names": list(result.maps)})
        for name, volume in result.maps.items():
            self.write_array(f"maps/{name}", np.asarray(volume, np.float32))
        self.write_table("tables/radial_averages", result.radial_averages)
        self.write_table("tables/preferred_directions", result.preferred_directions)
        extra_attrs = self._write_extra(result.extra)
        grp.attrs.update(
            {
                "thresholds": _jsonable(result.thresholds),
                "anisotropy_axis": _jsonable(np.asarray(result.anisotropy_axis)),
                "axis_angle_to_z": _jsonable(result.axis_angle_to_z),
                "voxel_size": float(result.voxel_size),
                "extra": extra_attrs,
                "result_complete": True,
            }
        )

    def _write_extra(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        """Arrays of ``extra`` go to ``directional/extra/...``; JSON-able values to attrs."""
        if "directional/extra" in self.group:
            del self.group["directional/extra"]
        plain: dict[str, Any] = {}
        arrays: list[str] = []
        tables: list[str] = []
        for key, value in (extra or {}).items():
            if isinstance(value, np.ndarray):
                self.write_array(f"directional/extra/{key}", value)
                arrays.append(key)
            elif (
                isinstance(value, Mapping)
                and value
                and all(isinstance(v, np.ndarray) for v in value.values())
            ):
                self.write_table(f"directional/extra/{key}", value)
                tables.append(key)
            else:
                try:
                    plain[key] = _jsonable(value)
                    json.dumps(plain[key])
                except (TypeError, ValueError):
                    plain.pop(key, None)
                    log.warning("directional extra %r (%s) not stored", key, type(value))
        return {"values": plain, "arrays": arrays, "tables": tables}

    def has_directional_result(self) -> bool:
        """Whether a complete :class:`DirectionalResult` is stored."""
        return "directional" in self.group and bool(
            self.group["directional"].attrs.get("result_complete")
        )

    def load_directional(
        self, *, with_matrix: bool = True, lazy_maps: bool = False, lazy_matrix: bool = False
    ) -> DirectionalResult:
        """Read the stored :class:`DirectionalResult`.

        Parameters
        ----------
        with_matrix
            Also read the ``(D, Nmask)`` matrix (else an empty ``(D, 0)`` array).
        lazy_maps
            Give ``maps`` as a read-only mapping that reads a map from the store each time
            it is looked up, instead of holding all of them (eight volumes) in memory.
        lazy_matrix
            With ``with_matrix``, give the matrix as the stored (read-only) Zarr array, whose
            slices are read when taken, instead of reading it whole.
        """
        attrs = self.group["directional"].attrs
        directions = self.read_array("directional/directions")
        if with_matrix and lazy_matrix:
            matrix = _open_array(self.path, "directional/clean", mode="r")
        elif with_matrix:
            matrix = self.read_array("directional/clean")
        else:
            matrix = np.zeros((directions.shape[0], 0), np.float32)
        names = self.group["maps"].attrs.get("names") or sorted(self.group["maps"].array_keys())
        meta = attrs.get("extra") or {}
        extra: dict[str, Any] = dict(meta.get("values", {}))
        for key in meta.get("arrays", []):
            extra[key] = self.read_array(f"directional/extra/{key}")
        for key in meta.get("tables", []):
            extra[key] = self.read_table(f"directional/extra/{key}")
        thresholds = {
            k: (float("nan") if v is None else float(v))
            for k, v in (attrs.get("thresholds") or {}).items()
        }
        angle = attrs.get("axis_angle_to_z")
        return DirectionalResult(
            directions=directions,
            angles=self.read_array("directional/angles"),
            mask_indices=self.read_array("directional/mask_indices"),
            resolution_matrix=matrix,
            maps=(
                _StoredMaps(self, list(names))
                if lazy_maps
                else {name: self.read_array(f"maps/{name}") for name in names}
            ),
            thresholds=thresholds,
            radial_averages=self.read_table("tables/radial_averages"),
            preferred_directions=self.read_table("tables/preferred_directions"),
            direction_means=self.read_array("directional/direction_means"),
            anisotropy_axis=np.asarray(
                [np.nan if v is None else v for v in attrs.get("anisotropy_axis", [])], float
            ),
            axis_angle_to_z=float("nan") if angle is None else float(angle),
            voxel_size=float(attrs["voxel_size"]),
            extra=extra,
        )


# --------------------------------------------------------------------------------------------
# worker-side helpers: small functions that open the store by path
# --------------------------------------------------------------------------------------------


def _open_array(store_path: str | Path, name: str, mode: str = "r+") -> Any:
    return zarr.open_array(str(Path(store_path) / name), mode=mode)


def write_direction_row(store_path: str | Path, index: int, row: np.ndarray) -> float:
    """Write row ``index`` of ``directional/resolution``, then mark it done.

    The order (row, timestamp, marker) makes the marker trustworthy: see the module
    docstring. Returns the time stamp recorded.
    """
    row = np.asarray(row, np.float32)
    arr = _open_array(store_path, "directional/resolution")
    if row.shape != (arr.shape[1],):
        raise ValueError(f"row {index}: shape {row.shape}, expected ({arr.shape[1]},)")
    arr[index, :] = row
    stamp = time.time()
    _open_array(store_path, "directional/finished_at")[index] = stamp
    _open_array(store_path, "directional/done")[index] = True
    return stamp


def read_block(store_path: str | Path, start: int, stop: int) -> np.ndarray:
    """Read columns ``start:stop`` of ``directional/resolution`` as ``(D, stop-start)``."""
    arr = _open_array(store_path, "directional/resolution", mode="r")
    return np.asarray(arr[:, start:stop], np.float32)
