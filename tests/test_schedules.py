"""Noise schedules: shapes, endpoints, monotonicity, the cosine closed form, clipping, SNR, errors."""

import math

import numpy as np
import pytest
import torch

from labkit.errors import LabkitValueError
from labkit.schedules import Schedule, cosine_alpha_bar, cosine_betas, linear_betas, make_schedule



BAD_T = [0, -3, 2.5, 1000.0, True, "1000", None]


def _cosine_f(u: float, s: float = 0.008) -> float:
    """f(u) = cos^2(((u + s) / (1 + s)) * pi / 2), u = t / T (Nichol & Dhariwal 2021, eq. 17), in plain math."""
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 250, 50])
def test_shapes_dtypes_and_ranges(name, T):
    sch = make_schedule(name, T)
    assert sch.T == T and sch.name == name
    for tensor in (sch.betas, sch.alphas, sch.alpha_bars, sch.alpha_bars_prev, sch.snr()):
        assert tensor.shape == (T,)
        assert tensor.dtype == torch.float64
    assert bool(((sch.betas > 0) & (sch.betas < 1)).all())
    assert bool(((sch.alpha_bars > 0) & (sch.alpha_bars < 1)).all()), "alpha_bar must lie strictly in (0, 1)"
    assert bool((sch.alpha_bars[1:] < sch.alpha_bars[:-1]).all()), "alpha_bar must be strictly decreasing"
    torch.testing.assert_close(sch.alphas, 1 - sch.betas)
    # alpha_bar is the running product of the alphas, computed here in numpy
    np.testing.assert_allclose(sch.alpha_bars.numpy(), np.cumprod(1 - sch.betas.numpy()), rtol=1e-12)
    assert sch.alpha_bars_prev[0] == 1.0
    torch.testing.assert_close(sch.alpha_bars_prev[1:], sch.alpha_bars[:-1])


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_snr_is_strictly_decreasing_and_matches_definition(name):
    sch = make_schedule(name, 1000)
    ab = sch.alpha_bars.numpy()
    snr = sch.snr().numpy()
    np.testing.assert_allclose(snr, ab / (1 - ab), rtol=1e-12)
    assert (np.diff(snr) < 0).all()
    np.testing.assert_allclose(sch.log_snr().numpy(), np.log(ab / (1 - ab)), rtol=1e-12, atol=1e-12)
    assert snr[0] > 1e3 and snr[-1] < 1e-3, "the chain must run from almost clean to almost pure noise"


def test_linear_endpoints_at_T_1000():
    betas = linear_betas(1000)
    assert betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    assert bool((torch.diff(betas) > 0).all()), "linear betas must be strictly increasing"
    np.testing.assert_allclose(np.diff(betas.numpy()), (0.02 - 1e-4) / 999, rtol=1e-9)  # evenly spaced


@pytest.mark.parametrize("T", [100, 500, 2000, 4000])
def test_linear_endpoints_rescale_with_T(T):
    """Endpoints scale by 1000/T (improved-diffusion), so the total noise sum(beta) stays about the same."""
    betas = linear_betas(T)
    assert betas[0].item() == pytest.approx(1e-4 * 1000 / T, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02 * 1000 / T, rel=1e-12)
    assert bool((torch.diff(betas) > 0).all())
    ref_total = float(linear_betas(1000).sum())
    assert float(betas.sum()) == pytest.approx(ref_total, rel=0.02)
    # and so does the final alpha_bar: the chain always ends in (almost) pure noise
    ab_end = float(make_schedule("linear", T).alpha_bars[-1])
    assert ab_end == pytest.approx(float(make_schedule("linear", 1000).alpha_bars[-1]), rel=0.5)


