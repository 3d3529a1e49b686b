"""Checks for lab 03 (time and class embeddings, FiLM, the conditioned U-Net). References:
``labkit.embeddings.sinusoidal_embedding``, ``labkit.embeddings.cosine_similarity``, ``labkit.unet.film``, in float64;
for the classes, labkit's module of the same name built with the same arguments and seeded weights
(``labkit.checks._modules``), run in float64.

    check_sinusoidal_embedding(fn)   PE(t, 2i) = sin(t / 10000^(2i/dim)),  PE(t, 2i+1) = cos(same)
    check_cosine_similarity(fn)      [N, D] -> [N, N] cosine similarities between rows
    check_film(fn)                   h * (1 + scale) + shift, scale/shift [B, C] broadcast over H, W
    check_time_embedding(cls)        TimeEmbedding(base, dim): sinusoids -> Linear -> SiLU -> Linear
    check_class_embedding(cls)       ClassEmbedding(num_classes, dim): a table with a "no class" row
    check_conv_block(cls)            ConvBlock(c_in, c_out, groups): GroupNorm -> [FiLM] -> SiLU -> conv
    check_res_block(cls)              ResBlock(c_in, c_out, groups, emb_dim): FiLM from the embedding in block2
    check_unet(cls)                  UNet(in_channels, ..., patch, num_classes): lab 02's network, model(x, t, y)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labkit import embeddings, unet
from labkit.checks._modules import expect_loaded, first_difference, output_of, run_module, seeded_weights, weights_of
from labkit.checks._common import (
    follows_the_device,
    call,
    compare,
    expect_tensor,
    fail,
    generator,
    max_abs_diff,
    passed,
    spread_steps,
    yours_or_labkit,
)  # noqa: F401 (yours_or_labkit: for the notebook)


def _angles(t: torch.Tensor, dim: int, exponent, max_period: float = 10000.0) -> torch.Tensor:
    i = torch.arange(dim // 2, dtype=torch.float64)
    freqs = torch.exp(-math.log(max_period) * exponent(i) / dim)  # [dim/2]
    return t.double()[:, None] * freqs[None, :]  # [B, dim/2]


def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(even.shape[0], 2 * even.shape[1], dtype=torch.float64)
    out[:, 0::2], out[:, 1::2] = even, odd
    return out


def check_sinusoidal_embedding(student_fn, *, seed: int = 0, sizes=((6, 16), (3, 64), (4, 2))) -> None:
    """student_fn(t int64 [B], dim even) -> [B, dim], sin at even columns, cos at odd columns.

    sizes: (B, dim) per case; t is drawn from 0..999 and always includes t = 0.
    """
    name = "check_sinusoidal_embedding"
    g = generator(seed)
    for B, dim in sizes:
        t = torch.randint(0, 1000, (B,), generator=g)
        t[0] = 0
        out = call(name, student_fn, t, dim, names=["t"])
        out = expect_tensor(
            name,
            out,
            (B, dim),
            shape_hints={
                (dim, B): "transposed: one row per time step, [B, dim]",
                (B, dim // 2): "only dim/2 columns: each frequency gives two columns, a sine and a cosine",
                (B, 2 * dim): "2*dim columns: use dim/2 frequencies, each giving a sine and a cosine",
            },
        )
        a = _angles(t, dim, lambda i: 2 * i)
        ref = embeddings.sinusoidal_embedding(t, dim, dtype=torch.float64)
        a_wrong_exp = _angles(t, dim, lambda i: i)
        freqs_up = torch.exp(math.log(10000.0) * 2 * torch.arange(dim // 2, dtype=torch.float64) / dim)
        a_mult = t.double()[:, None] * freqs_up[None, :]
        i32 = torch.arange(dim // 2, dtype=torch.float32)
        a_mult32 = t.float()[:, None] * torch.exp(math.log(10000.0) * 2 * i32 / dim)[None, :]
        mistakes = {
            "sin and cos swapped: sines go to the even columns (0, 2, 4, ...), cosines to the odd ones": _interleave(
                torch.cos(a), torch.sin(a)
            ),
            "all sines first, then all cosines (the other common layout); here they are interleaved: "
            "column 2i holds sin, column 2i+1 holds cos": torch.cat([torch.sin(a), torch.cos(a)], dim=1),
            "all cosines first, then all sines; interleave them instead, sin at even columns": torch.cat(
                [torch.cos(a), torch.sin(a)], dim=1
            ),
            "wrong frequency exponent: frequency i is 1 / 10000^(2i/dim), not 1 / 10000^(i/dim)": _interleave(
                torch.sin(a_wrong_exp), torch.cos(a_wrong_exp)
            ),
            "t multiplied by 10000^(2i/dim); it must be divided by it (frequencies fall from 1 to 1/10000)": (
                _interleave(torch.sin(a_mult), torch.cos(a_mult)),  # angles up to 1e7, which float32 rounds
                _interleave(torch.sin(a_mult32), torch.cos(a_mult32)).double(),
            ),  # by ~1 rad: as float32 computes
            "the angles need t in radians as it is: no extra factor 2*pi": _interleave(
                torch.sin(2 * math.pi * a), torch.cos(2 * math.pi * a)
            ),
            "sines in every column: the odd columns (1, 3, 5, ...) hold the cosines of the same angles": _interleave(
                torch.sin(a), torch.sin(a)
            ),
            "cosines in every column: the even columns (0, 2, 4, ...) hold the sines": _interleave(
                torch.cos(a), torch.cos(a)
            ),
            "off by one in the frequency index: the first pair of columns has frequency 1 (i = 0), not 1/10000^(2/dim)": _interleave(
                torch.sin(_angles(t, dim, lambda i: 2 * (i + 1))), torch.cos(_angles(t, dim, lambda i: 2 * (i + 1)))
            ),
            "t + 1 was embedded: embed the step t itself (t = 0 is the first step)": _interleave(
                torch.sin(_angles(t + 1, dim, lambda i: 2 * i)), torch.cos(_angles(t + 1, dim, lambda i: 2 * i))
            ),
            "the base of the frequencies is 10000 (the longest period), not 1000": _interleave(
                torch.sin(_angles(t, dim, lambda i: 2 * i, 1000.0)), torch.cos(_angles(t, dim, lambda i: 2 * i, 1000.0))
            ),
            "the frequency exponent divides by dim - 1 or dim / 2 - 1; it is 2i / dim": _interleave(
                torch.sin(_angles(t, dim, lambda i: 2 * i * dim / max(dim - 2, 1))),
                torch.cos(_angles(t, dim, lambda i: 2 * i * dim / max(dim - 2, 1))),
            )
            if dim > 2
            else None,
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=2e-3,
            context=f" for B={B}, dim={dim}",
            reference=embeddings.sinusoidal_embedding,
            args=(t, dim),
        )
        follows_the_device(name, student_fn, t, dim)  # a GPU run must not mix in CPU tensors
    passed(name, f"{len(sizes)} cases, seed {seed}")


def check_cosine_similarity(student_fn, *, seed: int = 0, sizes=((6, 16), (10, 3), (1, 8))) -> None:
    """student_fn(emb [N, D]) -> [N, N] with entry (i, j) = <e_i, e_j> / (|e_i| |e_j|)."""
    name = "check_cosine_similarity"
    g = generator(seed)
    for N, D in sizes:
        emb = 0.5 + torch.randn(N, D, generator=g) * torch.rand(N, 1, generator=g) * 3  # rows of different lengths
        out = call(name, student_fn, emb, names=["emb"])
        out = expect_tensor(
            name,
            out,
            (N, N),
            shape_hints={
                (N,): "one number per row: return the full [N, N] matrix of pairwise similarities",
                (D, D): "similarities between columns: compare the rows (one row per time step), emb @ emb.T",
            },
        )
        e = emb.double()
        ref = embeddings.cosine_similarity(e)
        cols = e / e.norm(dim=0, keepdim=True)
        mistakes = {
            "raw dot products: divide by the lengths of both vectors (normalise each row first)": e @ e.T,
            "normalised along the wrong dimension: each *row* (one embedding) must have length 1": cols @ cols.T,
            "that is the cosine *distance* 1 - cos; return the similarity itself": 1 - ref,
            "Euclidean distances: the cosine similarity is the dot product of the normalised rows": torch.cdist(e, e),
            "divided by the squared lengths: use |e_i| |e_j|, not |e_i|^2 |e_j|^2": (e @ e.T)
            / (e.norm(dim=1) ** 2)[:, None]
            / (e.norm(dim=1) ** 2)[None, :],
            "only one side was normalised: divide by the lengths of both rows, |e_i| and |e_j|": (
                e / e.norm(dim=1, keepdim=True)
            )
            @ e.T,
            "divided by the length of the whole matrix: normalise each row by its own length": (e @ e.T)
            / e.norm() ** 2,
            "a softmax over the similarities: the cosine similarity is the plain product of unit rows": ref.softmax(
                dim=1
            ),
        }
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-5,
            context=f" for emb of shape {[N, D]}",
            reference=embeddings.cosine_similarity,
            args=(emb,),
        )
    passed(name, f"{len(sizes)} cases, seed {seed}")


def check_film(student_fn, *, seed: int = 0, sizes=((2, 8, 5, 5), (3, 4, 7, 6))) -> None:
    """student_fn(h [B, C, H, W], scale [B, C], shift [B, C]) -> h * (1 + scale) + shift (per channel)."""
    name = "check_film"
    g = generator(seed)
    for B, C, H, W in sizes:
        h = torch.randn(B, C, H, W, generator=g)
        scale = 0.5 * torch.randn(B, C, generator=g)
        shift = torch.randn(B, C, generator=g)
        out = call(
            name,
            student_fn,
            h,
            scale,
            shift,
            names=["h", "scale", "shift"],
            hints={
                "must match the size": "scale and shift are [B, C]: reshape them to [B, C, 1, 1] "
                "(scale[:, :, None, None]) so they act per channel on every pixel",
            },
        )
        out = expect_tensor(
            name,
            out,
            (B, C, H, W),
            shape_hints={
                (B, C, B, C): "scale/shift were broadcast against the wrong dimensions: reshape them to [B, C, 1, 1]",
            },
        )
        s, b = scale[:, :, None, None].double(), shift[:, :, None, None].double()
        hd = h.double()
        mistakes = {
            "the '1 +' is missing: FiLM here multiplies by (1 + scale), so scale = 0 leaves h unchanged": hd * s + b,
            "scale and shift swapped: h * (1 + scale) + shift": hd * (1 + b) + s,
            "shift applied before scaling: scale first, then add the shift": (hd + b) * (1 + s),
            "the shift is missing: add shift after scaling": hd * (1 + s),
            "subtracted the shift: add it": hd * (1 + s) - b,
            "(1 - scale): FiLM here multiplies by (1 + scale)": hd * (1 - s) + b,
            "the shift multiplies instead of adds: h * (1 + scale) + shift": hd * (1 + s) * b,
            "scale and shift were added together before multiplying: only the scale multiplies h": hd * (1 + s + b),
            "operator precedence: 1 + scale * h + shift multiplies h by scale alone; h is multiplied by (1 + scale)": 1
            + s * hd
            + b,
            "h was normalised inside FiLM: the block normalises before FiLM, which only scales and shifts": F.group_norm(
                hd, hd.shape[1]
            )
            * (1 + s)
            + b,
        }
        compare(
            name,
            out,
            unet.film(hd, scale.double(), shift.double()),
            mistakes,
            tol=1e-5,
            context=f" for h of shape {[B, C, H, W]}",
            reference=unet.film,
            args=(h, scale, shift),
        )
    passed(name, f"{len(sizes)} cases, seed {seed}")


# --- the modules: the student's classes, built with the grader's arguments and labkit's seeded weights ------
#
# Each module check builds labkit's module with the same constructor arguments, gives it seeded weights
# (``_modules.seeded_weights``), loads those weights into the student's module (``_modules.run_module``, in
# the student's kernel when grading) and compares the outputs with labkit's module run in float64. The named
# mistakes are the same network computed another way with the same weights (``_block``, ``_res``, ``_net``).

_BROADCAST = (
    "a [B, C] scale or shift does not line up with h [B, C, H, W]: give it two trailing singleton "
    "dimensions, [B, C, 1, 1], so that it acts per channel on every pixel"
)
_NO_EMB = "a block got no embedding (None): pass emb into every block (each level's blocks and the middle ones)"
_FIRST = (
    "your UNet is built from your ResBlock, TimeEmbedding and ClassEmbedding: when their checks fail, fix those first"
)


def _reference(cls, init: dict, seed: int):
    """labkit's module built with ``init`` and seeded weights: (float32 module, float64 copy, weights)."""
    import copy

    ref32 = seeded_weights(cls(**init), seed).eval()  # cls: a class, or labkit_unet
    return ref32, copy.deepcopy(ref32).double(), weights_of(ref32)


