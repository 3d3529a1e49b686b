"""Checks for lab 02 (the U-Net). References: ``labkit.unet.concat_skip`` and ``labkit.unet.upsample_merge``
(the up path of ``labkit.unet.UNet``).

    check_concat_skip(concat_skip)         [B, C1, H, W] + [B, C2, H, W] -> [B, C1 + C2, H, W]
    check_upsample_merge(upsample_merge)   nearest-upsample h to skip's size, then concat_skip
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labkit import unet
from labkit.checks._common import CheckFailed, call, compare, expect_tensor, fail, generator, passed, yours_or_labkit  # noqa: F401

_CAT_HINT = (
    "the tensors do not fit together along the dimension you joined them: the skip's channels are "
    "stacked onto h's, so join along the channel dimension of [B, C, H, W] tensors"
)


def _shape_hints(B, C1, C2, H, W):
    hints = {
        (B, C1 + C2, H, W): None,
        (2 * B, C1, H, W): "concatenated along dim 0 (the batch); the channels are dim 1",
        (B, C1, 2 * H, W): "concatenated along dim 2 (the height); the channels are dim 1",
        (B, C1, H, 2 * W): "concatenated along dim 3 (the width); the channels are dim 1",
        (B, C1, H, W): "added (or otherwise combined) instead of concatenated: the U-Net *stacks* the skip's "
        "channels onto h's, so the result has C1 + C2 channels",
        (B, 2, C1, H, W): "torch.stack makes a new dimension; use torch.cat to join along the channel dimension",
        (2, B, C1, H, W): "torch.stack makes a new dimension; use torch.cat to join along the channel dimension",
    }
    return {k: v for k, v in hints.items() if v}


def check_concat_skip(student_fn, *, seed: int = 0, sizes=((2, 8, 8, 7, 7), (3, 4, 6, 5, 6))) -> None:
    """student_fn(h [B, C1, H, W], skip [B, C2, H, W]) -> [B, C1 + C2, H, W], h's channels first.

    sizes: (B, C1, C2, H, W) per case; a case with C1 == C2 catches "added instead of concatenated".
    """
    name = "check_concat_skip"
    g = generator(seed)
    for B, C1, C2, H, W in sizes:
        h = torch.randn(B, C1, H, W, generator=g)
        skip = torch.randn(B, C2, H, W, generator=g)
        out = call(name, student_fn, h, skip, names=["h", "skip"], hints={"sizes of tensors must match": _CAT_HINT})
        out = expect_tensor(name, out, (B, C1 + C2, H, W), shape_hints=_shape_hints(B, C1, C2, H, W))
        ref = unet.concat_skip(h.double(), skip.double())
        mistakes = {
            "h and skip in the wrong order: h's channels come first, then the skip's": torch.cat([skip, h], dim=1),
            "channels interleaved: concatenate the two blocks of channels one after the other": torch.stack(
                [h, skip], dim=2
            ).reshape(B, C1 + C2, H, W)
            if C1 == C2
            else None,
            "h twice: the skip's channels are missing (join h with the skip)": torch.cat([h, h], dim=1)
            if C1 == C2
            else None,
        }
        compare(name, out, ref, mistakes, tol=0.0, context=f" for h {[B, C1, H, W]}, skip {[B, C2, H, W]}")
    passed(name, f"{len(sizes)} shape pairs, seed {seed}")


def check_upsample_merge(
    student_fn, *, seed: int = 0, sizes=((2, 16, 8, 4, 4, 7, 7), (1, 8, 8, 7, 7, 14, 14), (2, 4, 6, 3, 5, 6, 9))
) -> None:
    """student_fn(h [B, C1, h, w], skip [B, C2, H, W]) -> [B, C1 + C2, H, W]:
    F.interpolate(h, size=(H, W), mode="nearest"), then h's channels followed by the skip's.

    sizes: (B, C1, C2, h, w, H, W) per case; the first has an odd skip size (7 -> 4 -> 7).
    """
    name = "check_upsample_merge"
    g = generator(seed)
    for B, C1, C2, hh, ww, H, W in sizes:
        h = torch.randn(B, C1, hh, ww, generator=g)
        skip = torch.randn(B, C2, H, W, generator=g)
        out = call(
            name,
            student_fn,
            h,
            skip,
            names=["h", "skip"],
            hints={
                "sizes of tensors must match": "h and skip differ in height/width when you concatenate: upsample h to "
                "exactly skip's height and width (a fixed factor 2 fails when a down-sampled size was odd: "
                "7 -> 4 -> 8)",
            },
        )
        shape_hints = _shape_hints(B, C1, C2, H, W)
        shape_hints[(B, C1 + C2, hh, ww)] = (
            "the result has h's size: the skip was shrunk down to h; the merge "
            "goes the other way, h is upsampled to the skip's size"
        )
        shape_hints[(B, C1 + C2, 2 * hh, 2 * ww)] = (
            "upsampled by a factor 2 instead of to skip's size: ask "
            "for skip's height and width (odd sizes do not double back)"
        )
        out = expect_tensor(name, out, (B, C1 + C2, H, W), shape_hints=shape_hints)
        up = F.interpolate(h, size=(H, W), mode="nearest")
        ref = unet.upsample_merge(h.double(), skip.double())
        mistakes = {
            "h and skip in the wrong order: h's (upsampled) channels come first": torch.cat([skip, up], dim=1),
            "bilinear upsampling: labkit's U-Net copies the nearest pixel (the convolutions after it smooth)": torch.cat(
                [F.interpolate(h, size=(H, W), mode="bilinear", align_corners=False), skip], dim=1
            ),
            "bilinear upsampling with align_corners=True: labkit's U-Net copies the nearest pixel": torch.cat(
                [F.interpolate(h, size=(H, W), mode="bilinear", align_corners=True), skip], dim=1
            ),
            "mode='nearest-exact' picks other source pixels at odd sizes than the 'nearest' mode labkit.unet uses": torch.cat(
                [F.interpolate(h, size=(H, W), mode="nearest-exact"), skip], dim=1
            ),
            "bicubic upsampling: labkit's U-Net copies the nearest pixel": torch.cat(
                [F.interpolate(h, size=(H, W), mode="bicubic", align_corners=False), skip], dim=1
            ),
        }
        mistakes["area / average upsampling: labkit's U-Net copies the nearest pixel"] = (
            torch.cat([F.interpolate(h, size=(H, W), mode="area"), skip], dim=1) if H >= hh and W >= ww else None
        )
        compare(
            name,
            out,
            ref,
            mistakes,
            tol=1e-6,
            context=f" for h {[B, C1, hh, ww]}, skip {[B, C2, H, W]}",
            reference=unet.upsample_merge,
            args=(h, skip),
        )
    passed(name, f"{len(sizes)} shape pairs, seed {seed}")


# --- the network the student builds: ConvBlock, ResBlock, Down, Up, UNet (module checks) ----------------
#
# Each check builds labkit's module with the grader's arguments and seeded weights (``_modules``), runs the
# student's class with the same weights and inputs (in their kernel while grading), and compares. The named
# mistakes are computed by ``_forward`` below: labkit's forward pass with one mistake switched on, on the
# same weights, in float64.

import copy  # noqa: E402

from labkit.checks._modules import (
    expect_loaded,
    first_difference,
    output_of,
    run_module,  # noqa: E402
    seeded_weights,
    weights_of,
)

MISTAKES = {
    # the conv block
    "act_first": "activation before the norm (SiLU -> GroupNorm -> conv): normalise first, then the activation, "
    "then the conv",
    "conv_first": "conv first (conv -> GroupNorm -> SiLU): this block is 'pre-activation': GroupNorm -> SiLU -> conv",
    "relu": "ReLU instead of SiLU (F.silu, x * sigmoid(x))",
    "one_group": "GroupNorm with 1 group: use the `groups` argument you are given",
    "eight_groups": "GroupNorm with 8 groups whatever `groups` says: use the `groups` argument you are given",
    "no_norm": "no normalisation: the block starts with GroupNorm(groups, c_in)",
    "no_act": "no activation: SiLU comes between the norm and the conv",
    "batchnorm": "BatchNorm instead of GroupNorm: GroupNorm normalises each image on its own (over groups of channels)",
    # the residual block
    "no_residual": "missing residual: return shortcut(x) + block2(block1(x)), the input added back at the end",
    "residual_mid": "the input is added after block1; the residual adds it after block2 (at the end)",
    "act_after_add": "an activation after the addition: the block returns shortcut(x) + h, nothing applied after",
    # down and up
    "skip_first": "h and the skip joined in the wrong order: h's (upsampled) channels come first, then the skip's",
    "bilinear": "bilinear upsampling: labkit's U-Net copies the nearest pixel (mode='nearest')",
    # the whole network
    "no_out_norm": "the output conv without its GroupNorm and SiLU: out(silu(out_norm(h)))",
    "fifo_skips": "the skips were joined first-in-first-out: the deepest up level takes the skip saved last "
    "(skips.pop(), not skips.pop(0))",
    "skip_after_down": "the skip was saved after the stride-2 conv (at the next level's size): a level's skip is its "
    "output before down-sampling",
}

CONV_MISTAKES = ("act_first", "conv_first", "relu", "one_group", "eight_groups", "no_norm", "no_act", "batchnorm")
RES_MISTAKES = CONV_MISTAKES + ("no_residual", "residual_mid", "act_after_add")
UP_MISTAKES = RES_MISTAKES + ("skip_first", "bilinear")
UNET_MISTAKES = UP_MISTAKES + ("no_out_norm", "fifo_skips", "skip_after_down")


def _conv(b: unet.ConvBlock, x, m=None):
    n = b.norm
    if m == "conv_first":
        return F.silu(n(b.conv(x)))
    if m == "act_first":
        return b.conv(n(F.silu(x)))
    if m in ("one_group", "eight_groups"):
        h = F.group_norm(x, 1 if m == "one_group" else 8, n.weight, n.bias, n.eps)
    elif m == "no_norm":
        h = x
    elif m == "batchnorm":  # eval mode: running mean 0, variance 1
        h = x / (1 + n.eps) ** 0.5 * n.weight[:, None, None] + n.bias[:, None, None]
    else:
        h = n(x)
    return b.conv(h if m == "no_act" else (F.relu(h) if m == "relu" else F.silu(h)))


def _res(r: unet.ResBlock, x, m=None):
    h = _conv(r.block1, x, m)
    s = r.shortcut(x)
    if m == "residual_mid":
        return _conv(r.block2, h + s, m)
    h = _conv(r.block2, h, m)
    if m == "no_residual":
        return h
    return F.silu(s + h) if m == "act_after_add" else s + h


def _down(d: unet.Down, h, m=None):
    for blk in d.blocks:
        h = _res(blk, h, m)
    low = d.downsample(h)
    return (low, low) if m == "skip_after_down" else (low, h)


def _up(u: unet.Up, h, skip, m=None):
    if m == "bilinear" and h.shape[-2:] != skip.shape[-2:]:
        h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
    else:
        h = unet.upsample_to(h, skip)
    if u.skips:
        h = torch.cat([skip, h] if m == "skip_first" else [h, skip], dim=1)
    for blk in u.blocks:
        h = _res(blk, h, m)
    return u.to_next(h)


def _unet(net: unet.UNet, x, m=None):
    cfg = net.config
    h = F.pixel_unshuffle(x, cfg.patch) if cfg.patch > 1 else x
    h = net.stem(h)
    skips = []
    for d in net.down:
        h, skip = _down(d, h, m)
        skips.append(skip)
    h = _res(net.mid2, net.mid_attn(_res(net.mid1, h, m)), m)
    for u in net.up:
        h = _up(u, h, skips.pop(0) if m == "fifo_skips" else skips.pop(), m)
    h = net.out(h) if m == "no_out_norm" else net.out(F.silu(net.out_norm(h)))
    return F.pixel_shuffle(h, cfg.patch) if cfg.patch > 1 else h


def _variants(fn, mistakes, *args) -> dict:
    """{message: output} of ``fn(*args, m)`` for each mistake that runs and gives an output of its own."""
    out = {}
    for m in mistakes:
        try:
            with torch.no_grad():
                value = fn(*args, m)
        except Exception:  # this mistake cannot run on these shapes: a shape or an error names it instead
            continue
        out[MISTAKES[m]] = value
    return out


_BUILD_HINTS = {
    "divisible by num_groups": "GroupNorm's number of groups must divide the channel count: nn.GroupNorm(groups, "
    "channels) with the `groups` argument (not a fixed number), in that order",
    "expected input": "a layer got a tensor with another channel count than it was built for: print the shapes "
    "level by level and compare them with the table",
    "sizes of tensors must match": "h and the skip differ in height/width when you join them: upsample h to "
    "exactly the skip's size (7 -> 4 -> 7 does not come back by doubling)",
    "must match the size of tensor": "two tensors cannot be added: the residual needs shortcut(x) with c_out "
    "channels (a 1x1 conv when c_in != c_out, nothing when they are equal)",
    "missing": "a required argument is missing: keep the constructor's and forward's arguments as in the table",
    "unexpected keyword": "keep the constructor's argument names as in the table",
}


def _module_case(
    name,
    student_cls,
    ref,
    init,
    inputs,
    *,
    seed,
    mistakes_fn,
    context,
    outputs=1,
    shapes=None,
    shape_hints=None,
    load_hints=(),
    hints=None,
    trace=(),
):
    """One case of a module check: the student's class built with ``init`` and labkit's weights, run on
    ``inputs``, compared with labkit's module (float64) and its mistakes."""
    seeded_weights(ref, seed)
    weights = weights_of(ref)
    report = run_module(
        name,
        student_cls,
        {"init": init, "weights": weights, "calls": [(inputs, {})], "trace": list(trace)},
        hints={**_BUILD_HINTS, **(hints or {})},
    )
    count = sum(w.numel() for _, w in weights)
    mine = sum(int(torch.Size(s).numel()) for _, s in report.get("params") or [])
    expect_loaded(name, report, weights, context, load_hints)
    out = output_of(name, report)
    ref64 = copy.deepcopy(ref).double().eval()
    args64 = tuple(a.double() if a.is_floating_point() else a for a in inputs)
    with torch.no_grad():
        expected = ref64(*args64)
    expected = expected if isinstance(expected, tuple) else (expected,)
    outs = out if isinstance(out, (list, tuple)) and outputs > 1 else [out]
    if len(outs) != outputs:
        fail(name, f"forward should return {outputs} tensors{context}, got {len(outs)}")
    variants = _variants(mistakes_fn, MISTAKES_FOR[name], ref64, *args64)
    ref32 = copy.deepcopy(ref).eval()
    for k, (o, e) in enumerate(zip(outs, expected)):
        what = "the result" if outputs == 1 else ("the next level's input", "the skip")[k]
        wrong = {msg: _nth(v, k) for msg, v in variants.items()}
        try:
            o = expect_tensor(name, o, tuple(e.shape), what=what, shape_hints=(shape_hints or [{}] * outputs)[k])
            compare(
                name,
                o,
                e,
                wrong,
                tol=1e-5,
                context=context,
                reference=(lambda *a, k=k: _nth(ref32(*a), k)),
                args=inputs,
            )
        except CheckFailed as exc:
            where = first_difference(name, (report.get("traces") or [[]])[0], ref32, inputs, tol=1e-4)
            if where is None:
                raise
            raise CheckFailed(
                f"{exc}\n  your network first differs from labkit's at {where}: look there first",
                check=name,
                mistake=exc.mistake,
            ) from None
    if mine != count:  # (loaded by order but with other sizes cannot happen: shapes were compared)
        fail(name, f"your module has {mine:,} parameters, the table {count:,}{context}")
    return report


