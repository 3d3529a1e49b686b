# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 03 — Telling the network *when* and *what*: time and class embeddings
#
# One U-Net denoises at every noise level, so it must be told the step $t$; a conditional model must also be
# told the class $y$ ("draw a 7"). Both arrive as vectors, **embeddings**, that scale and shift the features
# inside every residual block.
#
# **Learning objectives.** After this lab you can
# 1. write the sinusoidal time embedding (Vaswani et al. 2017, section 3.5) and explain its many frequencies;
# 2. read the similarity between embeddings of different $t$: what the network can and cannot tell apart;
# 3. explain the class embedding's extra "no class" slot and how conditioning enters a block (FiLM);
# 4. build the conditioned U-Net yourself: the time and class embeddings, the residual block that reads them,
#    and the network that hands them to every block.
#
# **Time budget.** Running all cells: under a minute on a laptop CPU (36 s measured on 2 busy cores, 10 s of it the
# U-Net's check) or a Colab T4. Working through the lab: about 90 minutes.
#
# **How it is graded.** Eight exercises, each followed by a test cell (13 points): three functions (4 points),
# then five classes (9 points). A class's check builds it with its own arguments, loads labkit's weights into it
# and compares its outputs with labkit's module. The cells between the exercises use `labkit`'s reference code
# (or your class once its check passes), so a bug in your answer never breaks the rest of the lab. The questions
# at the end are answered in writing and graded by hand (4 points).

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
# __LABKIT_COLAB_INSTALL__ (labkit build writes labkit.colab.INSTALL_CELL here: the Colab install)
from labkit import colab
DEVICE = colab.setup()

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false}
import math
import re

import torch
import torch.nn.functional as F
import matplotlib.pyplot as plt
from torch import nn

from labkit import embeddings, plotting, schedules, unet
from labkit.checks import claims
from labkit.checks import lab03_embeddings as checks

torch.manual_seed(0)  # every lab starts from the same random numbers
FAST = colab.fast_mode()

# %% [markdown]
# ## 1. The sinusoidal time embedding
#
# A raw integer $t \in \{0, \dots, 999\}$ is a poor network input: one huge number. Instead each $t$ becomes a
# vector of `dim` waves of different frequencies (the Transformer's position encoding):
#
# $$\mathrm{PE}(t, 2i) = \sin\!\big(t / 10000^{2i/\mathrm{dim}}\big),\qquad
#   \mathrm{PE}(t, 2i+1) = \cos\!\big(t / 10000^{2i/\mathrm{dim}}\big),\qquad i = 0, \dots, \mathrm{dim}/2 - 1.$$
#
# Column pair $i$ is a wave of frequency $\omega_i = 10000^{-2i/\mathrm{dim}}$: the first pair turns fast
# (one radian per step), the last almost not at all.
#
# ### Exercise 1 (2 points)
# Write `sinusoidal_embedding(t, dim)`: `t` int64 `[B]`, `dim` even → float `[B, dim]` with **sines at the even
# columns and cosines at the odd ones** (interleaved, as in the formula). Convert `t` to float first, and make
# every new tensor on `t`'s device (`device=t.device`): in Colab `t` is on the GPU, and the check tries that.