def _run(
    name: str,
    student_cls,
    init: dict,
    weights,
    calls,
    hints=None,
    param_hints=(),
    missing_hints=(),
    context="",
    trace=(),
):
    """Build, load and run the student's class (``_modules.run_module``); fail when labkit's weights do not fit.
    A hint of ``param_hints`` speaks when the student's module has that shape and labkit's has not; one of
    ``missing_hints`` when labkit's has it and the student's has not."""
    request = {"init": init, "weights": weights, "calls": [(list(a), {}) for a in calls], "trace": list(trace)}
    report = run_module(name, student_cls, request, hints={"must match the size": _BROADCAST, **(hints or {})})
    found = {tuple(s) for _, s in report.get("params") or []}
    expected = {tuple(w.shape) for _, w in weights}
    expect_loaded(
        name,
        report,
        weights,
        context,
        hints=[h for shape, h in param_hints if shape in found and shape not in expected]
        + [h for shape, h in missing_hints if shape in expected and shape not in found],
    )
    return report


def _compare(name, out, ref, mistakes, **kwargs):
    """``compare``, with the named mistakes (a function: whole networks run another way) computed only when the
    answer is wrong: a correct answer passes without them."""
    try:
        compare(name, out, ref, None, **kwargs)
    except AssertionError:
        compare(name, out, ref, mistakes(), **kwargs)


