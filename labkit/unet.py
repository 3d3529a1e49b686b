"""A class-conditioned U-Net noise predictor: model(x, t, y) -> eps_hat of the same shape as x.

The shape of the network (Ronneberger et al. 2015; as used for diffusion by Ho et al. 2020, appendix B):

    x ──stem──► level 0 ──down──► level 1 ──down──► ... ──► middle
                  │ skip            │ skip                    │
    eps ◄─out── level 0 ◄──up──── level 1 ◄──up──── ... ◄─────┘

Going down, the image gets smaller and the channels more: the network sees the whole digit.
Going up, it must paint pixel-exact noise again; the skip connections hand each up level the
fine detail (edges, strokes) of the matching down level, which the small middle cannot carry.
Switch them off (``UNetConfig(skips=False)``) to see what is lost.

Every residual block is told the time step and the class: their embedding sets a per-channel scale
and shift after its second normalisation (FiLM; "scale-shift norm" of Nichol & Dhariwal 2021).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from labkit.embeddings import ClassEmbedding, TimeEmbedding
from labkit.errors import LabkitTypeError, LabkitValueError


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1  # 1 for MNIST, 3 for colour
    base_channels: int = 64  # channels of level 0
    channel_mults: tuple[int, ...] = (1, 2, 2)  # level i has base_channels * channel_mults[i] channels
    blocks_per_level: int = 2  # residual blocks per level, going down (and going up)
    num_classes: int = 10  # labels 0..num_classes-1; num_classes itself means "no class"
    groups: int = 8  # GroupNorm groups
    dropout: float = 0.0
    skips: bool = True  # the U in U-Net: concatenate each down level's output into its up level
    attention: bool = True  # one self-attention layer in the middle (global context at low resolution)
    patch: int = 1  # pixel-unshuffle factor: 2 turns 28x28x1 into 14x14x4 (4x less compute per layer)
    conditional: bool = True  # time and class embeddings into every block (lab 03); False: lab 02's network

    def __post_init__(self):
        for name in ("in_channels", "base_channels", "blocks_per_level", "num_classes", "groups", "patch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LabkitValueError(f"UNetConfig.{name} must be an integer >= 1, got {value!r}")
        mults = self.channel_mults
        if (
            not isinstance(mults, (tuple, list))
            or not mults
            or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in mults)
        ):
            raise LabkitValueError(
                f"UNetConfig.channel_mults must be a non-empty tuple of integers >= 1, got {mults!r}"
            )
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise LabkitValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for m in mults:
            if (self.base_channels * m) % self.groups:
                raise LabkitValueError(f"channels {self.base_channels * m} must be divisible by groups={self.groups}")

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def emb_dim(self) -> int:
        return 4 * self.base_channels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d["channel_mults"] = tuple(d["channel_mults"])
        return cls(**d)


def film(h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Feature-wise linear modulation (Perez et al. 2018, "FiLM"), in the "scale-shift norm" form of
    Nichol & Dhariwal 2021 (section 3.1's "AdaGN"): h * (1 + scale) + shift, one scale and shift per channel.   (lab 03)

    h: [B, C, H, W]; scale, shift: [B, C] -> [B, C, H, W]. "1 +" makes scale = 0 leave h unchanged.
    """
    scale = scale.reshape(*scale.shape, *([1] * (h.dim() - scale.dim())))  # [B, C] -> [B, C, 1, 1]
    shift = shift.reshape(*shift.shape, *([1] * (h.dim() - shift.dim())))
    return h * (1 + scale) + shift


class ConvBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv: the "pre-activation" order of He et al. 2016 (normalise, then the
    non-linearity, then the weights), as in the DDPM U-Net.   (lab 02; the scale and shift: lab 03)

    x: [B, c_in, H, W] -> [B, c_out, H, W]; the height and width stay (padding 1).
    scale, shift: [B, c_in] or None. Given, the time/class embedding modulates the normalised features
    (``film``) before the activation: this is where conditioning enters a block.
    """

    def __init__(self, c_in: int, c_out: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c_in)  # statistics over groups of channels: no batch dependence
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(
        self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.norm(x)  # [B, c_in, H, W]
        if scale is not None:
            h = film(h, scale, shift)
        return self.conv(self.dropout(F.silu(h)))  # [B, c_out, H, W]


class ResBlock(nn.Module):
    """Two conv blocks plus the input: x + F(x) (He et al. 2016), the U-Net's unit of work.   (labs 02, 03)

    block1: [B, c_in, H, W] -> [B, c_out, H, W]; block2: [B, c_out, H, W] -> [B, c_out, H, W].
    shortcut: a 1x1 conv when the channel count changes, else nothing, so that x can be added.
    emb_dim: None for an unconditioned block (lab 02); else the time+class embedding [B, emb_dim] is
    turned into a per-channel (scale, shift) for block2 (lab 03; "scale-shift norm", Nichol & Dhariwal 2021).
    """

    def __init__(self, c_in: int, c_out: int, groups: int, emb_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.block1 = ConvBlock(c_in, c_out, groups)
        self.emb = nn.Linear(emb_dim, 2 * c_out) if emb_dim is not None else None  # -> (scale, shift)
        self.block2 = ConvBlock(c_out, c_out, groups, dropout)
        nn.init.zeros_(self.block2.conv.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.block2.conv.bias)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.block1(x)  # [B, c_out, H, W]
        if self.emb is not None:
            scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)  # 2 x [B, c_out]
            h = self.block2(h, scale, shift)
        else:
            h = self.block2(h)
        return self.shortcut(x) + h


class SelfAttention(nn.Module):
    """Every pixel looks at every other pixel (Vaswani et al. 2017), used at the smallest resolution."""

    def __init__(self, channels: int, groups: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, H*W, C]
        h, _ = self.attn(h, h, h, need_weights=False)
        return x + h.transpose(1, 2).reshape(B, C, H, W)


def concat_skip(h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """The skip connection: stack the down path's features onto the up path's, channel-wise.   (lab 02)

    h: [B, C1, H, W], skip: [B, C2, H, W] -> [B, C1 + C2, H, W]
    """
    return torch.cat([h, skip], dim=1)


def upsample_to(h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour upsampling of h to skip's height and width (not "times 2": 7 -> 4 -> 7 must come back).

    h: [B, C1, h, w], skip: [B, C2, H, W] -> [B, C1, H, W]
    """
    return F.interpolate(h, size=skip.shape[-2:], mode="nearest")