# %% nbgrader={"grade": false, "grade_id": "sinusoidal_embedding", "locked": false, "schema_version": 3, "solution": true}
def sinusoidal_embedding(t, dim):
    """t int64 [B], dim even -> [B, dim]: column 2i = sin(t * w_i), column 2i+1 = cos(t * w_i), w_i = 10000^(-2i/dim)."""
    ### BEGIN SOLUTION
    i = torch.arange(dim // 2, dtype=torch.float32, device=t.device)  # on t's device: the GPU in Colab
    freqs = torch.exp(-math.log(10000.0) * 2 * i / dim)  # [dim/2]
    angles = t.float()[:, None] * freqs[None, :]  # [B, dim/2]
    emb = torch.zeros(t.shape[0], dim, device=t.device)
    emb[:, 0::2] = torch.sin(angles)
    emb[:, 1::2] = torch.cos(angles)
    return emb
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_sinusoidal_embedding", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_sinusoidal_embedding(sinusoidal_embedding)
### BEGIN HIDDEN TESTS
checks.check_sinusoidal_embedding(sinusoidal_embedding, seed=13, sizes=((5, 128), (2, 8)))
### END HIDDEN TESTS

# %% [markdown]
# From here on we use the reference, `labkit.embeddings.sinusoidal_embedding`. The picture shows the whole
# embedding matrix for $t = 0 \dots 999$ and `dim = 64`: one row per step, one column per dimension.

# %%
T, DIM = 1000, 64
all_t = torch.arange(T)
E = embeddings.sinusoidal_embedding(all_t, DIM)  # [1000, 64]
fig = plotting.plot_matrix(E, xlabel="embedding dimension", ylabel="step t", title="sinusoidal embedding",
                           extent=(-0.5, DIM - 0.5, T - 0.5, -0.5))
fig = plotting.plot_curves(all_t.tolist(), {f"column {c}": E[:, c].tolist() for c in (0, 16, 32, 62)},
                           xlabel="step t", ylabel="value", marker="", title="a few columns: fast to slow waves")
fastest = float((E[1:, 0] - E[:-1, 0]).abs().max())  # column 0, from one step to the next
slowest = float((E[:, -2:].max(dim=0).values - E[:, -2:].min(dim=0).values).max())  # the last pair, over all t
claims.check("the first pair turns fast (one radian per step), the last almost not at all",
             fastest > 0.9 and slowest < 0.15,
             f"column 0 moves by up to {fastest:.2f} in one step; the last pair by at most {slowest:.3f} in {T} steps")

# %% [markdown]
# ## 2. What does the embedding "know" about the noise level?
#
# The network can only tell two steps apart if their embeddings differ. The **cosine similarity**
# $\cos(e_i, e_j) = \langle e_i, e_j\rangle / (\lVert e_i\rVert\,\lVert e_j\rVert)$ is 1 for identical
# directions and near 0 for unrelated ones.
#
# ### Exercise 2 (1 point)
# Write `cosine_similarity(emb)`: `emb` `[N, D]` (one embedding per row) → `[N, N]`, entry `(i, j)` the cosine
# similarity of rows `i` and `j`.

# %% nbgrader={"grade": false, "grade_id": "cosine_similarity", "locked": false, "schema_version": 3, "solution": true}
def cosine_similarity(emb):
    """emb [N, D] -> [N, N] cosine similarities between the rows."""
    ### BEGIN SOLUTION
    unit = emb / emb.norm(dim=1, keepdim=True)
    return unit @ unit.T
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_cosine_similarity", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_cosine_similarity(cosine_similarity)
### BEGIN HIDDEN TESTS
checks.check_cosine_similarity(cosine_similarity, seed=17, sizes=((4, 4), (12, 20)))
### END HIDDEN TESTS

# %%
# From here on: the reference, plotting.cosine_similarity_matrix (the same computation as your answer).
sim = plotting.cosine_similarity_matrix(E)  # [1000, 1000]
fig = plotting.plot_matrix(sim, xlabel="step t", ylabel="step t", title="cosine similarity of time embeddings",
                           extent=(-0.5, T - 0.5, T - 0.5, -0.5))
rows = {f"t = {t0}": sim[t0].tolist() for t0 in (0, 500, 900)}
fig = plotting.plot_curves(all_t.tolist(), rows, xlabel="step t", ylabel="similarity", marker="",
                           title="similarity of three steps with every other step")
for t0, t1 in ((0, 10), (500, 510), (0, 500)):
    s = float(plotting.cosine_similarity_matrix(E[[t0, t1]])[0, 1])
    print(f"cos(e_{t0}, e_{t1}) = {s:.3f}")
off = max(float((torch.diagonal(sim, d) - sim[0, d]).abs().max()) for d in (1, 10, 100, 500))
claims.check("the similarity of e_t and e_(t + delta) depends only on delta",
             off < 1e-3, f"largest difference along the diagonals delta = 1, 10, 100, 500: {off:.0e}")

# %% [markdown]
# The similarity of $e_{t}$ and $e_{t+\Delta}$ depends only on $\Delta$ (each column pair contributes
# $\cos(\omega_i \Delta)$): the embedding resolves steps equally well everywhere. The *noise level*, though,
# does not change evenly with $t$ (lab 01's SNR plot): $\log_{10}$ SNR falls much faster per step near $t = 0$
# than in the middle, for both schedules.

# %%
falls = {}  # schedule -> (fall over t = 0..100, fall over t = 450..550)
for name in ("linear", "cosine"):
    log_snr = schedules.make_schedule(name, T=T).snr().log10()  # [1000]
    falls[name] = float(log_snr[0] - log_snr[100]), float(log_snr[450] - log_snr[550])
    print(f"{name:>6}: log10 SNR from {float(log_snr[0]):.1f} (t = 0) to {float(log_snr[-1]):.1f} (t = {T - 1}); "
          f"it falls by {falls[name][0]:.2f} over t = 0..100 and by {falls[name][1]:.2f} over t = 450..550")
claims.check("for both schedules log10 SNR falls much faster near t = 0 than in the middle",
             all(early > 2 * middle for early, middle in falls.values()),
             "; ".join(f"{n}: {e:.2f} against {m:.2f} per 100 steps" for n, (e, m) in falls.items()))

# %% [markdown]
# The network's first layers (`labkit.embeddings.TimeEmbedding`, a small MLP after the sinusoids) learn how to
# map this even code onto what matters for denoising.
#
# ## 3. The class embedding and its "no class" slot
#
# `labkit.embeddings.ClassEmbedding(num_classes=10, dim)` is a learned table with **11** rows: one per digit and
# one extra row, index 10, meaning "no class". During training a random 10-20% of labels are replaced by 10
# (label dropout), so one network learns both $p(x \mid y)$ and $p(x)$; classifier-free guidance (a later lab)
# combines the two when sampling.

# %%
class_embed = embeddings.ClassEmbedding(num_classes=10, dim=32)
print("table:", list(class_embed.table.weight.shape), " null class index:", class_embed.null_class)
y = torch.tensor([3, 7, class_embed.null_class])
print("labels", y.tolist(), "->", list(class_embed(y).shape))

p_drop = 0.15
labels = torch.arange(20) % 10
drop = torch.rand(20, generator=torch.Generator().manual_seed(0)) < p_drop
print("a batch after label dropout:", torch.where(drop, class_embed.null_class, labels).tolist())

# %% [markdown]
# ## 4. How the conditioning enters a block: FiLM
#
# In `labkit.unet.UNet` the time and class embeddings are **added** into one vector per image, and every
# residual block maps it with a linear layer to a per-channel `scale` and `shift` ("feature-wise linear
# modulation", FiLM; the "scale-shift norm" of Nichol & Dhariwal 2021):
#
# $$h \leftarrow \mathrm{GroupNorm}(h)\,(1 + \mathrm{scale}) + \mathrm{shift}.$$
#
# The `1 +` makes a zero scale leave the features unchanged.
#
# ### Exercise 3 (1 point)
# Write `film(h, scale, shift)`: `h` `[B, C, H, W]`, `scale` and `shift` `[B, C]` (one number per image and
# channel, the same for every pixel) → `[B, C, H, W]`.

# %% nbgrader={"grade": false, "grade_id": "film", "locked": false, "schema_version": 3, "solution": true}
def film(h, scale, shift):
    """h [B, C, H, W], scale/shift [B, C] -> h * (1 + scale) + shift, per channel."""
    ### BEGIN SOLUTION
    return h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_film", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_film(film)
### BEGIN HIDDEN TESTS
checks.check_film(film, seed=19, sizes=((1, 16, 3, 3), (4, 2, 5, 9)))
### END HIDDEN TESTS

# %% [markdown]
# Now inside a real (untrained) U-Net: for the first residual block we compute the `(scale, shift)` that each
# step $t$ produces, the same way `ResBlock.forward` does. Training shapes these maps. Untrained, each channel's
# scale mixes all of the embedding's waves, so its curve over $t$ is jagged: the fastest wave turns one radian per
# step, and the curve is sampled every 10 steps. Look at the pictures: is there a slow trend under the wiggles (the
# slow waves)? What does class 7 do to channel 0's curve?

# %%
net = unet.UNet(unet.UNetConfig(base_channels=32, channel_mults=(1, 2), attention=False))
block = net.down[0].blocks[0]  # the first ResBlock
steps = torch.arange(0, T, 10)
with torch.no_grad():
    emb_uncond = net.time_embed(steps) + net.class_embed(torch.full_like(steps, net.config.null_class))
    emb_seven = net.time_embed(steps) + net.class_embed(torch.full_like(steps, 7))
    scale, shift = block.emb(F.silu(emb_uncond)).chunk(2, dim=1)  # each [100, channels]
    scale7, _ = block.emb(F.silu(emb_seven)).chunk(2, dim=1)
fig = plotting.plot_matrix(scale.T, xlabel="step t", ylabel="channel", title="FiLM scale of block 1 (no class)",
                           extent=(-5, T - 5, scale.shape[1] - 0.5, -0.5))
fig = plotting.plot_curves(steps.tolist(), {"channel 0, no class": scale[:, 0].tolist(),
                                            "channel 0, class 7": scale7[:, 0].tolist()},
                           xlabel="step t", ylabel="scale", marker="", title="one channel's scale over t")
wiggle = (scale[1:] - scale[:-1]).abs().mean(dim=0)  # [channels]: mean jump between neighbouring samples
span = scale.max(dim=0).values - scale.min(dim=0).values  # [channels]: the curve's whole range
claims.check("each channel's scale is jagged over t", bool((wiggle > 0.1 * span).all()),
             f"neighbouring samples differ by {float((wiggle / span).min()):.0%} to {float((wiggle / span).max()):.0%} "
             f"of the curve's range, depending on the channel; on a smooth curve, a few %")

# %% [markdown]
# ## 5. The time embedding as a module
#
# Now the pieces become your network's. The DDPM recipe (Ho et al. 2020, appendix B) does not feed the sinusoids to
# the blocks directly: a small MLP first turns them into the vector the blocks read,
#
# $$\mathrm{emb}(t) = W_2\,\mathrm{SiLU}\big(W_1\,\mathrm{PE}(t) + b_1\big) + b_2,$$
#
# with $\mathrm{PE}(t)$ your `sinusoidal_embedding(t, base)` (`base` columns) and an output of `dim` columns.
#
# ### Exercise 4 (2 points)
# Write the class `TimeEmbedding(base, dim)`: `forward(t)` takes `t` int64 `[B]` and returns `[B, dim]`. Keep the
# MLP in one attribute `self.mlp = nn.Sequential(Linear(base, dim), SiLU, Linear(dim, dim))`, as labkit's
# `embeddings.TimeEmbedding` does (the check loads its weights into yours, by these names or in this order).

# %% nbgrader={"grade": false, "grade_id": "TimeEmbedding", "locked": false, "schema_version": 3, "solution": true}
class TimeEmbedding(nn.Module):
    """t int64 [B] -> [B, dim]: your sinusoidal_embedding(t, base), then Linear -> SiLU -> Linear."""

    def __init__(self, base, dim):
        super().__init__()
        self.base = base
        ### BEGIN SOLUTION
        self.mlp = nn.Sequential(nn.Linear(base, dim), nn.SiLU(), nn.Linear(dim, dim))
        ### END SOLUTION

    def forward(self, t):
        ### BEGIN SOLUTION
        return self.mlp(sinusoidal_embedding(t, self.base))  # [B, base] -> [B, dim]
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_TimeEmbedding", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_time_embedding(TimeEmbedding)
### BEGIN HIDDEN TESTS
checks.check_time_embedding(TimeEmbedding, seed=23, sizes=((32, 128), (6, 10)))
### END HIDDEN TESTS

# %% [markdown]
# ## 6. The class embedding, with its "no class" row
#
# ### Exercise 5 (1 point)
# Write the class `ClassEmbedding(num_classes, dim)`: `forward(y)` takes labels `y` int64 `[B]` in
# $0 \dots$ `num_classes` and returns `[B, dim]`, one learned row per label. The label `num_classes` means "no
# class" and has a row of its own (section 3). Keep the rows in `self.table`, an `nn.Embedding`.

# %% nbgrader={"grade": false, "grade_id": "ClassEmbedding", "locked": false, "schema_version": 3, "solution": true}
class ClassEmbedding(nn.Module):
    """y int64 [B] in 0..num_classes (num_classes = "no class") -> [B, dim], one learned row per label."""

    def __init__(self, num_classes, dim):
        super().__init__()
        self.num_classes = num_classes
        ### BEGIN SOLUTION
        self.table = nn.Embedding(num_classes + 1, dim)  # the last row: "no class"
        ### END SOLUTION

    def forward(self, y):
        ### BEGIN SOLUTION
        return self.table(y)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_ClassEmbedding", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_class_embedding(ClassEmbedding)
### BEGIN HIDDEN TESTS
checks.check_class_embedding(ClassEmbedding, seed=29, sizes=((10, 64), (1, 3)))
### END HIDDEN TESTS

# %% [markdown]
# ## 7. Conditioning inside the residual block
#
# Your lab 02 blocks, now told $t$ and $y$. The conv block takes an optional `scale` and `shift` and applies your
# `film` to the **normalised** features, before the activation:
#
# GroupNorm $\to$ [FiLM] $\to$ SiLU $\to$ dropout $\to$ 3x3 conv.
#
# The residual block turns the embedding `emb` `[B, emb_dim]` into one `(scale, shift)` per channel with
# `Linear(emb_dim, 2 * c_out)` applied to `SiLU(emb)`; the first `c_out` columns are the scale, the last `c_out`
# the shift. They go into the **second** conv block:
#
# $$\mathrm{out} = \mathrm{shortcut}(x) + \mathrm{block2}\big(\mathrm{block1}(x);\ \mathrm{scale}, \mathrm{shift}\big).$$
#
# Create the layers in the order of labkit's blocks (or with their names); for `ResBlock(8, 16, groups=4, emb_dim=32)`:

# %%
for name, p in unet.ResBlock(8, 16, 4, emb_dim=32).named_parameters():
    print(f"{name:<20} {list(p.shape)}")

# %% [markdown]
# ### Exercise 6 (1 point)
# Write `ConvBlock(c_in, c_out, groups, dropout=0.0)` with `forward(x, scale=None, shift=None)`: your lab 02 conv
# block plus one step, FiLM with your `film` when `scale` is given (`scale`, `shift`: `[B, c_in]`).

# %% nbgrader={"grade": false, "grade_id": "ConvBlock", "locked": false, "schema_version": 3, "solution": true}
class ConvBlock(nn.Module):
    """x [B, c_in, H, W] -> [B, c_out, H, W]: GroupNorm -> [FiLM(scale, shift)] -> SiLU -> dropout -> 3x3 conv."""

    def __init__(self, c_in, c_out, groups, dropout=0.0):
        super().__init__()
        ### BEGIN SOLUTION
        self.norm = nn.GroupNorm(groups, c_in)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        ### END SOLUTION

    def forward(self, x, scale=None, shift=None):
        ### BEGIN SOLUTION
        h = self.norm(x)
        if scale is not None:
            h = film(h, scale, shift)
        return self.conv(self.dropout(F.silu(h)))
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_ConvBlock", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_conv_block(ConvBlock)
### BEGIN HIDDEN TESTS
checks.check_conv_block(ConvBlock, seed=31, sizes=((4, 4, 2, 4), (8, 12, 4, 6)))
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 7 (2 points)
# Write `ResBlock(c_in, c_out, groups, emb_dim, dropout=0.0)` with `forward(x, emb)`: `block1` (a `ConvBlock` from
# `c_in` to `c_out`), the projection `emb` (`Linear(emb_dim, 2 * c_out)`), `block2` (a `ConvBlock` from `c_out` to
# `c_out`, with the dropout), and the `shortcut` (a 1x1 conv when `c_in != c_out`, else `nn.Identity()`).

# %% nbgrader={"grade": false, "grade_id": "ResBlock", "locked": false, "schema_version": 3, "solution": true}
class ResBlock(nn.Module):
    """x [B, c_in, H, W], emb [B, emb_dim] -> [B, c_out, H, W]: shortcut(x) + block2(block1(x), scale, shift)."""

    def __init__(self, c_in, c_out, groups, emb_dim, dropout=0.0):
        super().__init__()
        ### BEGIN SOLUTION
        self.block1 = ConvBlock(c_in, c_out, groups)
        self.emb = nn.Linear(emb_dim, 2 * c_out)  # -> (scale, shift)
        self.block2 = ConvBlock(c_out, c_out, groups, dropout)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        ### END SOLUTION

    def forward(self, x, emb):
        ### BEGIN SOLUTION
        scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)  # 2 x [B, c_out]
        h = self.block2(self.block1(x), scale, shift)
        return self.shortcut(x) + h
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_ResBlock", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_res_block(ResBlock)
### BEGIN HIDDEN TESTS
checks.check_res_block(ResBlock, seed=37, sizes=((16, 8, 8, 64, 7), (4, 4, 2, 8, 4)))
### END HIDDEN TESTS