def _named(table: dict, run):
    """The named mistakes of ``table`` ({variant: message}) as ``_compare`` takes them: a function that computes
    ``{message: run({variant})}``."""
    return lambda: {text: run({key}) for key, text in table.items()}


def _d(v):
    return v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v


def _gn(norm, h):
    return F.group_norm(h, norm.num_groups, norm.weight, norm.bias, norm.eps)


def _film_variant(h, scale, shift, v):
    """FiLM as labkit computes it (``unet.film``), or one of the ways it goes wrong."""
    if "swap" in v:
        scale, shift = shift, scale
    if "wrong_axis" in v:  # [B, C] lined up with the width (or the height) of h instead of its channels
        if not h.shape[-1] == h.shape[-2] == scale.shape[1]:
            return None  # it raises instead (a hint then explains the error)
        return (
            h * (1 + scale[:, None, None, :]) + shift[:, None, None, :],
            h * (1 + scale[:, None, :, None]) + shift[:, None, :, None],
        )
    s, b = scale[:, :, None, None], shift[:, :, None, None]
    if "no_one" in v:
        return h * s + b
    if "shift_first" in v:
        return (h + b) * (1 + s)
    return unet.film(h, scale, shift)


def _block(cb, x, scale=None, shift=None, v=frozenset()):
    """labkit's ConvBlock (float64) computed by hand: norm -> FiLM -> SiLU -> conv, or a variant ``v``.
    A variant that gives several candidates (the wrong axis) returns a tuple."""
    act = F.relu if "relu" in v else (lambda h: h) if "no_act" in v else F.silu
    film = (lambda h: h) if scale is None or "no_film" in v else (lambda h: _film_variant(h, scale, shift, v))
    norm = (lambda h: h) if "no_norm" in v else (lambda h: _gn(cb.norm, h))
    if "act_before_norm" in v:
        hs = film(norm(act(x)))
    elif "film_after_act" in v:
        hs = film(act(norm(x)))
    elif "film_before_norm" in v:
        hs = act(norm(film(x)))
    else:
        hs = film(norm(x))
        hs = tuple(act(h) for h in hs) if isinstance(hs, tuple) else None if hs is None else act(hs)
    if hs is None:
        return None
    if isinstance(hs, tuple):
        return tuple(cb.conv(h) for h in hs)
    return cb.conv(hs)