def upsample_merge(h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """One up level's input: upsample h to skip's size, then stack the skip's channels after h's.   (lab 02)

    h: [B, C1, h, w], skip: [B, C2, H, W] -> [B, C1 + C2, H, W]
    """
    return concat_skip(upsample_to(h, skip), skip)


class Down(nn.Module):
    """One level going down: residual blocks at this resolution, then a stride-2 conv that halves it.   (lab 02)

    h: [B, c_in, H, W] -> (the next level's input [B, c_out, ceil(H/2), ceil(W/2)], the skip [B, c_out, H, W]).
    The skip is the level's output *before* down-sampling: the full-resolution detail its up level needs.
    downsample=False (the last level) keeps the resolution. block: the residual block class (lab 03 passes
    the student's own: block(c_in, c_out, groups, emb_dim, dropout)).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        n_blocks: int,
        groups: int,
        downsample: bool = True,
        emb_dim: int | None = None,
        dropout: float = 0.0,
        block: type | None = None,
    ):
        super().__init__()
        block = block or ResBlock
        self.blocks = nn.ModuleList(
            [block(c_in if j == 0 else c_out, c_out, groups, emb_dim, dropout) for j in range(n_blocks)]
        )
        self.downsample = nn.Conv2d(c_out, c_out, 3, stride=2, padding=1) if downsample else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            h = block(h, emb)
        return self.downsample(h), h


class Up(nn.Module):
    """One level going up: upsample to the skip's size and join it, residual blocks, then a 3x3 conv to the
    channel count of the next (larger) level.   (lab 02)

    h: [B, c_in, h, w], skip: [B, c_skip, H, W] -> [B, c_next, H, W].
    skips=False drops the skip's channels (the ablation) but still uses its size.
    c_next=None (the last level) keeps c_out channels and skips the final conv. block: as in ``Down``.
    """

    def __init__(
        self,
        c_in: int,
        c_skip: int,
        c_out: int,
        c_next: int | None,
        n_blocks: int,
        groups: int,
        emb_dim: int | None = None,
        dropout: float = 0.0,
        skips: bool = True,
        block: type | None = None,
    ):
        super().__init__()
        self.skips = skips
        block = block or ResBlock
        first = c_in + (c_skip if skips else 0)  # concatenation adds the skip's channels
        self.blocks = nn.ModuleList(
            [block(first if j == 0 else c_out, c_out, groups, emb_dim, dropout) for j in range(n_blocks)]
        )
        self.to_next = nn.Conv2d(c_out, c_next, 3, padding=1) if c_next is not None else nn.Identity()

    def forward(self, h: torch.Tensor, skip: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = upsample_merge(h, skip) if self.skips else upsample_to(h, skip)  # [B, c_in (+ c_skip), H, W]
        for block in self.blocks:
            h = block(h, emb)
        return self.to_next(h)


class UNet(nn.Module):
    """model(x [B,C,H,W], t int64 [B], y int64 [B]) -> eps_hat [B,C,H,W]   (lab 02 unconditioned, lab 03 conditioned).

    UNetConfig(conditional=False) builds lab 02's network: no embeddings, and t and y are ignored.
    """

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = cfg = config
        chans = [cfg.base_channels * m for m in cfg.channel_mults]  # per level
        c_in = cfg.in_channels * cfg.patch**2  # channels after pixel-unshuffle
        emb_dim = cfg.emb_dim if cfg.conditional else None
        if cfg.conditional:
            self.time_embed = TimeEmbedding(cfg.base_channels, cfg.emb_dim)
            self.class_embed = ClassEmbedding(cfg.num_classes, cfg.emb_dim)
        self.stem = nn.Conv2d(c_in, chans[0], 3, padding=1)

        n, last = cfg.blocks_per_level, len(chans) - 1
        self.down = nn.ModuleList(
            [
                Down(chans[i - 1] if i else chans[0], ch, n, cfg.groups, i < last, emb_dim, cfg.dropout)
                for i, ch in enumerate(chans)
            ]
        )
        c = chans[-1]
        self.mid1 = ResBlock(c, c, cfg.groups, emb_dim, cfg.dropout)
        self.mid_attn = SelfAttention(c, cfg.groups) if cfg.attention else nn.Identity()
        self.mid2 = ResBlock(c, c, cfg.groups, emb_dim, cfg.dropout)
        self.up = nn.ModuleList(
            [  # from the smallest level back to level 0
                Up(ch, ch, ch, chans[i - 1] if i else None, n, cfg.groups, emb_dim, cfg.dropout, skips=cfg.skips)
                for i, ch in reversed(list(enumerate(chans)))
            ]
        )

        self.out_norm = nn.GroupNorm(cfg.groups, chans[0])
        self.out = nn.Conv2d(chans[0], c_in, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # start by predicting zero noise
        nn.init.zeros_(self.out.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        upgrade_state_dict(state_dict, prefix)  # checkpoints written before the lab-02 block names
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(x, t, y)
        return self._forward(x, t, y, None)

    def check_inputs(self, x, t, y) -> None:
        """One clear LabkitTypeError/ValueError for inputs the network cannot take.

        Shapes and dtypes are checked always (free: no device sync). Value ranges (t >= 0, y in
        [0, num_classes]) are checked only for CPU tensors: on a GPU reading them back would stall
        every forward pass, so there an out-of-range y fails inside torch instead.
        """
        cfg = self.config
        for name, v in (("x", x), ("t", t), ("y", y)):
            if v is None and (name == "x" or cfg.conditional):
                raise LabkitTypeError(f"UNet: the conditioned network needs {name}: call model(x, t, y)")
            if v is not None and not isinstance(v, torch.Tensor):
                raise LabkitTypeError(f"UNet: {name} must be a torch.Tensor, got {type(v).__name__}")
        if x.dim() != 4:
            raise LabkitValueError(f"UNet: x must be [B, C, H, W], got shape {list(x.shape)}")
        B, C, H, W = x.shape
        if C != cfg.in_channels:
            raise LabkitValueError(f"UNet: x has {C} channels but the model takes in_channels={cfg.in_channels}")
        if H % cfg.patch or W % cfg.patch:
            raise LabkitValueError(f"UNet: image size {H}x{W} must be divisible by patch={cfg.patch}")
        if not x.is_floating_point():
            raise LabkitTypeError(f"UNet: x must be a float tensor, got {x.dtype}")
        weight = self.stem.weight
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise LabkitTypeError(
                f"UNet: x is {x.dtype} but the model's weights are {weight.dtype}: "
                f"convert one of them (x.to({weight.dtype}) or model.to({x.dtype}))"
            )
        if not cfg.conditional:
            return  # lab 02's network takes only x (t and y, if given, are ignored)
        if t.shape != (B,):
            raise LabkitValueError(f"UNet: t must have shape [{B}] (one time step per image), got {list(t.shape)}")
        if y.shape != (B,):
            raise LabkitValueError(f"UNet: y must have shape [{B}] (one label per image), got {list(y.shape)}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise LabkitTypeError(f"UNet: y must be integer class labels (int64), got {y.dtype}")
        if y.device.type == "cpu" and B and (int(y.min()) < 0 or int(y.max()) > cfg.num_classes):
            raise LabkitValueError(
                f"UNet: y must be in [0, {cfg.num_classes}] ({cfg.num_classes} = no class), "
                f"got values {int(y.min())}..{int(y.max())}"
            )
        if t.device.type == "cpu" and B and float(t.min()) < 0:
            raise LabkitValueError(f"UNet: time steps t must be >= 0, got {float(t.min()):g}")

    def _forward(self, x, t, y, trace: list | None):
        cfg = self.config
        note = (lambda name, h: trace.append((name, tuple(h.shape)))) if trace is not None else (lambda *a: None)
        note("input", x)
        h = F.pixel_unshuffle(x, cfg.patch) if cfg.patch > 1 else x  # [B, C*p^2, H/p, W/p]
        if cfg.patch > 1:
            note(f"pixel_unshuffle x{cfg.patch}", h)
        emb = None
        if cfg.conditional:
            emb = self.time_embed(t) + self.class_embed(y)  # [B, emb_dim]
            note("embedding (time + class)", emb)
        h = self.stem(h)
        note("stem", h)
        skips = []
        for i, down in enumerate(self.down):
            h, skip = down(h, emb)
            note(f"down level {i}", skip)
            skips.append(skip)  # saved for the matching up level
            if h.shape != skip.shape:
                note(f"downsample {i}->{i + 1}", h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        note("middle", h)
        for k, up in enumerate(self.up):
            i = len(self.up) - 1 - k  # level index
            skip = skips.pop()
            if trace is not None:  # the join, for the printed table (the same as up's first line)
                joined = upsample_merge(h, skip) if cfg.skips else upsample_to(h, skip)
                note(f"up level {i}" + (" + skip" if cfg.skips else ", upsampled"), joined)
            h = up(h, skip, emb)
            note(f"up level {i}", h)  # after its final conv: the next level's channels
        h = self.out(F.silu(self.out_norm(h)))
        h = F.pixel_shuffle(h, cfg.patch) if cfg.patch > 1 else h
        note("output (eps_hat)", h)
        return h

    def shape_trace(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> list[tuple[str, tuple]]:
        """[(layer name, output shape)] for one forward pass, level by level."""
        self.check_inputs(x, t, y)
        trace: list = []
        with torch.no_grad():
            self._forward(x, t, y, trace)
        return trace

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def summary(self, image_size: int = 28, batch: int = 1) -> str:
        """A printable table: each stage's output shape, then the parameter count per level."""
        p = next(self.parameters())
        x = torch.zeros(batch, self.config.in_channels, image_size, image_size, device=p.device)
        t = torch.zeros(batch, dtype=torch.long, device=p.device)
        rows = [f"{name:<32} {str(list(shape)):>16}" for name, shape in self.shape_trace(x, t, t)]
        parts = {"embeddings": [self.time_embed, self.class_embed]} if self.config.conditional else {}
        parts.update(
            {
                "stem": [self.stem],
                **{f"down level {i}": [d] for i, d in enumerate(self.down)},
                "middle": [self.mid1, self.mid_attn, self.mid2],
                **{f"up level {len(self.up) - 1 - k}": [u] for k, u in enumerate(self.up)},
                "output": [self.out_norm, self.out],
            }
        )
        rows.append("-" * 49)
        for name, mods in parts.items():
            count = sum(q.numel() for m in mods for q in m.parameters())
            rows.append(f"{name:<32} {count:>16,}")
        rows.append(f"{'total parameters':<32} {self.num_parameters():>16,}")
        return "\n".join(rows)


_OLD_NAMES = (  # (pattern, replacement) from the names before lab 02's blocks (labkit <= 2026-12-06)
    (re.compile(r"^(down\.\d+)\.(\d+)\."), r"\1.blocks.\2."),
    (re.compile(r"^downsample\.(\d+)\."), r"down.\1.downsample."),
    (re.compile(r"^(up\.\d+)\.(\d+)\."), r"\1.blocks.\2."),
    (re.compile(r"^upsample\.(\d+)\."), r"up.\1.to_next."),
    (re.compile(r"\.norm1\."), ".block1.norm."),
    (re.compile(r"\.conv1\."), ".block1.conv."),
    (re.compile(r"\.norm2\."), ".block2.norm."),
    (re.compile(r"\.conv2\."), ".block2.conv."),
)


def upgrade_state_dict(state_dict: dict, prefix: str = "") -> dict:
    """Rename, in place, the weights of a U-Net saved before the network was built from lab 02's blocks
    (ConvBlock, Down, Up): the same numbers, new names. Names already new are left alone."""
    old = [
        k
        for k in state_dict
        if k.startswith(prefix)
        and (k.startswith(prefix + "downsample.") or ".norm1." in k or k.startswith(prefix + "upsample."))
    ]
    if not old:
        return state_dict
    for key in [k for k in list(state_dict) if k.startswith(prefix)]:
        name = key[len(prefix) :]
        for pattern, repl in _OLD_NAMES:
            name = pattern.sub(repl, name)
        if prefix + name != key:
            state_dict[prefix + name] = state_dict.pop(key)
    return state_dict
