"""Classifier-free guidance: eq. 6 of Ho & Salimans 2022 on models whose outputs we know."""

import math

import pytest
import torch

from labkit import samplers as SM
from labkit.errors import LabkitValueError
from labkit.guidance import ClassifierFreeGuidance, cfg_combine, guided
from labkit.schedules import make_schedule
from labkit.unet import ResBlock, UNet, UNetConfig



NULL = 10


class ToyModel:
    """eps(x, t, y) = x * (1 + 0.1 y) + 0.001 t for a class y, and -x - 0.002 t for the null class.

    Records the batch size of each call so the tests can see how the wrapper calls it."""

    def __init__(self):
        self.calls = []

    def cond(self, x, t, y):
        return x * (1 + 0.1 * y.float().view(-1, 1, 1, 1)) + 0.001 * t.float().view(-1, 1, 1, 1)

    def uncond(self, x, t):
        return -x - 0.002 * t.float().view(-1, 1, 1, 1)

    def __call__(self, x, t, y):
        self.calls.append(x.shape[0])
        is_null = (y == NULL).view(-1, 1, 1, 1)
        return torch.where(is_null, self.uncond(x, t), self.cond(x, t, y))


def _inputs(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, 3, 3, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    y = torch.randint(0, 10, (b,), generator=g)
    return x, t, y


def test_w0_is_exactly_the_conditional_model():
    model = ToyModel()
    x, t, y = _inputs()
    assert guided(model, 0.0, NULL) is model
    out = ClassifierFreeGuidance(model, 0.0, NULL)(x, t, y)
    assert torch.equal(out, model.cond(x, t, y))
    assert model.calls == [4], "w = 0 needs no unconditional pass"


@pytest.mark.parametrize("w", [0.5, 1.0, 3.0, 7.5])
def test_guided_output_is_eq6(w):
    model = ToyModel()
    x, t, y = _inputs()
    out = guided(model, w, NULL)(x, t, y)
    expected = (1 + w) * model.cond(x, t, y) - w * model.uncond(x, t)
    torch.testing.assert_close(out, expected)
    # the same, written as "conditional plus w times the difference"
    torch.testing.assert_close(out, model.cond(x, t, y) + w * (model.cond(x, t, y) - model.uncond(x, t)))
    torch.testing.assert_close(cfg_combine(model.cond(x, t, y), model.uncond(x, t), w), expected)
    assert model.calls == [8], "one forward pass on the doubled batch"


def test_null_class_rows_stay_unconditional():
    model = ToyModel()
    x, t, _ = _inputs()
    y = torch.tensor([3, NULL, 0, NULL])
    out = guided(model, 2.0, NULL)(x, t, y)
    torch.testing.assert_close(out[[1, 3]], model.uncond(x, t)[[1, 3]])
    torch.testing.assert_close(out[[0, 2]], (3 * model.cond(x, t, y) - 2 * model.uncond(x, t))[[0, 2]])


@pytest.mark.parametrize("w", [-0.1, -1.0, float("nan")])
def test_negative_or_nan_weight_raises(w):
    with pytest.raises(LabkitValueError):
        guided(ToyModel(), w, NULL)
    with pytest.raises(LabkitValueError):
        ClassifierFreeGuidance(ToyModel(), w, NULL)
    with pytest.raises(ValueError):  # still a ValueError for code that expects one
        SM.sample(ToyModel(), (2, 1, 3, 3), torch.tensor([0, 1]), make_schedule("cosine"), guidance=w, steps=2)


def test_doubled_batch_equals_two_separate_calls_on_a_real_unet():
    model = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random weights where the U-Net starts at zero, so y actually matters
        for conv in [model.out] + [m.block2.conv for m in model.modules() if isinstance(m, ResBlock)]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
        x = torch.randn(3, 1, 12, 12, generator=g)
        t = torch.tensor([10, 500, 990])
        y = torch.tensor([1, 4, 9])
        w = 2.5
        out = guided(model, w, model.config.null_class)(x, t, y)
        cond = model(x, t, y)
        uncond = model(x, t, torch.full_like(y, model.config.null_class))
    assert float((cond - uncond).abs().max()) > 1e-3, "the class must make a difference for this test to mean anything"
    torch.testing.assert_close(out, (1 + w) * cond - w * uncond, rtol=1e-4, atol=1e-5)


def test_guidance_through_the_sampler_on_gaussians():
    """Class c's data ~ N(mu_c, s^2), the unconditional model ~ N(0, s^2). With optimal predictors, guided
    eps = (1 + w) eps_c - w eps_0 is exactly the optimal predictor for N((1 + w) mu_c, s^2): guidance
    must move the samples' mean to (1 + w) mu_c and keep the std. 2000 samples, deterministic sampler,
    x_T standardised: tolerance = DPM++ 20-step error (~1.5% on the std) plus margin."""
    sch = make_schedule("cosine")
    s, w, means = 0.3, 1.5, torch.tensor([0.4, -0.2], dtype=torch.float64)

    def model(x, t, y):
        ab = sch.alpha_bars[t].view(-1, 1)
        mu = torch.where(y == NULL, 0.0, means[y.clamp(max=1)]).view(-1, 1)
        return ((1 - ab).sqrt() * (x.double() - ab.sqrt() * mu) / (ab * s * s + 1 - ab)).float()

    n = 2000
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = ((z - z.mean()) / z.std()).float().repeat(2, 1)
    y = torch.tensor([0, 1]).repeat_interleave(n)
    out = SM.sample(model, (2 * n, 1), y, sch, sampler="dpmpp_2m", steps=20, guidance=w, null_class=NULL, x_T=x_T)
    for c in range(2):
        group = out[y == c].double()
        assert float(group.mean()) == pytest.approx((1 + w) * float(means[c]), abs=0.005)
        assert float(group.std()) == pytest.approx(s, rel=0.03)
    plain = SM.sample(model, (2 * n, 1), y, sch, sampler="dpmpp_2m", steps=20, guidance=0.0, x_T=x_T)
    assert float(plain[y == 0].mean()) == pytest.approx(float(means[0]), abs=0.005)


def test_sample_with_guidance_equals_sampling_a_guided_model():
    sch = make_schedule("linear")
    model = ToyModel()
    y = torch.tensor([0, 3, NULL])
    kw = dict(sampler="ddpm", steps=5, null_class=NULL)
    a = SM.sample(model, (3, 1, 3, 3), y, sch, guidance=2.0, generator=torch.Generator().manual_seed(0), **kw)
    b = SM.sample(ClassifierFreeGuidance(model, 2.0, NULL), (3, 1, 3, 3), y, sch, guidance=0.0,
                  generator=torch.Generator().manual_seed(0), **kw)
    c = SM.sample(model, (3, 1, 3, 3), y, sch, guidance=0.0, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a, b)
    assert not torch.allclose(a[:2], c[:2]) and math.isfinite(float(a.abs().max()))


# --- classifier guidance (Dhariwal & Nichol 2021) -----------------------------------------------------------


def test_classifier_grad_of_a_linear_classifier_is_w_y_minus_the_expected_w():
    """logits = W x (+ b): grad_x log softmax(W x)_y = W_y - sum_k p_k W_k, by hand."""
    from labkit.guidance import classifier_grad

    g = torch.Generator().manual_seed(0)
    W = torch.randn(10, 12, generator=g, dtype=torch.float64)
    x = torch.randn(3, 1, 3, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([2, 7, 2])
    classifier = lambda x_, t_: x_.flatten(1) @ W.T + t_[:, None]  # noqa: E731  (t shifts every logit alike)
    t = torch.tensor([0, 5, 9])
    p = torch.softmax(x.flatten(1) @ W.T, dim=1)  # [B, K]
    want = (W[y] - p @ W).view_as(x)
    with torch.no_grad():  # works inside no_grad too, as a sampler calls it
        got = classifier_grad(classifier, x, t, y)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert not got.requires_grad


def test_classifier_guided_loop_with_scale_0_is_sample_loop_and_guidance_raises_log_p():
    from labkit.checks.lab08_beyond import ToyClassifier, guided_case

    g = torch.Generator().manual_seed(1)
    model, clf, x_T, y, ts, betas, ab, noises = guided_case((4, 1, 6, 6), 40, 8, 3, g)
    plain = SM.sample_loop(model, x_T, y, ts, betas, ab, noises)
    torch.testing.assert_close(SM.classifier_guided_loop(model, clf, x_T, y, 0.0, ts, betas, ab, noises), plain)
    guided = SM.classifier_guided_loop(model, clf, x_T, y, 5.0, ts, betas, ab, noises)
    t0 = torch.zeros(4, dtype=torch.long)
    log_p = lambda x: torch.log_softmax(clf(x, t0), 1)[torch.arange(4), y]  # noqa: E731
    assert float(log_p(guided).mean()) > float(log_p(plain).mean())
    assert isinstance(clf, ToyClassifier)