def _res(rb, x, emb, v=frozenset()):
    """labkit's ResBlock (float64) by hand, with the embedding (None: no FiLM) and a variant ``v``."""
    scale = shift = None
    if emb is not None and rb.emb is not None:
        e = rb.emb(emb if "no_silu_emb" in v else F.silu(emb))  # [B, 2 * c_out]
        scale, shift = (e[:, 0::2], e[:, 1::2]) if "interleaved" in v else e.chunk(2, dim=1)
    if "film_in_block1" in v:
        if scale is None or scale.shape[1] != x.shape[1]:
            return None
        h = _block(rb.block1, x, scale, shift, v)
        h = _block(rb.block2, h, None, None, v) if isinstance(h, torch.Tensor) else None
    else:
        h = _block(rb.block1, x, None, None, v)
        h = _block(rb.block2, h, scale, shift, v) if not isinstance(h, tuple) else None
    if h is None:
        return None
    if isinstance(h, tuple):
        return tuple(_res_end(rb, x, one, v) for one in h)
    return _res_end(rb, x, h, v)


def _res_end(rb, x, h, v):
    if "no_residual" in v:
        return h
    out = rb.shortcut(x) + h
    return F.silu(out) if "act_after_sum" in v else out


CONV_BLOCK_MISTAKES = {
    "act_before_norm": "the activation comes before the norm: normalise first, then FiLM, then SiLU, then the "
    "conv (GroupNorm -> [FiLM] -> SiLU -> conv, as in lab 02)",
    "film_after_act": "FiLM after the activation: the scale and shift act on the normalised features, before SiLU",
    "film_before_norm": "FiLM before the norm: the norm would undo most of it; modulate the *normalised* features",
    "swap": "scale and shift swapped: h * (1 + scale) + shift, with scale the first of the two",
    "no_one": "the '1 +' is missing: h * (1 + scale) + shift, so that scale = 0 leaves h unchanged",
    "shift_first": "the shift was added before scaling: scale first, then add the shift",
    "wrong_axis": "the scale and shift were broadcast over the wrong axis (the image's width or height): "
    "they hold one number per channel, so reshape [B, C] to [B, C, 1, 1]",
    "no_film": "the scale and shift were ignored: when they are given, apply film to the normalised features",
    "no_act": "the activation (SiLU) is missing between the norm and the conv",
    "relu": "ReLU instead of SiLU: the U-Net's blocks use SiLU (x * sigmoid(x))",
    "no_norm": "the GroupNorm is missing: normalise first",
}