def _nth(value, k):
    return value[k] if isinstance(value, tuple) else value


MISTAKES_FOR = {
    "check_conv_block": CONV_MISTAKES,
    "check_res_block": RES_MISTAKES,
    "check_down": RES_MISTAKES + ("skip_after_down",),
    "check_up": UP_MISTAKES,
    "check_unet": UNET_MISTAKES,
}


def check_conv_block(student_cls, *, seed: int = 0, cases=((16, 32, 8, (2, 16, 7, 7)), (12, 12, 4, (3, 12, 5, 6)))):
    """ConvBlock(c_in, c_out, groups): x [B, c_in, H, W] -> GroupNorm(groups, c_in) -> SiLU -> Conv2d(c_in, c_out,
    3, padding=1) -> [B, c_out, H, W]. Parameters: norm (weight, bias), then conv (weight, bias).

    cases: (c_in, c_out, groups, input shape); 12 channels in 4 groups catch a fixed 8."""
    name = "check_conv_block"
    g = generator(seed)
    for k, (c_in, c_out, groups, shape) in enumerate(cases):
        x = torch.randn(*shape, generator=g)
        B, _, H, W = shape
        _module_case(
            name,
            student_cls,
            unet.ConvBlock(c_in, c_out, groups),
            dict(c_in=c_in, c_out=c_out, groups=groups),
            (x,),
            seed=seed * 100 + k,
            mistakes_fn=_conv,
            context=f" for ConvBlock({c_in}, {c_out}, groups={groups}) on x {list(shape)}",
            shape_hints=[
                {(B, c_out, H - 2, W - 2): "the height and width shrank by 2: a 3x3 conv needs padding=1 to keep them"}
            ],
            load_hints=(
                "nn.GroupNorm takes (num_groups, num_channels), and it normalises the block's "
                "input (c_in channels); the conv is 3x3 with padding 1",
            ),
        )
    passed(name, f"{len(cases)} blocks with labkit's weights, seed {seed}")


