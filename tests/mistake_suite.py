"""Plausible wrong answers to every exercise, as students write them, with the phrase a helpful message contains.

``SUITE[(lab, exercise)]`` is a list of ``(label, wrong_function, phrase)``. ``phrase`` is a regular expression
that the check's message must contain for the mistake to count as *named*; ``None`` marks a mistake no check
is expected to name (it must still fail). ``tests/test_mistake_naming.py`` runs them all and
``benchmarks/mistake_naming.py`` prints the naming rate per lab (docs/checks.md).

Written from the mistakes seen in the labs' tests, the issue reports and the families a check should know
(a constant factor or offset, a flipped sign, a transpose, swapped halves, an edge step), not from the checks'
catalogues: a new check must name them without knowing this list.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _b(v, x):  # per-image [B] -> [B, 1, 1, 1]
    return v.view(-1, *([1] * (x.dim() - 1)))


# --- lab 00 ----------------------------------------------------------------------------------------------
LAB00 = [
    ("x / 2", lambda x: x / 2, "shift the range up by 1"),
    ("x + 1", lambda x: x + 1, "also divide by 2"),
    ("x / 2 + 1", lambda x: x / 2 + 1, "add 1 before dividing"),
    ("x * 2 - 1", lambda x: x * 2 - 1, "opposite direction"),
    ("clamp", lambda x: x.clamp(0, 1), "clamping"),
    ("x + 1 / 2 (precedence)", lambda x: x + 1 / 2, "operator precedence"),
    ("(x - 1) / 2", lambda x: (x - 1) / 2, "shift up by 1, not down"),
    ("(x + 1) * 2", lambda x: (x + 1) * 2, "width of the range"),
    ("(x + 0.5) / 2", lambda x: (x + 0.5) / 2, "shifted by 0.5"),
    ("(x + 1) / 4", lambda x: (x + 1) / 4, "constant factor"),
    ("-(x + 1) / 2", lambda x: -(x + 1) / 2, "sign error"),
    ("(x + 1) / 2 + 0.1", lambda x: (x + 1) / 2 + 0.1, "constant offset"),
    ("numpy", lambda x: ((x + 1) / 2).numpy(), "numpy"),
    ("no return", lambda x: None, "return"),
    ("sigmoid", lambda x: torch.sigmoid(x), None),
    ("min-max (outside suite)", lambda x: (x - x.min()) / (x.max() - x.min()), "min and max"),
    ("floor division (outside suite)", lambda x: (x + 1) // 2, "floor division"),
]

# --- lab 01 ----------------------------------------------------------------------------------------------
LAB01_ALPHA = [
    ("cumprod(beta)", lambda b: torch.cumprod(b, 0), "cumprod of the betas"),
    ("1 - cumprod(beta)", lambda b: 1 - torch.cumprod(b, 0), "1 - cumprod"),
    ("cumsum", lambda b: torch.cumsum(1 - b, 0), "cumulative sum"),
    ("1 - cumsum(beta)", lambda b: 1 - torch.cumsum(b, 0), "first-order"),
    ("shifted by one", lambda b: torch.cat([torch.ones(1, dtype=b.dtype), torch.cumprod(1 - b, 0)[:-1]]), "off by one"),
    ("prod (one number)", lambda b: torch.prod(1 - b), "single number"),
    ("sqrt", lambda b: torch.cumprod(1 - b, 0).sqrt(), "square root"),
    ("alphas", lambda b: 1 - b, "running product"),
    ("reversed", lambda b: torch.cumprod(1 - b, 0).flip(0), "reverse order"),
    ("product from the end", lambda b: torch.cumprod((1 - b).flip(0), 0).flip(0), "from the last step"),
    ("squared", lambda b: torch.cumprod(1 - b, 0) ** 2, "squared"),
    ("float16", lambda b: torch.cumprod(1 - b.half(), 0), "half precision"),
    ("in place", lambda b: torch.cumprod(b.mul_(-1).add_(1), 0), "in place"),
]

LAB01_SNR = [
    ("inverted", lambda ab: (1 - ab) / ab, "inverted"),
    ("sqrt", lambda ab: (ab / (1 - ab)).sqrt(), "square root of the SNR"),
    ("log", lambda ab: torch.log(ab / (1 - ab)), "log of the SNR"),
    ("1 + ab", lambda ab: ab / (1 + ab), "1 \\+ alpha_bar"),
    ("1 / (1 - ab)", lambda ab: 1 / (1 - ab), "missing from the numerator"),
    ("squared denominator", lambda ab: ab / (1 - ab) ** 2, "noise variance 1 - alpha_bar itself"),
    ("sqrt numerator", lambda ab: ab.sqrt() / (1 - ab), "numerator is the signal variance"),
    ("sqrt denominator", lambda ab: ab / (1 - ab).sqrt(), "not its std"),
    ("log10", lambda ab: torch.log10(ab / (1 - ab)), "log10"),
    ("2x", lambda ab: 2 * ab / (1 - ab), "constant factor"),
    ("negative", lambda ab: -ab / (1 - ab), "sign error"),
    ("numpy", lambda ab: (ab / (1 - ab)).numpy(), "numpy"),
    ("precedence (outside suite)", lambda ab: ab / 1 - ab, "operator precedence"),
]


def _q(x0, t, noise, ab, *, sa=None, sn=None, idx=None):
    a = _b(ab[t if idx is None else idx(t, len(ab))], x0)
    return (a.sqrt() if sa is None else sa(a)) * x0 + ((1 - a).sqrt() if sn is None else sn(a)) * noise


LAB01_Q = [
    ("variances", lambda x0, t, n, ab: _q(x0, t, n, ab, sa=lambda a: a, sn=lambda a: 1 - a), "variance instead of std"),
    ("noise variance", lambda x0, t, n, ab: _q(x0, t, n, ab, sn=lambda a: 1 - a), "sqrt missing on the noise"),
    ("signal variance", lambda x0, t, n, ab: _q(x0, t, n, ab, sa=lambda a: a), "sqrt missing on the signal"),
    ("swapped", lambda x0, t, n, ab: _q(x0, t, n, ab, sa=lambda a: (1 - a).sqrt(), sn=lambda a: a.sqrt()), "swapped"),
    ("t - 1", lambda x0, t, n, ab: _q(x0, t, n, ab, idx=lambda t, T: t - 1), "alpha_bars\\[t - 1\\]"),
    ("t - 1 clamped", lambda x0, t, n, ab: _q(x0, t, n, ab, idx=lambda t, T: (t - 1).clamp(min=0)), "alpha_bars\\[t - 1\\]"),
    ("t + 1", lambda x0, t, n, ab: _q(x0, t, n, ab, idx=lambda t, T: (t + 1).clamp(max=T - 1)), "alpha_bars\\[t \\+ 1\\]"),
    ("t[0]", lambda x0, t, n, ab: _q(x0, t, n, ab, idx=lambda t, T: t[:1].expand(len(t))), "the same step t\\[0\\]"),
    ("no noise", lambda x0, t, n, ab: _q(x0, t, n, ab, sn=lambda a: 0 * a), "noise term is missing"),
    ("unscaled noise", lambda x0, t, n, ab: _q(x0, t, n, ab, sn=lambda a: 1 + 0 * a), "added unscaled"),
    ("unscaled x0", lambda x0, t, n, ab: _q(x0, t, n, ab, sa=lambda a: 1 + 0 * a), "x0 is not scaled"),
    ("1 - sqrt", lambda x0, t, n, ab: _q(x0, t, n, ab, sn=lambda a: 1 - a.sqrt()), "1 - sqrt"),
    ("cumprod again", lambda x0, t, n, ab: _q(x0, t, n, torch.cumprod(ab, 0)), "multiplied up again"),
    ("noise subtracted", lambda x0, t, n, ab: _q(x0, t, n, ab, sn=lambda a: -(1 - a).sqrt()), "subtracted"),
    ("fresh noise", lambda x0, t, n, ab: _q(x0, t, torch.randn_like(n), ab), "use the inputs you are given"),
    ("no reshape", lambda x0, t, n, ab: ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * n, "\\[B, 1, 1, 1\\]"),
]

def _fc(x0, betas, noises, *, sx=None, sn=None, ks=None, z=None, restart=False, keep=False):
    x, xs = x0, []
    T = len(betas)
    for t in (range(T) if ks is None else ks(T)):
        b = betas[t].to(x0.dtype)
        cx = (1 - b).sqrt() if sx is None else sx(b)
        cn = b.sqrt() if sn is None else sn(b)
        x = cx * (x0 if restart else x) + cn * noises[t if z is None else z(t, T)]
        xs.append(x)
    return torch.stack(xs) if keep else x


LAB01_CHAIN = [
    ("variance on the noise", lambda x, b, n: _fc(x, b, n, sn=lambda b_: b_), "variance beta_t"),
    ("1 - beta on x", lambda x, b, n: _fc(x, b, n, sx=lambda b_: 1 - b_), "1 - beta_t"),
    ("x unscaled", lambda x, b, n: _fc(x, b, n, sx=lambda b_: 1 + 0 * b_), "x was not scaled"),
    ("noise unscaled", lambda x, b, n: _fc(x, b, n, sn=lambda b_: 1 + 0 * b_), "added unscaled"),
    ("noise subtracted", lambda x, b, n: _fc(x, b, n, sn=lambda b_: -b_.sqrt()), "subtracted"),
    ("alpha_bar each step", lambda x, b, n: _fc_ab(x, b, n, torch.cumprod(1 - b, 0)), "closed form q\\(x_t \\| x_0\\)"),
    ("noises[0] every step", lambda x, b, n: _fc(x, b, n, z=lambda t, T: 0), "same noise at every step"),
    ("noises[-1] every step", lambda x, b, n: _fc(x, b, n, z=lambda t, T: T - 1), "same noise at every step"),
    ("range(T - 1)", lambda x, b, n: _fc(x, b, n, ks=lambda T: range(T - 1)), "last step is missing"),
    ("range(1, T)", lambda x, b, n: _fc(x, b, n, ks=lambda T: range(1, T)), "first step is missing"),
    ("from x0 every step", lambda x, b, n: _fc(x, b, n, restart=True), "starts again from x0"),
    ("closed form", lambda x, b, n: (lambda ab: ab.sqrt().to(x.dtype) * x + (1 - ab).sqrt().to(x.dtype) * n[-1])(
        torch.cumprod(1 - b, 0)[-1]), "closed form with the last noise"),
    ("backwards", lambda x, b, n: _fc(x, b, n, ks=lambda T: range(T - 1, -1, -1)), "backwards"),
    ("trajectory", lambda x, b, n: _fc(x, b, n, keep=True), "only the last x"),
    ("fresh noise", lambda x, b, n: _fc(x, b, torch.randn_like(n)), "use the inputs you are given"),
    ("noise in place", lambda x, b, n: _fc(x, b, n.mul_(1.0001)), "in place"),
]


def _fc_ab(x, betas, noises, ab):
    for t in range(len(betas)):
        a = ab[t].to(x.dtype)
        x = a.sqrt() * x + (1 - a).sqrt() * noises[t]
    return x


def _lin(T, lo, hi, *, scale=True, n=None, start=0, flip=False):
    k = 1000 / T if scale else 1.0
    if n is None:
        b = torch.linspace(lo * k, hi * k, T, dtype=torch.float64)
    else:  # arange-style: (end - start) / n per step
        b = lo * k + (hi - lo) * k * (torch.arange(T, dtype=torch.float64) + start) / n
    return b.flip(0) if flip else b


LAB01_LIN = [
    ("no rescale", lambda T, lo, hi: _lin(T, lo, hi, scale=False), "not rescaled"),
    ("T / 1000", lambda T, lo, hi: torch.linspace(lo * T / 1000, hi * T / 1000, T, dtype=torch.float64), "T / 1000"),
    ("arange / T", lambda T, lo, hi: _lin(T, lo, hi, n=T), "last beta is missing"),
    ("arange from 1", lambda T, lo, hi: _lin(T, lo, hi, n=T, start=1), "first beta is missing"),
    ("T + 1 points", lambda T, lo, hi: torch.linspace(lo * 1000 / T, hi * 1000 / T, T + 1, dtype=torch.float64),
     "T \\+ 1 values"),
    ("reversed", lambda T, lo, hi: _lin(T, lo, hi, flip=True), "backwards"),
    ("only the end rescaled", lambda T, lo, hi: torch.linspace(lo, hi * 1000 / T, T, dtype=torch.float64),
     "only beta_end"),
    ("alphas", lambda T, lo, hi: 1 - _lin(T, lo, hi), "alphas"),
    ("a list", lambda T, lo, hi: _lin(T, lo, hi).tolist(), "torch.Tensor"),
    ("fixed endpoints", lambda T, lo, hi: _lin(T, 1e-4, 0.02), "use the arguments"),
]


def _cos(T, s, *, offset=True, norm=True, clip=0.999, drop="first", half=True, square=True, dtype=torch.float64,
         denom=None, betas=True):
    tt = torch.arange(T + 1, dtype=dtype) / (T if denom is None else denom)
    s_ = s if offset else 0.0
    c = torch.cos((tt + s_) / (1 + s_) * (math.pi / 2 if half else math.pi))
    f = c ** 2 if square else c
    ab = f / f[0] if norm else f
    if not betas:
        return ab[1:] if drop == "first" else ab[:-1]
    b = 1 - ab[1:] / ab[:-1]
    if clip is not None:
        b = b.clamp(max=clip)
    out = torch.cumprod(1 - b, 0)
    return out if drop == "first" else torch.cat([torch.ones(1, dtype=dtype), out[:-1]])


LAB01_COS = [
    ("no offset s", lambda T, s: _cos(T, s, offset=False), "offset s is missing"),
    ("no f(0), straight from f", lambda T, s: _cos(T, s, norm=False, betas=False), "normalised by f\\(0\\)"),
    ("no clip", lambda T, s: _cos(T, s, clip=None), "not clipped"),
    ("starts at 1", lambda T, s: _cos(T, s, drop="last"), "off by one in t"),
    ("straight from f", lambda T, s: _cos(T, s, betas=False), "not clipped"),
    ("straight from f, first kept", lambda T, s: _cos(T, s, betas=False, drop="last"), "off by one"),
    ("t / (T - 1)", lambda T, s: _cos(T, s, denom=T - 1), "T - 1"),
    ("linspace(0, 1, T)", lambda T, s: (lambda f: f / f[0])(torch.cos((torch.linspace(0, 1, T, dtype=torch.float64) + s)
                                                                       / (1 + s) * math.pi / 2) ** 2), "linspace"),
    ("cos not squared", lambda T, s: _cos(T, s, square=False), "not squared"),
    ("pi", lambda T, s: _cos(T, s, half=False), "pi where pi/2"),
    ("float32", lambda T, s: _cos(T, s, dtype=torch.float32), "float64"),
    ("T + 1 values", lambda T, s: (lambda f: f / f[0])(torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s)
                                                                  / (1 + s) * math.pi / 2) ** 2), "T \\+ 1 values"),
    ("clip 0.02", lambda T, s: _cos(T, s, clip=0.02), "0.02"),
    ("s fixed at 0.008", lambda T, s: _cos(T, 0.008), "argument s"),
]


def _x0(xt, t, e, ab, *, num=None, den=None, idx=None):
    a = _b(ab[t if idx is None else idx(t)], xt)
    n = xt - (1 - a).sqrt() * e if num is None else num(xt, e, a)
    return n / (a.sqrt() if den is None else den(a))


LAB01_X0 = [
    ("times sqrt", lambda xt, t, e, ab: _x0(xt, t, e, ab, den=lambda a: 1 / a.sqrt()), "multiplied by sqrt"),
    ("plus", lambda xt, t, e, ab: _x0(xt, t, e, ab, num=lambda x, e, a: x + (1 - a).sqrt() * e), "noise was added"),
    ("variances", lambda xt, t, e, ab: _x0(xt, t, e, ab, num=lambda x, e, a: x - (1 - a) * e, den=lambda a: a),
     "variances"),
    ("precedence", lambda xt, t, e, ab: xt - (1 - _b(ab[t], xt)).sqrt() * e / _b(ab[t], xt).sqrt(), "precedence"),
    ("divide by alpha_bar", lambda xt, t, e, ab: _x0(xt, t, e, ab, den=lambda a: a), "divided by alpha_bar_t"),
    ("noise no sqrt", lambda xt, t, e, ab: _x0(xt, t, e, ab, num=lambda x, e, a: x - (1 - a) * e), "sqrt is missing"),
    ("wrong denominator", lambda xt, t, e, ab: _x0(xt, t, e, ab, den=lambda a: (1 - a).sqrt()),
     "divided by sqrt\\(1 - alpha_bar_t\\)"),
    ("t - 1", lambda xt, t, e, ab: _x0(xt, t, e, ab, idx=lambda t: t - 1), "alpha_bars\\[t - 1\\]"),
    ("t[0]", lambda xt, t, e, ab: _x0(xt, t, e, ab, idx=lambda t: t[:1].expand(len(t))), "t\\[0\\]"),
    ("noise kept", lambda xt, t, e, ab: _x0(xt, t, e, ab, num=lambda x, e, a: x), "not removed"),
    ("q_sample", lambda xt, t, e, ab: _b(ab[t], xt).sqrt() * xt + (1 - _b(ab[t], xt)).sqrt() * e, "undoes q_sample"),
    ("no reshape", lambda xt, t, e, ab: (xt - (1 - ab[t]).sqrt() * e) / ab[t].sqrt(), "\\[B, 1, 1, 1\\]"),
    ("1 - sqrt", lambda xt, t, e, ab: _x0(xt, t, e, ab, num=lambda x, e, a: x - (1 - a.sqrt()) * e), None),
]


def _post(x0, xt, t, ab, *, prev=None, var=None, c=None, ret=None):
    a = _b(ab[t], xt)
    p = torch.where(t > 0, ab[(t - 1).clamp(min=0)], torch.ones_like(ab[t])) if prev is None else prev(ab, t)
    p = _b(p, xt)
    b = 1 - a / p
    c0, ct = (p.sqrt() * b / (1 - a), (1 - b).sqrt() * (1 - p) / (1 - a)) if c is None else c(a, p, b)
    v = (1 - p) / (1 - a) * b if var is None else var(a, p, b)
    mean = c0 * x0 + ct * xt
    return (mean, v) if ret is None else ret(mean, v)


LAB01_POST = [
    ("beta_t variance", lambda *a: _post(*a, var=lambda a_, p, b: b), "variance is beta_t"),
    ("std", lambda *a: _post(*a, var=lambda a_, p, b: ((1 - p) / (1 - a_) * b).sqrt()), "standard deviation"),
    ("1 - alpha_bar variance", lambda *a: _post(*a, var=lambda a_, p, b: 1 - a_), "1 - alpha_bar_t"),
    ("alpha_bars[t - 1] wraps", lambda *a: _post(*a, prev=lambda ab, t: ab[t - 1]), "wraps negative indices"),
    ("alpha_bars[t + 1]", lambda *a: _post(*a, prev=lambda ab, t: ab[(t + 1).clamp(max=len(ab) - 1)]),
     "alpha_bars\\[t \\+ 1\\]"),
    ("alpha_bar_t for alpha_bar_{t-1}", lambda *a: _post(*a, prev=lambda ab, t: ab[t]), "alpha_bar_t was used"),
    ("coefficients swapped", lambda *a: _post(*a, c=lambda a_, p, b: ((1 - b).sqrt() * (1 - p) / (1 - a_),
                                                                       p.sqrt() * b / (1 - a_))), "swapped"),
    ("alpha_t no sqrt", lambda *a: _post(*a, c=lambda a_, p, b: (p.sqrt() * b / (1 - a_), (1 - b) * (1 - p) / (1 - a_))),
     "without the sqrt"),
    ("alpha_bar_{t-1} no sqrt", lambda *a: _post(*a, c=lambda a_, p, b: (p * b / (1 - a_),
                                                                         (1 - b).sqrt() * (1 - p) / (1 - a_))),
     "without the sqrt"),
    ("sqrt(alpha_bar_t) on x0", lambda *a: _post(*a, c=lambda a_, p, b: (a_.sqrt() * b / (1 - a_),
                                                                         (1 - b).sqrt() * (1 - p) / (1 - a_))),
     "sqrt\\(alpha_bar_t\\)"),
    ("inverted variance", lambda *a: _post(*a, var=lambda a_, p, b: torch.where(p < 1, (1 - a_) / (1 - p).clamp(min=1e-12) * b,
                                                                                 0 * b)), "other way round"),
    ("variance [B]", lambda *a: _post(*a, ret=lambda m, v: (m, v.flatten())), "one value per image"),
    ("mean only", lambda *a: _post(*a, ret=lambda m, v: m), "two results"),
    ("x0 and xt swapped", lambda x0, xt, t, ab: _post(xt, x0, t, ab), "swapped"),
]

# --- lab 02 ----------------------------------------------------------------------------------------------
LAB02_CAT = [
    ("skip first", lambda h, s: torch.cat([s, h], 1), "wrong order"),
    ("dim 0", lambda h, s: torch.cat([h, s], 0), "dim 0"),
    ("dim 3", lambda h, s: torch.cat([h, s], 3), "dim 3"),
    ("added", lambda h, s: h + s, "instead of concatenated"),
    ("stacked", lambda h, s: torch.stack([h, s]), "torch.stack"),
    ("interleaved", lambda h, s: torch.stack([h, s], 2).flatten(1, 2), "interleaved"),
    ("h twice", lambda h, s: torch.cat([h, h], 1), "skip's channels are missing"),
    ("numpy", lambda h, s: torch.cat([h, s], 1).numpy(), "numpy"),
]

LAB02_UP = [
    ("factor 2", lambda h, s: torch.cat([F.interpolate(h, scale_factor=2), s], 1), "fixed factor 2"),
    ("no upsampling", lambda h, s: torch.cat([h, s], 1), "upsample h"),
    ("bilinear", lambda h, s: torch.cat([F.interpolate(h, size=s.shape[-2:], mode="bilinear"), s], 1), "bilinear"),
    ("bilinear corners", lambda h, s: torch.cat([F.interpolate(h, size=s.shape[-2:], mode="bilinear",
                                                              align_corners=True), s], 1), "align_corners"),
    ("nearest-exact", lambda h, s: torch.cat([F.interpolate(h, size=s.shape[-2:], mode="nearest-exact"), s], 1),
     "nearest-exact"),
    ("bicubic", lambda h, s: torch.cat([F.interpolate(h, size=s.shape[-2:], mode="bicubic"), s], 1), "bicubic"),
    ("skip first", lambda h, s: torch.cat([s, F.interpolate(h, size=s.shape[-2:])], 1), "wrong order"),
    ("no join", lambda h, s: F.interpolate(h, size=s.shape[-2:]), "instead of concatenated"),
    ("skip pooled down", lambda h, s: torch.cat([h, F.adaptive_avg_pool2d(s, h.shape[-2:])], 1), "down"),
]

# --- lab 03 ----------------------------------------------------------------------------------------------


def _pe(t, dim, *, order="interleave", exponent=lambda i, d: 2 * i / d, mult=False, tscale=1.0, toff=0, fn=None):
    i = torch.arange(dim // 2, dtype=torch.float32)
    freqs = torch.exp(math.log(10000.0) * exponent(i, dim) * (1 if mult else -1))
    a = (t.float() + toff)[:, None] * freqs[None, :] * tscale
    s, c = (torch.sin(a), torch.cos(a)) if fn is None else fn(a)
    if order == "interleave":
        return torch.stack([s, c], dim=-1).flatten(1)
    if order == "swap":
        return torch.stack([c, s], dim=-1).flatten(1)
    return torch.cat([s, c], 1) if order == "sincos" else torch.cat([c, s], 1)


LAB03_PE = [
    ("swapped", lambda t, d: _pe(t, d, order="swap"), "swapped"),
    ("sin block", lambda t, d: _pe(t, d, order="sincos"), "all sines first"),
    ("cos block", lambda t, d: _pe(t, d, order="cossin"), "all cosines first"),
    ("i / dim", lambda t, d: _pe(t, d, exponent=lambda i, d_: i / d_), "wrong frequency exponent"),
    ("multiplied", lambda t, d: _pe(t, d, mult=True), "multiplied by 10000"),
    ("2 pi", lambda t, d: _pe(t, d, tscale=2 * math.pi), "2\\*pi"),
    ("sin only", lambda t, d: _pe(t, d, fn=lambda a: (torch.sin(a), torch.sin(a))), "sines in every column"),
    ("cos only", lambda t, d: _pe(t, d, fn=lambda a: (torch.cos(a), torch.cos(a))), "cosines in every column"),
    ("i + 1", lambda t, d: _pe(t, d, exponent=lambda i, d_: 2 * (i + 1) / d_), "frequency index"),
    ("t + 1", lambda t, d: _pe(t, d, toff=1), "t \\+ 1"),
    ("dim - 2", lambda t, d: _pe(t, d, exponent=lambda i, d_: 2 * i / max(d_ - 2, 1)), "dim - 1"),
    ("transposed", lambda t, d: _pe(t, d).T, "transposed"),
    ("half the columns", lambda t, d: _pe(t, d)[:, : d // 2], "only dim/2"),
    ("new tensors on the CPU", lambda t, d: _pe(t, d), "on the CPU whatever device"),
    ("max period 1000", lambda t, d: _pe(t, d, exponent=lambda i, d_: 2 * i / d_ * math.log(1000) / math.log(10000)),
     "10000"),
    ("base 1000 (outside suite)", lambda t, d: _pe(t, d, exponent=lambda i, d_: 2 * i / d_ * math.log(1000) / math.log(10000)),
     "10000"),
]


def _unit(v, dim=-1):
    return v / v.norm(dim=dim, keepdim=True)


LAB03_COS = [
    ("dot products", lambda e: e @ e.T, "raw dot products"),
    ("columns", lambda e: _unit(e, 0) @ _unit(e, 0).T, "wrong dimension"),
    ("distance", lambda e: 1 - _unit(e) @ _unit(e).T, "distance"),
    ("euclidean", lambda e: torch.cdist(e, e), "Euclidean"),
    ("squared lengths", lambda e: (e @ e.T) / (e.norm(dim=1) ** 2)[:, None] / (e.norm(dim=1) ** 2)[None], "squared"),
    ("one side", lambda e: _unit(e) @ e.T, "only one side"),
    ("matrix norm", lambda e: (e @ e.T) / e.norm() ** 2, "whole matrix"),
    ("softmax", lambda e: (_unit(e) @ _unit(e).T).softmax(1), "softmax"),
    ("columns compared", lambda e: _unit(e, 0).T @ _unit(e, 0), "columns"),
]

LAB03_FILM = [
    ("no 1 +", lambda h, s, b: h * s[:, :, None, None] + b[:, :, None, None], "'1 \\+' is missing"),
    ("swapped", lambda h, s, b: h * (1 + b[:, :, None, None]) + s[:, :, None, None], "swapped"),
    ("shift first", lambda h, s, b: (h + b[:, :, None, None]) * (1 + s[:, :, None, None]), "before scaling"),
    ("no shift", lambda h, s, b: h * (1 + s[:, :, None, None]), "shift is missing"),
    ("minus shift", lambda h, s, b: h * (1 + s[:, :, None, None]) - b[:, :, None, None], "subtracted"),
    ("1 - scale", lambda h, s, b: h * (1 - s[:, :, None, None]) + b[:, :, None, None], "1 - scale"),
    ("times shift", lambda h, s, b: h * (1 + s[:, :, None, None]) * b[:, :, None, None], "multiplies instead"),
    ("scale + shift", lambda h, s, b: h * (1 + s[:, :, None, None] + b[:, :, None, None]), "added together"),
    ("no reshape", lambda h, s, b: h * (1 + s) + b, "reshape them"),
    ("wrong axes", lambda h, s, b: h * (1 + s[:, None, None, :]) + b[:, None, None, :], "\\[B, C, 1, 1\\]"),
    ("precedence (outside suite)", lambda h, s, b: 1 + s[:, :, None, None] * h + b[:, :, None, None], "precedence"),
    ("normalised h (outside suite)", lambda h, s, b: F.group_norm(h, h.shape[1]) * (1 + s[:, :, None, None])
     + b[:, :, None, None], "normalised"),
]

# --- lab 04 ----------------------------------------------------------------------------------------------


def _loss(model, x0, y, t, noise, ab, *, xt=None, target=None, reduce=None, tt=None, yy=None, fresh=False):
    a = _b(ab[t], x0).float()
    if fresh:
        noise = torch.randn_like(noise)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise if xt is None else xt(a, x0, noise)
    eps = model(x_t, t if tt is None else tt(t, len(ab)), y if yy is None else yy(y))
    tgt = noise if target is None else target(x0, x_t, noise)
    d = eps - tgt
    return (d ** 2).mean() if reduce is None else reduce(d)


LAB04_LOSS = [
    ("model sees x0", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, xt=lambda a, x, e: x), "given x0"),
    ("target x0", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, target=lambda x, xt, e: x), "target is x0"),
    ("target xt", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, target=lambda x, xt, e: xt), "target is x_t"),
    ("variances", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, xt=lambda a, x, e: a * x + (1 - a) * e),
     "uses variances"),
    ("sum", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, reduce=lambda d: (d ** 2).sum()), "a sum instead"),
    ("sum over pixels", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, reduce=lambda d: (d ** 2).flatten(1)
                                                         .sum(1).mean()), "summed over pixels"),
    ("L1", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, reduce=lambda d: d.abs().mean()), "absolute error"),
    ("RMSE", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, reduce=lambda d: (d ** 2).mean().sqrt()),
     "square root of the MSE"),
    ("no class", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, yy=lambda y: torch.full_like(y, 10)), "no class"),
    ("t + 1", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, tt=lambda t, T: (t + 1).clamp(max=T - 1)),
     "t \\+ 1"),
    ("unscaled noise", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, xt=lambda a, x, e: a.sqrt() * x + e),
     "noise coefficient is missing"),
    ("half MSE", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, reduce=lambda d: 0.5 * (d ** 2).mean()),
     "half the mean squared error"),
    (".item()", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab).item(), "Python float"),
    ("detached", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab).detach(), "carries no gradient"),
    ("per image", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, reduce=lambda d: (d ** 2).flatten(1).mean(1)),
     "single number"),
    ("fresh noise", lambda m, x0, y, t, n, ab: _loss(m, x0, y, t, n, ab, fresh=True), "use the inputs you are given"),
]


def _step(order, *, ret="item", loss_calls=1):
    def fn(model, optimizer, compute_loss):
        loss = None
        for op in order:
            if op == "zero":
                optimizer.zero_grad()
            elif op == "loss":
                loss = compute_loss()
                for _ in range(loss_calls - 1):
                    loss = compute_loss()
            elif op == "back":
                loss.backward()
            elif op == "neg":
                (-loss).backward()
            elif op == "step":
                optimizer.step()
        return None if ret is None else loss.item()
    return fn


LAB04_STEP = [
    ("no zero_grad", _step(["loss", "back", "step"]), "not cleared"),
    ("zero_grad after backward", _step(["loss", "back", "zero", "step"]), "did not move"),
    ("step before backward", _step(["zero", "loss", "step", "back"]), "wrong order"),
    ("step twice", _step(["zero", "loss", "back", "step", "step"]), "twice"),
    ("loss twice", _step(["zero", "loss", "back", "step"], loss_calls=2), "called 2 times"),
    ("no return", _step(["zero", "loss", "back", "step"], ret=None), "nothing was returned"),
    ("no step", _step(["zero", "loss", "back"]), "did not move"),
    ("uphill", _step(["zero", "loss", "neg", "step"]), "uphill"),
    ("zero_grad after step only", _step(["loss", "back", "step", "zero"]), "not cleared"),
    ("no loss", lambda m, o, c: 0.0, "never called"),
]


def _drop(y, p, null_class, generator, *, keep=False, value=None, mask=None, in_place=False, global_rng=False):
    u = torch.rand(y.shape, generator=None if global_rng else generator)
    drop = mask(u, p) if mask is not None else ((u >= p) if keep else (u < p))
    if in_place:
        y[drop] = null_class
        return y
    return torch.where(drop, torch.full_like(y, null_class if value is None else value), y)


LAB04_DROP = [
    ("keep probability", lambda y, p, n, g: _drop(y, p, n, g, keep=True), "probability 1 - p"),
    ("null class 0", lambda y, p, n, g: _drop(y, p, n, g, value=0), "null_class"),
    ("u > 1 - p", lambda y, p, n, g: _drop(y, p, n, g, mask=lambda u, p: u > 1 - p), "u < p"),
    ("never dropped", lambda y, p, n, g: y.clone(), "no label was dropped"),
    ("all dropped", lambda y, p, n, g: torch.full_like(y, n), "every label was dropped"),
    ("global RNG", lambda y, p, n, g: _drop(y, p, n, g, global_rng=True), "generator"),
    ("in place", lambda y, p, n, g: _drop(y, p, n, g, in_place=True), "in place"),
    ("randint mask", lambda y, p, n, g: torch.where(torch.randint(0, 100, y.shape, generator=g) < 100 * p,
                                                    torch.full_like(y, n), y), "torch.rand"),
    ("float labels", lambda y, p, n, g: _drop(y, p, n, g).float(), "int64"),
]


def _ema(ema, model, decay, *, rule=None, no_grad=True, target="ema"):
    import contextlib

    with torch.no_grad() if no_grad else contextlib.nullcontext():
        for e, m in zip(ema.parameters(), model.parameters()):
            new = rule(e, m, decay) if rule else decay * e + (1 - decay) * m
            (e if target == "ema" else m).copy_(new)


def _lr04(steps, lr, W, S, m, *, warm0=False, le=False, nowarm=False, floor=None, p_from0=False, noclamp=False,
          linear=False, rising=False, nopi=False, float_out=False, python=False):
    """A student's warmup_cosine_lr with one mistake switched on."""
    import math

    s = steps.double()
    warm = lr * (s if warm0 else s + 1) / max(1, W)
    p = (s / max(1, S)) if p_from0 else (s - W) / max(1, S - W)
    p = p if noclamp else p.clamp(0, 1)
    lo = lr * m if floor is None else floor(lr, m)
    c = torch.cos(p if nopi else math.pi * p)
    cos = lo + (lr - lo) * (1 - p) if linear else lo + (lr - lo) * 0.5 * ((1 - c) if rising else (1 + c))
    out = cos if nowarm else torch.where(s <= W if le else s < W, warm, cos)
    if python:
        return [float(v) for v in out]
    return out.float() if float_out else out