def check_conv_block(student_cls, *, seed: int = 0, sizes=((8, 16, 4, 8), (6, 4, 2, 5))) -> None:
    """student_cls(c_in, c_out, groups, dropout=0.0) with forward(x, scale=None, shift=None):
    GroupNorm -> [FiLM with scale, shift [B, c_in]] -> SiLU -> dropout -> 3x3 conv,
    x [B, c_in, H, W] -> [B, c_out, H, W].

    sizes: (c_in, c_out, groups, H) per case, with W = H; a case with H = c_in makes a scale broadcast over the
    image's width run without an error, so that mistake is named rather than raised.
    """
    name = "check_conv_block"
    g = generator(seed)
    for c_in, c_out, groups, H in sizes:
        init = {"c_in": c_in, "c_out": c_out, "groups": groups}
        ref32, ref, weights = _reference(unet.ConvBlock, init, seed)
        x = torch.randn(2, c_in, H, H, generator=g)
        scale, shift = 0.5 * torch.randn(2, c_in, generator=g), torch.randn(2, c_in, generator=g)
        context = f" for ConvBlock({c_in}, {c_out}, groups={groups})"
        report = _run(
            name,
            student_cls,
            init,
            weights,
            [(x,), (x, scale, shift)],
            context=context,
            param_hints=[
                ((c_out,), "the norm comes first, on the input's c_in channels; the conv then goes from c_in to c_out"),
                ((c_out, c_out, 3, 3), "the conv goes from c_in to c_out channels"),
            ],
        )
        for k, args in enumerate([(x,), (x, scale, shift)]):
            out = output_of(name, report, k)
            out = expect_tensor(name, out, (2, c_out, H, H), what=f"the output{context}")
            a64 = [_d(a) for a in args]
            how = "without scale and shift" if k == 0 else "with scale and shift"
            _compare(
                name,
                out,
                ref(*a64),
                _named(CONV_BLOCK_MISTAKES, lambda v: _block(ref, *a64, v=v)),
                tol=1e-5,
                context=f"{context} {how}",
                reference=ref32,
                args=args,
            )
    passed(name, f"{len(sizes)} blocks, seed {seed}")


RES_BLOCK_MISTAKES = {
    "no_residual": "the residual is missing: the block returns shortcut(x) + h, the input plus what the blocks add",
    "no_silu_emb": "no SiLU before the embedding projection: scale, shift = Linear(SiLU(emb)), split in two",
    "film_in_block1": "FiLM in the first conv block: the scale and shift modulate the second one (block2)",
    "interleaved": "scale and shift taken from alternating columns: the first half of the projection is the scale, "
    "the second half the shift (chunk into two halves along the channels)",
    "act_after_sum": "an activation after the sum: the block returns shortcut(x) + h as it is",
    **{
        k: CONV_BLOCK_MISTAKES[k]
        for k in (
            "act_before_norm",
            "film_after_act",
            "swap",
            "no_one",
            "shift_first",
            "wrong_axis",
            "no_film",
            "no_act",
            "relu",
        )
    },
}


def check_res_block(student_cls, *, seed: int = 0, sizes=((8, 8, 4, 16, 8), (8, 16, 4, 24, 5))) -> None:
    """student_cls(c_in, c_out, groups, emb_dim, dropout=0.0) with forward(x, emb): block1, then block2 with
    (scale, shift) = Linear(SiLU(emb)) split in two, plus the shortcut of x.
    x [B, c_in, H, W], emb [B, emb_dim] -> [B, c_out, H, W].

    sizes: (c_in, c_out, groups, emb_dim, H) per case; one with c_in = c_out (no shortcut conv, and FiLM in the
    wrong block runs), one with H = c_out (a scale broadcast over the width runs).
    """
    name = "check_res_block"
    g = generator(seed)
    for c_in, c_out, groups, emb_dim, H in sizes:
        init = {"c_in": c_in, "c_out": c_out, "groups": groups, "emb_dim": emb_dim}
        ref32, ref, weights = _reference(unet.ResBlock, init, seed)
        calls = [(torch.randn(3, c_in, H, H, generator=g), torch.randn(3, emb_dim, generator=g)) for _ in range(2)]
        context = f" for ResBlock({c_in}, {c_out}, groups={groups}, emb_dim={emb_dim})"
        report = _run(
            name,
            student_cls,
            init,
            weights,
            calls,
            context=context,
            hints={
                "silu(): argument": _NO_EMB,
                "NoneType": _NO_EMB,
                "must match the size": "the scale and shift ([B, c_out]) do not line up with the features they modulate: "
                "they go into block2, whose input has c_out channels, as [B, c_out, 1, 1]",
            },
            missing_hints=[
                (
                    (c_out, c_in, 1, 1),
                    "when c_in != c_out the shortcut is a 1x1 conv from c_in to c_out channels, so that x can be added",
                )
            ],
            param_hints=[
                (
                    (c_out, emb_dim),
                    "the projection gives a scale *and* a shift per channel: Linear(emb_dim, 2 * c_out)",
                ),
                (
                    (2 * c_in, emb_dim),
                    "the scale and shift are for block2, which has c_out channels: Linear(emb_dim, 2 * c_out)",
                ),
                ((c_out, c_in, 3, 3), "a shortcut conv is needed only when c_in != c_out (a 1x1 conv), else x itself"),
            ],
        )
        for k, args in enumerate(calls):
            out = output_of(name, report, k)
            out = expect_tensor(name, out, (3, c_out, H, H), what=f"the output{context}")
            a64 = [_d(a) for a in args]
            _compare(
                name,
                out,
                ref(*a64),
                _named(RES_BLOCK_MISTAKES, lambda v: _res(ref, *a64, v=v)),
                tol=1e-5,
                context=context,
                reference=ref32,
                args=args,
            )
    passed(name, f"{len(sizes)} blocks, seed {seed}")


