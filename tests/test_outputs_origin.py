"""Final MRC outputs carry the input's voxel size, origin and start indices.

Input: the third-party Chimera molmap of 1AKE (non-zero origin, 1.5 Å voxels), padded by us
to a cube (monodir needs a cubic box) with the origin shifted accordingly, plus mild noise.
"""

from __future__ import annotations

import mrcfile
import numpy as np

from monodir.cli import main
from monodir.synthetic import mask_from_map
from tests.shared_data import require_data


def test_outputs_keep_voxel_size_and_origin(tmp_path):
    src = require_data("real/simulated/1ake_molmap45_chimera.mrc")
    with mrcfile.open(src) as mrc:
        data = np.asarray(mrc.data, dtype=np.float32)
        vs = float(mrc.voxel_size.x)
        origin = np.array([mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z], float)
    assert np.any(origin != 0)
    n = 64
    pads = [((n - s) // 2, n - s - (n - s) // 2) for s in data.shape]  # (z, y, x)
    cube = np.pad(data, pads)
    rng = np.random.default_rng(0)
    cube = cube + rng.normal(0, 0.05 * cube.std(), cube.shape).astype(np.float32)
    new_origin = origin - vs * np.array([pads[2][0], pads[1][0], pads[0][0]], float)
    mask = mask_from_map(np.pad(data, pads), threshold_sigma=1.0, dilate=2)
    for name, arr in (("map.mrc", cube), ("mask.mrc", mask.astype(np.float32))):
        with mrcfile.new(tmp_path / name) as mrc:
            mrc.set_data(arr.astype(np.float32))
            mrc.voxel_size = vs
            mrc.header.origin = tuple(new_origin)
            mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = 3, -2, 1
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "input: {map: map.mrc, mask: mask.mrc}\n"
        "directional: {fast: true}\n"
        "output: {directory: out}\n"
        "cluster: {kind: local, n_workers: 1, dashboard: null}\n"
    )
    assert main(["run", str(cfg)]) == 0
    outs = sorted((tmp_path / "out").glob("*.mrc"))
    assert len(outs) >= 10
    for path in outs:
        with mrcfile.open(path) as mrc:
            assert mrc.data.shape == cube.shape
            assert mrc.data.dtype == np.float32
            assert abs(float(mrc.voxel_size.x) - vs) < 1e-4
            got = np.array([mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z])
            assert np.allclose(got, new_origin, atol=1e-3)
            assert (int(mrc.header.nxstart), int(mrc.header.nystart), int(mrc.header.nzstart)) == (
                3,
                -2,
                1,
            )
            labels = b"".join(mrc.header.label).decode(errors="ignore")
            assert "monodir" in labels
