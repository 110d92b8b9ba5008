"""Print monodir's agreement with Xmipp's own outputs (``xmipp_compat``), per map.

Run from the repository root (needs ``../shared/data/xmipp_reference``)::

    python benchmarks/parity_report.py                 # emd3488, betagal (full + fast), synth128
    python benchmarks/parity_report.py emd3488         # one case

For every map: the fraction of mask voxels within 0.01 Å of Xmipp, and the largest difference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mrcfile
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monodir.core.directional import prepare_directional, resolution_matrix  # noqa: E402
from monodir.core.monores import monores  # noqa: E402
from monodir.core.summaries import finalize_directional, voxel_summaries  # noqa: E402

REF = ROOT.parent / "shared" / "data" / "xmipp_reference"
CASES = {"emd3488": 1.05, "betagal": 3.54, "synth128": 1.0}
MAPS = {
    "radial": "radial_resolution",
    "azimuthal": "azimuthal_resolution",
    "highest": "highestResolution",
    "lowest": "lowestResolution",
    "doa": "doaMetric",
    "mean_doa": "meanResdoa",
    "zscore": "zscoreMap",
}


def report(case: str, variant: str) -> None:
    base = REF / case
    vs = CASES[case]
    vol = mrcfile.read(base / "map.mrc").astype(np.float64)
    mask = mrcfile.read(base / "mask.mrc") > 0.5
    mr = monores(vol, mask, vs, xmipp_compat=True, threads=2)
    ref = mrcfile.read(base / variant / "monoresResolutionMap.mrc.gz")
    d = np.abs(mr.resolution - ref)[mask]
    print(f"{case} {variant} monores: within 0.01 A {np.mean(d < 0.01):.5f}, max {d.max():.3g}")
    setup = prepare_directional(vol, mask, vs, fast=variant == "xmipp_fast", xmipp_compat=True)
    matrix = resolution_matrix(setup, threads=1, n_jobs=2)
    parts = [
        voxel_summaries(setup, matrix[:, a : a + 40000], a) for a in range(0, setup.n_mask, 40000)
    ]
    result = finalize_directional(setup, parts, monores_map=ref.astype(np.float64))
    inside = np.zeros(int(np.prod(setup.shape)), bool)
    inside[setup.mask_indices] = True
    inside = inside.reshape(setup.shape)
    for name, fname in MAPS.items():
        theirs = mrcfile.read(base / variant / f"{fname}.mrc.gz").astype(np.float64)
        d = np.abs(result.maps[name] - theirs)[inside]
        print(f"  {name:10s} within 0.01 A {np.mean(d < 0.01):.5f}   max {d.max():.3g}")
    print(f"  thresholds {result.thresholds}", flush=True)


def main(argv: list[str]) -> int:
    cases = argv or list(CASES)
    for case in cases:
        for variant in ("xmipp", "xmipp_fast"):
            if (REF / case / variant).exists():
                report(case, variant)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