LAB04_LR = [
    ("warmup from 0", lambda *a: _lr04(*a, warm0=True), "warmup starts at 0"),
    ("warmup s <= W", lambda *a: _lr04(*a, le=True), "one step too long"),
    ("no warmup", lambda *a: _lr04(*a, nowarm=True), "no warmup"),
    ("decays to 0", lambda *a: _lr04(*a, floor=lambda lr, m: 0.0), "decays to 0"),
    ("min_ratio as lr", lambda *a: _lr04(*a, floor=lambda lr, m: m), "a ratio"),
    ("p from step 0", lambda *a: _lr04(*a, p_from0=True), "counts from step 0"),
    ("p not clamped", lambda *a: _lr04(*a, noclamp=True), "not clamped"),
    ("linear decay", lambda *a: _lr04(*a, linear=True), "linear"),
    ("rising cosine", lambda *a: _lr04(*a, rising=True), "rises instead of falling"),
    ("no pi", lambda *a: _lr04(*a, nopi=True), "no pi"),
    ("a list", lambda *a: _lr04(*a, python=True), "torch.Tensor"),
]

LAB04_EMA = [
    ("reversed", lambda e, m, d: _ema(e, m, d, rule=lambda e_, m_, d_: (1 - d_) * e_ + d_ * m_), "reversed"),
    ("copy", lambda e, m, d: _ema(e, m, d, rule=lambda e_, m_, d_: m_), "copy of the model"),
    ("no model share", lambda e, m, d: _ema(e, m, d, rule=lambda e_, m_, d_: d_ * e_), "model's share"),
    ("plain average", lambda e, m, d: _ema(e, m, d, rule=lambda e_, m_, d_: (e_ + m_) / 2), "plain average"),
    ("updates the model", lambda e, m, d: _ema(e, m, d, target="model"), "model's weights changed"),
    ("no no_grad", lambda e, m, d: [x.mul_(d).add_((1 - d) * y) for x, y in zip(e.parameters(), m.parameters())],
     "no_grad"),
    ("local name only", lambda e, m, d: [d * x + (1 - d) * y for x, y in zip(e.parameters(), m.parameters())],
     "did not change"),
    ("buffers only", lambda e, m, d: None, "did not change"),
]