def _time_mlp(te, pe, v=frozenset()):
    """labkit's TimeEmbedding (float64) after its sinusoids ``pe``: Linear -> SiLU -> Linear, or a variant."""
    first, last = te.mlp[0], te.mlp[2]
    act = F.relu if "relu" in v else (lambda h: h) if "no_silu" in v else F.silu
    h = last(act(first(F.silu(pe) if "silu_first" in v else pe)))
    return F.silu(h) if "silu_end" in v else h


TIME_MISTAKES = {
    "no_silu": "no activation between the two Linear layers: Linear -> SiLU -> Linear (two linear layers in a row "
    "are one linear map)",
    "relu": "ReLU instead of SiLU between the two Linear layers",
    "silu_end": "an activation after the last Linear: the MLP ends with the Linear layer (each block's projection "
    "applies its own SiLU first)",
    "silu_first": "an activation before the first Linear: the sinusoids go straight into the first Linear layer",
}


def check_time_embedding(student_cls, *, seed: int = 0, sizes=((16, 32), (8, 12)), T: int = 1000) -> None:
    """student_cls(base, dim) with forward(t int64 [B]) -> [B, dim]: the sinusoidal embedding of t with ``base``
    columns (exercise 1), then Linear(base, dim) -> SiLU -> Linear(dim, dim), held in ``mlp`` (nn.Sequential).

    sizes: (base, dim) per case; the steps t spread over 0..T-1.
    """
    name = "check_time_embedding"
    g = generator(seed)
    for base, dim in sizes:
        init = {"base": base, "dim": dim}
        ref32, ref, weights = _reference(embeddings.TimeEmbedding, init, seed)
        t = spread_steps(6, T, g)
        context = f" for TimeEmbedding(base={base}, dim={dim})"
        report = _run(
            name,
            student_cls,
            init,
            weights,
            [(t,)],
            context=context,
            hints={
                "mat1 and mat2 shapes": "the first Linear takes the sinusoidal embedding of t, [B, base]: embed t with "
                "base columns first (your sinusoidal_embedding), then the MLP"
            },
            param_hints=[
                ((dim, dim), None),
                ((base, base), "the MLP goes from base to dim: Linear(base, dim), SiLU, Linear(dim, dim)"),
                ((dim, 1), "the MLP takes the sinusoidal embedding of t ([B, base]), not t itself"),
            ],
        )
        out = output_of(name, report, 0)
        out = expect_tensor(
            name,
            out,
            (6, dim),
            what=f"the embedding{context}",
            shape_hints={(6, base): "that is the size of the sinusoids: the MLP maps them to dim columns"},
        )
        a = _angles(t, base, lambda i: 2 * i)
        pe = embeddings.sinusoidal_embedding(t, base, dtype=torch.float64)
        mistakes = {text: _time_mlp(ref, pe, {key}) for key, text in TIME_MISTAKES.items()}
        layout = (
            "the sinusoids differ from exercise 1's: use your sinusoidal_embedding(t, base) "
            "(check_sinusoidal_embedding)"
        )
        mistakes[f"{layout}; here sines and cosines are not interleaved"] = _time_mlp(
            ref, torch.cat([torch.sin(a), torch.cos(a)], dim=1)
        )
        mistakes[f"{layout}; here sin and cos are swapped"] = _time_mlp(ref, _interleave(torch.cos(a), torch.sin(a)))
        mistakes["t was scaled (t / T) before the sinusoids: embed the step t itself"] = _time_mlp(
            ref, embeddings.sinusoidal_embedding(t.double() / T, base, dtype=torch.float64)
        )
        compare(name, out, ref(t), mistakes, tol=1e-5, context=context, reference=ref32, args=(t,))
    passed(name, f"{len(sizes)} sizes, seed {seed}")


