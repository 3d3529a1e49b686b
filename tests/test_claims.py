"""``labkit.checks.claims``: a sentence about an output is checked on the run, and says so (issue 26)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labkit.checks import claims


def test_a_claim_that_holds_prints_it_with_the_numbers(monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_FAST", "0")
    assert claims.check("the gap grows with t", torch.tensor(True), "0.1 < 0.9") is True
    out = capsys.readouterr().out
    assert out == "Claim holds on this run: the gap grows with t (0.1 < 0.9).\n"
    assert claims.outcomes(out) == {"holds": ["the gap grows with t (0.1 < 0.9)."], "fails": [], "unchecked": []}


def test_a_claim_that_fails_says_so_and_sends_the_student_to_their_own_output(monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_FAST", "0")
    assert claims.check("DDPM fails at 5 steps", np.bool_(False), "accuracy 0.97") is False
    out = capsys.readouterr().out
    assert "DOES NOT HOLD on this run: DDPM fails at 5 steps (accuracy 0.97)" in out
    assert "what your run shows" in out
    assert claims.outcomes(out)["fails"] and not claims.outcomes(out)["holds"]


def test_fast_mode_names_the_claim_without_checking_it(monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_FAST", "1")
    assert claims.check("anything", False) is True
    assert claims.outcomes(capsys.readouterr().out) == {"holds": [], "fails": [], "unchecked": ["anything."]}


def test_a_claim_needs_a_sentence_and_one_truth_value(monkeypatch):
    monkeypatch.setenv("LABKIT_FAST", "0")
    with pytest.raises(TypeError, match="sentence"):
        claims.check("", True)
    with pytest.raises(RuntimeError):  # a tensor of several values is ambiguous
        claims.check("x", torch.tensor([True, False]))


def test_r_squared_of_a_line_a_parabola_and_noise():
    from labkit.evaluation import measures

    x = torch.arange(100.0)
    assert measures.r_squared(x, 3 * x - 2) == pytest.approx(1.0, abs=1e-12)
    assert measures.r_squared(x - 49.5, (x - 49.5) ** 2) == pytest.approx(0.0, abs=1e-9)  # symmetric: no slope
    noisy = measures.r_squared(x, x + 30 * torch.randn(100, generator=torch.Generator().manual_seed(0)))
    assert 0.3 < noisy < 0.7  # var(x) = 833 against noise variance 900


def test_accuracy_margin_is_three_points_or_two_standard_errors():
    from labkit.evaluation import measures

    assert float(measures.accuracy_margin(0.99, 100)) == pytest.approx(0.03)
    assert float(measures.accuracy_margin(0.5, 100)) == pytest.approx(2 * (2 * 0.25 / 100) ** 0.5)  # 0.141
    assert float(measures.accuracy_margin(1.0, 100)) == pytest.approx(max(0.03, 2 * (2 * 0.01 * 0.99 / 100) ** 0.5))