def _loop(model, ema, optimizer, images, labels, alpha_bars, steps, batch_size, generator, label_dropout, ema_decay,
          first_step=0, *, no_train=False, t_lo=0, t_hi=None, noise_twice=False, target_x0=False, no_drop=False,
          no_zero=False, ema_rule=None, order="idtn", step_offset=0, ignore_first=False, ret=True, no_ema=False):
    """A student's train_loop, with labkit's pieces, and one mistake switched on."""
    from labkit import diffusion, training

    if not no_train:
        model.train()
    T, N, B = len(alpha_bars), len(images), batch_size
    losses = []
    steps_range = range(steps) if ignore_first else range(first_step, first_step + steps)
    for step in steps_range:
        d = {}
        for what in order:
            if what == "i":
                d["idx"] = torch.randint(0, N, (B,), generator=generator)
            elif what == "d":
                d["drop"] = torch.rand(B, generator=generator) < label_dropout
            elif what == "t":
                d["t"] = torch.randint(t_lo, T if t_hi is None else t_hi, (B,), generator=generator)
            else:
                d["noise"] = torch.randn((B, *images.shape[1:]), generator=generator)
                if noise_twice:
                    d["noise2"] = torch.randn((B, *images.shape[1:]), generator=generator)
        x0, y = images[d["idx"]], labels[d["idx"]]
        if not no_drop:
            y = torch.where(d["drop"], torch.full_like(y, 10), y)
        t, noise = d["t"], d["noise"]

        def compute_loss():
            if target_x0 or noise_twice:
                a = alpha_bars[t].float().view(-1, 1, 1, 1)
                xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
                return F.mse_loss(model(xt, t, y), x0 if target_x0 else d["noise2"])
            return diffusion.noise_prediction_loss(model, x0, y, t, noise, alpha_bars)

        if no_zero:
            loss = compute_loss()
            loss.backward()
            optimizer.step()
            loss = loss.item()
        else:
            loss = training.train_step(model, optimizer, compute_loss)
        decay = training.ema_decay_at(step + step_offset, ema_decay)
        if not no_ema:
            with torch.no_grad():
                for e, m in zip(ema.parameters(), model.parameters()):
                    e.copy_(ema_rule(e, m, decay, ema_decay) if ema_rule else decay * e + (1 - decay) * m)
        losses.append(loss)
    return losses if ret else None


def _loop_with(**mistake):
    return lambda *args: _loop(*args, **mistake)


LAB04_LOOP = [
    ("no model.train()", _loop_with(no_train=True), "eval mode"),
    ("no zero_grad", _loop_with(no_zero=True), "never cleared"),
    ("EMA decay reversed", _loop_with(ema_rule=lambda e, m, d, d0: (1 - d) * e + d * m), "reversed"),
    ("EMA without warm-up", _loop_with(ema_rule=lambda e, m, d, d0: d0 * e + (1 - d0) * m), "warm-up"),
    ("no EMA", _loop_with(no_ema=True), "EMA's parameters did not change"),
    ("t in 1..T-1", _loop_with(t_lo=1), "0..T-1"),
    ("t in 1..T", lambda *a: _loop(*a, t_lo=1, t_hi=len(a[5]) + 1), "0..T-1"),
    ("noise drawn twice", _loop_with(noise_twice=True), "drawn twice"),
    ("loss on x0", _loop_with(target_x0=True), "target"),
    ("no label dropout", _loop_with(no_drop=True), "no label was dropped"),
    ("t before the batch", _loop_with(order="tidn"), "order"),
    ("noise before t", _loop_with(order="idnt"), "order"),
    ("dropout mask last", _loop_with(order="itnd"), "after t and the noise"),
    ("steps counted from 1", _loop_with(step_offset=1), "numbered from 1"),
    ("no return", _loop_with(ret=False), "nothing was returned"),
    ("no step at all", lambda *a: [0.0] * a[6], "did not change"),
]

# --- lab 05 ----------------------------------------------------------------------------------------------


def _ps(x, t, eps, betas, ab, z, *, var=None, mean=None, noise_at_0=False, z_new=False):
    b, a = _b(betas[t], x), _b(ab[t], x)
    a_prev = _b(torch.where(t > 0, ab[(t - 1).clamp(min=0)], torch.ones_like(ab[t])), x)
    m = (x - b / (1 - a).sqrt() * eps) / (1 - b).sqrt() if mean is None else mean(x, eps, b, a)
    v = (1 - a_prev) / (1 - a) * b if var is None else var(b, a, a_prev, t, ab, x)
    if not noise_at_0:
        v = torch.where(_b(t, x) == 0, torch.zeros_like(v), v)
    if z_new:
        z = torch.randn_like(z)
    return (m + v.sqrt() * z).to(x.dtype)


def _wrap_prev(b, a, a_prev, t, ab, x):
    return (1 - _b(ab[t - 1], x)) / (1 - a) * b


LAB05 = [
    ("variance as std", lambda *a: _ps(*a, var=lambda b, a_, p, t, ab, x: ((1 - p) / (1 - a_) * b) ** 2),
     "variance was used as the standard deviation"),
    ("ab[t - 1] wraps", lambda *a: _ps(*a, var=_wrap_prev, noise_at_0=True), "wraps negative"),
    ("beta_t", lambda *a: _ps(*a, var=lambda b, a_, p, t, ab, x: b), "sigma_t\\^2 = beta_t"),
    ("ab[t + 1]", lambda *a: _ps(*a, var=lambda b, a_, p, t, ab, x: (1 - _b(ab[(t + 1).clamp(max=len(ab) - 1)], x))
                                 / (1 - a_) * b), "alpha_bars\\[t \\+ 1\\]"),
    ("noise at t = 0", lambda *a: _ps(*a, var=lambda b, a_, p, t, ab, x: torch.where(_b(t, x) == 0, b, (1 - p) /
                                                                                   (1 - a_) * b), noise_at_0=True),
     "noise was added at t = 0"),
    ("no noise", lambda *a: _ps(*a, var=lambda b, a_, p, t, ab, x: 0 * b), "no noise was added"),
    ("sqrt(alpha_bar)", lambda *a: _ps(*a, mean=lambda x, e, b, a_: (x - b / (1 - a_).sqrt() * e) / a_.sqrt()),
     "divides by sqrt\\(alpha_bar_t\\)"),
    ("times sqrt(alpha)", lambda *a: _ps(*a, mean=lambda x, e, b, a_: (1 - b).sqrt() * (x - b / (1 - a_).sqrt() * e)),
     "multiplies by sqrt"),
    ("coef no sqrt", lambda *a: _ps(*a, mean=lambda x, e, b, a_: (x - b / (1 - a_) * e) / (1 - b).sqrt()),
     "lacks its sqrt"),
    ("x0 coef", lambda *a: _ps(*a, mean=lambda x, e, b, a_: (x - (1 - a_).sqrt() * e) / (1 - b).sqrt()),
     "x0 formula"),
    ("eps added", lambda *a: _ps(*a, mean=lambda x, e, b, a_: (x + b / (1 - a_).sqrt() * e) / (1 - b).sqrt()),
     "is added to x_t"),
    ("tilde inverted", lambda *a: _ps(*a, var=lambda b, a_, p, t, ab, x: (1 - a_) / (1 - p).clamp(min=1e-12) * b),
     "other way round"),
    ("forward std", lambda *a: _ps(*a, var=lambda b, a_, p, t, ab, x: 1 - a_), "forward process"),
    ("z unscaled", lambda *a: _ps(*a, var=lambda b, a_, p, t, ab, x: 1 + 0 * b), "z was added unscaled"),
    ("mean is x0_hat", lambda *a: _ps(*a, mean=lambda x, e, b, a_: (x - (1 - a_).sqrt() * e) / a_.sqrt()),
     "mean is x0_hat"),
    ("new noise", lambda *a: _ps(*a, z_new=True), "use the inputs you are given"),
    ("t[0] for all", lambda x, t, e, b, ab, z: _ps(x, t[:1].expand(len(t)), e, b, ab, z), "same step t\\[0\\]"),
    ("divides by alpha (outside suite)", lambda *a: _ps(*a, mean=lambda x, e, b, a_: (x - b / (1 - a_).sqrt() * e)
                                                         / (1 - b)), "divides by alpha_t"),
]


# The sampling loop, as students write it around their (here: labkit's) p_sample_step.
def _loop05(model, x_T, y, timesteps, betas, alpha_bars, noises, *, ks=None, model_t=None, z_of=None, from_x_T=False,
            once=False, k_int=False, ret=None, scalar_t=False, cast=True, inplace=False):
    from labkit.samplers import p_sample_step

    S, B = len(timesteps), x_T.shape[0]
    x, eps = (x_T if not inplace else x_T), None
    xs = []
    for k in (range(S - 1, -1, -1) if ks is None else ks(S)):
        t = timesteps[k] if model_t is None else model_t(k, timesteps)
        t = t if scalar_t else t.expand(B) if t.dim() == 0 else t
        src = x_T if from_x_T else x
        if eps is None or not once:
            eps = model(src, t, y)
        kk = k if k_int else torch.full((B,), k)
        new = p_sample_step(src, kk, eps, betas, alpha_bars, noises[k if z_of is None else z_of(k, S)])
        new = new.to(x_T.dtype) if cast else new.double()
        if inplace:
            x.copy_(new)
        else:
            x = new
        xs.append(x)
    return x if ret is None else ret(xs)


LAB05_LOOP = [
    ("forwards", lambda *a: _loop05(*a, ks=lambda S: range(S)), "runs forwards"),
    ("stops before k = 0", lambda *a: _loop05(*a, ks=lambda S: range(S - 1, 0, -1)), "stops before the last step"),
    ("starts at S", lambda *a: _loop05(*a, ks=lambda S: range(S, -1, -1)), "index is out of range"),
    ("skips the first step", lambda *a: _loop05(*a, ks=lambda S: range(S - 2, -1, -1)), "skips its first step"),
    ("model sees k", lambda *a: _loop05(*a, model_t=lambda k, ts: torch.tensor(k)), "real time step timesteps\\[k\\]"),
    ("step gets timesteps[k]", lambda m, x, y, ts, b, ab, n: _loop05(m, x, y, ts, b, ab, n, ks=lambda S: [int(t) for t in
                                                                                                       ts.flip(0)]),
     "chain's step k"),
    ("same z (noises[0])", lambda *a: _loop05(*a, z_of=lambda k, S: 0), "same noise at every step"),
    ("same z (noises[-1])", lambda *a: _loop05(*a, z_of=lambda k, S: -1), "same noise at every step"),
    ("z in loop order", lambda *a: _loop05(*a, z_of=lambda k, S: S - 1 - k), "order of the loop"),
    ("x not updated", lambda *a: _loop05(*a, from_x_T=True), "starts again from x_T"),
    ("model once", lambda *a: _loop05(*a, once=True), "called once"),
    ("scalar t", lambda *a: _loop05(*a, scalar_t=True), "shape \\[B\\]"),
    ("float64 x", lambda *a: _loop05(*a, cast=False), "dtype"),
    ("x_T in place", lambda *a: _loop05(*a, inplace=True), "in place"),
    ("returns the trajectory", lambda *a: torch.stack(_loop05(*a, ret=lambda xs: xs)), "only the last x"),
    ("fresh noise", lambda m, x, y, ts, b, ab, n: _loop05(m, x, y, ts, b, ab, torch.randn_like(n)),
     "use the inputs you are given"),
    ("no class (outside suite)", lambda m, x, y, ts, b, ab, n: _loop05(m, x, torch.full_like(y, 10), ts, b, ab, n),
     "no class"),
    ("label dropout at sampling", lambda m, x, y, ts, b, ab, n: _loop05(m, x, _dropped(y), ts, b, ab, n),
     "label dropout belongs to training"),
]


def _dropped(y):
    """Lab 04's label dropout copied into sampling (seeded so that the suite is repeatable): the first image
    keeps its label, the second is told "no class", the rest at random with p = 0.5."""
    from labkit.training import drop_labels

    out = drop_labels(y, 0.5, 10, torch.Generator().manual_seed(len(y)))
    out[0], out[1] = y[0], 10
    return out

# --- lab 06 ----------------------------------------------------------------------------------------------
LAB06_COS = [
    ("no normalisation", lambda i, t: i @ t.T, "no normalisation"),
    ("images only", lambda i, t: _unit(i) @ t.T, "only the image"),
    ("texts only", lambda i, t: i @ _unit(t).T, "only the text"),
    ("columns", lambda i, t: _unit(i, 0) @ _unit(t, 0).T, "wrong dimension"),
    ("softmax", lambda i, t: (_unit(i) @ _unit(t).T).softmax(1), "softmax"),
    ("squared lengths", lambda i, t: (i / (i * i).sum(1, keepdim=True)) @ (t / (t * t).sum(1, keepdim=True)).T,
     "squared lengths"),
    ("transposed", lambda i, t: _unit(t) @ _unit(i).T, "transposed"),
    ("matrix norms", lambda i, t: (i @ t.T) / (i.norm() * t.norm()), "total lengths"),
    ("images with themselves", lambda i, t: _unit(i) @ _unit(i).T, "with themselves"),
    ("distance", lambda i, t: 1 - _unit(i) @ _unit(t).T, "distance"),
]

LAB06_ZS = [
    ("dim 0", lambda c, s: (s * c).softmax(0), "over the images"),
    ("no scale", lambda c, s: c.softmax(1), "logit_scale is missing"),
    ("divided", lambda c, s: (c / s).softmax(1), "divided by logit_scale"),
    ("log_softmax", lambda c, s: (s * c).log_softmax(1), "log-probabilities"),
    ("scale after", lambda c, s: s * c.softmax(1), "after the softmax"),
    ("sigmoid", lambda c, s: torch.sigmoid(s * c), "sigmoid"),
    ("no exp", lambda c, s: (s * c) / (s * c).sum(1, keepdim=True), "without exp"),
    ("whole matrix", lambda c, s: (s * c).exp() / (s * c).exp().sum(), "whole matrix"),
    ("exp only", lambda c, s: (s * c).exp(), "exp"),
    ("argmax", lambda c, s: (s * c).argmax(1), "one number per image"),
    ("transposed", lambda c, s: (s * c).softmax(1).T, "transposed"),
]

def _stats(f, *, n_minus=1, centre=True, mean_dim=0, transpose=False, numpy_like=False):
    f = f.T if transpose else f
    mu = f.mean(dim=mean_dim, keepdim=mean_dim == 1)
    c = f - mu if centre else f
    cov = c.T @ c / (f.shape[0] - n_minus)
    return (mu[:, 0] if mean_dim == 1 else mu), cov


def _fd(mu1, s1, mu2, s2, *, factor=2.0, root="product", mean_power=2, sign=-1.0):
    mu1, s1, mu2, s2 = (v.double() for v in (mu1, s1, mu2, s2))
    if root == "product":
        cross = torch.linalg.eigvals(s1 @ s2).real.clamp(min=0).sqrt().sum()
    elif root == "separately":
        def r(s):
            vals, vecs = torch.linalg.eigh(s)
            return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T
        cross = torch.trace(r(s1) @ r(s2))
    elif root == "none":
        cross = torch.trace(s1 @ s2)
    elif root == "elementwise":
        cross = torch.trace((s1 @ s2).clamp(min=0).sqrt())
    elif root == "of trace":
        cross = torch.trace(s1 @ s2).sqrt()
    mean_term = ((mu1 - mu2) ** 2).sum() ** (mean_power / 2)
    return float(mean_term + torch.trace(s1) + torch.trace(s2) + sign * factor * cross)


def _boot(samples, statistic, resamples, level, generator, *, draw="randint", tails="right", how="linear",
          order=1):
    n = samples.shape[0]
    if draw == "randint":
        idx = torch.randint(0, n, (resamples, n), generator=generator)
    elif draw == "randperm":
        idx = torch.stack([torch.randperm(n, generator=generator) for _ in range(resamples)])
    elif draw == "transposed":
        idx = torch.randint(0, n, (n, resamples), generator=generator).T
    elif draw == "global":
        idx = torch.randint(0, n, (resamples, n))
    elif draw == "square":
        idx = torch.randint(0, n, (resamples, resamples), generator=generator)
    values = torch.tensor([float(statistic(samples[i])) for i in idx], dtype=torch.float64)
    lo, hi = {"level": (1 - level, level), "half level": (level / 2, 1 - level / 2)}.get(
        tails, ((1 - level) / 2, (1 + level) / 2))
    lo, hi = min(lo, hi), max(lo, hi)
    if tails == "percent":
        lo, hi = 100 * lo, 100 * hi
    out = torch.quantile(values, torch.tensor([lo, hi], dtype=torch.float64), interpolation=how)
    return out.flip(0) if order < 0 else out


LAB06_STATS = [
    ("biased (N)", lambda f: _stats(f, n_minus=0), "biased"),
    ("not centred", lambda f: _stats(f, centre=False), "not centred"),
    ("per-row mean", lambda f: _stats(f, mean_dim=1), "each row|one value per sample"),
    ("torch.cov(features)", lambda f: (f.mean(0), torch.cov(f)), "\\[N, N\\]"),
    ("no division", lambda f: (f.mean(0), (f - f.mean(0)).T @ (f - f.mean(0))), "not divided"),
    ("variances only", lambda f: (f.mean(0), torch.diag(f.var(0))), "only the variances"),
    ("var vector", lambda f: (f.mean(0), f.var(0)), "only the variances"),
    ("correlation", lambda f: (f.mean(0), torch.corrcoef(f.T)), "correlation"),
    ("sum not mean", lambda f: (f.sum(0), torch.cov(f.T)), "a sum, not a mean"),
    ("keepdim mean", lambda f: (f.mean(0, keepdim=True), torch.cov(f.T)), "\\[1, D\\]"),
    ("one return", lambda f: torch.cov(f.T), "return two things"),
    ("divided by D - 1", lambda f: (f.mean(0), (f - f.mean(0)).T @ (f - f.mean(0)) / (f.shape[1] - 1)), "D - 1"),
    ("numpy", lambda f: (f.mean(0).numpy(), torch.cov(f.T)), "numpy"),
]

LAB06_FD = [
    ("factor 2 missing", lambda *a: _fd(*a, factor=1.0), "factor 2 is missing"),
    ("sqrt of each matrix", lambda *a: _fd(*a, root="separately"), "separately"),
    ("norm not squared", lambda *a: _fd(*a, mean_power=1), "not squared"),
    ("no mean term", lambda m1, s1, m2, s2: _fd(m1, s1, m1, s2), "mean term is missing"),
    ("no trace term", lambda m1, s1, m2, s2: float(((m1 - m2) ** 2).sum()), "trace term is missing"),
    ("no square root", lambda *a: _fd(*a, root="none"), "no square root"),
    ("elementwise sqrt", lambda *a: _fd(*a, root="elementwise"), "elementwise"),
    ("sqrt of the trace", lambda *a: _fd(*a, root="of trace"), "square root of the trace"),
    ("plus sign", lambda *a: _fd(*a, sign=1.0), "subtracted"),
    ("d not d^2", lambda *a: _fd(*a) ** 0.5, "not its square"),
    ("per dimension", lambda m1, s1, m2, s2: (m1 - m2) ** 2, "one number"),
    ("no return", lambda *a: None, "return"),
]