def test_cosine_alpha_bar_function_matches_closed_form():
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    expected = [_cosine_f(v) / _cosine_f(0.0) for v in u.tolist()]
    np.testing.assert_allclose(cosine_alpha_bar(u).numpy(), expected, rtol=1e-12, atol=1e-15)
    assert cosine_alpha_bar(torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("T", [1000, 100])
def test_cosine_schedule_alpha_bars_match_closed_form(T):
    """Code step t (paper step t+1) has alpha_bar = f((t+1)/T) / f(0), except the clipped last step."""
    sch = make_schedule("cosine", T)
    expected = np.array([_cosine_f((t + 1) / T) / _cosine_f(0.0) for t in range(T)])
    unclipped_betas = 1 - expected / np.concatenate([[1.0], expected[:-1]])
    clipped = unclipped_betas > 0.999
    assert clipped.sum() == 1 and clipped[-1], "only the last step is clipped with the default s"
    np.testing.assert_allclose(sch.alpha_bars.numpy()[:-1], expected[:-1], rtol=1e-10)
    # the last beta is clipped to 0.999, so the last alpha_bar is the previous one times 0.001
    assert sch.betas[-1].item() == pytest.approx(0.999, abs=1e-15)
    assert sch.alpha_bars[-1].item() == pytest.approx(expected[-2] * 0.001, rel=1e-10)
    assert expected[-1] < sch.alpha_bars[-1].item(), "clipping must keep alpha_bar_T above the (zero) closed form"


def test_cosine_betas_clipping():
    T = 1000
    free = cosine_betas(T, max_beta=1.0)
    assert free[-1].item() > 0.9999, "unclipped, the cosine schedule's last beta is essentially 1"
    for cap in (0.999, 0.5, 0.1):
        betas = cosine_betas(T, max_beta=cap)
        assert float(betas.max()) <= cap
        over = free > cap
        assert bool(over.any())
        assert bool((betas[over] == cap).all())
        torch.testing.assert_close(betas[~over], free[~over], rtol=0, atol=0)
    default = cosine_betas(T)
    assert float(default.max()) == pytest.approx(0.999)
    assert bool((torch.diff(default) >= 0).all()), "cosine betas grow with t"


@pytest.mark.parametrize("bad", BAD_T)
def test_bad_T_raises_labkit_value_error(bad):
    with pytest.raises(LabkitValueError):
        linear_betas(bad)
    with pytest.raises(LabkitValueError):
        cosine_betas(bad)
    for name in ("linear", "cosine"):
        with pytest.raises(LabkitValueError):
            make_schedule(name, bad)


def test_bad_T_is_also_a_value_error():
    with pytest.raises(ValueError, match="positive integer"):
        make_schedule("cosine", 0)


def test_linear_schedule_too_short_is_a_clear_error():
    # T=10 rescales beta_end to 2.0, not a variance: the Schedule refuses it with a labkit error
    with pytest.raises(LabkitValueError):
        make_schedule("linear", 10)


@pytest.mark.parametrize("name", ["quadratic", "Cosine", "", "sigmoid"])
def test_make_schedule_unknown_name(name):
    with pytest.raises(LabkitValueError, match="unknown schedule"):
        make_schedule(name, 1000)


@pytest.mark.parametrize(
    "betas",
    [torch.tensor([0.1, 1.0]), torch.tensor([0.0, 0.2]), torch.tensor([-0.1, 0.2]), torch.full((2, 2), 0.1)],
)
def test_schedule_rejects_invalid_betas(betas):
    with pytest.raises(LabkitValueError):
        Schedule("custom", betas)


def test_schedule_from_custom_betas_and_repr():
    sch = Schedule("custom", torch.tensor([0.1, 0.2, 0.3], dtype=torch.float32))
    assert sch.betas.dtype == torch.float64 and sch.T == 3
    np.testing.assert_allclose(sch.alpha_bars.numpy(), [0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7], rtol=1e-7)
    text = repr(sch)
    assert "custom" in text and "T=3" in text


def test_cosine_alpha_bars_golden_values():
    """Nichol & Dhariwal 2021, eq. 17 by hand at T = 4, s = 0.008: alpha_bar(t) = f(t) / f(0) at t/T = 1/4 .. 1,
    the last beta clipped at 0.999 (f(1) = cos^2(pi/2) = 0 would make it 1)."""
    from labkit.schedules import cosine_alpha_bars

    f = [math.cos((k / 4 + 0.008) / 1.008 * math.pi / 2) ** 2 for k in range(5)]
    want = [f[1] / f[0], f[2] / f[0], f[3] / f[0], f[3] / f[0] * 0.001]  # the last step keeps 1 - 0.999 of the signal
    got = cosine_alpha_bars(4)
    assert got.dtype == torch.float64 and got.shape == (4,)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)
    assert [round(float(v), 4) for v in got[:3]] == [0.8470, 0.4938, 0.1443]  # pencil-and-paper values
    torch.testing.assert_close(cosine_alpha_bars(1000), make_schedule("cosine", 1000).alpha_bars, rtol=0, atol=0)


def test_enforce_zero_terminal_snr_is_lin_et_al_algorithm_1():
    """Lin et al. 2024, Algorithm 1: SNR 0 at T-1, alpha_bar_0 unchanged, sqrt(alpha_bar) an affine map of the old
    one; the input is not modified."""
    from labkit.schedules import alpha_bars_from_betas, enforce_zero_terminal_snr, linear_betas

    betas = linear_betas(1000)
    before = betas.clone()
    new = enforce_zero_terminal_snr(betas)
    assert torch.equal(betas, before) and float(new[-1]) == 1.0
    old_root, new_root = alpha_bars_from_betas(before).sqrt(), alpha_bars_from_betas(new).sqrt()
    assert float(new_root[-1]) == 0.0 and abs(float(new_root[0] - old_root[0])) < 1e-12
    slope = (new_root[0] - new_root[500]) / (old_root[0] - old_root[500])
    assert torch.allclose(new_root, (old_root - old_root[-1]) * slope, atol=1e-12)