def check_class_embedding(student_cls, *, seed: int = 0, sizes=((10, 16), (3, 5))) -> None:
    """student_cls(num_classes, dim) with forward(y int64 [B]) -> [B, dim]: a learned table ``table``
    (nn.Embedding) with num_classes + 1 rows, the last (index num_classes) meaning "no class".

    sizes: (num_classes, dim) per case; y holds every class and the "no class" index.
    """
    name = "check_class_embedding"
    g = generator(seed)
    for K, dim in sizes:
        init = {"num_classes": K, "dim": dim}
        ref32, ref, weights = _reference(embeddings.ClassEmbedding, init, seed)
        y = torch.cat([torch.arange(K + 1), torch.randint(0, K + 1, (3,), generator=g)])
        y = y[torch.randperm(len(y), generator=g)]
        context = f" for ClassEmbedding(num_classes={K}, dim={dim})"
        report = _run(
            name,
            student_cls,
            init,
            weights,
            [(y,)],
            context=context,
            hints={
                "out of range in self": f"the label {K} means 'no class' and needs a row of its own: the table has "
                "num_classes + 1 rows"
            },
            param_hints=[
                (
                    (K, dim),
                    "the table needs num_classes + 1 rows: one per class and the last (index num_classes) for "
                    "'no class', used by label dropout and classifier-free guidance",
                ),
                (
                    (dim, K + 1),
                    "a table of learned rows, one per label (nn.Embedding(num_classes + 1, dim)), not a Linear layer",
                ),
                ((dim, K), "a table of learned rows with num_classes + 1 rows (nn.Embedding), not a Linear layer"),
            ],
        )
        out = output_of(name, report, 0)
        out = expect_tensor(name, out, (len(y), dim), what=f"the embedding{context}")
        table = ref.table.weight
        mistakes = {
            "the 'no class' index has a learned row of its own (the last row of the table), not a vector of zeros": torch.where(
                (y == K)[:, None], torch.zeros_like(table[y]), table[y]
            ),
            "labels shifted by one: row y holds class y, and the 'no class' row is the last one (index num_classes)": table[
                (y + 1) % (K + 1)
            ],
            "the 'no class' row first: label y is row y, 'no class' is row num_classes (the last)": table[
                torch.where(y == K, 0, y + 1)
            ],
        }
        compare(name, out, ref(y), mistakes, tol=1e-6, context=context, reference=ref32, args=(y,))
    passed(name, f"{len(sizes)} tables, seed {seed}")


def _net(net, x, t, y, v=frozenset()):
    """labkit's conditioned UNet (float64, no attention) by hand, or a variant ``v``: where the embedding goes
    and how it is made, the output head, and the blocks' own mistakes (``_res``)."""
    te, ce = net.time_embed(t), net.class_embed(y)
    emb = te * ce if "emb_product" in v else te if "time_only" in v else ce if "class_only" in v else te + ce
    last = len(net.up) - 1

    def gets(part, k=0):  # do this part's blocks get the embedding?
        if "down_only" in v:
            return part == "down"
        if "up_only" in v:
            return part == "up"
        if "no_mid_emb" in v:
            return part != "mid"
        if "last_only" in v:
            return part == "up" and k == last
        return True

    p = net.config.patch
    h = net.stem(F.pixel_unshuffle(x, p) if p > 1 else x)
    skips = []
    for down in net.down:
        for block in down.blocks:
            h = _res(block, h, emb if gets("down") else None, v)
        skips.append(h)
        h = down.downsample(h)
    h = _res(
        net.mid2, net.mid_attn(_res(net.mid1, h, emb if gets("mid") else None, v)), emb if gets("mid") else None, v
    )
    for k, up in enumerate(net.up):
        h = unet.upsample_merge(h, skips.pop())
        for block in up.blocks:
            h = _res(block, h, emb if gets("up", k) else None, v)
        h = up.to_next(h)
    h = h if "no_out_norm" in v else net.out_norm(h)
    h = net.out(h if "no_out_act" in v else F.silu(h))
    return F.pixel_shuffle(h, p) if p > 1 else h


def _behaviour(name: str, outs: list, context: str) -> None:
    """The network's outputs for (x, t, y), other t, other y: they must differ."""
    for k, what in ((1, "t"), (2, "y")):
        if max_abs_diff(outs[k], outs[0]) <= 1e-6:
            fail(
                name,
                f"the output does not change when {what} changes{context}: the embedding of {what} must reach "
                "every block (emb = time_embed(t) + class_embed(y))",
            )


UNET_MISTAKES = {
    "time_only": "the class embedding is missing: emb = time embedding of t + class embedding of y",
    "class_only": "the time embedding is missing: emb = time embedding of t + class embedding of y",
    "emb_product": "the two embeddings were multiplied: add them, emb = time_embed(t) + class_embed(y)",
    "down_only": "only the down path's blocks get the embedding: pass emb into every block, the middle and the "
    "up path too",
    "up_only": "only the up path's blocks get the embedding: pass emb into every block, the down path and the "
    "middle too",
    "no_mid_emb": "the middle blocks got no embedding: pass emb into every block, mid1 and mid2 too",
    "last_only": "the embedding enters only the last level: every residual block, from the first level down to the "
    "last one up, gets emb",
    "no_out_norm": "the output head's GroupNorm is missing: GroupNorm -> SiLU -> conv after the last up level",
    "no_out_act": "the output head's SiLU is missing: GroupNorm -> SiLU -> conv after the last up level",
    **{
        k: "in your ResBlock: " + RES_BLOCK_MISTAKES[k]
        for k in ("no_residual", "no_silu_emb", "swap", "no_one", "act_before_norm", "interleaved", "no_film")
    },
}