LAB06_BOOT = [
    ("without replacement", lambda *a: _boot(*a, draw="randperm"), "with replacement"),
    ("percentiles 1 - level, level", lambda *a: _boot(*a, tails="level"), "1 - level and level"),
    ("tails level / 2", lambda *a: _boot(*a, tails="half level"), "level / 2"),
    ("nearest rank", lambda *a: _boot(*a, how="nearest"), "nearest rank"),
    ("lower rank", lambda *a: _boot(*a, how="lower"), "nearest rank"),
    ("high, low", lambda *a: _boot(*a, order=-1), "\\(low, high\\)"),
    ("indices [N, B]", lambda *a: _boot(*a, draw="transposed"), "\\[N, resamples\\]"),
    ("global random state", lambda *a: _boot(*a, draw="global"), "global random state"),
    ("B indices per resample", lambda *a: _boot(*a, draw="square"), "it holds N"),
    ("percent", lambda *a: _boot(*a, tails="percent"), "fractions"),
    ("min and max", lambda s, st, b, lv, g: (lambda v: torch.stack([v.min(), v.max()]))(torch.tensor(
        [float(st(s[i])) for i in torch.randint(0, s.shape[0], (b, s.shape[0]), generator=g)], dtype=torch.float64)),
     "smallest and the largest"),
    ("the resampled values", lambda s, st, b, lv, g: torch.tensor(
        [float(st(s[i])) for i in torch.randint(0, s.shape[0], (b, s.shape[0]), generator=g)]), "resampled statistics"),
    ("tuple of floats, tails 1 - level (outside suite)", lambda *a: tuple(_boot(*a, tails="level").tolist()), "1 - level"),
]

# --- lab 07 ----------------------------------------------------------------------------------------------
LAB07_CFG = [
    ("scale convention", lambda c, u, w: w * c - (w - 1) * u, "'scale' convention"),
    ("swapped", lambda c, u, w: (1 + w) * u - w * c, "swapped"),
    ("no 1 +", lambda c, u, w: w * (c - u), "'1 \\+' is missing"),
    ("wrong sign", lambda c, u, w: c - w * (c - u), "wrong sign"),
    ("uncond added", lambda c, u, w: (1 + w) * c + w * u, "eps_uncond was added"),
    ("(1 + w) c", lambda c, u, w: (1 + w) * c, "unconditional term is missing"),
    ("c + w u", lambda c, u, w: c + w * u, "difference"),
    ("c - w u", lambda c, u, w: c - w * u, "keeps eps_cond"),
    ("average", lambda c, u, w: (c + u) / 2, "average"),
    ("numpy", lambda c, u, w: ((1 + w) * c - w * u).numpy(), "numpy"),
    ("precedence (outside suite)", lambda c, u, w: 1 + w * c - w * u, "operator precedence"),
]


def _ddim(x, eps, ab_t, ab_p, eta, z, *, sig=None, dirc=None, x0f=None, noise=True, x0scale=True):
    x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt() if x0f is None else x0f(x, eps, ab_t)
    s = eta * ((1 - ab_p) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_p).sqrt()
    s = s if sig is None else sig(s, eta, ab_t, ab_p)
    d = (1 - ab_p - s ** 2).clamp(min=0).sqrt() if dirc is None else dirc(s, ab_t, ab_p)
    out = (ab_p.sqrt() if x0scale else 1) * x0 + d * eps
    return out + s * z if noise else out


LAB07_DDIM = [
    ("no noise", lambda *a: _ddim(*a, noise=False), "noise term sigma \\* z is missing"),
    ("no eta", lambda *a: _ddim(*a, sig=lambda s, eta, a_t, a_p: s / eta if eta else s * 0 + ((1 - a_p) / (1 - a_t))
                                .sqrt() * (1 - a_t / a_p).sqrt()), "ignores eta"),
    ("sigma squared", lambda *a: _ddim(*a, sig=lambda s, eta, a_t, a_p: eta * (s / eta) ** 2 if eta else s),
     "sigma was squared"),
    ("eta squared", lambda *a: _ddim(*a, sig=lambda s, eta, a_t, a_p: s * eta), "eta was squared"),
    ("direction without sigma", lambda *a: _ddim(*a, dirc=lambda s, a_t, a_p: (1 - a_p).sqrt()), "forgets sigma"),
    ("direction with abar_t", lambda *a: _ddim(*a, dirc=lambda s, a_t, a_p: (1 - a_t).sqrt()), "uses abar_t"),
    ("direction variance", lambda *a: _ddim(*a, dirc=lambda s, a_t, a_p: (1 - a_p - s ** 2).clamp(min=0)),
     "lacks its sqrt"),
    ("x0 variances", lambda *a: _ddim(*a, x0f=lambda x, e, a_t: (x - (1 - a_t) * e) / a_t), "x0_hat uses variances"),
    ("x0 not scaled", lambda *a: _ddim(*a, x0scale=False), "not scaled by sqrt\\(abar_prev\\)"),
    ("direction is eps", lambda *a: _ddim(*a, dirc=lambda s, a_t, a_p: 1 + 0 * a_p), "eps_hat itself"),
    ("x0 no sqrt", lambda *a: _ddim(*a, x0f=lambda x, e, a_t: (x - (1 - a_t).sqrt() * e) / a_t), "without the sqrt"),
    ("new noise", lambda x, e, a_t, a_p, eta, z: _ddim(x, e, a_t, a_p, eta, torch.randn_like(z)),
     "use the inputs you are given"),
    ("x0 multiplied (outside suite)", lambda *a: _ddim(*a, x0f=lambda x, e, a_t: (x - (1 - a_t).sqrt() * e) * a_t.sqrt()),
     "multiplies by sqrt"),
    ("sigma not squared (outside suite)", lambda *a: _ddim(*a, dirc=lambda s, a_t, a_p: (1 - a_p - s).clamp(min=0).sqrt()),
     "not squared"),
]


def _dpm(x, d0, d1, ab_t, ab_p, ab_l, *, lam_k=1.0, h_sign=1, ratio="ok", coef="alpha", plus=False, first=False,
         r_inv=False, swap=False, expm1=True):
    lam = lambda a: lam_k * 0.5 * torch.log(a / (1 - a))  # noqa: E731
    h = h_sign * (lam(ab_p) - lam(ab_t))
    D = d0
    if d1 is not None and not first:
        r = (lam(ab_t) - lam(ab_l)) / (lam(ab_p) - lam(ab_t))
        r = 1 / r if r_inv else r
        a, b = (d1, d0) if swap else (d0, d1)
        D = (1 + 1 / (2 * r)) * a - 1 / (2 * r) * b
    s_t, s_p = (1 - ab_t).sqrt(), (1 - ab_p).sqrt()
    rx = {"ok": s_p / s_t, "inverted": s_t / s_p, "none": 1.0}[ratio]
    c = ab_p.sqrt() if coef == "alpha" else s_p
    f = torch.expm1(-h) if expm1 else torch.exp(-h)
    return rx * x + (1 if plus else -1) * c * f * D


LAB07_DPM = [
    ("exp sign", lambda *a: _dpm(*a, h_sign=-1), "wrong sign in the exponent"),
    ("ratio inverted", lambda *a: _dpm(*a, ratio="inverted"), "inverted: sigma_prev / sigma_t"),
    ("sigma_prev", lambda *a: _dpm(*a, coef="sigma"), "alpha_prev"),
    ("plus", lambda *a: _dpm(*a, plus=True), "D term has the wrong sign"),
    ("full log-SNR", lambda *a: _dpm(*a, lam_k=2.0), "full log-SNR"),
    ("first order", lambda *a: _dpm(*a, first=True), "second-order correction is missing"),
    ("r inverted", lambda *a: _dpm(*a, r_inv=True), "r is inverted"),
    ("D swapped", lambda *a: _dpm(*a, swap=True), "swapped"),
    ("exp not expm1", lambda *a: _dpm(*a, expm1=False), "expm1"),
    ("no x_t ratio", lambda *a: _dpm(*a, ratio="none"), "x_t coefficient is missing"),
]


# Guidance around a model and the two grid loops, as students write them (with labkit's steps as theirs).
def _cfg_eps(model, x, t, y, w, null_class, *, uncond_y=None, combine=None, null=None):
    from labkit.guidance import cfg_combine

    cond = model(x, t, y)
    uncond = model(x, t, uncond_y(y) if uncond_y else torch.full_like(y, null_class if null is None else null))
    return (combine or cfg_combine)(cond, uncond, w)


LAB07_CFG_EPS = [
    ("real class in the uncond branch", lambda *a: _cfg_eps(*a, uncond_y=lambda y: y), "real labels y"),
    ("scale convention", lambda *a: _cfg_eps(*a, combine=lambda c, u, w: w * c - (w - 1) * u), "'scale' convention"),
    ("swapped", lambda *a: _cfg_eps(*a, combine=lambda c, u, w: (1 + w) * u - w * c), "swapped"),
    ("null class 10 hard-coded", lambda *a: _cfg_eps(*a, null=10), "null_class, the argument"),
    ("null class 0", lambda *a: _cfg_eps(*a, null=0), "real class 0 as 'no class'"),
    ("uncond only", lambda *a: _cfg_eps(*a, combine=lambda c, u, w: u), "only the unconditional"),
    ("cond only", lambda m, x, t, y, w, n: m(x, t, y), "real labels y"),
    ("(1 + w) cond", lambda *a: _cfg_eps(*a, combine=lambda c, u, w: (1 + w) * c), "unconditional term is missing"),
]


def _ab07(ab, t, x):
    return (ab[t] if t >= 0 else ab.new_ones(())).to(x.dtype).view(1, 1, 1, 1)


def _loop07(model, x_T, y, grid, ab, step, *, order=None, nxt=None, last=-1, model_t=None, from_x_T=False, once=False):
    ts = [int(v) for v in grid] if order is None else order(grid)
    x, eps = x_T, None
    for i, t in enumerate(ts):
        t_next = nxt(i, t, ts) if nxt else (ts[i + 1] if i + 1 < len(ts) else last)
        src = x_T if from_x_T else x
        if eps is None or not once:
            eps = model(src, torch.full((x_T.shape[0],), t if model_t is None else model_t(i, t)), y)
        x = step(i, src, eps, t, t_next).to(x_T.dtype)
    return x


def _ddim_loop(model, x_T, y, grid, ab, eta, noises, *, z_of=None, eta_used=None, **change):
    from labkit.samplers import ddim_step

    def step(i, x, eps, t, t_next):
        z = noises[i if z_of is None else z_of(i, len(grid))]
        return ddim_step(x, eps, _ab07(ab, t, x), _ab07(ab, t_next, x), eta if eta_used is None else eta_used, z)
    return _loop07(model, x_T, y, grid, ab, step, **change)


def _dpm_loop(model, x_T, y, grid, ab, *, carry=True, before=False, formula_last=False, x0f=None, **change):
    from labkit.samplers import dpmpp_2m_step

    st = {"x0": None, "ab": None}

    def step(i, x, eps, t, t_next):
        a_t, a_n = _ab07(ab, t, x), _ab07(ab, t_next, x)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt() if x0f is None else x0f(x, eps, a_t)
        if before:
            st.update(x0=x0, ab=a_t)
        if t_next < 0 and not formula_last:
            out = x0
        else:
            out = dpmpp_2m_step(x, x0, st["x0"], a_t, a_n, st["ab"])
        if carry:
            st.update(x0=x0, ab=a_t)
        return out
    return _loop07(model, x_T, y, grid, ab, step, **change)


_GRID_MISTAKES = [  # (label, the change as a function of the grid, phrase)
    ("grid reversed", lambda g: dict(order=lambda g_: [int(v) for v in g_.flip(0)]), "walked backwards"),
    ("last step to alpha_bars[0]", lambda g: dict(last=0), "does not go to clean data"),
    ("stops one step early", lambda g: dict(order=lambda g_: [int(v) for v in g_[:-1]],
                                            nxt=lambda i, t, ts: int(g[i + 1])), "stop one step early"),
    ("next alpha_bar at t - 1", lambda g: dict(nxt=lambda i, t, ts: t - 1), "taken at t - 1"),
    ("x not updated", lambda g: dict(from_x_T=True), "starts again from x_T"),
    ("model once", lambda g: dict(once=True), "called once"),
    ("model sees i", lambda g: dict(model_t=lambda i, t: i), "loop index i"),
]


def _grid_mistake(loop, change):
    def run(*args):
        return loop(*args, **change(args[3]))
    return run


LAB07_DDIM_LOOP = [(label, _grid_mistake(_ddim_loop, change), phrase) for label, change, phrase in _GRID_MISTAKES] + [
    ("eta not passed", lambda *a: _ddim_loop(*a, eta_used=0.0), "eta was not passed"),
    ("same noise", lambda *a: _ddim_loop(*a, z_of=lambda i, S: 0), "same noise at every step"),
    ("noise reversed", lambda *a: _ddim_loop(*a, z_of=lambda i, S: S - 1 - i), "reverse order"),
    ("fresh noise", lambda m, x, y, g, ab, eta, n: _ddim_loop(m, x, y, g, ab, eta, torch.randn_like(n)),
     "use the inputs you are given"),
]

LAB07_DPM_LOOP = [(label, _grid_mistake(_dpm_loop, change), phrase) for label, change, phrase in _GRID_MISTAKES] + [
    ("x0_prev not carried", lambda *a: _dpm_loop(*a, carry=False), "x0_prev was not carried"),
    ("carried before the step", lambda *a: _dpm_loop(*a, before=True), "after the step"),
    ("formula on the last step", lambda *a: _dpm_loop(*a, formula_last=True), "returns x0_hat"),
    ("x0_hat with variances", lambda *a: _dpm_loop(*a, x0f=lambda x, e, a_: (x - (1 - a_) * e) / a_), "variances"),
    ("x0_hat no sqrt", lambda *a: _dpm_loop(*a, x0f=lambda x, e, a_: (x - (1 - a_).sqrt() * e) / a_), "without the sqrt"),
]

# --- lab 08 ----------------------------------------------------------------------------------------------
LAB08 = [
    ("added", lambda e, g, a, s: e + s * (1 - a).sqrt() * g, "gradient was added"),
    ("no factor", lambda e, g, a, s: e - s * g, "sqrt\\(1 - alpha_bar_t\\) is missing"),
    ("sqrt(alpha_bar)", lambda e, g, a, s: e - s * a.sqrt() * g, "sqrt\\(alpha_bar_t\\) was used"),
    ("no sqrt", lambda e, g, a, s: e - s * (1 - a) * g, "without the sqrt"),
    ("no scale", lambda e, g, a, s: e - (1 - a).sqrt() * g, "scale is missing"),
    ("divided", lambda e, g, a, s: e - s * g / (1 - a).sqrt(), "divided by sqrt"),
    ("all scaled", lambda e, g, a, s: (e - s * g) * (1 - a).sqrt(), "divides the whole"),
    ("gradient only", lambda e, g, a, s: -s * (1 - a).sqrt() * g, "replaced eps_hat"),
    ("scale on eps", lambda e, g, a, s: s * e - s * (1 - a).sqrt() * g, "applied to eps_hat too"),
    ("float64 kept", lambda e, g, a, s: (e - s * (1 - a).sqrt() * g).half(), "half precision"),
    ("1 - sqrt (outside suite)", lambda e, g, a, s: e - s * (1 - a.sqrt()) * g, "1 - sqrt"),
]


def _cgrad(clf, x, t, y, *, what="log_softmax", dim=1, reduce="sum", cls=None, detach=True, leaf=True):
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True) if detach else x
        logits = clf(xx, t)
        rows = torch.arange(len(y))
        c = y if cls is None else cls(logits, y)
        if what == "logit":
            v = logits[rows, c]
        elif what == "softmax":
            v = logits.softmax(dim)[rows, c]
        elif what == "ce":
            v = -F.cross_entropy(logits, c, reduction="none") if reduce != "ce mean" else None
            if reduce == "ce mean":
                (gr,) = torch.autograd.grad(F.cross_entropy(logits, c), xx)
                return gr
        elif what == "all":
            v = logits.log_softmax(1).sum(1)
        else:
            v = logits.log_softmax(dim)[rows, c]
        total = v.mean() if reduce == "mean" else v.sum()
        (gr,) = torch.autograd.grad(total, xx)
    return gr


def _no_leaf(clf, x, t, y):  # forgot to make x_t require grad
    logits = clf(x, t)
    (gr,) = torch.autograd.grad(logits.log_softmax(1)[torch.arange(len(y)), y].sum(), x)
    return gr


def _backward_twice_graph(clf, x, t, y):  # .backward() and x.grad, fine; then returns x (not the gradient)
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        clf(xx, t).log_softmax(1)[torch.arange(len(y)), y].sum().backward()
    return xx.detach()


def _no_grad_mode(clf, x, t, y):  # the student's function run under no_grad without enable_grad
    with torch.no_grad():
        xx = x.detach().requires_grad_(True)
        (gr,) = torch.autograd.grad(clf(xx, t).log_softmax(1)[torch.arange(len(y)), y].sum(), xx)
    return gr


LAB08_GRAD = [
    ("logit", lambda c, x, t, y: _cgrad(c, x, t, y, what="logit"), "logit of class y"),
    ("probability", lambda c, x, t, y: _cgrad(c, x, t, y, what="softmax"), "probability"),
    ("dim 0", lambda c, x, t, y: _cgrad(c, x, t, y, dim=0), "dim 0"),
    ("mean over the batch", lambda c, x, t, y: _cgrad(c, x, t, y, reduce="mean"), "mean over the batch"),
    ("all classes", lambda c, x, t, y: _cgrad(c, x, t, y, what="all"), "all classes"),
    ("cross-entropy", lambda c, x, t, y: -_cgrad(c, x, t, y, what="ce"), "sign is flipped"),
    ("mean cross-entropy", lambda c, x, t, y: _cgrad(c, x, t, y, what="ce", reduce="ce mean"), "cross-entropy"),
    ("sign", lambda c, x, t, y: -_cgrad(c, x, t, y), "sign is flipped"),
    ("argmax class", lambda c, x, t, y: _cgrad(c, x, t, y, cls=lambda lg, y_: lg.argmax(1)), "argmax"),
    ("no requires_grad", _no_leaf, "requires grad"),
    ("under no_grad", _no_grad_mode, "no_grad"),
    ("returns x", _backward_twice_graph, None),
    ("per-class gradient [B, K]", lambda c, x, t, y: c(x, t).log_softmax(1), "return their gradient"),
]


def _gloop(model, clf, x_T, y, scale, ts, betas, ab, noises, *, sign=-1.0, factor=lambda a: (1 - a).sqrt(),
           model_t=None, ks=None, once=False, at_x_T=False, grad=None, cast=True, no_grad_all=False):
    from labkit import samplers
    from labkit.guidance import classifier_grad
    S, B = len(ts), x_T.shape[0]
    x, gr = x_T, None
    for k in (range(S - 1, -1, -1) if ks is None else ks(S)):
        t = (ts[k] if model_t is None else model_t(k)).expand(B)
        kb = torch.full((B,), k)
        with torch.no_grad():
            eps = model(x, t, y)
        if gr is None or not once:
            gr = (classifier_grad if grad is None else grad)(clf, x_T if at_x_T else x, t, y)
        a = ab[kb].view(-1, 1, 1, 1)
        x = samplers.p_sample_step(x, kb, eps + sign * scale * factor(a) * gr, betas, ab, noises[k])
        if cast:
            x = x.to(x_T.dtype)
    return x


