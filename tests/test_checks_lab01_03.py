"""The checks behind labs 01-03: correct answers pass, plausible wrong answers fail with a message that
names the mistake, and the checks cannot be fooled by a patched allclose."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit.checks import lab01_forward as c01

# --- reference answers (what a student should write) -----------------------------------------


def alpha_bars_ok(betas):
    return torch.cumprod(1 - betas, dim=0)


def snr_ok(ab):
    return ab / (1 - ab)


def _bcast(v, x):
    return v.view(-1, *([1] * (x.dim() - 1)))


def q_sample_ok(x0, t, noise, ab):
    a = _bcast(ab[t], x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def q_sample_float64_ok(x0, t, noise, ab):  # forgets to cast back: still accepted
    a = _bcast(ab[t], x0)
    return a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()


# --- lab 01 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [alpha_bars_ok, lambda b: torch.cumprod(1 - b.float(), 0)])
def test_alpha_bars_accepts_correct(fn, capsys):
    c01.check_alpha_bars(fn)
    c01.check_alpha_bars(fn, seed=11, sizes=(2, 7, 500))
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn, phrase", [
    (lambda b: torch.cumprod(b, 0), "cumprod of the betas"),
    (lambda b: 1 - torch.cumprod(b, 0), "1 - cumprod"),
    (lambda b: torch.cumsum(1 - b, 0), "cumulative sum"),
    (lambda b: torch.cat([torch.ones(1, dtype=b.dtype), torch.cumprod(1 - b, 0)[:-1]]), "off by one"),
    (lambda b: torch.prod(1 - b), "torch.prod"),
    (lambda b: torch.cumprod(1 - b, 0).sqrt(), "square root"),
    (lambda b: torch.cumprod(1 - b, 0).numpy(), "numpy"),
    (lambda b: None, "return"),
])
def test_alpha_bars_names_mistakes(fn, phrase):
    with pytest.raises(AssertionError, match="(?i)" + phrase.replace("(", r"\(").replace("*", r"\*")):
        c01.check_alpha_bars(fn)


def test_snr_accepts_correct(capsys):
    c01.check_snr(snr_ok)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn, phrase", [
    (lambda ab: (1 - ab) / ab, "inverted"),
    (lambda ab: (ab / (1 - ab)).sqrt(), "variances"),
    (lambda ab: torch.log(ab / (1 - ab)), "log of the SNR"),
    (lambda ab: 1 / (1 - ab), "numerator"),
    (lambda ab: ab.div_(1 - ab), "in place"),
])
def test_snr_names_mistakes(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        c01.check_snr(fn)


@pytest.mark.parametrize("fn", [q_sample_ok, q_sample_float64_ok])
def test_q_sample_accepts_correct(fn):
    c01.check_q_sample(fn)
    c01.check_q_sample(fn, seed=3, sizes=((5, 1, 8, 8), (2, 3, 6, 4)), T=1000)
    c01.check_q_sample(fn, seed=4, sizes=((1, 1, 28, 28),), T=10)


def _qs(coef_x, coef_n, index=lambda t: t):
    def fn(x0, t, noise, ab):
        a = _bcast(ab[index(t)], x0)
        return coef_x(a) * x0 + coef_n(a) * noise
    return fn


@pytest.mark.parametrize("fn, phrase", [
    (_qs(lambda a: a, lambda a: 1 - a), "variance instead of std"),
    (_qs(lambda a: a.sqrt(), lambda a: 1 - a), "sqrt missing on the noise"),
    (_qs(lambda a: (1 - a).sqrt(), lambda a: a.sqrt()), "swapped"),
    (_qs(lambda a: a.sqrt(), lambda a: (1 - a).sqrt(), lambda t: t - 1), r"off by one in t: used alpha_bars\[t - 1\]"),
    (_qs(lambda a: a.sqrt(), lambda a: (1 - a).sqrt(), lambda t: t[:1].expand(t.shape[0])), "same step"),
    (_qs(lambda a: a.sqrt(), lambda a: 0 * a), "noise term is missing"),
    (lambda x0, t, noise, ab: q_sample_ok(x0, t, torch.randn_like(noise), ab), "drawing new random numbers"),
    (lambda x0, t, noise, ab: ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * noise, "broadcast"),
    (lambda x0, t, noise, ab: q_sample_ok(x0, t, noise, ab).numpy(), "numpy array"),
    (lambda x0, t, noise, ab: x0.mul_(0.5), "in place"),
])
def test_q_sample_names_mistakes(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        c01.check_q_sample(fn)


def test_not_implemented_is_a_clear_failure():
    def stub(*args):
        raise NotImplementedError()

    for check in (c01.check_alpha_bars, c01.check_snr, c01.check_q_sample):
        with pytest.raises(AssertionError, match="not implemented yet"):
            check(stub)


def test_patched_allclose_does_not_fool_the_checks(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(torch, "isclose", lambda a, b, **k: torch.ones_like(a, dtype=torch.bool))
    with pytest.raises(AssertionError):
        c01.check_q_sample(lambda x0, t, noise, ab: torch.zeros_like(x0))
    with pytest.raises(AssertionError):
        c01.check_snr(lambda ab: ab)


def test_checks_are_fast():
    start = time.perf_counter()
    c01.check_alpha_bars(alpha_bars_ok)
    c01.check_snr(snr_ok)
    c01.check_q_sample(q_sample_ok)
    assert time.perf_counter() - start < 1.0


# --- lab 02 ----------------------------------------------------------------------------------

from labkit.checks import lab00_setup as c00  # noqa: E402
from labkit.checks import lab02_unet as c02  # noqa: E402
from labkit.checks import lab03_embeddings as c03  # noqa: E402
from labkit import embeddings, unet  # noqa: E402
from labkit.checks._common import CheckFailed  # noqa: E402


def upsample_merge_ok(h, skip):
    return torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], dim=1)


def test_concat_skip_accepts_correct_and_reference():
    c02.check_concat_skip(unet.concat_skip)
    c02.check_concat_skip(lambda h, s: torch.cat((h, s), dim=-3), seed=5, sizes=((1, 3, 5, 2, 2),))


@pytest.mark.parametrize("fn, phrase", [
    (lambda h, s: torch.cat([h, s], dim=0), "dim 0"),
    (lambda h, s: torch.cat([h, s], dim=2), "dim 2"),
    (lambda h, s: torch.cat([h, s], dim=3), "dim 3"),
    (lambda h, s: h + s, "added"),
    (lambda h, s: torch.stack([h, s], dim=1), "torch.stack"),
    (lambda h, s: torch.cat([s, h], dim=1), "wrong order"),
    (lambda h, s: torch.cat([h.numpy(), s.numpy()], 1), "numpy"),
])
def test_concat_skip_names_mistakes(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        c02.check_concat_skip(fn)


def test_upsample_merge_accepts_correct():
    c02.check_upsample_merge(upsample_merge_ok)
    c02.check_upsample_merge(upsample_merge_ok, seed=9, sizes=((3, 4, 4, 2, 2, 3, 3),))


@pytest.mark.parametrize("fn, phrase", [
    (lambda h, s: torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), s], 1), "fixed factor 2"),
    (lambda h, s: torch.cat([h, s], 1), "upsample h"),
    (lambda h, s: torch.cat([F.interpolate(h, size=s.shape[-2:], mode="bilinear"), s], 1), "bilinear"),
    (lambda h, s: torch.cat([s, F.interpolate(h, size=s.shape[-2:])], 1), "wrong order"),
    (lambda h, s: F.interpolate(h, size=s.shape[-2:]), "instead of concatenated"),
])
def test_upsample_merge_names_mistakes(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        c02.check_upsample_merge(fn)


# --- lab 03 ----------------------------------------------------------------------------------

def sinusoidal_ok(t, dim, device_of_t=True):
    i = torch.arange(dim // 2, device=t.device if device_of_t else None)
    freqs = 1.0 / 10000 ** (2 * i / dim)
    a = t.float()[:, None] * freqs[None]
    out = torch.zeros(t.shape[0], dim, device=t.device if device_of_t else None)
    out[:, 0::2], out[:, 1::2] = torch.sin(a), torch.cos(a)
    return out


def test_sinusoidal_made_on_the_cpu_fails_with_the_gpu_explained():
    """Right values, but torch.arange/torch.zeros without device=: fine on a laptop, a crash on Colab's GPU."""
    with pytest.raises(CheckFailed, match=r"makes a tensor on the CPU whatever device t is on.*device=t.device"):
        c03.check_sinusoidal_embedding(lambda t, dim: sinusoidal_ok(t, dim, device_of_t=False))

    def zeros_on_the_cpu(t, dim):  # the frequencies follow t, the output it fills does not
        out = torch.zeros(t.shape[0], dim)
        out[:] = sinusoidal_ok(t, dim)
        return out

    with pytest.raises(CheckFailed, match=r"copies t's values to the CPU.*device=t.device"):
        c03.check_sinusoidal_embedding(zeros_on_the_cpu)

    def table_on_the_cpu(t, dim):  # a table of every timestep made once on the CPU, then indexed: no error, wrong device
        table = sinusoidal_ok(torch.arange(1000), dim)  # [1000, dim] on the CPU
        return table[t]

    assert torch.equal(table_on_the_cpu(torch.tensor([3, 999]), 8), sinusoidal_ok(torch.tensor([3, 999]), 8))
    with pytest.raises(CheckFailed, match=r"returns its result on the CPU whatever device t is on.*device=t.device"):
        c03.check_sinusoidal_embedding(table_on_the_cpu)



