"""MonoRes: per-voxel local resolution from the monogenic amplitude (algorithm.md section 1).

Default mode differs from ``xmipp_compat=True`` in: float32 arithmetic (compat: float64);
a hard low-pass cut when the tested frequency is Nyquist (compat reproduces the NaN iteration
of quirk Q1); Riesz multipliers exactly odd at Nyquist (quirk Q20); clear errors instead of
indexing empty noise samples (quirk Q12/Q13). Everything else, including the post-smoothing
rule that can only improve a voxel (quirk Q8), follows Xmipp.
"""

from __future__ import annotations

import logging

import numpy as np

from monodir.core import fourier
from monodir.core.masks import normal_quantile, percentile, prepare_states
from monodir.core.monogenic import AmplitudeWorkspace, full_basis
from monodir.core.results import MonoResResult
from monodir.core.sweep import monores_sweep

log = logging.getLogger(__name__)

#: Smoothing (``realGaussianFilter`` sigma) of the refined-mask amplitude and of the output map.
REFINE_SIGMA = 4.0
OUTPUT_SIGMA = 3.0
#: Fixed quantile of the refined mask (quirk Q7).
REFINE_QUANTILE = 0.95


def monores(
    volume: np.ndarray,
    mask: np.ndarray,
    voxel_size: float,
    *,
    half_map2: np.ndarray | None = None,
    low_resolution: float = 18.0,
    step: float = 0.25,
    significance: float = 0.95,
    gaussian: bool = False,
    exclusion_mask: np.ndarray | None = None,
    noise_only_in_halves: bool = False,
    xmipp_compat: bool = False,
    threads: int = 1,
) -> MonoResResult:
    """Local resolution map of ``volume`` inside ``mask``.

    Parameters
    ----------
    volume
        The map, or half map 1 when ``half_map2`` is given (``[z, y, x]``, cubic).
    mask
        Boolean protein mask on the same grid.
    voxel_size
        Å per voxel.
    half_map2
        Second half map: the analysed map is then the halves' mean and the noise comes from
        their half difference.
    low_resolution
        Where the sweep starts (Å). Xmipp calls this ``--maxRes``.
    step
        Å step of the sweep grid (at least 0.25).
    significance
        Noise quantile of the threshold and level of the final z-test.
    gaussian
        Threshold ``mean + z*sd`` of the noise instead of its empirical quantile.
    exclusion_mask
        Voxels to leave out of the analysis.
    noise_only_in_halves
        Half maps: take noise only inside the protein mask (and skip the mask refinement).
    xmipp_compat
        Reproduce Xmipp bit for bit where possible (float64, quirks kept).
    threads
        FFT threads.
    """
    dtype = np.float64 if xmipp_compat else np.float32
    mask = np.asarray(mask).astype(bool)
    halves = half_map2 is not None
    v1 = np.asarray(volume, dtype=np.float64)
    if halves:
        v2 = np.asarray(half_map2, dtype=np.float64)
        analysed = 0.5 * (v1 + v2)
        noise_map = 0.5 * (v1 - v2)
    else:
        analysed, noise_map = v1, None
    shape = analysed.shape
    n = shape[2]

    state, r_prot, n_mask, r_lim, found, _ = prepare_states(analysed, mask)
    if found and r_lim <= r_prot:
        log.warning("cliff radius %d is inside the protein radius %d", r_lim, r_prot)

    finished = 0 if halves else -1
    if exclusion_mask is not None:
        excl = np.asarray(exclusion_mask).astype(bool)
        if not halves:
            state[(state >= 1) & excl] = -1
        elif noise_only_in_halves:
            state[(state >= 1) & excl] = -1
            state[state < 1] = -1
    elif halves and noise_only_in_halves:
        state[state < 1] = -1

    spec = fourier.rfftn(analysed.astype(dtype), threads)
    basis = full_basis(spec, shape, xmipp_nyquist=xmipp_compat)
    noise_basis = None
    if halves:
        noise_basis = basis.with_spectrum(
            fourier.full_spectrum(fourier.rfftn(noise_map.astype(dtype), threads), n)
        )
    ws = AmplitudeWorkspace(shape, dtype, threads)

    if not noise_only_in_halves:
        amp = ws.amplitude(basis, 0.0, 0.0, 0.0, band=False)
        smooth = fourier.gaussian_filter_fourier(amp, REFINE_SIGMA, threads)
        noise_vals = smooth[state == 0]
        if noise_vals.size == 0:
            raise ValueError(
                "no background voxels inside the map's support to refine the mask: "
                "use a smaller mask or a larger box"
            )
        t0 = percentile(noise_vals, REFINE_QUANTILE)
        state[(state >= 1) & (smooth < t0)] = 0
        n_mask = int((state >= 1).sum())

    z_sig = normal_quantile(significance)
    steps = monores_sweep(n, voxel_size, low_resolution, step)
    res = np.zeros(shape, dtype=np.float64)
    tested: list[float] = []
    stats: dict[str, list[float]] = {
        k: []
        for k in (
            "resolution",
            "frequency",
            "mean_signal",
            "var_signal",
            "n_signal",
            "mean_noise",
            "var_noise",
            "n_noise",
            "threshold",
            "z",
        )
    }
    max_mean_s = 0.0
    stop_reason = "sweep reached Nyquist"
    for st in steps:
        tested.append(st.resolution)
        r_two_back = tested[-3] if len(tested) >= 3 else tested[0]
        amp = ws.amplitude(
            basis, st.freq, st.freq_high_pass, st.freq_low_pass, nan_at_zero_width=xmipp_compat
        )
        amp_n = amp
        if halves:
            amp_n = ws.amplitude(
                noise_basis,
                st.freq,
                st.freq_high_pass,
                st.freq_low_pass,
                nan_at_zero_width=xmipp_compat,
            )
        if halves:
            sig_sel = state > 0
            noise_vals = amp_n[state >= 0]
        else:
            sig_sel = state >= 1
            noise_vals = amp_n[state == 0]
        sig_vals = amp[sig_sel]
        ns, nn = sig_vals.size, noise_vals.size
        if nn == 0:
            raise ValueError("no noise voxels left for the MonoRes threshold")
        mean_s = float(sig_vals.mean(dtype=np.float64)) if ns else 0.0
        var_s = float(sig_vals.var(dtype=np.float64)) if ns else 0.0
        mean_n = float(noise_vals.mean(dtype=np.float64))
        var_n = float(noise_vals.var(dtype=np.float64))
        if gaussian:
            thr = mean_n + z_sig * np.sqrt(var_n)
        else:
            thr = percentile(noise_vals, significance)
        zval = (mean_s - mean_n) / np.sqrt(var_s / ns + var_n / nn) if ns else float("nan")
        for k, v in zip(
            stats,
            (st.resolution, st.freq, mean_s, var_s, ns, mean_n, var_n, nn, thr, zval),
        ):
            stats[k].append(float(v))
        if ns / max(n_mask, 1) < 0.025:
            stop_reason = "fewer than 2.5 % of the mask voxels still active"
            break
        if ns == 0:
            stop_reason = "no active voxels"
            break
        if mean_s > max_mean_s:
            max_mean_s = mean_s
        if mean_s < 0.001 * max_mean_s:
            stop_reason = "signal amplitude vanished"
            break
        # per-voxel state machine (algorithm.md 1.6)
        passed = sig_sel & (amp > thr)
        failed = sig_sel & ~(amp > thr)
        state[passed] = 1
        res[passed] = st.resolution
        state[failed] += 1
        done = failed & (state > 2)
        state[done] = finished
        res[done] = r_two_back
        if zval < z_sig:
            stop_reason = "signal no longer significantly above noise"
            break

    if not tested:
        raise ValueError("the box is too small for any tested frequency")
    r_last = tested[-1]
    assigned = res[res > r_last - 0.001]
    med = (
        float(np.partition(assigned, int(0.5 * assigned.size))[int(0.5 * assigned.size)])
        if assigned.size
        else 0.0
    )
    refined = res >= r_last
    filled = np.where(res < r_last, med, res)
    smooth = fourier.gaussian_filter_fourier(filled.astype(dtype), OUTPUT_SIGMA, threads)
    smooth = smooth.astype(np.float64)
    use_smooth = (smooth >= 2 * voxel_size) & (smooth <= res)
    chimera = np.where(refined, np.where(use_smooth, smooth, res), smooth)
    resolution = np.where(refined, chimera, 0.0)
    out_dtype = np.float64 if xmipp_compat else np.float32
    return MonoResResult(
        resolution=resolution.astype(out_dtype),
        chimera=chimera.astype(out_dtype),
        refined_mask=refined,
        resolutions=np.asarray(tested),
        stats={k: np.asarray(v) for k, v in stats.items()},
        voxel_size=float(voxel_size),
        stop_reason=stop_reason,
    )
