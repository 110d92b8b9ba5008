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
from monodir.core.monogenic import AmplitudeWorkspace, HalfBasis
from monodir.core.results import MonoResResult
from monodir.core.sweep import monores_sweep

log = logging.getLogger(__name__)

#: Smoothing (``realGaussianFilter`` sigma) of the refined-mask amplitude and of the output map.
REFINE_SIGMA = 4.0
OUTPUT_SIGMA = 3.0
#: Fixed quantile of the refined mask (quirk Q7).
REFINE_QUANTILE = 0.95


#: Elements of a sample squared at a time by :func:`variance64` (8 MiB of float64).
VARIANCE_LEAF = 1 << 20


def variance64(x: np.ndarray, leaf: int = VARIANCE_LEAF) -> float:
    """``x.var(dtype=np.float64)`` of a 1D array, bit for bit, without its float64 copy of
    the whole sample (1.2 volumes for MonoRes' noise sample at 256^3).

    NumPy squares every deviation into one float64 array and adds it up by pairwise
    summation, whose halves are split at ``n // 2`` rounded down to a multiple of 8. The
    same tree is walked here down to pieces of at most ``leaf`` elements, each of which
    NumPy's own sum adds up as that subtree (``tests/test_core_groundtruth.py`` checks the
    bits against ``np.var``).
    """
    x = np.ascontiguousarray(x).reshape(-1)
    return float(_squared_deviations(x, x.mean(dtype=np.float64), 0, x.size, leaf) / x.size)