LAB08_LOOP = [
    ("no guidance", lambda *a: _gloop(*a, sign=0.0), "no guidance"),
    ("added", lambda *a: _gloop(*a, sign=1.0), "added to eps_hat"),
    ("no sqrt(1 - alpha_bar)", lambda *a: _gloop(*a, factor=lambda a_: 1 + 0 * a_), "factor sqrt\\(1 - alpha_bar\\) is missing"),
    ("sqrt(alpha_bar)", lambda *a: _gloop(*a, factor=lambda a_: a_.sqrt()), "sqrt\\(alpha_bar\\) where"),
    ("1 - alpha_bar", lambda *a: _gloop(*a, factor=lambda a_: 1 - a_), "without the sqrt"),
    ("divided", lambda *a: _gloop(*a, factor=lambda a_: 1 / (1 - a_).sqrt()), "divided by sqrt"),
    ("model sees k", lambda *a: _gloop(*a, model_t=lambda k: torch.tensor(k)), "timesteps\\[k\\]"),
    ("gradient at x_T", lambda *a: _gloop(*a, at_x_T=True), "at x_T"),
    ("gradient once", lambda *a: _gloop(*a, once=True), "computed once"),
    ("forwards", lambda *a: _gloop(*a, ks=lambda S: range(S)), "runs forwards"),
    ("stops before k = 0", lambda *a: _gloop(*a, ks=lambda S: range(S - 1, 0, -1)), "stops before the last step"),
    ("logit gradient", lambda *a: _gloop(*a, grad=lambda c, x, t, y: _cgrad(c, x, t, y, what="logit")),
     "classifier_grad and guided_eps"),
    ("all under no_grad", lambda *a: _gloop(*a, grad=_no_grad_mode), "no_grad"),
]

# --- lab 09 ----------------------------------------------------------------------------------------------


def _first_true(above):
    S = above.shape[0]
    idx = torch.arange(S).view(S, 1).expand_as(above)
    return torch.where(above, idx, torch.full_like(idx, S)).min(0).values


def _final_run(probs, thr, *, strict=False):
    above = probs > thr if strict else probs >= thr
    return probs.shape[0] - above.flip(0).long().cumprod(0).sum(0)


LAB09_REC = [
    ("first crossing", lambda p, thr: _first_true(p >= thr), "first step at which p reaches"),
    ("strict", lambda p, thr: _final_run(p, thr, strict=True), "p > threshold"),
    ("minus one", lambda p, thr: _final_run(p, thr) - 1, "last step \\*below\\*"),
    ("plus one", lambda p, thr: _final_run(p, thr) + 1, "not the one after"),
    ("-1 for never", lambda p, thr: torch.where(_final_run(p, thr) == p.shape[0], -1, _final_run(p, thr)), "not -1"),
    ("steps - 1 for never", lambda p, thr: _final_run(p, thr).clamp(max=p.shape[0] - 1), "not steps - 1"),
    ("steps left", lambda p, thr: p.shape[0] - _final_run(p, thr), "counted from the end"),
    ("first drop", lambda p, thr: _first_true(p < thr), "falls below"),
    ("bool", lambda p, thr: p >= thr, "\\[steps, N\\] comparison"),
    ("float answer", lambda p, thr: _final_run(p, thr).float() + 0.5, "int64"),
    ("rows", lambda p, thr: _final_run(p.T.contiguous(), thr), "rows are steps"),
    ("no flip (outside suite)", lambda p, thr: p.shape[0] - (p >= thr).long().cumprod(0).sum(0), "at the \\*start\\*"),
    ("steps below (outside suite)", lambda p, thr: (p < thr).long().sum(0), "steps below"),
    ("float dtype (outside suite)", lambda p, thr: _final_run(p, thr).float(), "int64"),
]


def _qpd(values, labels, K, fn):
    return torch.stack([fn(values[labels == k]) for k in range(K)])


_Q = torch.tensor([0.25, 0.5, 0.75])

LAB09_QUART = [
    ("torch.median", lambda v, y, K: _qpd(v, y, K, lambda x: torch.stack([torch.quantile(x, 0.25), x.median(),
                                                                         torch.quantile(x, 0.75)])), "torch.median"),
    ("mean", lambda v, y, K: _qpd(v, y, K, lambda x: torch.stack([torch.quantile(x, 0.25), x.mean(),
                                                                  torch.quantile(x, 0.75)])), "the mean where"),
    ("mean +- std", lambda v, y, K: _qpd(v, y, K, lambda x: torch.stack([x.mean() - x.std(), x.mean(),
                                                                         x.mean() + x.std()])), "standard deviation"),
    ("lower", lambda v, y, K: _qpd(v, y, K, lambda x: torch.quantile(x, _Q, interpolation="lower")), "'lower'"),
    ("higher", lambda v, y, K: _qpd(v, y, K, lambda x: torch.quantile(x, _Q, interpolation="higher")), "'higher'"),
    ("nearest", lambda v, y, K: _qpd(v, y, K, lambda x: torch.quantile(x, _Q, interpolation="nearest")), "'nearest'"),
    ("midpoint", lambda v, y, K: _qpd(v, y, K, lambda x: torch.quantile(x, _Q, interpolation="midpoint")), "midpoint"),
    ("sorted index", lambda v, y, K: _qpd(v, y, K, lambda x: x.sort().values[(_Q * len(x)).long().clamp(max=len(x) - 1)]),
     "sorted"),
    ("transposed", lambda v, y, K: _qpd(v, y, K, lambda x: torch.quantile(x, _Q)).T, "transposed"),
    ("columns reversed", lambda v, y, K: _qpd(v, y, K, lambda x: torch.quantile(x, _Q)).flip(1), "wrong order"),
    ("all values", lambda v, y, K: torch.quantile(v, _Q).expand(K, 3), "all values together"),
    ("two columns", lambda v, y, K: _qpd(v, y, K, lambda x: torch.quantile(x, _Q[[0, 2]])), "two columns"),
    ("percents (outside suite)", lambda v, y, K: _qpd(v, y, K, lambda x: torch.quantile(x, _Q * 100)), "not percents"),
]


def _means(s, y, K):
    return torch.stack([s[y == k].mean() for k in range(K)])


LAB09_REL = [
    ("inverted", lambda gs, gy, rs, ry, K: _means(rs, ry, K) / _means(gs, gy, K), "inverted"),
    ("difference", lambda gs, gy, rs, ry, K: _means(gs, gy, K) - _means(rs, ry, K), "difference"),
    ("all real", lambda gs, gy, rs, ry, K: _means(gs, gy, K) / rs.mean(), "over \\*all\\* real"),
    ("all generated", lambda gs, gy, rs, ry, K: gs.mean() / _means(rs, ry, K), "average the generated"),
    ("medians", lambda gs, gy, rs, ry, K: torch.stack([torch.quantile(gs[gy == k], 0.5) for k in range(K)])
     / torch.stack([torch.quantile(rs[ry == k], 0.5) for k in range(K)]), "medians"),
    ("torch.median", lambda gs, gy, rs, ry, K: torch.stack([gs[gy == k].median() for k in range(K)])
     / torch.stack([rs[ry == k].median() for k in range(K)]), "medians"),
    ("sums", lambda gs, gy, rs, ry, K: torch.stack([gs[gy == k].sum() for k in range(K)])
     / torch.stack([rs[ry == k].sum() for k in range(K)]), "sums"),
    ("labels mixed up", lambda gs, gy, rs, ry, K: _means(gs, gy, K) / _means(rs, gy, K), "same set"),
    ("per image", lambda gs, gy, rs, ry, K: gs / _means(rs, ry, K)[gy], "average per class first"),
]


def _pairs(x, p=2.0, denom=None, power=1.0):
    n = len(x)
    d = torch.cdist(x, x, p=p) ** power
    return d.sum() / (n * (n - 1) if denom is None else denom(n))


LAB09_DIV = [
    ("self pairs", lambda f, y, K: _qpd(f, y, K, lambda x: _pairs(x, denom=lambda n: n * n)), "to itself"),
    ("squared", lambda f, y, K: _qpd(f, y, K, lambda x: _pairs(x, power=2.0)), "squared distances"),
    ("half", lambda f, y, K: _qpd(f, y, K, lambda x: _pairs(x) / 2), "counted once"),
    ("double", lambda f, y, K: _qpd(f, y, K, lambda x: _pairs(x) * 2), "counted twice"),
    ("to the mean", lambda f, y, K: _qpd(f, y, K, lambda x: (x - x.mean(0)).norm(dim=1).mean()), "class mean"),
    ("std", lambda f, y, K: _qpd(f, y, K, lambda x: x.std(0).mean()), "standard deviation"),
    ("sum", lambda f, y, K: _qpd(f, y, K, lambda x: torch.cdist(x, x).sum()), "sum of the distances"),
    ("all together", lambda f, y, K: _pairs(f).expand(K), "all samples together"),
    ("manhattan", lambda f, y, K: _qpd(f, y, K, lambda x: _pairs(x, p=1.0)), "Manhattan"),
    ("median", lambda f, y, K: _qpd(f, y, K, lambda x: torch.cdist(x, x)[~torch.eye(len(x), dtype=torch.bool)]
                                    .quantile(0.5)), "median distance"),
    ("other classes (outside suite)", lambda f, y, K: torch.stack([torch.cdist(f[y == k], f).sum()
                                                                 / ((y == k).sum() * (len(f) - 1)) for k in range(K)]),
     "other"),
]


def _fastest(seconds, quality, target, base, *, ok=None, pick="min", never=0.0, invert=False):
    ok = quality >= target if ok is None else ok(quality, target)
    inf = torch.full_like(seconds, math.inf)
    if pick == "min":
        t = torch.where(ok, seconds, inf).min(1).values
    else:
        t = torch.where(ok, seconds, -inf).max(1).values.where(ok.any(1), inf[:, 0])
    speed = t / base if invert else base / t
    return torch.where(torch.isinf(t), torch.full_like(t, never), speed)


def _x0err09(model, images, labels, noise, alpha_bars, log_snrs, *, pick="logsnr", weights="sqrt", div="sqrt",
             clamp=True, reduce="median", shift=0, null=False, as_float=False):
    """A student's heldout_x0_error with one mistake switched on."""
    import math

    ls = torch.log(alpha_bars / (1 - alpha_bars))
    key = {"logsnr": ls, "alpha": alpha_bars, "log10": ls / math.log(10), "snr": ls.exp()}[pick]
    errors = []
    for level in log_snrs:
        t = min(int((key - level).abs().argmin()) + shift, len(alpha_bars) - 1)
        ab = alpha_bars[t]
        a, b = (ab.sqrt(), (1 - ab).sqrt()) if weights == "sqrt" else (ab, 1 - ab)
        xt = a * images + b * noise
        eps = model(xt, torch.full((len(images),), t), torch.full_like(labels, 10) if null else labels)
        x0 = (xt - b * eps) / (ab.sqrt() if div == "sqrt" else ab)
        x0 = x0.clamp(-1, 1) if clamp else x0
        errors.append(((x0 - images) ** 2).flatten(1).mean(1))
    e = torch.cat(errors)
    out = {"median": e.median(), "mean": e.mean(), "levels": torch.stack([v.median() for v in errors]).mean()}[reduce]
    return float(out) if as_float else out


LAB09_X0 = [
    ("t by alpha_bar", lambda *a: _x0err09(*a, pick="alpha"), "not by the log-SNR"),
    ("log10", lambda *a: _x0err09(*a, pick="log10"), "log10"),
    ("SNR not log", lambda *a: _x0err09(*a, pick="snr"), "SNR itself"),
    ("variances as weights", lambda *a: _x0err09(*a, weights="var", div="abar"), "variances"),
    ("divide by abar", lambda *a: _x0err09(*a, div="abar"), "divides by abar"),
    ("no clamp", lambda *a: _x0err09(*a, clamp=False), "not clamped"),
    ("mean", lambda *a: _x0err09(*a, reduce="mean"), "mean was taken"),
    ("median per level", lambda *a: _x0err09(*a, reduce="levels"), "one median per level"),
    ("no class", lambda *a: _x0err09(*a, null=True), "no class"),
    ("t + 1", lambda *a: _x0err09(*a, shift=1), "one step too late"),
    ("per image", lambda m, x, y, n, ab, ls: torch.stack([_x0err09(m, x[i:i + 1], y[i:i + 1], n[i:i + 1], ab, ls)
                                                         for i in range(len(x))]), "one number"),
]


def _margin09(p, n, *, se=2, diff=True, var=False, clamp=True, floor=0.03, fn=torch.clamp):
    q = p.clamp(1 / n, 1 - 1 / n) if clamp else p
    v = (2 if diff else 1) * q * (1 - q) / n
    width = se * (v if var else v.sqrt())
    return width if floor is None else (fn(width, min=floor) if fn is torch.clamp else fn(width, torch.full_like(width, floor)))


LAB09_MARGIN = [
    ("one s.e. of one accuracy", lambda p, n: _margin09(p, n, se=1, diff=False), "one standard error of one"),
    ("two s.e. of one accuracy", lambda p, n: _margin09(p, n, diff=False), "not of a difference"),
    ("variance", lambda p, n: _margin09(p, n, var=True), "variance was used"),
    ("no clamp", lambda p, n: _margin09(p, n, clamp=False), "not clamped"),
    ("min", lambda p, n: _margin09(p, n, fn=torch.minimum), "min instead of max"),
    ("no floor", lambda p, n: _margin09(p, n, floor=None), "left out"),
    ("3 not 0.03", lambda p, n: _margin09(p, n, floor=3.0), "written as 3"),
    ("python float", lambda p, n: float(_margin09(p, n)[0]), "torch.Tensor"),
]

LAB09_SPEED = [
    ("inverted", lambda s, q, tg, b: _fastest(s, q, tg, b, invert=True), "inverted"),
    ("regardless of quality", lambda s, q, tg, b: b / s.min(1).values, "regardless of quality"),
    ("strict", lambda s, q, tg, b: _fastest(s, q, tg, b, ok=lambda q_, t_: q_ > t_), "quality > target"),
    ("slowest", lambda s, q, tg, b: _fastest(s, q, tg, b, pick="max"), "slowest setting"),
    ("reversed comparison", lambda s, q, tg, b: _fastest(s, q, tg, b, ok=lambda q_, t_: q_ <= t_), "reversed"),
    ("best quality", lambda s, q, tg, b: b / s.gather(1, q.argmax(1, keepdim=True))[:, 0], "best-quality"),
    ("time", lambda s, q, tg, b: 1 / _fastest(s, q, tg, b, never=math.inf) * b, "time itself"),
    ("1.0 for never", lambda s, q, tg, b: _fastest(s, q, tg, b, never=1.0), "not 1.0"),
    ("inf for never", lambda s, q, tg, b: _fastest(s, q, tg, b, never=math.inf), "not inf or NaN"),
    ("per setting", lambda s, q, tg, b: b / s, "one value per setting"),
    ("meta device", lambda s, q, tg, b: _fastest(s, q, tg, b).to("meta"), "meta"),
    ("best quality, 0 for never (outside suite)", lambda s, q, tg, b: torch.where(
        q.max(1).values >= tg, b / s.gather(1, q.argmax(1, keepdim=True))[:, 0], torch.zeros_like(s[:, 0])), "best-quality"),
    ("last good column (outside suite)", lambda s, q, tg, b: torch.stack([
        b / s[i, (q[i] >= tg).nonzero()[-1, 0]] if bool((q[i] >= tg).any()) else s.new_zeros(()) for i in range(len(s))]),
     "last good-enough"),
]


# --- labs 07 and 09, more of the student's own code (issue 25) -------------------------------------------


def _zsnr(betas, *, on="root", scale=True, square=True, head="abar", ret="betas", order="shift-scale", inverted=False):
    """A student's enforce_zero_terminal_snr (Lin et al. 2024, Algorithm 1) with one mistake switched on."""
    ab = torch.cumprod(1 - betas, 0)
    s = ab.sqrt() if on == "root" else ab
    s0, sT = s[0].clone(), s[-1].clone()
    if order == "shift-scale":
        s = s - sT
        s = s * s0 / (s0 - sT) if scale else s
    else:
        s = s * s0 / (s0 - sT) - sT
    abn = s ** 2 if (on == "root" and square) else s
    if ret in ("abar", "root"):
        return abn if ret == "abar" else abn.sqrt()
    ratios = abn[:-1] / abn[1:] if inverted else abn[1:] / abn[:-1]
    a = ratios if head == "drop" else torch.cat([abn[:1] if head == "abar" else torch.ones_like(abn[:1]), ratios])
    return a if ret == "alphas" else 1 - a


def _zsnr_in_place(betas):
    out = _zsnr(betas)
    betas.copy_(out.clamp(max=0.999))  # "tidies" the input on the way
    return out


LAB07_ZSNR = [
    ("alpha_bar rescaled", lambda b: _zsnr(b, on="abar"), "alpha_bar itself"),
    ("shift only", lambda b: _zsnr(b, scale=False), "only shifted"),
    ("scale then shift", lambda b: _zsnr(b, order="scale-shift"), "scaled before the shift"),
    ("not squared back", lambda b: _zsnr(b, square=False), "not squared back"),
    ("beta_0 = 0", lambda b: _zsnr(b, head="one"), "beta_0 is 0"),
    ("alpha_bar returned", lambda b: _zsnr(b, ret="abar"), "return the betas"),
    ("sqrt(alpha_bar) returned", lambda b: _zsnr(b, ret="root"), "return the betas"),
    ("alphas returned", lambda b: _zsnr(b, ret="alphas"), "return beta_t = 1 - alpha_t"),
    ("first alpha dropped", lambda b: _zsnr(b, head="drop"), "one entry short"),
    ("ratio inverted", lambda b: _zsnr(b, inverted=True), "never be a denominator"),
    ("input returned", lambda b: b.clone(), "came back unchanged"),
    ("edits betas in place", _zsnr_in_place, "in place"),
    ("numpy", lambda b: _zsnr(b).numpy(), "numpy"),
]