# %% [markdown]
# ## 8. Your conditioned U-Net
#
# Assemble the network as in lab 02, and tell it $t$ and $y$: one embedding per image,
# `emb = time_embed(t) + class_embed(y)` (`[B, emb_dim]` with `emb_dim = 4 * base_channels`, from `base_channels`
# columns of sinusoids), passed into **every** residual block.
#
# The levels are labkit's `unet.Down` and `unet.Up`, the same as your lab 02 classes, with two more arguments:
# `emb_dim`, and `block=ResBlock`, which makes them out of *your* residual block. Their `forward` takes `emb` as
# the last argument and hands it to each block. The parameter table of labkit's network, to create yours in the
# same order (or with the same names):

# %%
SIZES = dict(base_channels=32, channel_mults=(1, 2), blocks_per_level=2)  # (the other arguments: their defaults)
rows = {}  # layer -> [(parameter name, shape)]; a residual block is one row
for name, p in checks.labkit_unet(**SIZES).named_parameters():
    block = re.match(r"(.*blocks\.\d+|mid\d)\.", name)
    rows.setdefault(block.group(1) if block else name.rsplit(".", 1)[0], []).append((name, list(p.shape)))
for layer, params in rows.items():
    if re.search(r"blocks\.\d+$|mid\d$", layer):
        conv = dict(params)[f"{layer}.block1.conv.weight"]
        print(f"{layer:<18} ResBlock({conv[1]} -> {conv[0]} channels): its {len(params)} tensors as in the table above")
    else:
        print(f"{layer:<18} " + ", ".join(f"{n.rsplit('.', 1)[1]} {shape}" for n, shape in params))

