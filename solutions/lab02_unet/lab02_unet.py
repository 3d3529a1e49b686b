# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 02 — The U-Net: a noise predictor with skip connections
#
# The network of a diffusion model gets a noisy image $x_t$ (and the step $t$, and a class $y$) and predicts
# the noise $\varepsilon$ in it: an image-to-image function. Almost every diffusion model uses a **U-Net**
# for this: it shrinks the image to see the whole digit, then grows it back, and *skip connections* carry
# the fine detail across.
#
# **Learning objectives.** After this lab you can
# 1. read a U-Net level by level: which shapes flow where, and where the parameters are;
# 2. write the skip connection (a channel-wise concatenation) and the up-path merge;
# 3. show, with a small experiment, what a U-Net loses without its skips.
#
# **Time budget.** Running all cells: about 3 minutes on a laptop CPU (two trainings of about a minute),
# under a minute on a Colab T4. Working through the lab: about 45 minutes.
#
# **How it is graded.** Two small functions, each followed by a test cell. Later cells use `labkit`'s
# reference U-Net, so a bug in your answer never breaks the rest of the lab.
# The questions at the end are answered in writing and graded by hand (3 points).

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
# __LABKIT_COLAB_INSTALL__ (labkit build writes labkit.colab.INSTALL_CELL here: the Colab install)
from labkit import colab
DEVICE = colab.setup()

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false}
import time

import torch
import torch.nn.functional as F
import matplotlib.pyplot as plt

from labkit import diffusion, plotting, schedules, unet
from labkit.checks import lab02_unet as checks

torch.manual_seed(0)  # every lab starts from the same random numbers
FAST = colab.fast_mode()  # True in CI and while grading: the trainings shrink to a few steps

# %% [markdown]
# ## 1. The building block
#
# Each level of the U-Net is a few **residual blocks** (`labkit.unet.ResBlock`):
# GroupNorm → SiLU → 3×3 conv → GroupNorm, scaled and shifted by the time/class embedding → SiLU → 3×3 conv,
# plus the input (through a 1×1 conv if the channel count changes). The block keeps the height and width;
# only the channels may change. (How the embedding enters is the subject of lab 03.)

# %%
block = unet.ResBlock(c_in=16, c_out=32, emb_dim=64, groups=8, dropout=0.0)
h = torch.randn(2, 16, 28, 28)  # [B, C, H, W]
emb = torch.randn(2, 64)  # [B, emb_dim]: one embedding vector per image
print(block)
print("in:", list(h.shape), "-> out:", list(block(h, emb).shape))
print(f"parameters: {sum(p.numel() for p in block.parameters()):,}")

# %% [markdown]
# ## 2. The whole network, level by level
#
# `UNet.summary()` pushes one zero image through the network and lists each stage's output shape, then the
# parameters per part. Read it top to bottom: the **down path** halves the resolution and doubles the
# channels, the **middle** works at the smallest resolution (with self-attention), the **up path** mirrors
# the down path. Lines marked `+ skip` are where the skip connections come in.

# %%
model = unet.UNet(unet.UNetConfig())  # the default configuration
print(model.summary())

# %% [markdown]
# ### Exercise 1 (1 point): the skip connection
#
# At each level going up, the U-Net joins the features saved on the way down (`skip`) to its current
# features `h` by **stacking their channels**: `h` is `[B, C1, H, W]`, `skip` is `[B, C2, H, W]`, the result is
# `[B, C1 + C2, H, W]`, with `h`'s channels first. Write `concat_skip(h, skip)`.