DEFAULTS = dict(
    in_channels=1, base_channels=32, channel_mults=(1, 2, 2), blocks_per_level=1, groups=8, patch=2, num_classes=10
)
_LEVELS = (
    "time_embed",
    "class_embed",
    "stem",
    *(f"down.{i}" for i in range(6)),
    "mid1",
    "mid2",
    *(f"up.{i}" for i in range(6)),
    "out_norm",
    "out",
)


def lab03_config(**overrides) -> unet.UNetConfig:
    """labkit's configuration of lab 03's network (lab 02's, plus the embeddings; no attention) for the
    student's ``UNet(...)`` arguments."""
    return unet.UNetConfig(**{**DEFAULTS, **overrides}, conditional=True, attention=False)


def labkit_unet(**kwargs) -> unet.UNet:
    """labkit's version of lab 03's network, built from the same arguments (and defaults) as the student's."""
    return unet.UNet(lab03_config(**kwargs))


def check_unet(
    student_cls,
    *,
    seed: int = 0,
    cases=(
        dict(base_channels=8, channel_mults=(1, 2), groups=4, num_classes=4, patch=1),
        dict(base_channels=8, channel_mults=(1, 2, 2), blocks_per_level=2, groups=4),
    ),
    sizes=(12, 28),
) -> None:
    """UNet(in_channels, base_channels, channel_mults, blocks_per_level, groups, patch, num_classes): lab 02's network
    with forward(x [B, C, H, W], t int64 [B], y int64 [B]) -> [B, C, H, W] and emb = time_embed(t) + class_embed(y)
    passed into every residual block. Compared with ``labkit_unet(...)`` (labkit's UNet, conditional, no attention),
    its parameters created in the same order (or with the same names).

    cases: the constructor's arguments (over ``DEFAULTS``), one per image size in ``sizes``. The network runs four
    times: on (x, t, y), with other steps, with other labels, and with every label "no class" (y = num_classes);
    the output must change with t and with y.
    """
    name = "check_unet"
    g = generator(seed)
    for over, H in zip(cases, sizes):
        init = {**DEFAULTS, **over}
        cfg = lab03_config(**over)
        K, base = cfg.num_classes, cfg.base_channels
        ref32, ref, weights = _reference(labkit_unet, over, seed)
        B = 4
        x = torch.randn(B, cfg.in_channels, H, H, generator=g)
        t = spread_steps(B, 1000, g)
        t_other = (t + torch.randint(100, 900, (B,), generator=g)) % 1000
        y = torch.randint(0, K, (B,), generator=g)
        y[0] = K  # one image without a class
        y_other = (y + torch.randint(1, K + 1, (B,), generator=g)) % (K + 1)
        calls = [(x, t, y), (x, t_other, y), (x, t, y_other), (x, t, torch.full_like(y, K))]
        context = f" for UNet({', '.join(f'{a}={v}' for a, v in init.items())})"
        report = _run(
            name,
            student_cls,
            init,
            weights,
            calls,
            trace=_LEVELS,
            context=context,
            hints={
                "silu(): argument": _NO_EMB,
                "NoneType": _NO_EMB,
                "out of range in self": "an embedding table was indexed out of range: the class embedding takes y "
                "(0..num_classes, num_classes = no class), the time embedding takes t",
                "expected input": "a layer got another channel count than it was built for: compare your shapes with "
                "the table, level by level (the deepest up level takes the skip saved last)",
            },
            param_hints=[
                ((K, cfg.emb_dim), "the class table needs num_classes + 1 rows (the last: 'no class')"),
                (
                    (base, base),
                    "the embeddings have 4 * base_channels columns, and every block projects from that size",
                ),
            ],
        )
        ref_out = [ref(*[_d(a) for a in args]) for args in calls]
        outs = []
        for k, args in enumerate(calls):
            out = output_of(name, report, k)
            outs.append(
                expect_tensor(
                    name,
                    out,
                    tuple(x.shape),
                    what=f"the output{context}",
                    shape_hints={
                        (B, base, H, H): "the output head maps back to the image's channels: GroupNorm -> SiLU -> conv"
                    },
                )
            )
        what = ["", " with other steps t", " with other labels y", " with every label 'no class'"]
        for k, args in enumerate(calls):
            a64 = [_d(a) for a in args]
            try:
                _compare(
                    name,
                    outs[k],
                    ref_out[k],
                    _named(UNET_MISTAKES, lambda v: _net(ref, *a64, v=v)),
                    tol=1e-5,
                    context=context + what[k],
                    reference=ref32,
                    args=args,
                )
            except AssertionError as exc:
                if "known mistake" in str(exc):
                    raise
                _behaviour(name, outs, context)  # a plainer message first, where one applies
                where = first_difference(name, (report.get("traces") or [[]] * 4)[k], ref32, args, tol=1e-4)
                at = f"\n  your network first differs from labkit's at {where}: look there first" if where else ""
                raise type(exc)(f"{exc}{at}\n  hint: {_FIRST}") from None
        _behaviour(name, outs, context)
    passed(name, f"{len(cases)} networks, 4 inputs each, seed {seed}")