# %% [markdown]
# ### Exercise 8 (3 points)
# Write `UNet(in_channels, base_channels, channel_mults, blocks_per_level, groups, patch, num_classes)` with
# `forward(x, t, y)`: `x` `[B, C, H, W]`, `t` and `y` int64 `[B]` → `[B, C, H, W]`. Your lab 02 network (with
# its pixel-unshuffle and pixel-shuffle, without the `skips` switch), and in this order: `time_embed`,
# `class_embed`, `stem`, `down` (one `unet.Down` per level; the last keeps its size), `mid1`, `mid2` (your
# `ResBlock`s), `up` (one `unet.Up` per level, from the deepest back to level 0; the last has no final conv),
# `out_norm`, `out`.
# Your network is made of your `TimeEmbedding`, `ClassEmbedding` and `ResBlock`: their checks should pass first.

# %% nbgrader={"grade": false, "grade_id": "UNet", "locked": false, "schema_version": 3, "solution": true}
class UNet(nn.Module):
    """model(x [B, in_channels, H, W], t int64 [B], y int64 [B]) -> eps_hat [B, in_channels, H, W]."""

    def __init__(self, in_channels=1, base_channels=32, channel_mults=(1, 2, 2), blocks_per_level=1, groups=8,
                 patch=2, num_classes=10):
        super().__init__()
        self.patch = patch
        emb_dim = 4 * base_channels
        ### BEGIN SOLUTION
        chans = [base_channels * m for m in channel_mults]
        c_img = in_channels * patch * patch
        n, last = blocks_per_level, len(chans) - 1
        self.time_embed = TimeEmbedding(base_channels, emb_dim)
        self.class_embed = ClassEmbedding(num_classes, emb_dim)
        self.stem = nn.Conv2d(c_img, chans[0], 3, padding=1)
        self.down = nn.ModuleList([unet.Down(chans[i - 1] if i else chans[0], c, n, groups, downsample=i < last,
                                             emb_dim=emb_dim, block=ResBlock) for i, c in enumerate(chans)])
        self.mid1 = ResBlock(chans[-1], chans[-1], groups, emb_dim)
        self.mid2 = ResBlock(chans[-1], chans[-1], groups, emb_dim)
        self.up = nn.ModuleList([unet.Up(c, c, c, chans[i - 1] if i else None, n, groups, emb_dim=emb_dim,
                                         block=ResBlock) for i, c in reversed(list(enumerate(chans)))])
        self.out_norm = nn.GroupNorm(groups, chans[0])
        self.out = nn.Conv2d(chans[0], c_img, 3, padding=1)
        ### END SOLUTION

    def forward(self, x, t, y):
        ### BEGIN SOLUTION
        emb = self.time_embed(t) + self.class_embed(y)  # [B, emb_dim]: one vector per image
        h = self.stem(F.pixel_unshuffle(x, self.patch))
        saved = []
        for down in self.down:
            h, skip = down(h, emb)
            saved.append(skip)
        h = self.mid2(self.mid1(h, emb), emb)
        for up in self.up:
            h = up(h, saved.pop(), emb)  # the last skip saved is the first one used
        return F.pixel_shuffle(self.out(F.silu(self.out_norm(h))), self.patch)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_UNet", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_unet(UNet)
