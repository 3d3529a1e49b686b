"""Lab 03's classes as a student writes them, right or with one named mistake: ``classes(mistake)`` returns
``{"TimeEmbedding", "ClassEmbedding", "ConvBlock", "ResBlock", "UNet"}``, each built from the others (the UNet
from this ResBlock, TimeEmbedding and ClassEmbedding, with labkit's Down and Up given ``block=ResBlock``).
Used by tests/test_checks_lab01_03.py and tests/mistake_suite.py."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from labkit import unet


def sinusoidal(t, dim, layout="interleaved"):
    i = torch.arange(dim // 2, dtype=torch.float32)
    a = t.float()[:, None] * torch.exp(-math.log(10000.0) * 2 * i / dim)[None, :]
    if layout == "cat":
        return torch.cat([torch.sin(a), torch.cos(a)], dim=1)
    emb = torch.zeros(t.shape[0], dim)
    emb[:, 0::2], emb[:, 1::2] = torch.sin(a), torch.cos(a)
    return emb


def film(h, scale, shift, mistake=None):
    if mistake == "swap":
        scale, shift = shift, scale
    if mistake == "wrong_axis":
        return h * (1 + scale[:, None, None, :]) + shift[:, None, None, :]
    s, b = scale[:, :, None, None], shift[:, :, None, None]
    return h * s + b if mistake == "no_one" else h * (1 + s) + b


def classes(mistake: str | None = None) -> dict:
    m = mistake

    class TimeEmbedding(nn.Module):
        def __init__(self, base, dim):
            super().__init__()
            self.base = base
            first = nn.Linear(dim if m == "time_base_is_dim" else base, dim)
            act = nn.ReLU() if m == "time_relu" else nn.Identity() if m == "time_no_silu" else nn.SiLU()
            self.mlp = nn.Sequential(first, act, nn.Linear(dim, dim))
            if m == "time_silu_end":
                self.mlp.append(nn.SiLU())

        def forward(self, t):
            if m == "time_t_over_T":
                t = t / 1000
            pe = sinusoidal(t, self.mlp[0].in_features, "cat" if m == "time_cat" else "interleaved")
            return self.mlp(pe)

    class ClassEmbedding(nn.Module):
        def __init__(self, num_classes, dim):
            super().__init__()
            self.num_classes = num_classes
            if m == "class_linear":
                self.table = nn.Linear(num_classes + 1, dim)
            else:
                self.table = nn.Embedding(num_classes + (0 if m == "class_no_null_row" else 1), dim)

        def forward(self, y):
            if m == "class_linear":
                return self.table(F.one_hot(y, self.num_classes + 1).float())
            if m == "class_null_zero":
                return torch.where((y == self.num_classes)[:, None], 0.0, self.table(y))
            if m == "class_shifted":
                return self.table((y + 1) % (self.num_classes + 1))
            return self.table(y)

    class ConvBlock(nn.Module):
        def __init__(self, c_in, c_out, groups, dropout=0.0):
            super().__init__()
            self.norm = nn.GroupNorm(groups, c_in)
            self.dropout = nn.Dropout(dropout)
            self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

        def forward(self, x, scale=None, shift=None):
            act = F.relu if m == "relu" else F.silu
            if m == "inplace":
                x.mul_(2)  # GroupNorm undoes the factor: only the edit itself is wrong
            if m == "act_before_norm":
                h = self.norm(act(x))
                return self.conv(film(h, scale, shift) if scale is not None else h)
            h = self.norm(x)
            if m == "film_after_act":
                h = act(h)
            if scale is not None and m != "no_film":
                h = film(h, scale, shift, m)
            if m != "film_after_act":
                h = act(h)
            return self.conv(self.dropout(h))

    class ResBlock(nn.Module):
        def __init__(self, c_in, c_out, groups, emb_dim, dropout=0.0):
            super().__init__()
            self.block1 = ConvBlock(c_in, c_out, groups)
            self.emb = nn.Linear(emb_dim, (1 if m == "res_one_output" else 2) * c_out)
            self.block2 = ConvBlock(c_out, c_out, groups, dropout)
            no_conv = c_in == c_out or m == "res_no_shortcut_conv"
            self.shortcut = nn.Identity() if no_conv else nn.Conv2d(c_in, c_out, 1)

        def forward(self, x, emb):
            e = self.emb(emb if m == "no_silu_emb" else F.silu(emb))
            if m == "res_one_output":
                scale, shift = e, torch.zeros_like(e)
            elif m == "interleaved":
                scale, shift = e[:, 0::2], e[:, 1::2]
            else:
                scale, shift = e.chunk(2, dim=1)
            if m == "film_in_block1":
                h = self.block2(self.block1(x, scale, shift))
            else:
                h = self.block2(self.block1(x), scale, shift)
            if m == "no_residual":
                return h
            out = self.shortcut(x) + h
            return F.silu(out) if m == "act_after_sum" else out

    class UNet(nn.Module):
        def __init__(self, in_channels=1, base_channels=32, channel_mults=(1, 2, 2), blocks_per_level=1, groups=8,
                     patch=2, num_classes=10):
            super().__init__()
            self.patch = patch
            emb_dim = 4 * base_channels
            chans = [base_channels * k for k in channel_mults]
            c_img = in_channels * patch * patch
            n, last = blocks_per_level, len(chans) - 1
            mid = lambda: ResBlock(chans[-1], chans[-1], groups, emb_dim)  # noqa: E731
            if m == "unet_mid_first":  # other names, created in another order: labkit's weights cannot go in
                self.middle1, self.middle2 = mid(), mid()
            self.time_embed = TimeEmbedding(base_channels, emb_dim)
            self.class_embed = ClassEmbedding(num_classes, emb_dim)
            self.stem = nn.Conv2d(c_img, chans[0], 3, padding=1)
            self.down = nn.ModuleList([
                unet.Down(chans[i - 1] if i else chans[0], ch, n, groups, downsample=i < last, emb_dim=emb_dim,
                          block=ResBlock) for i, ch in enumerate(chans)])
            if m != "unet_mid_first":
                self.middle1, self.middle2 = mid(), mid()
            self.up = nn.ModuleList([
                unet.Up(ch, ch, ch, chans[i - 1] if i else None, n, groups, emb_dim=emb_dim, block=ResBlock)
                for i, ch in reversed(list(enumerate(chans)))])
            self.out_norm = nn.GroupNorm(groups, chans[0])
            self.out = nn.Conv2d(chans[0], c_img, 3, padding=1)

        def forward(self, x, t, y):
            te, ce = self.time_embed(t), self.class_embed(y)
            emb = {"time_only": te, "class_only": ce, "emb_product": te * ce}.get(m, te + ce)
            if m == "t_ignored":
                emb = self.time_embed(torch.zeros_like(t)) + ce
            h = self.stem(F.pixel_unshuffle(x, self.patch))
            skips = []
            for down in self.down:
                h, skip = down(h, None if m in ("no_down_emb", "last_only") else emb)
                skips.append(skip)
            mid_emb = None if m in ("no_mid_emb", "last_only") else emb
            h = self.middle2(self.middle1(h, mid_emb), mid_emb)
            for k, up in enumerate(self.up):
                up_emb = None if m == "last_only" and k < len(self.up) - 1 else emb
                h = up(h, skips.pop(), up_emb)
            h = h if m == "no_out_norm" else self.out_norm(h)
            return F.pixel_shuffle(self.out(F.silu(h)), self.patch)

    if m in ("no_mid_emb", "last_only"):  # a ResBlock that skips FiLM when it gets no embedding
        forward = ResBlock.forward

        def lenient(self, x, emb):
            if emb is None:
                return self.shortcut(x) + self.block2(self.block1(x))
            return forward(self, x, emb)
        ResBlock.forward = lenient

    return {"TimeEmbedding": TimeEmbedding, "ClassEmbedding": ClassEmbedding, "ConvBlock": ConvBlock,
            "ResBlock": ResBlock, "UNet": UNet}


# mistake -> (the class it is in, the phrase its check's message names it by)
MISTAKES = {
    "time_no_silu": ("TimeEmbedding", "no activation between the two Linear"),
    "time_relu": ("TimeEmbedding", "ReLU instead of SiLU"),
    "time_silu_end": ("TimeEmbedding", "after the last Linear"),
    "time_cat": ("TimeEmbedding", "not interleaved"),
    "time_t_over_T": ("TimeEmbedding", r"t was scaled"),
    "time_base_is_dim": ("TimeEmbedding", "missing"),
    "class_no_null_row": ("ClassEmbedding", r"num_classes \+ 1 rows"),
    "class_linear": ("ClassEmbedding", "not a Linear"),
    "class_null_zero": ("ClassEmbedding", "not a vector of zeros"),
    "class_shifted": ("ClassEmbedding", "shifted by one"),
    "act_before_norm": ("ConvBlock", "activation comes before the norm"),
    "film_after_act": ("ConvBlock", "FiLM after the activation"),
    "swap": ("ConvBlock", "scale and shift swapped"),
    "no_one": ("ConvBlock", r"'1 \+' is missing"),
    "wrong_axis": ("ConvBlock", "wrong axis"),
    "relu": ("ConvBlock", "ReLU instead of SiLU"),
    "no_film": ("ConvBlock", "were ignored"),
    "inplace": ("ConvBlock", "in place"),
    "no_residual": ("ResBlock", "residual is missing"),
    "no_silu_emb": ("ResBlock", "no SiLU before the embedding projection"),
    "film_in_block1": ("ResBlock", "first conv block"),
    "interleaved": ("ResBlock", "alternating columns"),
    "act_after_sum": ("ResBlock", "after the sum"),
    "res_one_output": ("ResBlock", r"scale \*and\* a shift"),
    "res_no_shortcut_conv": ("ResBlock", "shortcut"),
    "time_only": ("UNet", "class embedding is missing"),
    "class_only": ("UNet", "time embedding is missing"),
    "emb_product": ("UNet", "multiplied"),
    "no_down_emb": ("UNet", "a block got no embedding"),
    "no_mid_emb": ("UNet", "middle blocks got no embedding"),
    "last_only": ("UNet", "only the last level"),
    "no_out_norm": ("UNet", "GroupNorm is missing"),
    "unet_mid_first": ("UNet", "another order"),
    "t_ignored": ("UNet", "does not change when t changes"),
}