def check_res_block(student_cls, *, seed: int = 0, cases=((16, 32, 8, (2, 16, 7, 7)), (12, 12, 4, (3, 12, 5, 6)))):
    """ResBlock(c_in, c_out, groups): x -> shortcut(x) + block2(block1(x)), block1 = ConvBlock(c_in, c_out, groups),
    block2 = ConvBlock(c_out, c_out, groups), shortcut = Conv2d(c_in, c_out, 1) only when c_in != c_out.
    Parameters in this order: block1, block2, shortcut (lab 03 adds the embedding's projection)."""
    name = "check_res_block"
    g = generator(seed)
    for k, (c_in, c_out, groups, shape) in enumerate(cases):
        x = torch.randn(*shape, generator=g)
        _module_case(
            name,
            student_cls,
            unet.ResBlock(c_in, c_out, groups),
            dict(c_in=c_in, c_out=c_out, groups=groups),
            (x,),
            seed=seed * 100 + k,
            mistakes_fn=_res,
            context=f" for ResBlock({c_in}, {c_out}, groups={groups}) on x {list(shape)}",
            load_hints=(
                "the shortcut is a 1x1 conv only when c_in != c_out (else x is added as it is)",
                "block1 maps c_in -> c_out channels, block2 c_out -> c_out",
            ),
        )
    passed(name, f"{len(cases)} residual blocks with labkit's weights, seed {seed}")