### BEGIN HIDDEN TESTS
checks.check_unet(UNet, seed=41, cases=(dict(base_channels=4, groups=2, patch=1), dict(base_channels=8, channel_mults=(1, 1), blocks_per_level=2, num_classes=3)), sizes=(10, 8))
### END HIDDEN TESTS

# %% [markdown]
# ## 9. Your network on a batch
#
# Your U-Net where its check passes, else labkit's, with random weights (labkit's untrained network answers 0
# everywhere: its output conv starts at zero). It gets one noisy image eleven times, the same step $t$, and each
# label in turn, 0 to 9 and then "no class". The label alone changes the predicted noise: the numbers below are
# each label's distance from the "no class" prediction, relative to its size, and the picture shows where the
# pixels change. Training (lab 04) makes these differences mean "draw a 7".

# %%
Net = checks.yours_or_labkit(lambda cls: checks.check_unet(cls, cases=(dict(base_channels=8, groups=4),), sizes=(16,)),
                             UNet, checks.labkit_unet, "UNet")
model = checks.seeded_weights(Net(**SIZES), seed=0).eval()  # random weights, the same on every run
print(f"{sum(p.numel() for p in model.parameters()):,} parameters "
      f"(labkit's: {checks.labkit_unet(**SIZES).num_parameters():,})")