def _spaced(T, S, spacing, *, flip=True, plus=0, trunc=False, lead="floor", swap=False, from_T=False, as_float=False,
            lead_arange=False, trail_trunc_after=False):
    """A student's spaced_timesteps (Lin et al. 2024, table 2) with one mistake switched on."""
    if swap:
        spacing = {"leading": "trailing", "trailing": "leading"}.get(spacing, spacing)
    i = torch.arange(S, dtype=torch.float64)
    cut = (lambda v: v.floor()) if trunc else (lambda v: v.round())
    if spacing == "linspace":
        t = cut(torch.linspace(T if from_T else T - 1, 0, S, dtype=torch.float64))
    elif spacing == "leading":
        if lead_arange:
            t = torch.arange(0, T, T // S, dtype=torch.float64)
        else:
            step = {"floor": T // S, "round": round(T / S), "float": T / S}[lead]
            t = cut((S - 1 - i) * step)
        t = t.flip(0) if lead_arange else t
    else:
        t = (T - i * T / S - 1).floor() if trail_trunc_after else cut(T - i * T / S) - 1
    t = t if flip else t.flip(0)
    t = t + plus
    return t.float() if as_float else t.long()


LAB07_SPACED = [
    ("ascending", lambda T, S, sp: _spaced(T, S, sp, flip=False), "ascending"),
    ("paper's 1-based t", lambda T, S, sp: _spaced(T, S, sp, plus=1), "counts t from 1"),
    ("truncated", lambda T, S, sp: _spaced(T, S, sp, trunc=True), "truncated"),
    ("leading step rounded", lambda T, S, sp: _spaced(T, S, sp, lead="round"), "whole number T // steps"),
    ("leading step T / steps", lambda T, S, sp: _spaced(T, S, sp, lead="float"), "whole number T // steps"),
    ("leading via arange", lambda T, S, sp: _spaced(T, S, sp, lead_arange=True), "more than steps"),
    ("leading and trailing swapped", lambda T, S, sp: _spaced(T, S, sp, swap=True), "spacing was asked|was asked"),
    ("linspace from T", lambda T, S, sp: _spaced(T, S, sp, from_T=True), "starts at t = T"),
    ("trailing truncated after - 1", lambda T, S, sp: _spaced(T, S, sp, trail_trunc_after=True), "truncated"),
    ("float result", lambda T, S, sp: _spaced(T, S, sp, as_float=True), "dtype"),
    ("a list", lambda T, S, sp: _spaced(T, S, sp).tolist(), "torch.Tensor"),
]


def _ctrl(probs, labels, *, over="others", value="belief", reduce="mean", combine="diff", own_of="intended"):
    """A student's above_control with one mistake switched on."""
    p, y = probs.double(), labels
    own = p.gather(1, y[:, None])[:, 0] if own_of == "intended" else p.max(1).values
    N = len(y)
    mask = {"others": y[:, None] != y[None, :], "all": torch.ones(N, N, dtype=torch.bool),
            "not self": ~torch.eye(N, dtype=torch.bool), "same": y[:, None] == y[None, :]}[over]
    vals = {"belief": p[:, y].T, "their own": own[None, :].expand(N, N),
            "argmax": (p.argmax(1)[None, :] == y[:, None]).double()}[value]
    if reduce == "max":
        control = vals.masked_fill(~mask, -1.0).max(1).values
    else:
        control = (vals * mask).sum(1) / (mask.sum(1) if reduce == "mean" else N)
    return {"diff": own - control, "ratio": own / control, "reversed": control - own, "control": control}[combine]


LAB09_CONTROL = [
    ("every sample in the control", lambda p, y: _ctrl(p, y, over="all"), "this digit's own included"),
    ("leave one out", lambda p, y: _ctrl(p, y, over="not self"), "only the sample itself"),
    ("same digit", lambda p, y: _ctrl(p, y, over="same"), "\\*same\\* digit"),
    ("others' own digits", lambda p, y: _ctrl(p, y, value="their own"), "other samples' own digits"),
    ("divided by N", lambda p, y: _ctrl(p, y, reduce="sum"), "divided by all N"),
    ("ratio", lambda p, y: _ctrl(p, y, combine="ratio"), "ratio"),
    ("sign", lambda p, y: _ctrl(p, y, combine="reversed"), "sign is reversed"),
    ("control alone", lambda p, y: _ctrl(p, y, combine="control"), "control alone"),
    ("largest", lambda p, y: _ctrl(p, y, reduce="max"), "largest"),
    ("argmax share", lambda p, y: _ctrl(p, y, value="argmax"), "argmax"),
    ("top class", lambda p, y: _ctrl(p, y, own_of="top"), "top class"),
    ("per digit", lambda p, y: torch.stack([p[y != k, k].mean() for k in range(p.shape[1])]), "one number per class"),
]


def _later(values, labels, K, *, gt=1.0, eq=0.5, rest="others", norm="pairs"):
    """A student's later_than_rest with one mistake switched on."""
    v = values.double()
    out = []
    for k in range(K):
        mine = v[labels == k]
        other = v if rest == "all" else v[labels != k]
        d = mine[:, None] - other[None, :]
        total = gt * (d > 0).double().sum() + eq * (d == 0).double().sum()
        out.append(total / {"pairs": d.numel(), "none": 1, "all": len(mine) * len(v)}[norm])
    return torch.stack(out)


LAB09_LATER = [
    ("ties as 0", lambda v, y, K: _later(v, y, K, eq=0.0), "ties were not counted"),
    ("ties as 1", lambda v, y, K: _later(v, y, K, eq=1.0), "counted as 'later'"),
    ("earlier", lambda v, y, K: 1 - _later(v, y, K), "reversed"),
    ("own class in the rest", lambda v, y, K: _later(v, y, K, rest="all"), "its own class included"),
    ("U not normalised", lambda v, y, K: _later(v, y, K, norm="none"), "not divided"),
    ("divided by n_k N", lambda v, y, K: _later(v, y, K, norm="all"), "all N values"),
    ("medians", lambda v, y, K: torch.stack([(v[y == k].quantile(0.5) > v[y != k].quantile(0.5)).double()
                                             + 0.5 * (v[y == k].quantile(0.5) == v[y != k].quantile(0.5)).double()
                                             for k in range(K)]), "medians"),
    ("difference of means", lambda v, y, K: torch.stack([v[y == k].mean() - v[y != k].mean() for k in range(K)]),
     "difference of means"),
    ("one per value", lambda v, y, K: torch.stack([((v[i] > v[y != y[i]]).double().mean()) for i in range(len(v))]),
     "one per class"),
]


def _front(seconds, quality, *, self_too=False, dupes=False, strict_both=False, q_sign=1.0, s_sign=1.0, invert=False):
    """A student's pareto_front with one mistake switched on."""
    s, q = s_sign * seconds.double(), q_sign * quality.double()
    le, ge = s[None, :] <= s[:, None], q[None, :] >= q[:, None]
    better = (s[None, :] < s[:, None]) | (q[None, :] > q[:, None])
    if strict_both:
        dom = (s[None, :] < s[:, None]) & (q[None, :] > q[:, None])
    elif self_too:
        dom = le & ge
    elif dupes:
        dom = le & ge & ~torch.eye(len(s), dtype=torch.bool)
    else:
        dom = le & ge & better
    keep = ~dom.any(1)
    return ~keep if invert else keep


def _front_sweep(seconds, quality):
    """Sort by time, keep each setting better than every faster one: ties in time and duplicates go wrong."""
    order = torch.argsort(seconds, stable=True)
    keep = torch.zeros(len(seconds), dtype=torch.bool)
    best = -math.inf
    for i in order.tolist():
        if float(quality[i]) > best:
            keep[i], best = True, float(quality[i])
    return keep


LAB09_PARETO = [
    ("dominates itself", lambda s, q: _front(s, q, self_too=True), "as good as itself"),
    ("duplicates knock each other out", lambda s, q: _front(s, q, dupes=True), "knocked each other"),
    ("strictly better in both", lambda s, q: _front(s, q, strict_both=True), "strictly faster \\*and\\*"),
    ("lower quality better", lambda s, q: _front(s, q, q_sign=-1.0), "quality reversed"),
    ("more time better", lambda s, q: _front(s, q, s_sign=-1.0), "time reversed"),
    ("dominated marked", lambda s, q: _front(s, q, invert=True), "marks the dominated"),
    ("sorted order", lambda s, q: _front(s, q)[torch.argsort(s, stable=True)], "order of increasing time"),
    ("indices", lambda s, q: _front(s, q).nonzero()[:, 0], "not the indices"),
    ("0/1 integers", lambda s, q: _front(s, q).long(), "bool tensor"),
    ("sweep over time", _front_sweep, "knocked each other"),
]


def _sig(ab_t, ab_p, eta, *, eta_pow=1, var=False, first="ok", second="ok"):
    """A student's ddim_sigma with one mistake switched on."""
    a = {"ok": (1 - ab_p) / (1 - ab_t), "inverted": (1 - ab_t) / (1 - ab_p).clamp(min=1e-300), "none": None}[first]
    b = {"ok": 1 - ab_t / ab_p, "flipped": (1 - ab_p / ab_t).abs(), "none": None}[second]
    v = (a if a is not None else 1) * (b if b is not None else 1)
    v = v if var else v.sqrt()
    return eta ** eta_pow * v


LAB07_SIGMA = [
    ("eta ignored", lambda a, b, eta: _sig(a, b, eta, eta_pow=0), "ignores eta"),
    ("eta squared", lambda a, b, eta: _sig(a, b, eta, eta_pow=2), "eta was squared"),
    ("variance", lambda a, b, eta: _sig(a, b, eta, var=True), "variance where the standard deviation"),
    ("first ratio inverted", lambda a, b, eta: _sig(a, b, eta, first="inverted"), "first ratio is inverted"),
    ("second ratio flipped", lambda a, b, eta: _sig(a, b, eta, second="flipped"), "second factor is sqrt"),
    ("second factor missing", lambda a, b, eta: _sig(a, b, eta, second="none"), "second factor is missing"),
    ("python float", lambda a, b, eta: float(_sig(a, b, eta)[0]), "torch.Tensor"),
]


def _wilson(p, n, z=1.96, *, centre="wilson", extra=True, square=True, divide=True, swap=False, n2=True):
    zz = z ** 2 if square else z
    shrink = 1 + zz / n
    c = (p + zz / (2 * n)) / shrink if centre == "wilson" else p
    if centre == "wald":
        h = z * (p * (1 - p) / n).sqrt()
    else:
        h = z * (p * (1 - p) / n + ((zz / (4 * n ** 2 if n2 else 4 * n)) if extra else 0)).sqrt()
        h = h / shrink if divide else h
    return torch.stack([c + h, c - h] if swap else [c - h, c + h], dim=-1)


LAB09_WILSON = [
    ("Wald", lambda p, n, z: _wilson(p, n, z, centre="wald"), "Wald interval"),
    ("centred at p", lambda p, n, z: _wilson(p, n, z, centre="p"), "centred at p"),
    ("no z^2/4n^2", lambda p, n, z: _wilson(p, n, z, extra=False), "lacks z\\^2 / \\(4 n\\^2\\)"),
    ("z not squared", lambda p, n, z: _wilson(p, n, z, square=False), "z was not squared"),
    ("4n not 4n^2", lambda p, n, z: _wilson(p, n, z, n2=False), "where z\\^2 / \\(4 n\\^2\\) belongs"),
    ("not divided", lambda p, n, z: _wilson(p, n, z, divide=False), "not divided by 1 \\+ z\\^2 / n"),
    ("swapped", lambda p, n, z: _wilson(p, n, z, swap=True), "columns are swapped"),
    ("transposed", lambda p, n, z: _wilson(p, n, z).T, "transposed"),
]


def _thr(x0, pct, *, floor=True, per_image=True, absolute=True, divide=True, clamp=True, q=None):
    """A student's dynamic_threshold with one mistake switched on."""
    v = x0.flatten(1)
    v = v.abs() if absolute else v
    if q == "max":
        s = v.max(1).values
    elif per_image:
        s = torch.quantile(v, pct, dim=1)
    else:
        s = torch.quantile(v.flatten(), pct).expand(x0.shape[0])
    s = (s.clamp(min=1) if floor else s).view(-1, *([1] * (x0.dim() - 1)))
    out = x0.clamp(-s, s) if clamp else x0
    return out / s if divide else out


LAB07_THRESH = [
    ("no floor at 1", lambda x, p: _thr(x, p, floor=False), "at least 1"),
    ("one s for the batch", lambda x, p: _thr(x, p, per_image=False), "whole batch"),
    ("signed quantile", lambda x, p: _thr(x, p, absolute=False), "absolute"),
    ("not divided", lambda x, p: _thr(x, p, divide=False), "not divided by s"),
    ("not clamped", lambda x, p: _thr(x, p, clamp=False), "without clamping"),
    ("static", lambda x, p: x.clamp(-1, 1), "static thresholding"),
    ("max", lambda x, p: _thr(x, p, q="max"), "largest"),
    ("percent", lambda x, p: _thr(x, 100 * p), "fraction"),
    ("in place", lambda x, p: x.clamp_(-1, 1), "in place"),
]


def _knee(nfes, quality, margin, *, how="min", per_row=True, strict=False, use_margin=True, index=False):
    """A student's fewest_evaluations with one mistake switched on."""
    best = quality.max(1, keepdim=True).values if per_row else quality.max()
    low = best - (margin if use_margin else 0.0)
    good = quality > low if strict else quality >= low
    n = torch.arange(len(nfes)) if index else nfes
    big = torch.full_like(n, 10 ** 9)
    if how == "min":
        return torch.where(good, n[None, :], big[None, :]).min(1).values
    if how == "max":
        return torch.where(good, n[None, :], -big[None, :]).max(1).values
    return nfes[good.long().argmax(1)]  # the first good column


LAB07_KNEE = [
    ("largest", lambda n, q, m: _knee(n, q, m, how="max"), "largest good-enough"),
    ("first column", lambda n, q, m: _knee(n, q, m, how="first"), "no particular order"),
    ("column index", lambda n, q, m: _knee(n, q, m, index=True), "column index"),
    ("one best for all", lambda n, q, m: _knee(n, q, m, per_row=False), "one best for all samplers"),
    ("strict", lambda n, q, m: _knee(n, q, m, strict=True), "strictly within"),
    ("margin ignored", lambda n, q, m: _knee(n, q, m, use_margin=False), "margin was ignored"),
    ("float", lambda n, q, m: _knee(n, q, m).double(), "dtype"),
]

# --- lab 10 ----------------------------------------------------------------------------------------------


def _fm(model, x0, y, t, noise, *, xt=None, target=None, t_in=None, y_in=None, reduce=None):
    tb = _b(t, x0)
    x_t = (1 - tb) * x0 + tb * noise if xt is None else xt(x0, noise, tb)
    u = noise - x0 if target is None else target(x0, noise)
    d = model(x_t, t if t_in is None else t_in(t), y if y_in is None else y_in(y)) - u
    return (d ** 2).mean() if reduce is None else reduce(d)


LAB10_LOSS = [
    ("target x0 - noise", lambda m, x, y, t, n: _fm(m, x, y, t, n, target=lambda a, b: a - b), "sign is reversed|x0 - noise"),
    ("data at t = 1", lambda m, x, y, t, n: _fm(m, x, y, t, n, xt=lambda a, b, tb: tb * a + (1 - tb) * b), "t direction reversed"),
    ("Lipman convention", lambda m, x, y, t, n: _fm(m, x, y, t, n, xt=lambda a, b, tb: tb * a + (1 - tb) * b,
                                                     target=lambda a, b: a - b), "t direction reversed"),
    ("model sees 1 - t", lambda m, x, y, t, n: _fm(m, x, y, t, n, t_in=lambda t_: 1 - t_), "1 - t"),
    ("target noise", lambda m, x, y, t, n: _fm(m, x, y, t, n, target=lambda a, b: b), "eps-prediction"),
    ("target x0", lambda m, x, y, t, n: _fm(m, x, y, t, n, target=lambda a, b: a), "target is x0"),
    ("model sees x0", lambda m, x, y, t, n: _fm(m, x, y, t, n, xt=lambda a, b, tb: a), "given x0"),
    ("sqrt mix", lambda m, x, y, t, n: _fm(m, x, y, t, n, xt=lambda a, b, tb: (1 - tb).sqrt() * a + tb.sqrt() * b),
     "variance-preserving"),
    ("sum", lambda m, x, y, t, n: _fm(m, x, y, t, n, reduce=lambda d: (d ** 2).sum()), "sum instead of a mean"),
    ("L1", lambda m, x, y, t, n: _fm(m, x, y, t, n, reduce=lambda d: d.abs().mean()), "L1"),
    ("half", lambda m, x, y, t, n: _fm(m, x, y, t, n, reduce=lambda d: 0.5 * (d ** 2).mean()), "1/2"),
    ("no class", lambda m, x, y, t, n: _fm(m, x, y, t, n, y_in=lambda y_: torch.full_like(y_, 10)), "no class"),
    ("t not per image", lambda m, x, y, t, n: _fm(m, x, y, t, n, xt=lambda a, b, tb: (1 - t[0]) * a + t[0] * b), "t\\[0\\]"),
    ("item", lambda m, x, y, t, n: _fm(m, x, y, t, n).item(), "Python float"),
    ("detached", lambda m, x, y, t, n: _fm(m, x, y, t, n).detach(), "no gradient"),
    ("model sees t * 999", lambda m, x, y, t, n: _fm(m, x, y, t, n, t_in=lambda t_: t_ * 999), "in \\[0, 1\\]"),
]


def _euler(x, v, t, tn, dt=None):
    step = _b(tn, x) - _b(t, x) if dt is None else dt(_b(t, x), _b(tn, x))
    return (x + step * v).to(x.dtype)


LAB10_STEP = [
    ("sign reversed", lambda x, v, t, tn: _euler(x, v, t, tn, dt=lambda a, b: a - b), "sign is reversed"),
    ("dt = t_next", lambda x, v, t, tn: _euler(x, v, t, tn, dt=lambda a, b: b), "step size is t_next"),
    ("dt = t", lambda x, v, t, tn: _euler(x, v, t, tn, dt=lambda a, b: a), "step size is t"),
    ("no step size", lambda x, v, t, tn: x + v, "no step size"),
    ("x - v", lambda x, v, t, tn: x - v, "whole unit of time"),
    ("t[0] for all", lambda x, v, t, tn: x + (tn[0] - t[0]) * v, "t\\[0\\]"),
    ("not reshaped", lambda x, v, t, tn: x + (tn - t) * v, "\\[B, 1, 1, 1\\]|shape"),
    ("in place", lambda x, v, t, tn: x.add_(_b(tn - t, x) * v), "in place"),
    ("no return", lambda x, v, t, tn: None, "return"),
]


def _fl(model, x_1, y, times, *, heun=False, order=None, t_of=None, slope=None, step=None, last_plain=False):
    x, B = x_1, x_1.shape[0]
    ks = list(range(len(times) - 1) if order is None else order(len(times) - 1))
    for k in ks:
        t = times[k].to(x.dtype).expand(B)
        tn = times[k + 1].to(x.dtype).expand(B)
        d = model(x, t if t_of is None else t_of(t, tn), y)
        st = _euler if step is None else step
        if not heun or (last_plain and k == ks[-1]):
            x = st(x, d, t, tn)
            continue
        xp = _euler(x, d, t, tn)
        d2 = model(xp, tn, y)
        x = st(x, (d + d2) / 2 if slope is None else slope(d, d2, model, x, xp, t, tn, y), t, tn)
    return x


LAB10_EULER = [
    ("one step short", lambda m, x, y, ts: _fl(m, x, y, ts, order=lambda S: range(S - 1)), "off by one"),
    ("first step skipped", lambda m, x, y, ts: _fl(m, x, y, ts, order=lambda S: range(1, S)), "off by one"),
    ("model at t_next", lambda m, x, y, ts: _fl(m, x, y, ts, t_of=lambda t, tn: tn), "given t_next"),
    ("model at 1 - t", lambda m, x, y, ts: _fl(m, x, y, ts, t_of=lambda t, tn: 1 - t), "t direction reversed"),
    ("step reversed", lambda m, x, y, ts: _fl(m, x, y, ts, step=lambda x_, v, t, tn: _euler(x_, v, t, tn, dt=lambda a, b: a - b)),
     "sign is reversed|euler_step"),
    ("one more index", lambda m, x, y, ts: _fl(m, x, y, ts, order=lambda S: range(S + 1)), "out of range|S steps"),
    ("times as a scalar", lambda m, x, y, ts: _fl(m, x, y, ts, t_of=lambda t, tn: t[0]), "shape \\[B\\]"),
    ("float64 x", lambda m, x, y, ts: _fl(m, x, y, ts, step=lambda x_, v, t, tn: x_.double() + _b(tn.double() - t.double(), x_) * v),
     "dtype"),
    ("no class", lambda m, x, y, ts: _fl(m, x, torch.full_like(y, 10), ts), "no class"),
    ("all steps", lambda m, x, y, ts: torch.stack([_fl(m, x, y, ts[:k + 2]) for k in range(len(ts) - 1)]), "one image per step|shape"),
]

LAB10_HEUN = [
    ("only d_next", lambda m, x, y, ts: _fl(m, x, y, ts, heun=True, slope=lambda d, d2, *a: d2), "average"),
    ("sum not halved", lambda m, x, y, ts: _fl(m, x, y, ts, heun=True, slope=lambda d, d2, *a: d + d2), "averaging wrong"),
    ("d + d2 / 2", lambda m, x, y, ts: _fl(m, x, y, ts, heun=True, slope=lambda d, d2, *a: d + d2 / 2), "averaging wrong"),
    ("corrector at t", lambda m, x, y, ts: _fl(m, x, y, ts, heun=True,
                                               slope=lambda d, d2, mm, x_, xp, t, tn, y_: (d + mm(xp, t, y_)) / 2), "time t"),
    ("corrector at x", lambda m, x, y, ts: _fl(m, x, y, ts, heun=True,
                                               slope=lambda d, d2, mm, x_, xp, t, tn, y_: (d + mm(x_, tn, y_)) / 2), "x_pred"),
    ("last uncorrected", lambda m, x, y, ts: _fl(m, x, y, ts, heun=True, last_plain=True), "last step"),
    ("plain Euler", lambda m, x, y, ts: _fl(m, x, y, ts), "that is Euler"),
    ("one step short", lambda m, x, y, ts: _fl(m, x, y, ts, heun=True, order=lambda S: range(S - 1)), "off by one"),
    ("model at 1 - t", lambda m, x, y, ts: _fl(m, x, y, ts, heun=True, t_of=lambda t, tn: 1 - t), "t direction reversed"),
    ("averaged x, not slopes", lambda m, x, y, ts: _fl(m, x, y, ts, heun=True,
                                                       step=lambda x_, v, t, tn: (x_ + _euler(x_, v, t, tn)) / 2), None),
]


def _cfgv(m, x, t, y, w, n, a=None, b=None, null=None):
    c, u = m(x, t, y), m(x, t, torch.full_like(y, n if null is None else null))
    return (1 + w if a is None else a(w)) * c - (w if b is None else b(w)) * u


LAB10_CFG = [
    ("real labels", lambda m, x, t, y, w, n: (1 + w) * m(x, t, y) - w * m(x, t, y), "real labels"),
    ("scale convention", lambda m, x, t, y, w, n: _cfgv(m, x, t, y, w, n, a=lambda w_: w_, b=lambda w_: w_ - 1), "scale"),
    ("swapped", lambda m, x, t, y, w, n: (1 + w) * m(x, t, torch.full_like(y, n)) - w * m(x, t, y), "swapped"),
    ("no uncond", lambda m, x, t, y, w, n: (1 + w) * m(x, t, y), "missing"),
    ("w only", lambda m, x, t, y, w, n: w * (m(x, t, y) - m(x, t, torch.full_like(y, n))), "weight 1 \\+ w"),
    ("sign", lambda m, x, t, y, w, n: m(x, t, y) - w * (m(x, t, y) - m(x, t, torch.full_like(y, n))), "wrong sign"),
    ("null = 10", lambda m, x, t, y, w, n: _cfgv(m, x, t, y, w, n, null=10), "null_class"),
    ("null = 0", lambda m, x, t, y, w, n: _cfgv(m, x, t, y, w, n, null=0), "null_class"),
    ("1 - t", lambda m, x, t, y, w, n: _cfgv(m, x, 1 - t, y, w, n), "1 - t"),
]


# --- labs 05 and 06: the exercises added together (respacing, variance, grain, the judge's measures; CLIP's
# preprocessing, ensembling, clear/blurry, CLIPScore, confusion, correlation) ----------------------------------
def _resp(schedule, grid, *, order="asc", betas="ratio", first="one"):
    ts = grid.flip(0) if order == "asc" else grid
    ab = schedule.alpha_bars[ts]
    prev = {"one": torch.cat([ab.new_ones(1), ab[:-1]]), "roll": ab.roll(1),
            "full": schedule.alpha_bars_prev[ts]}[first]
    b = {"ratio": 1 - ab / prev, "own": schedule.betas[ts], "diff": prev - ab, "inverted": 1 - prev / ab,
         "total": 1 - ab}[betas]
    return b, ab


LAB05_RESP = [
    ("grid order", lambda s, g: _resp(s, g, order="desc"), "grid's order|descending"),
    ("one-step betas", lambda s, g: _resp(s, g, betas="own"), "own betas"),
    ("prev from the full schedule", lambda s, g: _resp(s, g, first="full"), "own betas|whole schedule"),
    ("difference", lambda s, g: _resp(s, g, betas="diff"), "not a ratio"),
    ("ratio upside down", lambda s, g: _resp(s, g, betas="inverted"), "upside down"),
    ("roll wraps", lambda s, g: _resp(s, g, first="roll"), "wraps around"),
    ("1 - alpha_bar", lambda s, g: _resp(s, g, betas="total"), "total noise variance"),
    ("swapped outputs", lambda s, g: _resp(s, g)[::-1], "order is \\(betas, alpha_bars\\)|betas of the schedule"),
    ("whole schedule", lambda s, g: (s.betas.clone(), s.alpha_bars.clone()), "one value per step of the \\*schedule"),
    ("one short", lambda s, g: (1 - s.alpha_bars[g.flip(0)][1:] / s.alpha_bars[g.flip(0)][:-1], s.alpha_bars[g.flip(0)]),
     "one value short"),
    ("cumprod of one-step betas", lambda s, g: (s.betas[g.flip(0)], torch.cumprod(1 - s.betas[g.flip(0)], 0)),
     "cumulative product"),
]


def _sig05(b, ab, kind, *, prev="one", swap=False, root=False):
    p = {"one": torch.cat([ab.new_ones(1), ab[:-1]]), "wrap": ab.roll(1), "next": torch.cat([ab[1:], ab[-1:]])}[prev]
    out = (1 - p) / (1 - ab) * b
    if swap:
        kind = "beta" if kind == "beta_tilde" else "beta_tilde"
    out = b.clone() if kind == "beta" else out
    return out.sqrt() if root else out


LAB05_SIGMA = [
    ("kinds swapped", lambda b, ab, k: _sig05(b, ab, k, swap=True), "other choice"),
    ("always beta_tilde", lambda b, ab, k: _sig05(b, ab, "beta_tilde"), "other choice"),
    ("standard deviation", lambda b, ab, k: _sig05(b, ab, k, root=True), "standard deviation"),
    ("ab[t - 1] wraps", lambda b, ab, k: _sig05(b, ab, k, prev="wrap"), "wraps negative"),
    ("ab[t + 1]", lambda b, ab, k: _sig05(b, ab, k, prev="next"), "off by one"),
    ("alpha_bar not 1 - alpha_bar", lambda b, ab, k: b.clone() if k == "beta" else
     torch.cat([ab.new_ones(1), ab[:-1]]) / ab * b, "alpha_bar instead of 1 - alpha_bar"),
    ("beta missing", lambda b, ab, k: b.clone() if k == "beta" else (1 - torch.cat([ab.new_ones(1), ab[:-1]])) / (1 - ab),
     "factor beta_t is missing"),
    ("alpha", lambda b, ab, k: 1 - b if k == "beta" else _sig05(b, ab, k), "1 - beta_t"),
]


def _tv(x, *, how="mean", pow_=1, directions=("v", "h"), absolute=True):
    d = {"v": x[..., 1:, :] - x[..., :-1, :], "h": x[..., :, 1:] - x[..., :, :-1]}
    parts = [(d[k].abs() if absolute else d[k]).pow(pow_).flatten(1) for k in directions]
    if how == "pooled":
        return torch.cat(parts, 1).mean(1)
    red = [p.mean(1) if how == "mean" else p.sum(1) for p in parts]
    return sum(red) / len(red) if how != "added" else sum(p.mean(1) for p in parts)


LAB05_TV = [
    ("vertical only", lambda x: _tv(x, directions=("v",)), "only the vertical"),
    ("horizontal only", lambda x: _tv(x, directions=("h",)), "only the horizontal"),
    ("added", lambda x: _tv(x, how="added"), "added, not averaged|constant factor|factor of 2"),
    ("squared", lambda x: _tv(x, pow_=2), "squared differences"),
    ("no abs", lambda x: _tv(x, absolute=False), "no absolute value"),
    ("sums", lambda x: _tv(x, how="sum"), "sums, not means"),
    ("pooled", lambda x: _tv(x, how="pooled"), "pooled"),
    ("batch mean", lambda x: _tv(x).mean(), "one number for the whole batch"),
    ("per channel", lambda x: ((x[..., 1:, :] - x[..., :-1, :]).abs().mean((2, 3))
                               + (x[..., :, 1:] - x[..., :, :-1]).abs().mean((2, 3))) / 2, "one value per channel"),
]


def _stay(curve, ts, threshold, *, strict=False, index=False, never=-1, reverse=False):
    c = curve.flip(0) if reverse else curve
    k = len(c)
    while k > 0 and (c[k - 1] > threshold if strict else c[k - 1] >= threshold):
        k -= 1
    if k == len(c):
        return never if never is not None else None
    return k if index else int(ts[k])


def _first_crossing(curve, ts, threshold):
    for j in range(len(curve)):
        if curve[j] >= threshold:
            return int(ts[j])
    return -1


LAB05_TFROM = [
    ("first crossing", _first_crossing, "first\\* step at which"),
    ("last below", lambda c, ts, th: next((int(ts[j]) for j in range(len(c) - 1, -1, -1) if c[j] < th), -1),
     "last step \\*below"),
    ("index", lambda c, ts, th: _stay(c, ts, th, index=True), "index into the steps"),
    ("strict >", lambda c, ts, th: _stay(c, ts, th, strict=True), ">=, not >"),
    ("never = ts[-1]", lambda c, ts, th: _stay(c, ts, th, never=int(ts[-1])), "answer is -1"),
    ("never = None", lambda c, ts, th: _stay(c, ts, th, never=None), "None"),
    ("read from the end", lambda c, ts, th: _stay(c, ts, th, reverse=True), "read from the end"),
    ("float t", lambda c, ts, th: float(_stay(c, ts, th)), "integer time step"),
    ("mean of the tail", lambda c, ts, th: next((int(ts[j]) for j in range(len(c)) if c[j:].mean() >= th), -1), None),
]


def _prep(images, size, mean, std, *, mode="bicubic", ac=False, clamp="before", norm="std", channels=3,
          one_mean=False, signed=False):
    x = images * 2 - 1 if signed else images
    x = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "nearest" else {"align_corners": ac}))
    x = x.clamp(0, 1) if clamp == "before" else x
    x = x.expand(-1, channels, -1, -1)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)[:, :1 if one_mean else 3]
    sd = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)[:, :1 if one_mean else 3]
    out = {"std": (x - m) / sd, "var": (x - m) / sd ** 2, "times": (x - m) * sd, "order": x / sd - m, "none": x,
           "mean only": x - m}[norm]
    return out.clamp(0, 1) if clamp == "after" else out