# %% nbgrader={"grade": false, "grade_id": "concat_skip", "locked": false, "schema_version": 3, "solution": true}
def concat_skip(h, skip):
    """h [B, C1, H, W], skip [B, C2, H, W] -> [B, C1 + C2, H, W] (h's channels first)."""
    ### BEGIN SOLUTION
    return torch.cat([h, skip], dim=1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_concat_skip", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_concat_skip(concat_skip)
### BEGIN HIDDEN TESTS
checks.check_concat_skip(concat_skip, seed=21, sizes=((1, 6, 6, 4, 4), (4, 2, 10, 3, 5)))
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 2 (2 points): the up-path merge
#
# Before the concatenation, `h` comes from a smaller level and must be brought to the skip's height and width.
# `labkit.unet` does it with nearest-neighbour upsampling to **exactly** the skip's size:
# `F.interpolate(h, size=..., mode="nearest")`. Why "exactly"? A 7×7 level down-samples to 4×4 (stride 2
# with padding); doubling 4×4 gives 8×8, which no longer fits the 7×7 skip.
#
# Write `upsample_merge(h, skip)`: upsample `h` `[B, C1, h, w]` to the size of `skip` `[B, C2, H, W]`, then join
# them as in exercise 1 → `[B, C1 + C2, H, W]`.

# %% nbgrader={"grade": false, "grade_id": "upsample_merge", "locked": false, "schema_version": 3, "solution": true}
def upsample_merge(h, skip):
    """h [B, C1, h, w], skip [B, C2, H, W] -> [B, C1 + C2, H, W]."""
    ### BEGIN SOLUTION
    h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
    return torch.cat([h, skip], dim=1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_upsample_merge", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_upsample_merge(upsample_merge)
### BEGIN HIDDEN TESTS
checks.check_upsample_merge(upsample_merge, seed=8, sizes=((3, 4, 4, 2, 2, 3, 3), (1, 2, 6, 7, 7, 14, 14)))
### END HIDDEN TESTS

# %% [markdown]
# ## 3. The ablation: a U-Net with and without skips
#
# We train two small U-Nets for the same number of steps on the same digits: one as usual, one with
# `UNetConfig(skips=False)`, which removes every skip connection (the up path then only sees what squeezed
# through the middle). Training is Algorithm 1 of Ho et al. (2020): draw $t$ and $\varepsilon$, noise the
# digits with $q(x_t \mid x_0)$, regress the noise (`labkit.diffusion.diffusion_loss`).
#
# To fit a CPU, the networks are small (about 0.8M parameters) and work on 14×14×4 "pixel-unshuffled" images
# (`patch=2`: each 2×2 block of pixels becomes 4 channels). Both train for the same `STEPS` = 900 steps from
# the same seed (about a minute each on 2 idle CPU cores; a slower machine says so and takes longer).

# %%
digits, real = colab.lab_digits(train=True)
test_digits, _ = colab.lab_digits(train=False, verbose=False) if real else (digits, None)
schedule = schedules.make_schedule("cosine", T=1000)
STEPS = colab.pick(900, 3)  # a budget in steps, not seconds: both networks train exactly this long
PATIENCE_S = 300  # more than this many seconds projected: say so (the pictures need the full STEPS)
BATCH = colab.pick(64, 8)

# In fast mode (CI, grading) an even smaller network: the point there is only that the cells run.
small = dict(base_channels=colab.pick(32, 8), channel_mults=colab.pick((1, 2, 2), (1, 2)), blocks_per_level=1,
             attention=False, patch=2)


def train(config, *, steps=STEPS, seed=0):
    """Train a fresh U-Net with the DDPM loss for `steps` steps."""
    torch.manual_seed(seed)
    model = unet.UNet(config).to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    images, labels = digits.images.to(DEVICE), digits.labels.to(DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    losses, start, step = [], time.perf_counter(), 0
    while step < steps:
        if step == 20 and not FAST and (time.perf_counter() - start) / 20 * steps > PATIENCE_S:
            print(f"NOTE: this machine needs about {(time.perf_counter() - start) / 20 * steps / 60:.0f} minutes "
                  f"for the {steps} steps the pictures below need: let it run (fewer steps show no difference).")
        idx = torch.randint(0, len(images), (BATCH,), device=DEVICE, generator=g)
        loss = diffusion.diffusion_loss(model, images[idx], labels[idx], schedule, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
    took = time.perf_counter() - start
    print(f"skips={config.skips}: {step} steps in {took:.0f} s ({step * BATCH / took:.0f} images/s), "
          f"loss {sum(losses[-20:]) / len(losses[-20:]):.3f}")
    return model.eval(), losses


model_skips, loss_skips = train(unet.UNetConfig(**small, skips=True))
model_plain, loss_plain = train(unet.UNetConfig(**small, skips=False))

# %% [markdown]
# **How good is each network at denoising?** For held-out digits we noise to several $t$, let each network
# predict the noise, turn that into a guess of the clean digit
# ($\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$,
# `labkit.diffusion.predict_x0_from_eps`), and measure the mean squared error to the real digit.

# %%
@torch.no_grad()
def denoise(model, x0, y, t, noise):
    """Noise x0 to step t, then the model's one-step guess of x0 (as in lab 01's ideal denoiser)."""
    tt = torch.full((x0.shape[0],), t, device=DEVICE)
    xt = diffusion.q_sample(x0, tt, noise, schedule)
    eps_hat = model(xt, tt, y)
    return xt, diffusion.predict_x0_from_eps(xt, tt, eps_hat, schedule).clamp(-1, 1)


n_eval = colab.pick(256, 16)
x0, y0 = test_digits.images[:n_eval].to(DEVICE), test_digits.labels[:n_eval].to(DEVICE)
noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
ts = [25, 100, 250, 500, 750]
mse = {"with skips": [], "without skips": []}
for t in ts:
    for label, m in (("with skips", model_skips), ("without skips", model_plain)):
        _, x0_hat = denoise(m, x0, y0, t, noise)
        mse[label].append(float(((x0_hat - x0) ** 2).mean()))
for label, values in mse.items():
    print(f"{label:>14}: " + "  ".join(f"t={t}: {v:.3f}" for t, v in zip(ts, values)))
fig = plotting.plot_curves(ts, mse, xlabel="step t", ylabel="MSE of the predicted x0", logy=True,
                           title="one-step denoising error (lower is better)")

# %%
t_show = 250
xt, with_skips = denoise(model_skips, x0[:8], y0[:8], t_show, noise[:8])
_, without_skips = denoise(model_plain, x0[:8], y0[:8], t_show, noise[:8])
fig = plotting.compare_rows({f"x_t (t={t_show})": xt, "with skips": with_skips, "without skips": without_skips,
                             "clean x0": x0[:8]}, title="predicted clean digits, side by side")
fig = plotting.plot_curves(range(len(loss_skips)), {"with skips": loss_skips, "without skips": loss_plain},
                           xlabel="training step", ylabel="loss", marker="", logy=True, title="training loss")

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_1", "locked": true, "schema_version": 3, "solution": false}
# ## Questions (look at the pictures)
#
# Answer each question in the cell below it, in a few sentences, with what you saw: a step $t$, a number, a row
# or a curve. Your answers are graded by hand (3 points, 1 per question).
#
# **Question 1 (1 point).** In the summary, at which level are the most parameters, and what is the smallest
# resolution the default network reaches? How many channels does the first up block receive, and why that many?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_1", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** The parameters sit where the channels are widest: the 128-channel levels (14x14 and 7x7),
# and the up path holds the most of all (about 2.3 M of 4.9 M: its blocks also read the concatenated skips); a
# convolution's size grows with channels squared, not with the resolution. The smallest resolution is 7x7 (28 ->
# 14 -> 7). The first up block receives 256 channels: the 128 coming from the middle plus the 128 of the skip
# from down level 2, concatenated.
#
# **Rubric (1 point).** 1/2 point: the widest (128-channel) levels / the up path, and 7x7. 1/2 point: 256 = 128
# from below + 128 from the skip (concatenation).
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_2", "locked": true, "schema_version": 3, "solution": false}
# **Question 2 (1 point).** Compare the rows "with skips" and "without skips": what exactly is missing without
# skips: the overall shape of the digit, or its edges and thin strokes? Why would that be, given what the middle
# of the network sees?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_2", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Without skips the overall shape and position are roughly right, but the edges are soft and
# thin strokes are smeared or missing: the digits look like blurry blobs. The middle only sees a coarse 7x7
# (here 3x3 or 4x4 after the patches) summary: fine spatial detail is lost on the way down, and without skips
# the up path has nothing but that summary to redraw the details from.
#
# **Rubric (1 point).** 1/2 point: shape kept, edges and thin strokes lost. 1/2 point: the bottleneck is
# low-resolution, so only coarse information passes; skips carry the full-resolution detail.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_3", "locked": true, "schema_version": 3, "solution": false}
# **Question 3 (1 point).** In the error plot (a log scale), where is the gap between the two networks largest:
# in absolute terms (the printed numbers), and as a ratio (the distance between the curves)? What must a network
# copy from its input at small $t$, and what can it only guess at large $t$?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_3", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** From the student's own numbers. In a run on 2 CPU cores (900 steps each) the gap grows with
# $t$ both ways: equal at $t = 25$ (0.001 for both), 2x at $t = 100$ (0.004 vs 0.009), 4x at $t = 250$, 5-6x
# at $t = 500$-$750$ (0.052 vs 0.261, 0.141 vs 0.875). At small $t$ the input is nearly the answer: there is
# little to do, and even the network without skips copies a 14x14 patch image through its bottleneck well
# enough. At large $t$ the network must draw a digit from a faint signal, and the one without skips, trained
# as long, does that much worse (its training loss stayed at 0.50 against 0.07): without the skips' short
# paths it also learns more slowly. The textbook picture ("skips matter most at small $t$") is not what this
# run shows.
#
# **Rubric (1 point).** 1/2 point: where the gap is largest, read correctly from the student's own numbers and
# plot (absolute and ratio). 1/2 point: what each network must do at small t (copy detail) and at large t
# (guess from a faint signal), and a reason consistent with the numbers.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_4", "locked": true, "schema_version": 3, "solution": false}
# **Question 4.** (Colab GPU, optional, not graded) Set `STEPS = 3000` and rerun: does the network without
# skips catch up?