g = torch.Generator().manual_seed(0)
x_t = torch.randn(1, 1, 28, 28, generator=g).repeat(11, 1, 1, 1)  # one image, 11 times
labels = torch.arange(11)  # 0..9, then 10 = "no class"
with torch.no_grad():
    eps_hat = model(x_t, torch.full((11,), 500), labels)  # [11, 1, 28, 28]
print("x_t", list(x_t.shape), "-> eps_hat", list(eps_hat.shape))
spread = (eps_hat - eps_hat[10:]).flatten(1).norm(dim=1) / eps_hat[10:].norm()
print("distance from the 'no class' prediction, per label:", [round(float(s), 2) for s in spread[:10]])
claims.check("the label alone changes the predicted noise", float(spread[:10].min()) > 0.01,
             f"every label moves it by at least {float(spread[:10].min()):.0%} of its size")
change = eps_hat[:10] - eps_hat[10:]  # [10, 1, 28, 28]: what each label changes, pixel by pixel
fig = plotting.image_grid(change / change.abs().max(), ncols=10, titles=[str(k) for k in range(10)],
                          title="eps_hat for label y minus eps_hat for 'no class' (grey: no change; random weights)")

# %% [markdown]
# ## 10. Keep your network for lab 04
#
# Each notebook runs on its own, so lab 04 cannot see the classes you wrote here. When your `UNet` passes its
# check, this cell writes it, with the classes and functions it uses, to `my_unet.py` in the runs folder (`runs/`
# beside the notebook; in Colab your Google Drive, which it mounts). Lab 04 trains it from there if it still passes
# this lab's check, and labkit's U-Net otherwise; it says which. Run this cell again whenever you change them.