def _squared_deviations(x: np.ndarray, mean, lo: int, m: int, leaf: int):
    """Pairwise sum of ``(x - mean)^2`` over ``x[lo:lo+m]``, split as NumPy splits it. (A
    module function, not a recursive closure: that would be a reference cycle holding the
    sample until the garbage collector runs.)"""
    if m <= leaf:
        dev = x[lo : lo + m].astype(np.float64)
        dev -= mean
        np.multiply(dev, dev, out=dev)
        return np.add.reduce(dev)
    half = m // 2
    half -= half % 8
    return _squared_deviations(x, mean, lo, half, leaf) + _squared_deviations(
        x, mean, lo + half, m - half, leaf
    )


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
    mask = np.asarray(mask).astype(bool, copy=False)
    halves = half_map2 is not None
    # float64 copies of the inputs are needed only until the spectra are taken: each
    # volume-sized array is released as soon as it is spent (at 256^3 the peak went from
    # 35 to 13 volumes, imports and inputs included; the arithmetic is unchanged). The
    # references to the inputs are dropped too: a caller that hands its arrays over (the
    # pipeline's MonoRes task) gets their memory back as soon as they are spent.
    if halves:
        v1 = np.asarray(volume, dtype=np.float64)
        del volume
        v2 = np.asarray(half_map2, dtype=np.float64)
        del half_map2
        analysed = 0.5 * (v1 + v2)
        noise_map = 0.5 * (v1 - v2)
        del v1, v2
    elif dtype is np.float32 and np.asarray(volume).dtype == np.float32:
        # a float32 map needs no float64 copy: the mask preparation converts the voxels it
        # reads to float64 itself, and the spectrum is taken of these same float32 values
        analysed, noise_map = np.asarray(volume), None
        del volume
    else:
        analysed, noise_map = np.asarray(volume, dtype=np.float64), None
        del volume
    shape = analysed.shape
    n = shape[2]

    state, r_prot, n_mask, r_lim, found, _ = prepare_states(analysed, mask)
    del _, mask  # the radii and the mask are in ``state`` now
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
        del excl
    elif halves and noise_only_in_halves:
        state[state < 1] = -1
    del exclusion_mask  # in ``state`` now

    basis = HalfBasis(
        fourier.rfftn(analysed.astype(dtype, copy=False), threads), shape, xmipp_compat
    )
    del analysed
    noise_basis = None
    if halves:
        noise_basis = basis.with_spectrum(fourier.rfftn(noise_map.astype(dtype), threads))
        del noise_map

    if not noise_only_in_halves:
        ws = AmplitudeWorkspace(shape, dtype, threads, dense=True)
        amp = ws.amplitude(basis, 0.0, 0.0, 0.0, band=False)
        del ws  # the sweep's workspace is made after the smoothing
        smooth = fourier.gaussian_filter_fourier(amp, REFINE_SIGMA, threads)
        del amp
        noise_vals = smooth[state == 0]
        if noise_vals.size == 0:
            raise ValueError(
                "no background voxels inside the map's support to refine the mask: "
                "use a smaller mask or a larger box"
            )
        t0 = percentile(noise_vals, REFINE_QUANTILE)
        del noise_vals
        state[(state >= 1) & (smooth < t0)] = 0
        del smooth
        n_mask = int((state >= 1).sum())

    z_sig = normal_quantile(significance)
    steps = monores_sweep(n, voxel_size, low_resolution, step)
    # each voxel's resolution is 0 or one of the tested resolutions: stored as its position
    # in [0, tested...] (1 or 2 bytes a voxel instead of 8), looked up at the end
    res_code = np.zeros(shape, dtype=np.uint8 if len(steps) < 255 else np.uint16)
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
    ws = AmplitudeWorkspace(shape, dtype, threads, dense=True)
    for st in steps:
        tested.append(st.resolution)
        code_two_back = len(tested) - 2 if len(tested) >= 3 else 1
        band = (st.freq, st.freq_high_pass, st.freq_low_pass)
        # the amplitude lives in the workspace until its next call: with half maps the
        # signal's is copied first
        amp = ws.amplitude(basis, *band, nan_at_zero_width=xmipp_compat, scratch=not halves)
        amp_n = amp
        if halves:
            amp_n = ws.amplitude(noise_basis, *band, nan_at_zero_width=xmipp_compat, scratch=True)
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
        var_s = variance64(sig_vals) if ns else 0.0
        mean_n = float(noise_vals.mean(dtype=np.float64))
        var_n = variance64(noise_vals)
        if gaussian:
            thr = mean_n + z_sig * np.sqrt(var_n)
        else:  # the sample is this step's own copy: partitioned in place
            thr = percentile(noise_vals, significance, overwrite=True)
        del noise_vals, sig_vals
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
        above = amp > thr
        passed = sig_sel & above
        failed = sig_sel & ~above
        del above, sig_sel, amp, amp_n
        state[passed] = 1
        res_code[passed] = len(tested)
        del passed
        state[failed] += 1
        done = failed & (state > 2)
        del failed
        state[done] = finished
        res_code[done] = code_two_back
        del done
        if zval < z_sig:
            stop_reason = "signal no longer significantly above noise"
            break
    # a sweep that stopped early still holds the last step's arrays (the amplitude is the
    # workspace's own buffer): all are released before the post-processing
    amp = amp_n = sig_sel = None
    del ws, basis, noise_basis, state, amp, amp_n, sig_sel

    if not tested:
        raise ValueError("the box is too small for any tested frequency")
    r_last = tested[-1]
    # the resolution of every code, as the float64 values the voxels held before
    table = np.asarray([0.0, *tested], dtype=np.float64)
    assigned = table[res_code[(table > r_last - 0.001)[res_code]]]
    med = (
        float(np.partition(assigned, int(0.5 * assigned.size))[int(0.5 * assigned.size)])
        if assigned.size
        else 0.0
    )
    del assigned
    refined = (table >= r_last)[res_code]
    filled = np.where(table < r_last, med, table).astype(dtype)[res_code]
    smooth = fourier.gaussian_filter_fourier(filled, OUTPUT_SIGMA, threads)
    del filled
    out_dtype = np.float64 if xmipp_compat else np.float32
    resolution = np.empty(shape, dtype=out_dtype)
    chimera = np.empty(shape, dtype=out_dtype)
    for z0 in range(0, shape[0], 8):  # float64 a few planes at a time
        zs = slice(z0, min(z0 + 8, shape[0]))
        res = table[res_code[zs]]
        sm = smooth[zs].astype(np.float64)
        use_smooth = (sm >= 2 * voxel_size) & (sm <= res)
        ch = np.where(refined[zs], np.where(use_smooth, sm, res), sm)
        chimera[zs] = ch
        resolution[zs] = np.where(refined[zs], ch, 0.0)
    return MonoResResult(
        resolution=resolution,
        chimera=chimera,
        refined_mask=refined,
        resolutions=np.asarray(tested),
        stats={k: np.asarray(v) for k, v in stats.items()},
        voxel_size=float(voxel_size),
        stop_reason=stop_reason,
    )