def check_down(
    student_cls, *, seed: int = 0, cases=((8, 16, 2, 4, (2, 8, 7, 7), True), (16, 16, 1, 8, (1, 16, 4, 4), False))
):
    """Down(c_in, c_out, n_blocks, groups, downsample=True): h -> n_blocks ResBlocks (the first c_in -> c_out) ->
    (Conv2d(c_out, c_out, 3, stride=2, padding=1)(h), h). Returns (next level's input, skip); without
    downsample the first is h itself."""
    name = "check_down"
    g = generator(seed)
    for k, (c_in, c_out, n, groups, shape, down) in enumerate(cases):
        x = torch.randn(*shape, generator=g)
        B, _, H, W = shape
        small = ((H + 1) // 2, (W + 1) // 2) if down else (H, W)
        _module_case(
            name,
            student_cls,
            unet.Down(c_in, c_out, n, groups, downsample=down),
            dict(c_in=c_in, c_out=c_out, n_blocks=n, groups=groups, downsample=down),
            (x,),
            seed=seed * 100 + k,
            mistakes_fn=_down,
            outputs=2,
            context=f" for Down({c_in}, {c_out}, n_blocks={n}, groups={groups}, downsample={down}) on h {list(shape)}",
            shape_hints=[
                {
                    (B, c_out, H, W): "the first result should be down-sampled (stride-2 conv); did you "
                    "return (skip, h) in the wrong order?",
                    (B, c_out, H // 2, W // 2): "padding=1 in the stride-2 conv: 7x7 becomes 4x4",
                },
                {(B, c_out, *small): "the skip is the level's output before down-sampling"},
            ],
            load_hints=(
                "down-sampling is a learned Conv2d(c_out, c_out, 3, stride=2, padding=1) (not "
                "pooling), created after the blocks, and only when downsample=True",
            ),
        )
    passed(name, f"{len(cases)} down levels with labkit's weights, seed {seed}")


def check_up(
    student_cls,
    *,
    seed: int = 0,
    cases=((16, 16, 8, 4, 2, 4, (2, 16, 4, 4), (2, 16, 7, 7)), (8, 8, 8, None, 1, 4, (1, 8, 7, 7), (1, 8, 14, 14))),
):
    """Up(c_in, c_skip, c_out, c_next, n_blocks, groups): (h, skip) -> upsample_merge(h, skip) -> n_blocks ResBlocks
    (the first c_in + c_skip -> c_out) -> Conv2d(c_out, c_next, 3, padding=1) (none when c_next is None)."""
    name = "check_up"
    g = generator(seed)
    for k, (c_in, c_skip, c_out, c_next, n, groups, hs, ss) in enumerate(cases):
        h = torch.randn(*hs, generator=g)
        skip = torch.randn(*ss, generator=g)
        B, _, H, W = ss
        _module_case(
            name,
            student_cls,
            unet.Up(c_in, c_skip, c_out, c_next, n, groups),
            dict(c_in=c_in, c_skip=c_skip, c_out=c_out, c_next=c_next, n_blocks=n, groups=groups),
            (h, skip),
            seed=seed * 100 + k,
            mistakes_fn=_up,
            context=f" for Up({c_in}, {c_skip}, {c_out}, {c_next}, n_blocks={n}, groups={groups}) on h "
            f"{list(hs)}, skip {list(ss)}",
            shape_hints=[
                {(B, c_next or c_out, 2 * hs[2], 2 * hs[3]): "upsampled by a factor 2 instead of to the skip's size"}
            ],
            load_hints=(
                "the first block reads c_in + c_skip channels (h and the skip joined); the 3x3 conv "
                "to c_next comes after the blocks, and only when c_next is not None",
            ),
        )
    passed(name, f"{len(cases)} up levels with labkit's weights, seed {seed}")


_LEVELS = ("stem", *(f"down.{i}" for i in range(6)), "mid1", "mid2", *(f"up.{i}" for i in range(6)), "out_norm", "out")

_UNET_HINTS = {
    "expected input": "a layer got another channel count than it was built for: compare your shapes with the table, "
    "level by level. A common cause: the skips joined first-in-first-out; the deepest up level "
    "takes the skip saved last",
    "number of channels in input": "a layer got another channel count than it was built for. With skips=False "
    "the Up levels are built with c_skip = 0, so they must join no channels (only "
    "the skip's size is used)",
}

LAB02_UNET = dict(in_channels=1, base_channels=8, channel_mults=(1, 2, 2), blocks_per_level=1, groups=4, patch=2)


def lab02_config(**overrides) -> unet.UNetConfig:
    """labkit's configuration of lab 02's network (no embeddings, no attention) for the student's arguments."""
    return unet.UNetConfig(**{**LAB02_UNET, **overrides}, conditional=False, attention=False)


def check_unet(
    student_cls,
    *,
    seed: int = 0,
    cases=(
        dict(),
        dict(channel_mults=(1, 2), blocks_per_level=2, patch=1, base_channels=4, groups=2),
        dict(skips=False),
    ),
    sizes=((2, 1, 28, 28), (1, 1, 20, 20), (1, 1, 28, 28)),
) -> None:
    """UNet(in_channels, base_channels, channel_mults, blocks_per_level, groups, patch, skips=True): x [B, C, H, W] ->
    [B, C, H, W], built from your blocks as in the table (pixel-unshuffle, stem, Down per level, middle, Up per
    level, GroupNorm -> SiLU -> conv, pixel-shuffle). Compared with ``labkit.unet.UNet(lab02_config(...))``."""
    name = "check_unet"
    g = generator(seed)
    for k, (over, shape) in enumerate(zip(cases, sizes)):
        init = {**LAB02_UNET, **over}
        x = torch.randn(*shape, generator=g)
        B, C, H, W = shape
        ref = unet.UNet(lab02_config(**over))
        p = init["patch"]
        report = _module_case(
            name,
            student_cls,
            ref,
            init,
            (x,),
            seed=seed * 100 + k,
            mistakes_fn=_unet,
            context=f" for UNet({', '.join(f'{a}={v}' for a, v in init.items())}) on x {list(shape)}",
            shape_hints=[
                {
                    (B, C * p * p, H // p, W // p): "pixel_shuffle the output back to the image's size",
                    (B, C, H // 2, W // 2): "an up level was not brought back to its skip's size",
                }
            ],
            load_hints=(
                "create the layers in the table's order: stem, the Down levels, mid1, mid2, the Up levels "
                "(deepest first), out_norm, out",
                "Down(c_in, c_out, ...): level i reads the previous level's channels; Up(c, c, c, c_next, "
                "...) ends with the next (larger) level's channels",
            ),
            hints=_UNET_HINTS,
            trace=_LEVELS,
        )
        del report
    # behaviour: the skips matter (the student's skips=False network differs from the one with skips)
    passed(name, f"{len(cases)} networks with labkit's weights, seed {seed}")


DEFAULTS = dict(in_channels=1, base_channels=32, channel_mults=(1, 2, 2), blocks_per_level=1, groups=8, patch=2)


def labkit_unet(**kwargs) -> unet.UNet:
    """labkit's version of lab 02's network, built from the same arguments (and defaults) as the student's
    ``UNet(...)``."""
    return unet.UNet(lab02_config(**{**DEFAULTS, **kwargs}))