LAB06_PREP = [
    ("no clamp", lambda *a: _prep(*a, clamp=None), "not clipped"),
    ("clamp after", lambda *a: _prep(*a, clamp="after"), "clamped after normalising"),
    ("bilinear", lambda *a: _prep(*a, mode="bilinear"), "bilinear"),
    ("nearest", lambda *a: _prep(*a, mode="nearest"), "nearest"),
    ("align_corners", lambda *a: _prep(*a, ac=True), "align_corners"),
    ("no normalisation", lambda *a: _prep(*a, norm="none"), "no normalisation"),
    ("divided by the variance", lambda *a: _prep(*a, norm="var"), "variance"),
    ("times std", lambda *a: _prep(*a, norm="times"), "multiplied by the std"),
    ("x / std - mean", lambda *a: _prep(*a, norm="order"), "subtract first"),
    ("std missing", lambda *a: _prep(*a, norm="mean only"), "std was not applied"),
    ("mean and std not reshaped", lambda im, s, m, sd: (F.interpolate(im, size=(s, s), mode="bicubic").clamp(0, 1)
                                                        .expand(-1, 3, -1, -1) - torch.tensor(m)) / torch.tensor(sd),
     "do not broadcast"),
    ("red's numbers", lambda *a: _prep(*a, one_mean=True), "red channel"),
    ("to [-1, 1]", lambda *a: _prep(*a, signed=True), "\\[-1, 1\\]"),
    ("not resized", lambda im, s, m, sd: (im.expand(-1, 3, -1, -1) - torch.tensor(m).view(1, 3, 1, 1))
     / torch.tensor(sd).view(1, 3, 1, 1), "not resized"),
]


def _ens(e, *, first=True, last=True, dim=0, how="mean"):
    u = _unit(e) if first else e
    m = u.mean(dim) if how == "mean" else u.sum(dim) if how == "sum" else u.median(dim).values
    return _unit(m) if last else m


LAB06_ENS = [
    ("not renormalised", lambda e: _ens(e, last=False), "not normalised again"),
    ("normalised after the mean only", lambda e: _ens(e, first=False), "averaged before normalising"),
    ("no normalisation", lambda e: _ens(e, first=False, last=False), "no normalisation at all"),
    ("mean over captions", lambda e: _ens(e, dim=1), "over the captions"),
    ("sum", lambda e: _ens(e, how="sum", last=False), "sum of unit vectors"),
    ("median", lambda e: _ens(e, how="median"), "median"),
    ("wrong axis", lambda e: _unit(_unit(e, 0).mean(0), 0), "wrong dimension"),
    ("not averaged", lambda e: _unit(e), "not averaged"),
]


def _clear(u, c, b, s, *, unit=True, scale="times", which="clear", how="sigmoid"):
    if unit:
        u, c, b = _unit(u), _unit(c), _unit(b)
    cc, cb = (u * c).sum(1), (u * b).sum(1)
    k = s if scale == "times" else 1 / s if scale == "divided" else 1
    if how == "only":
        return torch.sigmoid(k * cc)
    if how == "diff":
        return k * (cc - cb)
    p = torch.sigmoid(k * (cc - cb))
    return p if which == "clear" else 1 - p


LAB06_CLEAR = [
    ("blurry's probability", lambda *a: _clear(*a, which="blurry"), "blurry"),
    ("no logit_scale", lambda *a: _clear(*a, scale=None), "logit_scale is missing"),
    ("divided by logit_scale", lambda *a: _clear(*a, scale="divided"), "divided by logit_scale"),
    ("no normalisation", lambda *a: _clear(*a, unit=False), "no normalisation"),
    ("clear caption only", lambda *a: _clear(*a, how="only"), "only the clear caption"),
    ("logit difference", lambda *a: _clear(*a, how="diff"), "logit difference itself"),
    ("all pairs", lambda u, c, b, s: torch.sigmoid(s * (_unit(u) @ _unit(c).T - _unit(u) @ _unit(b).T)),
     "every image against every caption"),
    ("softmax over both, [N, 2]", lambda u, c, b, s: torch.stack([(_unit(u) * _unit(c)).sum(1),
                                                                  (_unit(u) * _unit(b)).sum(1)], 1).mul(s).softmax(1),
     "both probabilities"),
    ("cosine ratio", lambda u, c, b, s: (_unit(u) * _unit(c)).sum(1) / ((_unit(u) * _unit(c)).sum(1)
                                                                         + (_unit(u) * _unit(b)).sum(1)),
     "ratio of cosines"),
]


def _cs(u, v, *, w=100.0, clip="zero", unit=True):
    cos = ((_unit(u) * _unit(v)) if unit else (u * v)).sum(1)
    cos = {"zero": cos.clamp(min=0), None: cos, "abs": cos.abs(), "above": cos.clamp(max=0)}[clip]
    return w * cos


LAB06_CS = [
    ("no clip at 0", lambda u, v: _cs(u, v, clip=None), "negative cosines were kept"),
    ("abs", lambda u, v: _cs(u, v, clip="abs"), "absolute value"),
    ("w = 2.5", lambda u, v: _cs(u, v, w=2.5), "w = 2.5"),
    ("no weight", lambda u, v: _cs(u, v, w=1.0), "weight is missing"),
    ("no normalisation", lambda u, v: _cs(u, v, unit=False), "no normalisation"),
    ("clamp from above", lambda u, v: _cs(u, v, clip="above"), "clamp from above"),
    ("all pairs", lambda u, v: 100 * (_unit(u) @ _unit(v).T).clamp(min=0), "every image against every caption"),
    ("batch mean", lambda u, v: _cs(u, v).mean(), "one number for the whole batch"),
]


def _conf(labels, predicted, K, *, norm="rows", transpose=False, empty="zero"):
    c = torch.zeros(K, K)
    for a, b in zip(labels.tolist(), predicted.tolist()):
        c[a, b] += 1
    if norm == "rows":
        c = c / (c.sum(1, keepdim=True).clamp(min=1) if empty == "zero" else c.sum(1, keepdim=True))
    elif norm == "cols":
        c = c / c.sum(0, keepdim=True).clamp(min=1)
    elif norm == "total":
        c = c / len(labels)
    return c.T if transpose else c


