"""Frequency sweeps against the worked examples of algorithm.md 1.3 and 2.5."""

from __future__ import annotations

import itertools

import pytest

from monodir.core.fourier import freq2idx, idx2freq, round_half_away
from monodir.core.sweep import directional_sweep, monores_sweep


def test_index_frequency_conventions():
    assert idx2freq(50, 100) == 0.5  # Nyquist maps to +0.5
    assert idx2freq(51, 100) == pytest.approx(-0.49)
    assert round_half_away(12.5) == 13 and round_half_away(-12.5) == -13
    assert freq2idx(-0.1, 100) == 90


def test_monores_sweep_n200_matches_worked_example():
    steps = monores_sweep(200, 1.0, 18.0, 0.25)
    expected = [*range(11, 34), 35, 36, 38, 40, 42, 44, 47, 50, 53, 57, 62, 67, 73, 80, 89, 100]
    assert [s.index for s in steps] == expected
    assert len(steps) == 39
    assert steps[0].resolution == pytest.approx(200 / 11)
    assert steps[-1].resolution == pytest.approx(2.0)


@pytest.mark.parametrize(("n", "step", "count"), [(200, 0.5, 26), (256, 0.25, 43), (256, 0.5, 28)])
def test_monores_sweep_counts(n, step, count):
    assert len(monores_sweep(n, 1.0, 18.0, step)) == count


def test_monores_step_is_clamped():
    assert monores_sweep(200, 1.0, 18.0, 0.1) == monores_sweep(200, 1.0, 18.0, 0.25)


def test_directional_sweep_n200_matches_worked_example():
    steps = directional_sweep(200, 1.0, 0.5)
    expected = [*range(11, 18), 19, 21, 23, 26, 28, 30, 32, 35, 38, 42, 47, 53, 61, 72, 88]
    assert [s.index for s in steps] == expected
    last = steps[-1]
    assert last.freq_high_pass == pytest.approx(0.36)
    assert last.freq == pytest.approx(0.44)
    assert last.freq_low_pass == pytest.approx(0.5)
    assert len(directional_sweep(256, 1.0, 0.5)) == 23


def test_directional_sweep_properties():
    for n, s in ((128, 1.0), (100, 1.05), (100, 3.54), (257, 0.8)):
        steps = directional_sweep(n, s, 0.5)
        res = [st.resolution for st in steps]
        assert all(a > b for a, b in itertools.pairwise(res))
        assert all(st.freq <= 0.49 for st in steps)
        for st in steps:
            assert st.freq_high_pass < st.freq < st.freq_low_pass <= 0.5