# %%
MINE = ["sinusoidal_embedding", "film", "TimeEmbedding", "ClassEmbedding", "ConvBlock", "ResBlock", "UNet"]
if Net is UNet:
    print(f"your network is in {colab.save_my_network(globals(), MINE)}: lab 04 trains it")
else:
    print("your UNet does not pass its check yet, so nothing was saved: lab 04 will train labkit's U-Net")

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_1", "locked": true, "schema_version": 3, "solution": false}
# ## Questions (look at the pictures)
#
# Answer each question in the cell below it, in a few sentences, with what you saw: a step $t$, a number, a row
# or a curve. Your answers are graded by hand (4 points, 1 per question).
#
# **Question 1 (1 point).** In the embedding matrix, which columns change quickly with $t$ and which hardly at
# all? Why does the network need both kinds?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_1", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** The first columns (high frequency, about one radian per step) oscillate every few steps; the
# last ones (frequencies down to $10^{-4}$) barely change over all 1000 steps. The fast columns tell
# neighbouring steps apart precisely but repeat, so on their own they are ambiguous; the slow columns give a
# smooth, unique code of roughly where $t$ is. Together they locate $t$ both coarsely and finely, like the hands
# of a clock.
#
# **Rubric (1 point).** 1/2 point: first (left) columns fast, last (right) columns slow. 1/2 point: fine
# distinctions need fast waves, an unambiguous coarse position needs slow ones.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_2", "locked": true, "schema_version": 3, "solution": false}
# **Question 2 (1 point).** In the similarity matrix, how far apart must two steps be before their embeddings
# look unrelated (similarity near its floor)? Is that distance the same near $t = 0$ and near $t = 900$?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_2", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** The similarity drops quickly over the first tens of steps (0.66 at 10 steps apart, about 0.5
# at 50; not monotonically: about 0.56 at 100) and settles near its floor (about 0.2-0.3) only a few hundred
# steps apart (about 0.29 at 300, 0.20 at 500): the bright band around the diagonal. It is the same everywhere,
# near $t = 0$ as near $t = 900$ (the printout: 0.658 for 0 and 10, 0.658 for 500 and 510), because the
# similarity of $e_t$ and $e_{t+\Delta}$ depends only on $\Delta$ (each column pair contributes
# $\cos(\omega_i \Delta)$).
#
# **Rubric (1 point).** 1/2 point: a distance read from the matrix (tens to a few hundred steps, with the band's
# width). 1/2 point: the same at t = 0 and t = 900, because it depends only on the difference.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_3", "locked": true, "schema_version": 3, "solution": false}
# **Question 3 (1 point).** Using lab 01's SNR plot: is an embedding that resolves every step equally well a
# good match for how the noise level changes with $t$? Where would you want finer resolution?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_3", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** No. The SNR spans 8 (linear) to 13 (cosine) orders of magnitude and changes very unevenly:
# $\log_{10}$ SNR falls by about 3 over the first 100 steps but by only 0.3-0.5 over $t = 450 \dots 550$ (the
# printout in section 2); and, for the linear schedule, the last few hundred steps are all almost pure noise and
# could share one code. You want
# finer resolution where the noise level changes most per step and the image still carries detail, i.e. at small
# $t$, and coarser where it hardly changes. The learned MLP after the sinusoids (and the cosine schedule) partly
# makes up for this.
#
# **Rubric (1 point).** 1/2 point: no, the noise level changes unevenly while the embedding is uniform. 1/2
# point: finer at small t (or wherever log-SNR changes fastest), with a reason.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_4", "locked": true, "schema_version": 3, "solution": false}
# **Question 4 (1 point).** Why does the class table have 11 rows and not 10? What would break in
# classifier-free guidance without label dropout?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_4", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Ten rows are the digits; row 10 means "no class", so the same network also learns the
# unconditional model $p(x)$. Without label dropout that row is never used in training: it stays random, so
# $\hat\varepsilon(x_t, t, \varnothing)$ is meaningless, and guidance, which extrapolates away from it
# ($(1+w)\hat\varepsilon_c - w\hat\varepsilon_u$), would push the samples in a random direction.
#
# **Rubric (1 point).** 1/2 point: the 11th row is the "no class" / unconditional slot. 1/2 point: without
# dropout it is never trained, so the unconditional prediction that guidance needs is garbage.
# ### END SOLUTION