LAB06_CONF = [
    ("transposed", lambda y, p, K: _conf(y, p, K, transpose=True), "rows are the answers"),
    ("counts", lambda y, p, K: _conf(y, p, K, norm=None), "counts, not shares"),
    ("columns normalised", lambda y, p, K: _conf(y, p, K, norm="cols"), "each column"),
    ("divided by N", lambda y, p, K: _conf(y, p, K, norm="total"), "number of all samples"),
    ("NaN for an empty class", lambda y, p, K: _conf(y, p, K, empty="nan"), "without samples"),
    ("int counts", lambda y, p, K: _conf(y, p, K, norm=None).long(), "dtype"),
    ("N x N", lambda y, p, K: (y[:, None] == p[None, :]).float(), "\\[K, K\\]"),
]


def _r(x, y, *, centre=True, norm=True, square=False, root=True):
    dx, dy = (x - x.mean(), y - y.mean()) if centre else (x, y)
    cov = (dx * dy).sum()
    if not norm:
        return cov / (len(x) - 1)
    d = (dx * dx).sum() * (dy * dy).sum()
    r = cov / (d.sqrt() if root else d)
    return r * r if square else r


LAB06_R = [
    ("not centred", lambda x, y: _r(x, y, centre=False), "not centred"),
    ("covariance", lambda x, y: _r(x, y, norm=False), "the covariance"),
    ("r squared", lambda x, y: _r(x, y, square=True), "r squared"),
    ("no sqrt", lambda x, y: _r(x, y, root=False), "square root"),
    ("abs", lambda x, y: _r(x, y).abs(), "absolute value"),
    ("mixed normalisers", lambda x, y: ((x - x.mean()) * (y - y.mean())).sum() / (len(x) - 1) / (x.std(unbiased=False)
                                                                                                * y.std(unbiased=False)),
     "normaliser"),
    ("elementwise", lambda x, y: (x - x.mean()) * (y - y.mean()), "one number|shape"),
]


def _u(steps):
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


LAB10_GRID = [
    ("shift inverted", lambda S, s: _u(S) / (s - (s - 1) * _u(S)), "shift inverted"),
    ("1 + shift u", lambda S, s: s * _u(S) / (1 + s * _u(S)), "denominator"),
    ("uniform", lambda S, s: _u(S), "uniform grid"),
    ("no denominator", lambda S, s: s * _u(S), "denominator"),
    ("ascending", lambda S, s: (s * _u(S) / (1 + (s - 1) * _u(S))).flip(0), "ascends"),
    ("S points", lambda S, s: torch.linspace(1.0, 0.0, S, dtype=torch.float64), "S \\+ 1 times"),
    ("shift on 1 - u", lambda S, s: 1 - s * (1 - _u(S)) / (1 + (s - 1) * (1 - _u(S))), "shift inverted"),
    ("u ** shift", lambda S, s: _u(S) ** s, "power law"),
]

# lab 10, reflow: the coupling, training on it, straightness (written with labkit's euler_loop / flow loss)


def _reflow_pairs(model, y, times, shape, B, gen, *, twice=False, per_batch=False, swap=False, loop=None, drop_last=False,
           labels=None, one_batch=False):
    from labkit import flow

    N = len(y)
    if per_batch:
        x_1 = torch.cat([torch.randn((len(y[i:i + B]), *shape), generator=gen) for i in range(0, N, B)])
    else:
        x_1 = torch.randn((N, *shape), generator=gen)
    run = flow.euler_loop if loop is None else loop
    stop = (N // B) * B if drop_last else N
    starts = range(0, stop, B) if not one_batch else range(0, 1)
    x_0 = torch.cat([run(model, x_1[i:i + B], (y if labels is None else labels(y))[i:i + B], times) for i in starts])
    if twice:
        x_1 = torch.randn((N, *shape), generator=gen)
    return (x_1, x_0) if swap else (x_0, x_1)


LAB10_PAIRS = [
    ("noise drawn twice", lambda m, y, ts, sh, B, g: _reflow_pairs(m, y, ts, sh, B, g, twice=True), "different noises"),
    ("noise drawn per batch", lambda m, y, ts, sh, B, g: _reflow_pairs(m, y, ts, sh, B, g, per_batch=True), "batch by batch"),
    ("pair swapped", lambda m, y, ts, sh, B, g: _reflow_pairs(m, y, ts, sh, B, g, swap=True), "\\(x_1, x_0\\)"),
    ("last batch dropped", lambda m, y, ts, sh, B, g: _reflow_pairs(m, y, ts, sh, B, g, drop_last=True), "last, shorter batch"),
    ("one batch", lambda m, y, ts, sh, B, g: _reflow_pairs(m, y, ts, sh, B, g, one_batch=True), "one batch"),
    ("Heun", lambda m, y, ts, sh, B, g: _reflow_pairs(m, y, ts, sh, B, g, loop=__import__("labkit.flow").flow.heun_loop),
     "Heun"),
    ("grid flipped", lambda m, y, ts, sh, B, g: _reflow_pairs(m, y, ts, sh, B, g,
                                                       loop=lambda mm, x, yy, tt: _fl(mm, x, yy, tt.flip(0))), "backwards"),
    ("no labels", lambda m, y, ts, sh, B, g: _reflow_pairs(m, y, ts, sh, B, g, labels=lambda y_: torch.full_like(y_, 10)),
     "without its label"),
    ("only x_0", lambda m, y, ts, sh, B, g: _reflow_pairs(m, y, ts, sh, B, g)[0], "return the pair"),
    ("Euler step reversed", lambda m, y, ts, sh, B, g: _reflow_pairs(m, y, ts, sh, B, g, loop=lambda mm, x, yy, tt: _fl(
        mm, x, yy, tt, step=lambda x_, v, t, tn: _euler(x_, v, t, tn, dt=lambda a, b: a - b))), "euler_loop"),
]


def _reflow(model, opt, x_0, x_1, y, steps, B, gen, *, broken=False, fresh=False, swap=False, t_once=False,
            t_first=False, no_zero=False, no_return=False, idx_once=False, y_whole=False):
    from labkit import flow

    model.train()
    losses, idx = [], None
    for _ in range(steps):
        if t_first:
            t = torch.rand(B, generator=gen)
        if idx is None or not idx_once:
            idx = torch.randint(0, len(x_0), (B,), generator=gen)
        idx_1 = torch.randint(0, len(x_0), (B,), generator=gen) if broken else idx
        if t_once:
            t = torch.rand(1, generator=gen).expand(B)
        elif not t_first:
            t = torch.rand(B, generator=gen)
        noise = torch.randn(x_1[idx_1].shape, generator=gen) if fresh else x_1[idx_1]
        a, b = (noise, x_0[idx]) if swap else (x_0[idx], noise)
        if not no_zero:
            opt.zero_grad()
        loss = flow.flow_matching_loss(model, a, y if y_whole else y[idx], t, b)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return None if no_return else losses


def _reflow_with(**kw):
    return lambda *a: _reflow(*a, **kw)


LAB10_REFLOW = [
    ("pairs broken (two index draws)", _reflow_with(broken=True), "different noises"),
    ("fresh noise", _reflow_with(fresh=True), "independent"),
    ("x_0 and x_1 swapped", _reflow_with(swap=True), "swapped"),
    ("t per batch", _reflow_with(t_once=True), "per batch"),
    ("t before the indices", _reflow_with(t_first=True), "order"),
    ("no zero_grad", _reflow_with(no_zero=True), "never cleared"),
    ("indices drawn once", _reflow_with(idx_once=True), "every step"),
    ("no return", _reflow_with(no_return=True), "nothing was returned"),
    ("labels not indexed", _reflow_with(y_whole=True), "shape \\[B\\]"),
    ("no step at all", lambda *a: [0.0] * a[5], "did not change"),
]


def _straight(model, x_1, y, times, *, chord=None, width=None, reduce=None, t_of=None, last=False):
    from labkit import flow

    x, B, vs = x_1, x_1.shape[0], []
    for k in range(len(times) - 1):
        t, tn = times[k].to(x.dtype).expand(B), times[k + 1].to(x.dtype).expand(B)
        v = model(x, t if t_of is None else t_of(t), y)
        vs.append(v)
        x = flow.euler_step(x, v, t, tn)
    c = x_1 - x if chord is None else chord(x_1, x, vs)
    ws = (times[:-1] - times[1:]).to(x.dtype) if width is None else width(times, len(vs))
    r = (lambda d: (d ** 2).flatten(1).sum(1)) if reduce is None else reduce
    per = sum(w * r(c - v) for w, v in zip(ws, vs))
    return per if last else per.mean()


LAB10_STRAIGHT = [
    ("chord x_0 - x_1", lambda m, x, y, ts: _straight(m, x, y, ts, chord=lambda a, b, vs: b - a), "chord sign reversed"),
    ("against the first velocity", lambda m, x, y, ts: _straight(m, x, y, ts, chord=lambda a, b, vs: vs[0]), "first one"),
    ("equal weights", lambda m, x, y, ts: _straight(m, x, y, ts, width=lambda tt, S: [1 / S] * S), "width"),
    ("no widths", lambda m, x, y, ts: _straight(m, x, y, ts, width=lambda tt, S: [1.0] * S), "width"),
    ("mean over pixels", lambda m, x, y, ts: _straight(m, x, y, ts, reduce=lambda d: (d ** 2).flatten(1).mean(1)),
     "averaged over the pixels"),
    ("norm not squared", lambda m, x, y, ts: _straight(m, x, y, ts, reduce=lambda d: (d ** 2).flatten(1).sum(1).sqrt()),
     "not squared"),
    ("model at 1 - t", lambda m, x, y, ts: _straight(m, x, y, ts, t_of=lambda t: 1 - t), "t direction reversed"),
    ("per image", lambda m, x, y, ts: _straight(m, x, y, ts, last=True), "one number"),
    ("summed over the images", lambda m, x, y, ts: _straight(m, x, y, ts, last=True).sum(), "mean over the images"),
    ("half", lambda m, x, y, ts: 0.5 * _straight(m, x, y, ts), "factor 1/2"),
]


def _lab03_class(name: str, mistake: str):
    import lab03_modules

    return lab03_modules.classes(mistake)[name]


LAB03_CLASSES = {}  # lab 03's classes (module exercises): each with one mistake, as tests/lab03_modules.py writes them
for _mistake, (_name, _phrase) in __import__("lab03_modules").MISTAKES.items():
    LAB03_CLASSES.setdefault(_name, []).append((_mistake.replace("_", " "), _lab03_class(_name, _mistake), _phrase))

LAB02_CLASSES = {}  # lab 02's classes: each made from the solution by one edit (tests/lab02_modules.py)
for _name, _edit, _phrase in __import__("lab02_modules").WRONG:
    LAB02_CLASSES.setdefault(_name, []).append((" / ".join(_edit.values())[:60] or "a line removed",
                                               __import__("lab02_modules").wrong_class(_name, _edit), _phrase))

SUITE = {
    ("lab00_setup", "to_unit_range"): LAB00,
    ("lab01_forward", "alpha_bars_from_betas"): LAB01_ALPHA,
    ("lab01_forward", "snr"): LAB01_SNR,
    ("lab01_forward", "q_sample"): LAB01_Q,
    ("lab01_forward", "forward_chain"): LAB01_CHAIN,
    ("lab01_forward", "linear_betas"): LAB01_LIN,
    ("lab01_forward", "cosine_alpha_bars"): LAB01_COS,
    ("lab01_forward", "predict_x0_from_eps"): LAB01_X0,
    ("lab01_forward", "q_posterior"): LAB01_POST,
    ("lab02_unet", "concat_skip"): LAB02_CAT,
    ("lab02_unet", "upsample_merge"): LAB02_UP,
    **{("lab02_unet", name): wrongs for name, wrongs in LAB02_CLASSES.items()},
    ("lab03_embeddings", "sinusoidal_embedding"): LAB03_PE,
    ("lab03_embeddings", "cosine_similarity"): LAB03_COS,
    ("lab03_embeddings", "film"): LAB03_FILM,
    **{("lab03_embeddings", name): wrongs for name, wrongs in LAB03_CLASSES.items()},
    ("lab04_training", "noise_prediction_loss"): LAB04_LOSS,
    ("lab04_training", "train_step"): LAB04_STEP,
    ("lab04_training", "drop_labels"): LAB04_DROP,
    ("lab04_training", "ema_update"): LAB04_EMA,
    ("lab04_training", "train_loop"): LAB04_LOOP,
    ("lab04_training", "warmup_cosine_lr"): LAB04_LR,
    ("lab05_sampling", "p_sample_step"): LAB05,
    ("lab05_sampling", "sample_loop"): LAB05_LOOP,
    ("lab06_clip", "cosine_similarity"): LAB06_COS,
    ("lab06_clip", "zero_shot_probs"): LAB06_ZS,
    ("lab06_clip", "feature_stats"): LAB06_STATS,
    ("lab06_clip", "frechet_distance"): LAB06_FD,
    ("lab06_clip", "bootstrap_interval"): LAB06_BOOT,
    ("lab05_sampling", "respaced"): LAB05_RESP,
    ("lab05_sampling", "sigma_squared"): LAB05_SIGMA,
    ("lab05_sampling", "total_variation"): LAB05_TV,
    ("lab05_sampling", "t_from"): LAB05_TFROM,
    ("lab06_clip", "clip_preprocess"): LAB06_PREP,
    ("lab06_clip", "prompt_ensemble"): LAB06_ENS,
    ("lab06_clip", "clear_probability"): LAB06_CLEAR,
    ("lab06_clip", "clip_score"): LAB06_CS,
    ("lab06_clip", "confusion_matrix"): LAB06_CONF,
    ("lab06_clip", "pearson_r"): LAB06_R,
    ("lab07_improvements", "cfg_combine"): LAB07_CFG,
    ("lab07_improvements", "ddim_step"): LAB07_DDIM,
    ("lab07_improvements", "dpmpp_2m_step"): LAB07_DPM,
    ("lab07_improvements", "cfg_eps"): LAB07_CFG_EPS,
    ("lab07_improvements", "ddim_loop"): LAB07_DDIM_LOOP,
    ("lab07_improvements", "dpmpp_2m_loop"): LAB07_DPM_LOOP,
    ("lab08_beyond", "guided_eps"): LAB08,
    ("lab08_beyond", "classifier_grad"): LAB08_GRAD,
    ("lab08_beyond", "classifier_guided_loop"): LAB08_LOOP,
    ("lab09_report", "recognisable_from"): LAB09_REC,
    ("lab09_report", "quartiles_per_digit"): LAB09_QUART,
    ("lab09_report", "relative_clip_score"): LAB09_REL,
    ("lab09_report", "within_class_diversity"): LAB09_DIV,
    ("lab09_report", "speedup_at_quality"): LAB09_SPEED,
    ("lab09_report", "heldout_x0_error"): LAB09_X0,
    ("lab09_report", "accuracy_margin"): LAB09_MARGIN,
    ("lab10_flow", "flow_matching_loss"): LAB10_LOSS,
    ("lab10_flow", "euler_step"): LAB10_STEP,
    ("lab10_flow", "euler_loop"): LAB10_EULER,
    ("lab10_flow", "heun_loop"): LAB10_HEUN,
    ("lab10_flow", "cfg_velocity"): LAB10_CFG,
    # labs 07 and 09, more of the student's own code (issue 25)
    ("lab07_improvements", "enforce_zero_terminal_snr"): LAB07_ZSNR,
    ("lab07_improvements", "spaced_timesteps"): LAB07_SPACED,
    ("lab09_report", "above_control"): LAB09_CONTROL,
    ("lab09_report", "later_than_rest"): LAB09_LATER,
    ("lab09_report", "pareto_front"): LAB09_PARETO,
    ("lab07_improvements", "ddim_sigma"): LAB07_SIGMA,
    ("lab09_report", "wilson_interval"): LAB09_WILSON,
    ("lab07_improvements", "dynamic_threshold"): LAB07_THRESH,
    ("lab07_improvements", "fewest_evaluations"): LAB07_KNEE,
    ("lab10_flow", "shifted_time_grid"): LAB10_GRID,
    ("lab10_flow", "reflow_pairs"): LAB10_PAIRS,
    ("lab10_flow", "reflow_train"): LAB10_REFLOW,
    ("lab10_flow", "straightness"): LAB10_STRAIGHT,
}


# --- running it ------------------------------------------------------------------------------------------

def _rounded_differently(fn):
    """The same wrong answer with its float result moved by up to 4 float32 rounding steps per entry (what
    another CPU's kernels may do): the message must not change with the machine. A class: its forward's."""
    eps = torch.finfo(torch.float32).eps
    if isinstance(fn, type):  # a module exercise: the same class, its output rounded differently
        rounded = _rounded_differently(fn.forward)
        return type(fn.__name__, (fn,), {"forward": lambda self, *a, **k: rounded(self, *a, **k)})

    def run(*args, **kwargs):
        g = torch.Generator().manual_seed(7)  # the same rounding on every call: a machine is deterministic
        out = fn(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_floating_point() and not out.requires_grad \
                and out.device.type == "cpu" and out.dtype in (torch.float32, torch.float64):
            wobble = (torch.rand(out.shape, generator=g, dtype=torch.float64) * 2 - 1) * 4 * eps
            return (out.double() * (1 + wobble)).to(out.dtype)
        return out
    return run


def message(lab: str, name: str, fn, *, rounded: bool = False) -> str | None:
    """The check's message for answer ``fn`` on the lab's visible test line (None: it passed)."""
    import contextlib
    import importlib
    import io

    from solution_code import test_calls

    checks = importlib.import_module(f"labkit.checks.{lab}")
    line = test_calls(lab, name)[0]
    answer = _rounded_differently(fn) if rounded else fn
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            eval(line, {"checks": checks, name: answer, "torch": torch})  # noqa: S307 (our own source)
    except AssertionError as exc:
        return str(exc)
    return None


def run_suite(rounded: bool = False) -> list[dict]:
    """One row per wrong answer: lab, exercise, label, message, named (the phrase found)."""
    import re

    rows = []
    for (lab, name), wrongs in SUITE.items():
        for label, fn, phrase in wrongs:
            text = message(lab, name, fn, rounded=rounded)
            named = text is not None and phrase is not None and re.search(phrase, text) is not None
            rows.append({"lab": lab, "exercise": name, "label": label, "message": text, "named": named,
                         "phrase": phrase})
    return rows


def rates(rows: list[dict]) -> dict[str, tuple[int, int, int]]:
    """lab -> (mistakes, caught, named)."""
    out: dict[str, tuple[int, int, int]] = {}
    for r in rows:
        n, c, k = out.get(r["lab"], (0, 0, 0))
        out[r["lab"]] = (n + 1, c + (r["message"] is not None), k + r["named"])
    return out