@pytest.mark.parametrize("fn", [sinusoidal_ok, embeddings.sinusoidal_embedding])
def test_sinusoidal_accepts_correct(fn):
    c03.check_sinusoidal_embedding(fn)
    c03.check_sinusoidal_embedding(fn, seed=2, sizes=((8, 128), (1, 32)))


def _sin_variant(layout="interleave", exp=2, swap=False, mult=False):
    def fn(t, dim):
        i = torch.arange(dim // 2, dtype=torch.float64)
        f = 10000 ** (exp * i / dim)
        a = t.double()[:, None] * (f if mult else 1 / f)[None]
        s, c = (torch.cos(a), torch.sin(a)) if swap else (torch.sin(a), torch.cos(a))
        if layout == "halves":
            return torch.cat([s, c], 1)
        out = torch.zeros(t.shape[0], dim, dtype=torch.float64)
        out[:, 0::2], out[:, 1::2] = s, c
        return out
    return fn


@pytest.mark.parametrize("fn, phrase", [
    (_sin_variant(swap=True), "sin and cos swapped"),
    (_sin_variant(layout="halves"), "all sines first"),
    (_sin_variant(exp=1), "exponent"),
    (_sin_variant(mult=True), "divided"),
    (lambda t, dim: sinusoidal_ok(t, dim).T, "transposed"),
    (lambda t, dim: torch.sin(t.float()[:, None] / 10000 ** (2 * torch.arange(dim // 2) / dim)), "sine and a cosine"),
])
def test_sinusoidal_names_mistakes(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        c03.check_sinusoidal_embedding(fn)


def cos_sim_ok(e):
    u = e / e.norm(dim=1, keepdim=True)
    return u @ u.T


def test_cosine_similarity_accepts_correct():
    c03.check_cosine_similarity(cos_sim_ok)
    c03.check_cosine_similarity(lambda e: F.cosine_similarity(e[:, None], e[None], dim=-1), seed=4)


@pytest.mark.parametrize("fn, phrase", [
    (lambda e: e @ e.T, "raw dot products"),
    (lambda e: (e / e.norm(dim=0)) @ (e / e.norm(dim=0)).T, "wrong dimension"),
    (lambda e: 1 - cos_sim_ok(e), "distance"),
    (lambda e: (e / e.norm(dim=1, keepdim=True)).T @ (e / e.norm(dim=1, keepdim=True)), "columns"),
])
def test_cosine_similarity_names_mistakes(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        c03.check_cosine_similarity(fn)


def film_ok(h, scale, shift):
    return h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


def test_film_accepts_correct():
    c03.check_film(film_ok)
    c03.check_film(lambda h, s, b: torch.addcmul(b.view(*b.shape, 1, 1), h, 1 + s.view(*s.shape, 1, 1)), seed=1)


@pytest.mark.parametrize("fn, phrase", [
    (lambda h, s, b: h * s[:, :, None, None] + b[:, :, None, None], "'1 \\+' is missing"),
    (lambda h, s, b: h * (1 + b[:, :, None, None]) + s[:, :, None, None], "swapped"),
    (lambda h, s, b: (h + b[:, :, None, None]) * (1 + s[:, :, None, None]), "before scaling"),
    (lambda h, s, b: h * (1 + s) + b, "reshape"),
])
def test_film_names_mistakes(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        c03.check_film(fn)


# --- lab 00 ----------------------------------------------------------------------------------

def test_to_unit_range():
    c00.check_to_unit_range(lambda x: (x + 1) / 2)
    for fn, phrase in [(lambda x: x / 2, "shift the range up by 1"), (lambda x: x + 1, "divide by 2"),
                       (lambda x: x.clamp(0, 1), "clamping")]:
        with pytest.raises(AssertionError, match=phrase):
            c00.check_to_unit_range(fn)


def test_all_checks_fast():
    start = time.perf_counter()
    c02.check_concat_skip(unet.concat_skip)
    c02.check_upsample_merge(upsample_merge_ok)
    c03.check_sinusoidal_embedding(sinusoidal_ok)
    c03.check_cosine_similarity(cos_sim_ok)
    c03.check_film(film_ok)
    assert time.perf_counter() - start < 1.0


# --- lab 03: the classes (module checks) ----------------------------------------------------------

import lab03_modules  # noqa: E402
from labkit.checks import _modules  # noqa: E402

MODULE_CHECKS = {"TimeEmbedding": c03.check_time_embedding, "ClassEmbedding": c03.check_class_embedding,
                 "ConvBlock": c03.check_conv_block, "ResBlock": c03.check_res_block, "UNet": c03.check_unet}
LIBRARY_CLASSES = {"TimeEmbedding": embeddings.TimeEmbedding, "ClassEmbedding": embeddings.ClassEmbedding,
                   "ConvBlock": unet.ConvBlock, "ResBlock": unet.ResBlock, "UNet": c03.labkit_unet}


@pytest.mark.parametrize("name", list(MODULE_CHECKS))
def test_module_checks_accept_labkit_and_a_students_classes(name, capsys):
    MODULE_CHECKS[name](LIBRARY_CLASSES[name])
    MODULE_CHECKS[name](lab03_modules.classes()[name])  # its own names for the middle: loaded by order
    MODULE_CHECKS[name](lab03_modules.classes()[name], seed=3)
    assert capsys.readouterr().out.count("passed") == 3


def test_module_checks_accept_the_instructor_solution(capsys):
    import solution_code

    namespace = solution_code.solution_namespace("lab03_embeddings")
    for name, check in MODULE_CHECKS.items():
        check(namespace[name])
    assert capsys.readouterr().out.count("passed") == len(MODULE_CHECKS)


@pytest.mark.parametrize("mistake", list(lab03_modules.MISTAKES))
def test_module_checks_name_mistakes(mistake):
    name, phrase = lab03_modules.MISTAKES[mistake]
    with pytest.raises(AssertionError, match=phrase):
        MODULE_CHECKS[name](lab03_modules.classes(mistake)[name])


def test_the_named_mistakes_are_the_reference_computed_another_way():
    """The hand-written forward passes behind the named mistakes give labkit's output without a mistake."""
    g = torch.Generator().manual_seed(0)
    net = c03.labkit_unet(base_channels=8, channel_mults=(1, 2), blocks_per_level=2, num_classes=3, groups=4)
    net = _modules.seeded_weights(net, 1).double().eval()
    x, t, y = torch.randn(2, 1, 10, 10, generator=g).double(), torch.tensor([0, 999]), torch.tensor([1, 3])
    with torch.no_grad():
        assert (c03._net(net, x, t, y) - net(x, t, y)).abs().max() < 1e-12
        te = net.time_embed
        pe = embeddings.sinusoidal_embedding(t, te.base, dtype=torch.float64)
        assert (c03._time_mlp(te, pe) - te(t)).abs().max() < 1e-12
        assert te(t).dtype == torch.float64  # TimeEmbedding follows its weights' dtype (model.double() works)


def test_module_checks_say_what_is_not_a_class_or_not_written():
    with pytest.raises(AssertionError, match="expected a class"):
        c03.check_res_block(42)

    class NotYet(torch.nn.Module):
        def __init__(self, in_channels=1, base_channels=32, channel_mults=(1, 2, 2), blocks_per_level=1, groups=8,
                     patch=2, num_classes=10):
            super().__init__()
            raise NotImplementedError()
    with pytest.raises(AssertionError, match="not implemented yet"):
        c03.check_unet(NotYet)
    assert c03.yours_or_labkit(c03.check_unet, NotYet, c03.labkit_unet, "UNet") is c03.labkit_unet


# --- lab 01: the schedules, x0 from eps, the posterior ------------------------------------------------------

def test_new_lab01_checks_accept_labkits_functions(capsys):
    from labkit import diffusion, schedules

    c01.check_linear_betas(schedules.linear_betas)
    c01.check_cosine_alpha_bars(schedules.cosine_alpha_bars)
    c01.check_predict_x0(diffusion.predict_x0_from_eps)
    c01.check_q_posterior(diffusion.q_posterior)
    assert capsys.readouterr().out.count("passed") == 4


@pytest.mark.parametrize("check, fn, phrase", [
    (c01.check_linear_betas, lambda T, lo, hi: torch.linspace(lo, hi, T, dtype=torch.float64), "not rescaled"),
    (c01.check_cosine_alpha_bars, lambda T, s: torch.ones(T, dtype=torch.float32), "float64"),
    (c01.check_predict_x0, lambda xt, t, e, ab: xt, None),
    (c01.check_q_posterior, lambda x0, xt, t, ab: x0, "two results"),
])
def test_new_lab01_checks_fail_wrong_answers(check, fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        check(fn)
