"""Checks for lab 02 (the U-Net). References: ``labkit.unet.concat_skip`` and ``labkit.unet.upsample_merge``
(the up path of ``labkit.unet.UNet``).

    check_concat_skip(concat_skip)         [B, C1, H, W] + [B, C2, H, W] -> [B, C1 + C2, H, W]
    check_upsample_merge(upsample_merge)   nearest-upsample h to skip's size, then concat_skip
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labkit import unet
from labkit.checks._common import call, compare, expect_tensor, generator, passed

_CAT_HINT = ("the tensors do not fit together along the dimension you joined them: the skip's channels are "
             "stacked onto h's, so join along the channel dimension of [B, C, H, W] tensors")


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
        out = call(name, student_fn, h, skip, names=["h", "skip"],
                   hints={"sizes of tensors must match": _CAT_HINT})
        out = expect_tensor(name, out, (B, C1 + C2, H, W), shape_hints=_shape_hints(B, C1, C2, H, W))
        ref = unet.concat_skip(h.double(), skip.double())
        mistakes = {
            "h and skip in the wrong order: h's channels come first, then the skip's":
                torch.cat([skip, h], dim=1),
            "channels interleaved: concatenate the two blocks of channels one after the other":
                torch.stack([h, skip], dim=2).reshape(B, C1 + C2, H, W) if C1 == C2 else None,
            "h twice: the skip's channels are missing (join h with the skip)": torch.cat([h, h], dim=1) if C1 == C2 else None,
        }
        compare(name, out, ref, mistakes, tol=0.0, context=f" for h {[B, C1, H, W]}, skip {[B, C2, H, W]}")
    passed(name, f"{len(sizes)} shape pairs, seed {seed}")


def check_upsample_merge(student_fn, *, seed: int = 0,
                         sizes=((2, 16, 8, 4, 4, 7, 7), (1, 8, 8, 7, 7, 14, 14), (2, 4, 6, 3, 5, 6, 9))) -> None:
    """student_fn(h [B, C1, h, w], skip [B, C2, H, W]) -> [B, C1 + C2, H, W]:
    F.interpolate(h, size=(H, W), mode="nearest"), then h's channels followed by the skip's.

    sizes: (B, C1, C2, h, w, H, W) per case; the first has an odd skip size (7 -> 4 -> 7).
    """
    name = "check_upsample_merge"
    g = generator(seed)
    for B, C1, C2, hh, ww, H, W in sizes:
        h = torch.randn(B, C1, hh, ww, generator=g)
        skip = torch.randn(B, C2, H, W, generator=g)
        out = call(name, student_fn, h, skip, names=["h", "skip"], hints={
            "sizes of tensors must match": "h and skip differ in height/width when you concatenate: upsample h to "
            "exactly skip's height and width (a fixed factor 2 fails when a down-sampled size was odd: "
            "7 -> 4 -> 8)",
        })
        shape_hints = _shape_hints(B, C1, C2, H, W)
        shape_hints[(B, C1 + C2, hh, ww)] = ("the result has h's size: the skip was shrunk down to h; the merge "
                                              "goes the other way, h is upsampled to the skip's size")
        shape_hints[(B, C1 + C2, 2 * hh, 2 * ww)] = ("upsampled by a factor 2 instead of to skip's size: ask "
                                                      "for skip's height and width (odd sizes do not double back)")
        out = expect_tensor(name, out, (B, C1 + C2, H, W), shape_hints=shape_hints)
        up = F.interpolate(h, size=(H, W), mode="nearest")
        ref = unet.upsample_merge(h.double(), skip.double())
        mistakes = {
            "h and skip in the wrong order: h's (upsampled) channels come first": torch.cat([skip, up], dim=1),
            "bilinear upsampling: labkit's U-Net copies the nearest pixel (the convolutions after it smooth)":
                torch.cat([F.interpolate(h, size=(H, W), mode="bilinear", align_corners=False), skip], dim=1),
            "bilinear upsampling with align_corners=True: labkit's U-Net copies the nearest pixel":
                torch.cat([F.interpolate(h, size=(H, W), mode="bilinear", align_corners=True), skip], dim=1),
            "mode='nearest-exact' picks other source pixels at odd sizes than the 'nearest' mode labkit.unet uses":
                torch.cat([F.interpolate(h, size=(H, W), mode="nearest-exact"), skip], dim=1),
            "bicubic upsampling: labkit's U-Net copies the nearest pixel":
                torch.cat([F.interpolate(h, size=(H, W), mode="bicubic", align_corners=False), skip], dim=1),
        }
        mistakes["area / average upsampling: labkit's U-Net copies the nearest pixel"] = torch.cat(
            [F.interpolate(h, size=(H, W), mode="area"), skip], dim=1) if H >= hh and W >= ww else None
        compare(name, out, ref, mistakes, tol=1e-6, context=f" for h {[B, C1, hh, ww]}, skip {[B, C2, H, W]}",
                reference=unet.upsample_merge, args=(h, skip))
    passed(name, f"{len(sizes)} shape pairs, seed {seed}")
