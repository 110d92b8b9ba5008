"""Frequency sweeps: which resolutions MonoRes and the directional pass test, in which order.

Both sweeps walk from low resolution (large Å) towards Nyquist on the discrete Fourier grid of
the box (algorithm.md 1.3 and 2.5).
"""

from __future__ import annotations

from dataclasses import dataclass

from monodir.core.fourier import freq2idx, idx2freq, round_half_away


@dataclass(frozen=True)
class SweepStep:
    """One tested frequency.

    Attributes
    ----------
    index
        Fourier index of the tested frequency.
    freq
        Digital frequency (cycles/voxel).
    resolution
        Resolution tested, ``voxel_size / freq`` (Å).
    freq_high_pass
        Start of the high-pass ramp (cycles/voxel).
    freq_low_pass
        End of the amplitude low-pass ramp (cycles/voxel).
    """

    index: int
    freq: float
    resolution: float
    freq_high_pass: float
    freq_low_pass: float


def monores_sweep(n: int, voxel_size: float, low_resolution: float, step: float) -> list[SweepStep]:
    """MonoRes frequency sweep (algorithm.md 1.3).

    Resolutions ``low_resolution - c*step`` are quantised to Fourier indices; repeated indices
    are skipped; the sweep ends when the tested resolution would be finer than Nyquist. The band
    edges are ``f -/+ 0.02`` clipped to ``[0, 0.5]``. Indices past Nyquist always end the sweep
    (guard against the aliasing of quirk Q26).
    """
    step = max(step, 0.25)
    steps: list[SweepStep] = []
    prev = None
    c = 0
    while True:
        r_c = low_resolution - c * step
        c += 1
        if r_c <= 0:
            break
        idx = round_half_away(n * voxel_size / r_c)
        if idx == prev:
            continue
        if idx > n // 2 or idx <= 0:
            break
        f = idx2freq(idx, n)
        res = voxel_size / f
        if res < 2 * voxel_size:
            break
        steps.append(SweepStep(idx, f, res, max(f - 0.02, 0.0), min(f + 0.02, 0.5)))
        prev = idx
    return steps


def directional_sweep(n: int, voxel_size: float, resolution_step: float = 0.5) -> list[SweepStep]:
    """Per-direction sweep (algorithm.md 2.5).

    Starts at about 18 Å; consecutive resolutions are at least 1 Å apart above 8 Å and
    ``resolution_step`` apart below; band edges are +-5 % (or +-step) quantised to whole indices,
    at least one index from the tested one; frequencies above 0.49 are never tested.
    """
    s = voxel_size
    idx = round_half_away(n * s / 18.0) if n > 18 else 3
    r_prev = 0.0
    idx_prev = -1
    steps: list[SweepStep] = []
    for _ in range(4 * n):  # hard bound; the loop ends far earlier
        f = idx2freq(idx, n)
        if f == 0:
            idx += 1
            continue
        res = s / f
        ms = 1.0 if res > 8.0 else resolution_step
        if abs(res - r_prev) < ms:
            target = r_prev - ms
            if target == 0:
                break
            idx = freq2idx(s / target, n) if s / target >= 0 else round_half_away(n * s / target)
            f = idx2freq(idx % n, n) if idx >= n else idx2freq(idx, n)
            if idx == idx_prev:
                idx += 1
                continue
        if f <= 0 or f > 0.49:
            break
        res = s / f
        r_prev = res
        if 0.05 * res < ms:
            r_lo, r_hi = res - ms, res + ms
        else:
            r_lo, r_hi = 0.95 * res, 1.05 * res
        f_h = s / r_hi
        f_l = s / r_lo if r_lo != 0 else 0.5
        f_h = 0.5 if (f_h > 0.5 or f_h < 0) else f_h
        f_l = 0.5 if (f_l > 0.5 or f_l < 0) else f_l
        i_h = round_half_away(n * f_h)
        i_l = round_half_away(n * f_l)
        if i_h == idx:
            i_h = idx - 1
        if i_l == idx:
            i_l = idx + 1
        i_l = min(i_l, n // 2)  # odd n: round(n/2) would wrap to a negative frequency
        f_h = idx2freq(i_h, n)
        f_l = idx2freq(i_l, n)
        if res <= 1.0 - 0.001:
            break
        steps.append(SweepStep(idx, f, res, f_h, f_l))
        idx_prev = idx
        idx += 1
    return steps
