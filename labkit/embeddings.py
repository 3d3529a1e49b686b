"""How the network is told *when* (the time step t) and *what* (the class y).

The U-Net sees the same weights at every noise level, so it must be told the noise level. A raw
integer t in [0, 1000) is a poor input for a network (one huge number); the sinusoidal embedding turns
it into a vector of smooth waves of many frequencies, so nearby t give nearby vectors and the network
can read off both coarse and fine differences.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from labkit.errors import LabkitTypeError, LabkitValueError


def sinusoidal_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10000.0, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sinusoidal position embedding of Vaswani et al. 2017 ("Attention Is All You Need", section 3.5):

        PE(t, 2i)   = sin(t / max_period^(2i/dim))
        PE(t, 2i+1) = cos(t / max_period^(2i/dim))

    sines at even positions, cosines at odd ones (the Transformer form). An odd dim gets a last column
    of zeros. t: [B] (any real or integer dtype) -> [B, dim] float32 (or ``dtype``) on t's device.   (lab 03)
    """
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise LabkitValueError(f"embedding dim must be an integer >= 1, got {dim!r}")
    if not isinstance(t, torch.Tensor):
        raise LabkitTypeError(f"t must be a torch.Tensor of time steps [B], got {type(t).__name__}")
    if t.dim() != 1:
        raise LabkitValueError(f"t must be 1-D [B] (one time step per image), got shape {list(t.shape)}")
    half = dim // 2
    i = torch.arange(half, device=t.device, dtype=dtype)  # [half]
    freqs = torch.exp(-math.log(max_period) * (2 * i) / dim)  # [half]  = 1 / max_period^(2i/dim)
    angles = t.to(dtype)[:, None] * freqs[None, :]  # [B, half]
    emb = torch.zeros(t.shape[0], dim, device=t.device, dtype=dtype)
    emb[:, 0 : 2 * half : 2] = torch.sin(angles)
    emb[:, 1 : 2 * half : 2] = torch.cos(angles)
    return emb


def cosine_similarity(emb: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarity between rows: <a_i, b_j> / (|a_i| |b_j|), the dot product of unit vectors, as CLIP
    compares images with captions (Radford et al. 2021, Figure 3).   (labs 03, 06)

    emb [N, D] alone -> [N, N], every row against every row (lab 03: time embeddings);
    emb [N, D], other [K, D] -> [N, K] (lab 06: CLIP image embeddings against caption embeddings).
    """
    other = emb if other is None else other
    unit = emb / emb.norm(dim=-1, keepdim=True)  # [N, D], each row of length 1
    unit_other = other / other.norm(dim=-1, keepdim=True)  # [K, D]
    return unit @ unit_other.T


class TimeEmbedding(nn.Module):
    """t [B] -> sinusoidal [B, base] -> MLP -> [B, dim]  (the DDPM recipe: Ho et al. 2020, appendix B)."""

    def __init__(self, base: int, dim: int):
        super().__init__()
        self.base = base
        self.mlp = nn.Sequential(nn.Linear(base, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.base, dtype=self.mlp[0].weight.dtype))  # model.double() works


class ClassEmbedding(nn.Module):
    """A learned vector per class, plus one extra "no class" vector at index ``num_classes``.

    Training replaces the label by the "no class" index for a random 10-20% of images (label dropout),
    so one network learns both p(x | y) and p(x); classifier-free guidance (Ho & Salimans 2022)
    combines the two at sampling time. y: int64 [B] in [0, num_classes] -> [B, dim].
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.table(y)
