"""Checks for lab 03 (time and class embeddings, FiLM). References: ``labkit.embeddings.sinusoidal_embedding``,
``labkit.embeddings.cosine_similarity`` and ``labkit.unet.film`` (used by ``labkit.unet.ResBlock``), in float64.

    check_sinusoidal_embedding(fn)   PE(t, 2i) = sin(t / 10000^(2i/dim)),  PE(t, 2i+1) = cos(same)
    check_cosine_similarity(fn)      [N, D] -> [N, N] cosine similarities between rows
    check_film(fn)                   h * (1 + scale) + shift, scale/shift [B, C] broadcast over H, W
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labkit import embeddings, unet
from labkit.checks._common import call, compare, expect_tensor, generator, passed


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
        out = expect_tensor(name, out, (B, dim), shape_hints={
            (dim, B): "transposed: one row per time step, [B, dim]",
            (B, dim // 2): "only dim/2 columns: each frequency gives two columns, a sine and a cosine",
            (B, 2 * dim): "2*dim columns: use dim/2 frequencies, each giving a sine and a cosine",
        })
        a = _angles(t, dim, lambda i: 2 * i)
        ref = embeddings.sinusoidal_embedding(t, dim, dtype=torch.float64)
        a_wrong_exp = _angles(t, dim, lambda i: i)
        freqs_up = torch.exp(math.log(10000.0) * 2 * torch.arange(dim // 2, dtype=torch.float64) / dim)
        a_mult = t.double()[:, None] * freqs_up[None, :]
        i32 = torch.arange(dim // 2, dtype=torch.float32)
        a_mult32 = t.float()[:, None] * torch.exp(math.log(10000.0) * 2 * i32 / dim)[None, :]
        mistakes = {
            "sin and cos swapped: sines go to the even columns (0, 2, 4, ...), cosines to the odd ones":
                _interleave(torch.cos(a), torch.sin(a)),
            "all sines first, then all cosines (the other common layout); here they are interleaved: "
            "column 2i holds sin, column 2i+1 holds cos": torch.cat([torch.sin(a), torch.cos(a)], dim=1),
            "all cosines first, then all sines; interleave them instead, sin at even columns":
                torch.cat([torch.cos(a), torch.sin(a)], dim=1),
            "wrong frequency exponent: frequency i is 1 / 10000^(2i/dim), not 1 / 10000^(i/dim)":
                _interleave(torch.sin(a_wrong_exp), torch.cos(a_wrong_exp)),
            "t multiplied by 10000^(2i/dim); it must be divided by it (frequencies fall from 1 to 1/10000)":
                (_interleave(torch.sin(a_mult), torch.cos(a_mult)),  # angles up to 1e7, which float32 rounds
                 _interleave(torch.sin(a_mult32), torch.cos(a_mult32)).double()),  # by ~1 rad: as float32 computes
            "the angles need t in radians as it is: no extra factor 2*pi":
                _interleave(torch.sin(2 * math.pi * a), torch.cos(2 * math.pi * a)),
            "sines in every column: the odd columns (1, 3, 5, ...) hold the cosines of the same angles":
                _interleave(torch.sin(a), torch.sin(a)),
            "cosines in every column: the even columns (0, 2, 4, ...) hold the sines":
                _interleave(torch.cos(a), torch.cos(a)),
            "off by one in the frequency index: the first pair of columns has frequency 1 (i = 0), not 1/10000^(2/dim)":
                _interleave(torch.sin(_angles(t, dim, lambda i: 2 * (i + 1))), torch.cos(_angles(t, dim, lambda i: 2 * (i + 1)))),
            "t + 1 was embedded: embed the step t itself (t = 0 is the first step)":
                _interleave(torch.sin(_angles(t + 1, dim, lambda i: 2 * i)), torch.cos(_angles(t + 1, dim, lambda i: 2 * i))),
            "the base of the frequencies is 10000 (the longest period), not 1000":
                _interleave(torch.sin(_angles(t, dim, lambda i: 2 * i, 1000.0)), torch.cos(_angles(t, dim, lambda i: 2 * i, 1000.0))),
            "the frequency exponent divides by dim - 1 or dim / 2 - 1; it is 2i / dim":
                _interleave(torch.sin(_angles(t, dim, lambda i: 2 * i * dim / max(dim - 2, 1))),
                            torch.cos(_angles(t, dim, lambda i: 2 * i * dim / max(dim - 2, 1)))) if dim > 2 else None,
        }
        compare(name, out, ref, mistakes, tol=2e-3, context=f" for B={B}, dim={dim}",
                reference=embeddings.sinusoidal_embedding, args=(t, dim))
    passed(name, f"{len(sizes)} cases, seed {seed}")


def check_cosine_similarity(student_fn, *, seed: int = 0, sizes=((6, 16), (10, 3), (1, 8))) -> None:
    """student_fn(emb [N, D]) -> [N, N] with entry (i, j) = <e_i, e_j> / (|e_i| |e_j|)."""
    name = "check_cosine_similarity"
    g = generator(seed)
    for N, D in sizes:
        emb = 0.5 + torch.randn(N, D, generator=g) * torch.rand(N, 1, generator=g) * 3  # rows of different lengths
        out = call(name, student_fn, emb, names=["emb"])
        out = expect_tensor(name, out, (N, N), shape_hints={
            (N,): "one number per row: return the full [N, N] matrix of pairwise similarities",
            (D, D): "similarities between columns: compare the rows (one row per time step), emb @ emb.T",
        })
        e = emb.double()
        ref = embeddings.cosine_similarity(e)
        cols = e / e.norm(dim=0, keepdim=True)
        mistakes = {
            "raw dot products: divide by the lengths of both vectors (normalise each row first)": e @ e.T,
            "normalised along the wrong dimension: each *row* (one embedding) must have length 1":
                cols @ cols.T,
            "that is the cosine *distance* 1 - cos; return the similarity itself": 1 - ref,
            "Euclidean distances: the cosine similarity is the dot product of the normalised rows":
                torch.cdist(e, e),
            "divided by the squared lengths: use |e_i| |e_j|, not |e_i|^2 |e_j|^2":
                (e @ e.T) / (e.norm(dim=1) ** 2)[:, None] / (e.norm(dim=1) ** 2)[None, :],
            "only one side was normalised: divide by the lengths of both rows, |e_i| and |e_j|":
                (e / e.norm(dim=1, keepdim=True)) @ e.T,
            "divided by the length of the whole matrix: normalise each row by its own length":
                (e @ e.T) / e.norm() ** 2,
            "a softmax over the similarities: the cosine similarity is the plain product of unit rows":
                ref.softmax(dim=1),
        }
        compare(name, out, ref, mistakes, tol=1e-5, context=f" for emb of shape {[N, D]}",
                reference=embeddings.cosine_similarity, args=(emb,))
    passed(name, f"{len(sizes)} cases, seed {seed}")


def check_film(student_fn, *, seed: int = 0, sizes=((2, 8, 5, 5), (3, 4, 7, 6))) -> None:
    """student_fn(h [B, C, H, W], scale [B, C], shift [B, C]) -> h * (1 + scale) + shift (per channel)."""
    name = "check_film"
    g = generator(seed)
    for B, C, H, W in sizes:
        h = torch.randn(B, C, H, W, generator=g)
        scale = 0.5 * torch.randn(B, C, generator=g)
        shift = torch.randn(B, C, generator=g)
        out = call(name, student_fn, h, scale, shift, names=["h", "scale", "shift"], hints={
            "must match the size": "scale and shift are [B, C]: reshape them to [B, C, 1, 1] "
            "(scale[:, :, None, None]) so they act per channel on every pixel",
        })
        out = expect_tensor(name, out, (B, C, H, W), shape_hints={
            (B, C, B, C): "scale/shift were broadcast against the wrong dimensions: reshape them to [B, C, 1, 1]",
        })
        s, b = scale[:, :, None, None].double(), shift[:, :, None, None].double()
        hd = h.double()
        mistakes = {
            "the '1 +' is missing: FiLM here multiplies by (1 + scale), so scale = 0 leaves h unchanged":
                hd * s + b,
            "scale and shift swapped: h * (1 + scale) + shift": hd * (1 + b) + s,
            "shift applied before scaling: scale first, then add the shift": (hd + b) * (1 + s),
            "the shift is missing: add shift after scaling": hd * (1 + s),
            "subtracted the shift: add it": hd * (1 + s) - b,
            "(1 - scale): FiLM here multiplies by (1 + scale)": hd * (1 - s) + b,
            "the shift multiplies instead of adds: h * (1 + scale) + shift": hd * (1 + s) * b,
            "scale and shift were added together before multiplying: only the scale multiplies h":
                hd * (1 + s + b),
            "operator precedence: 1 + scale * h + shift multiplies h by scale alone; h is multiplied by (1 + scale)":
                1 + s * hd + b,
            "h was normalised inside FiLM: the block normalises before FiLM, which only scales and shifts":
                F.group_norm(hd, hd.shape[1]) * (1 + s) + b,
        }
        compare(name, out, unet.film(hd, scale.double(), shift.double()), mistakes, tol=1e-5,
                context=f" for h of shape {[B, C, H, W]}", reference=unet.film, args=(h, scale, shift))
    passed(name, f"{len(sizes)} cases, seed {seed}")
