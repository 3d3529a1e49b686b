# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 01 — Forward noising: how a diffusion model destroys a digit
#
# A diffusion model learns to *undo* a fixed, simple process that turns images into noise, a little at a
# time. Before anything is learned we need that process itself. In this lab you write it.
#
# **Learning objectives.** After this lab you can
# 1. compute $\bar\alpha_t$ and the signal-to-noise ratio from a noise schedule, write the linear and cosine
#    schedules from their papers, and say how they differ;
# 2. sample $x_t \sim q(x_t \mid x_0)$ in one step with the closed form (Ho et al. 2020, eq. 4), undo it when the
#    noise is known, and write the one-step-back posterior $q(x_{t-1} \mid x_t, x_0)$ (eqs. 6-7);
# 3. explain why denoising from pure noise in one step is hopeless, while a small step is learnable;
# 4. read a score field on a 2D toy: where its arrows point at small and large $t$, and how samples follow it.
#
# **Time budget.** Running all cells: about 1 minute on 2 shared CPU cores (measured 24-36 seconds at load 8-11,
# three runs, 2026-12-07), under a minute on a Colab T4. Working through the lab: about 85 minutes.
# Points: 15 (11 for the functions, 4 for the written answers).
#
# **How it is graded.** Eight small functions, each followed by a test cell (the tests you see, plus hidden
# ones with other inputs). Cells further down use your function when it passes its check and `labkit`'s reference
# implementation otherwise, so a bug in your answer never breaks the rest of the lab. Run the cells from top to bottom.
# The questions at the end are answered in writing and graded by hand (4 points).

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
# __LABKIT_COLAB_INSTALL__ (labkit build writes labkit.colab.INSTALL_CELL here: the Colab install)
from labkit import colab
DEVICE = colab.setup()

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false}
import math

import torch
import matplotlib.pyplot as plt

from labkit import diffusion, plotting, schedules, widgets
from labkit.checks import claims, lab01_forward as checks

torch.manual_seed(0)  # every lab starts from the same random numbers
FAST = colab.fast_mode()  # True in CI and while grading: expensive cells shrink

# %% [markdown]
# ## 1. Noise schedules
#
# The forward process adds a little Gaussian noise at each of $T$ steps:
# $q(x_t \mid x_{t-1}) = \mathcal N\big(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big)$.
# The schedule is the list $\beta_0, \dots, \beta_{T-1}$ (steps are numbered from 0 in code).
# With $\alpha_t = 1 - \beta_t$, the fraction of the original signal's *variance* that survives up to
# and including step $t$ is
#
# $$\bar\alpha_t = \prod_{s=0}^{t} \alpha_s = \prod_{s=0}^{t} (1 - \beta_s).$$
#
# ### Exercise 1 (1 point)
# Write `alpha_bars_from_betas(betas)`: `betas` is a 1-D tensor `[T]`; return `[T]` with
# $\bar\alpha_t$ at position `t`. Note that $\bar\alpha_0 = 1 - \beta_0$ already includes step 0.
# Hint: `torch.cumprod(..., dim=0)`.

# %% nbgrader={"grade": false, "grade_id": "alpha_bars_from_betas", "locked": false, "schema_version": 3, "solution": true}
def alpha_bars_from_betas(betas):
    """betas [T] -> alpha_bars [T], alpha_bar_t = prod_{s <= t} (1 - beta_s)."""
    ### BEGIN SOLUTION
    return torch.cumprod(1 - betas, dim=0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_alpha_bars_from_betas", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_alpha_bars(alpha_bars_from_betas)
### BEGIN HIDDEN TESTS
checks.check_alpha_bars(alpha_bars_from_betas, seed=11, sizes=(2, 7, 500))
### END HIDDEN TESTS

# %% [markdown]
# The **signal-to-noise ratio** compares the variance of the signal part of $x_t$ with that of the noise
# part: $\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)$ (Kingma et al. 2021, eq. 1).
# SNR = 1 is the point where signal and noise are equally strong.
#
# ### Exercise 2 (1 point)
# Write `snr(alpha_bars)`: `[T] -> [T]`.

# %% nbgrader={"grade": false, "grade_id": "snr", "locked": false, "schema_version": 3, "solution": true}
def snr(alpha_bars):
    """alpha_bars [T] -> SNR [T] = alpha_bar / (1 - alpha_bar)."""
    ### BEGIN SOLUTION
    return alpha_bars / (1 - alpha_bars)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_snr", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_snr(snr)
### BEGIN HIDDEN TESTS
checks.check_snr(snr, seed=5, sizes=(3, 1000))
### END HIDDEN TESTS

# %% [markdown]
# Two schedules from the literature, both with $T = 1000$:
# * **linear** (Ho et al. 2020, section 4): $\beta_t$ rises linearly from $\beta_\text{start} = 10^{-4}$ to
#   $\beta_\text{end} = 0.02$;
# * **cosine** (Nichol & Dhariwal 2021, eq. 17): $\bar\alpha_t$ follows $\cos^2$, so it falls slowly at both ends.
#
# ### Exercise 3 (1 point)
# Write `linear_betas(T, beta_start, beta_end)`: return the `[T]` betas, evenly spaced from the first to the
# last step, both ends included, as float64. Ho et al. chose their endpoints for $T = 1000$; for another $T$ both
# endpoints are multiplied by $1000 / T$ (the rule of improved DDPM), so that a shorter chain adds as much noise
# in all as the long one. Hint: `torch.linspace` includes both ends; give it `dtype=torch.float64`.

# %% nbgrader={"grade": false, "grade_id": "linear_betas", "locked": false, "schema_version": 3, "solution": true}
def linear_betas(T, beta_start=1e-4, beta_end=0.02):
    """[T] float64: evenly spaced from beta_start * 1000 / T to beta_end * 1000 / T."""
    ### BEGIN SOLUTION
    scale = 1000 / T  # fewer steps: each step adds more noise
    return torch.linspace(beta_start * scale, beta_end * scale, T, dtype=torch.float64)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_linear_betas", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_linear_betas(linear_betas)
### BEGIN HIDDEN TESTS
checks.check_linear_betas(linear_betas, seed=3, cases=((1000, 1e-4, 0.02), (100, 2e-4, 0.01), (25, 1e-4, 0.02)))
### END HIDDEN TESTS

# %% [markdown]
# The cosine schedule defines $\bar\alpha$ directly, for a continuous time $t/T \in [0, 1]$ and a small offset $s$
# (Nichol & Dhariwal 2021, eq. 17):
#
# $$\bar\alpha(t) = \frac{f(t)}{f(0)},\qquad f(t) = \cos^2\Big(\frac{t/T + s}{1 + s}\cdot\frac{\pi}{2}\Big),
# \qquad s = 0.008.$$
#
# The offset keeps the first steps from being too small to learn from. Near $t = T$ the ratio
# $\bar\alpha(t+1)/\bar\alpha(t)$ falls to 0, so the paper turns $\bar\alpha$ into betas,
# $\beta_t = 1 - \bar\alpha(t+1)/\bar\alpha(t)$, and clips them at $0.999$ "to prevent singularities at the end
# of the diffusion process". The schedule is then the running product of these $1 - \beta_t$, exactly as in
# exercise 1.
#
# ### Exercise 4 (2 points)
# Write `cosine_alpha_bars(T, s)`: return the `[T]` float64 $\bar\alpha$ of the cosine schedule, the values
# `labkit.schedules.make_schedule("cosine", T)` uses. Steps: $\bar\alpha(t)$ at the $T + 1$ points
# $t = 0, 1, \dots, T$; the $T$ betas between neighbours, clipped at 0.999; their running product. Step 0 in code
# is the paper's first step, $t = 1$: your $\bar\alpha_0$ is slightly below 1.
# Hint: `torch.arange(T + 1, dtype=torch.float64) / T`, `torch.cos`, `math.pi`, `.clamp(max=...)`; you may call
# your `alpha_bars_from_betas`.

# %% nbgrader={"grade": false, "grade_id": "cosine_alpha_bars", "locked": false, "schema_version": 3, "solution": true}
def cosine_alpha_bars(T, s=0.008):
    """[T] float64: the cosine schedule's alpha_bar (Nichol & Dhariwal 2021, eq. 17), betas clipped at 0.999."""
    ### BEGIN SOLUTION
    times = torch.arange(T + 1, dtype=torch.float64) / T  # [T+1]: t/T = 0, 1/T, ..., 1
    f = torch.cos((times + s) / (1 + s) * math.pi / 2) ** 2  # [T+1]
    alpha_bar = f / f[0]  # [T+1], 1 at t = 0
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)  # [T]
    return torch.cumprod(1 - betas, 0)  # [T]: the running product, as in exercise 1
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_cosine_alpha_bars", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_cosine_alpha_bars(cosine_alpha_bars)
### BEGIN HIDDEN TESTS
checks.check_cosine_alpha_bars(cosine_alpha_bars, seed=7, cases=((1000, 0.008), (4, 0.008), (300, 0.01)))
### END HIDDEN TESTS

# %% [markdown]
# The linear schedule below is built from your `linear_betas` when it passes its check (else from `labkit`'s);
# the cosine schedule is `labkit`'s (`labkit.schedules.make_schedule`), compared with yours. From here on the
# notebook uses `labkit`'s reference code. The SNR is drawn on a log scale: it spans 8 orders of magnitude on the
# linear schedule and 13 on the cosine.

# %%
my_linear = checks.yours_or_labkit(checks.check_linear_betas, linear_betas, schedules.linear_betas, "linear_betas")
my_cosine = checks.yours_or_labkit(checks.check_cosine_alpha_bars, cosine_alpha_bars, schedules.cosine_alpha_bars,
                                   "cosine_alpha_bars")
linear = schedules.Schedule("linear", my_linear(1000, 1e-4, 0.02))
cosine = schedules.make_schedule("cosine", T=1000)
gap = float((my_cosine(1000, 0.008) - cosine.alpha_bars).abs().max())
print(f"cosine alpha_bars: largest difference from labkit's schedule {gap:.1e}")
print(linear)
print(cosine)
fig = plotting.plot_schedules({"linear": linear, "cosine": cosine})

# %%
for s in (linear, cosine):
    half = int((s.alpha_bars < 0.5).nonzero()[0])
    snr1 = int((s.snr() < 1).nonzero()[0])
    print(f"{s.name:>6}: alpha_bar drops below 0.5 at t={half}, SNR < 1 from t={snr1}, "
          f"alpha_bar at the last step = {float(s.alpha_bars[-1]):.1e}")
orders = {s.name: float(torch.log10(s.snr().max() / s.snr().min())) for s in (linear, cosine)}
claims.check("the SNR spans 8 orders of magnitude on the linear schedule and 13 on the cosine",
             round(orders["linear"]) == 8 and round(orders["cosine"]) == 13,
             f"log10 of the largest over the smallest SNR: linear {orders['linear']:.1f}, cosine {orders['cosine']:.1f}")
crossing = {s.name: int((s.snr() < 1).nonzero()[0]) for s in (linear, cosine)}
claims.check("the cosine schedule's SNR falls below 1 about twice as late as the linear's",
             1.7 < crossing["cosine"] / crossing["linear"] < 2.3,
             f"t = {crossing['cosine']} against t = {crossing['linear']}")
nearly_zero = {s.name: int((s.alpha_bars < 0.01).sum()) for s in (linear, cosine)}
claims.check("the linear schedule's alpha_bar is almost zero (below 0.01) for the last few hundred steps, "
             "the cosine's for far fewer", nearly_zero["linear"] >= 200 and nearly_zero["cosine"] < nearly_zero["linear"] / 3,
             f"steps with alpha_bar < 0.01: linear {nearly_zero['linear']}, cosine {nearly_zero['cosine']}")

# %% [markdown]
# ## 2. The chain, one step at a time
#
# Before the shortcut, the process itself: start from a clean image and apply the small step
# $q(x_t \mid x_{t-1})$ of section 1 again and again (Ho et al. 2020, eq. 2),
#
# $$x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t,\qquad \varepsilon_t \sim \mathcal N(0, I),
# \qquad t = 0, 1, \dots, T-1,$$
#
# with $x_{-1} = x_0$ the clean image: each step shrinks the image a little and adds a little fresh noise.
#
# ### Exercise 5 (1 point)
# Write `forward_chain(x0, betas, noises)`: `x0` `[B, C, H, W]`, `betas` `[T]`, `noises` `[T, B, C, H, W]` (step
# $t$ adds `noises[t]`: use them, do not draw new noise); return the image after the last step, `[B, C, H, W]`.
# A loop over the steps is the natural way.

# %% nbgrader={"grade": false, "grade_id": "forward_chain", "locked": false, "schema_version": 3, "solution": true}
def forward_chain(x0, betas, noises):
    """x_t = sqrt(1 - beta_t) * x_{t-1} + sqrt(beta_t) * noises[t] for t = 0 .. T-1, from x0 -> the last x."""
    ### BEGIN SOLUTION
    x = x0
    for t in range(len(betas)):
        beta = betas[t].to(x.dtype)
        x = (1 - beta).sqrt() * x + beta.sqrt() * noises[t]
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_forward_chain", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_forward_chain(forward_chain)
### BEGIN HIDDEN TESTS
checks.check_forward_chain(forward_chain, seed=6, sizes=((4, 1, 6, 6), (1, 3, 2, 2)), T=200)
checks.check_forward_chain(forward_chain, seed=12, sizes=((2, 1, 28, 28),), T=1)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Jumping straight to step t
#
# Because a sum of Gaussians is Gaussian, the $t$ small steps compose into one (Ho et al. 2020, eq. 4):
#
# $$q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big)
# \quad\Longleftrightarrow\quad x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,\ \
# \varepsilon\sim\mathcal N(0, I).$$
#
# Training draws a random $t$ for every image and uses this formula, so it never has to run the chain.
#
# ### Exercise 6 (2 points)
# Write `q_sample(x0, t, noise, alpha_bars)`:
# * `x0`: clean images `[B, C, H, W]`; `noise`: $\varepsilon$, same shape (use it, do not draw new noise);
# * `t`: int64 `[B]`, one step per image; `alpha_bars`: `[T]`;
# * return $x_t$ `[B, C, H, W]`.
#
# Mind the standard deviations (not variances), and reshape the per-image $\bar\alpha_t$ to `[B, 1, 1, 1]` so
# it broadcasts over each image.

# %% nbgrader={"grade": false, "grade_id": "q_sample", "locked": false, "schema_version": 3, "solution": true}
def q_sample(x0, t, noise, alpha_bars):
    """x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * noise, with alpha_bar_t = alpha_bars[t]."""
    ### BEGIN SOLUTION
    ab = alpha_bars.to(x0.device)[t].to(x0.dtype)  # [B]
    ab = ab.view(-1, *([1] * (x0.dim() - 1)))  # [B, 1, 1, 1]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_q_sample", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_q_sample(q_sample)
### BEGIN HIDDEN TESTS
checks.check_q_sample(q_sample, seed=3, sizes=((5, 1, 8, 8), (2, 3, 6, 4)), T=1000)
checks.check_q_sample(q_sample, seed=4, sizes=((3, 1, 28, 28),), T=10)
### END HIDDEN TESTS

# %% [markdown]
# Does the shortcut describe the chain? Below, one pixel of value 0.7 is copied 20000 times and sent through 300
# steps of your `forward_chain` (labkit's if yours does not pass yet) on the linear schedule, each copy with its
# own noise; the closed form predicts the mean $\sqrt{\bar\alpha_{299}} \cdot 0.7$ and the standard deviation
# $\sqrt{1-\bar\alpha_{299}}$.

# %%
chain = checks.yours_or_labkit(checks.check_forward_chain, forward_chain, diffusion.forward_chain, "forward_chain")
pixel = torch.full((20000, 1, 1, 1), 0.7)
chain_noise = torch.randn((300, 20000, 1, 1, 1), generator=torch.Generator().manual_seed(4))
end = chain(pixel, linear.betas[:300], chain_noise)
ab_299 = float(linear.alpha_bars[299])
print(f"300 small steps: mean {float(end.mean()):.3f}, std {float(end.std()):.3f}")
print(f"one jump, eq. 4: mean {ab_299 ** 0.5 * 0.7:.3f}, std {(1 - ab_299) ** 0.5:.3f}")
se_mean = float(end.std()) / len(pixel) ** 0.5  # standard error of the mean of 20000 copies
se_std = float(end.std()) / (2 * len(pixel)) ** 0.5  # and of their standard deviation (Gaussian copies)
off_mean = abs(float(end.mean()) - ab_299 ** 0.5 * 0.7)
off_std = abs(float(end.std()) - (1 - ab_299) ** 0.5)
claims.check("the chain and the jump agree to the sampling error of 20000 copies (within 3 standard errors)",
             off_mean < 3 * se_mean and off_std < 3 * se_std,
             f"means differ by {off_mean:.4f} (3 s.e. = {3 * se_mean:.4f}), stds by {off_std:.4f} "
             f"(3 s.e. = {3 * se_std:.4f})")

# %% [markdown]
# The two agree to the sampling error of 20000 copies (a standard error of about 0.006): the chain and the jump give the same
# distribution, though not the same samples (the jump uses one noise, the chain 300).
#
# The step can be undone when the noise is known: solve the formula above for $x_0$,
#
# $$x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon}{\sqrt{\bar\alpha_t}}.$$
#
# A trained network never knows $\varepsilon$; it predicts it, $\hat\varepsilon$, and this same formula then
# turns the prediction into a guess $\hat x_0$ of the clean image (Ho et al. 2020, eq. 15). Labs 05 and 07 use it
# at every sampling step.
#
# ### Exercise 7 (1 point)
# Write `predict_x0_from_eps(xt, t, eps, alpha_bars)`: shapes as in `q_sample` (`xt`, `eps` `[B, C, H, W]`,
# `t` `[B]`, `alpha_bars` `[T]`); return $x_0$ `[B, C, H, W]`. Mind the parentheses.

# %% nbgrader={"grade": false, "grade_id": "predict_x0_from_eps", "locked": false, "schema_version": 3, "solution": true}
def predict_x0_from_eps(xt, t, eps, alpha_bars):
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t), with alpha_bar_t = alpha_bars[t]."""
    ### BEGIN SOLUTION
    ab = alpha_bars.to(xt.device)[t].to(xt.dtype)  # [B]
    ab = ab.view(-1, *([1] * (xt.dim() - 1)))  # [B, 1, 1, 1]
    return (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_predict_x0_from_eps", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_predict_x0(predict_x0_from_eps)
### BEGIN HIDDEN TESTS
checks.check_predict_x0(predict_x0_from_eps, seed=8, sizes=((5, 1, 8, 8), (2, 3, 6, 4)), T=1000)
### END HIDDEN TESTS

# %% [markdown]
# A round trip: noise a batch with `q_sample`, undo it with `predict_x0_from_eps` given the same noise. With the
# true noise the way back is exact up to rounding, at every step; what makes generation hard is only that a
# model has to *guess* the noise.

# %%
back_to_x0 = checks.yours_or_labkit(checks.check_predict_x0, predict_x0_from_eps, diffusion.predict_x0_from_eps,
                                    "predict_x0_from_eps")
x_demo = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
eps_demo = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
t_demo = torch.tensor([0, 300, 700, 999])
x_noisy = diffusion.q_sample(x_demo, t_demo, eps_demo, linear)
err = (back_to_x0(x_noisy, t_demo, eps_demo, linear.alpha_bars) - x_demo).abs().flatten(1).amax(1)
for t, e in zip(t_demo.tolist(), err.tolist()):
    print(f"t={t:>3}: largest error of the round trip {e:.1e}")
claims.check("the error of the round trip grows with t and stays far below the pixel scale of 1",
             all(a <= b for a, b in zip(err, err[1:])) and float(err.max()) < 1e-3,
             ", ".join(f"{e:.1e}" for e in err.tolist()))

# %% [markdown]
# The error grows with $t$ because dividing by $\sqrt{\bar\alpha_t}$ (about 0.006 at $t = 999$ on the linear
# schedule) magnifies float32 rounding, but it stays far below the pixel scale of 1.
#
# ### One step back: the forward posterior
#
# Lab 05 samples by going back one step at a time, from $x_t$ to $x_{t-1}$. If the clean $x_0$ were known, that
# step would be a known Gaussian (Ho et al. 2020, eqs. 6-7):
#
# $$q(x_{t-1} \mid x_t, x_0) = \mathcal N\big(\tilde\mu_t,\ \tilde\beta_t I\big),\quad
# \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0
#             + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t,\quad
# \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t.$$
#
# A sampler plugs its guess $\hat x_0$ into this posterior. Everything here follows from `alpha_bars`:
# $\alpha_t = \bar\alpha_t / \bar\alpha_{t-1}$, $\beta_t = 1 - \alpha_t$, and $\bar\alpha_{-1} = 1$ before the
# first step (so at $t = 0$ the variance is 0 and the mean is $x_0$ itself).
#
# ### Exercise 8 (2 points)
# Write `q_posterior(x0, xt, t, alpha_bars)`: `x0`, `xt` `[B, C, H, W]`, `t` `[B]` (it holds $t = 0$ too),
# `alpha_bars` `[T]`; return the pair `(mean, variance)`, the mean `[B, C, H, W]` and the variance `[B, 1, 1, 1]`.
# Beware `alpha_bars[t - 1]` at $t = 0$: Python reads index $-1$ as the *last* element. Hint: `torch.where`.

# %% nbgrader={"grade": false, "grade_id": "q_posterior", "locked": false, "schema_version": 3, "solution": true}
def q_posterior(x0, xt, t, alpha_bars):
    """(mean, variance) of q(x_{t-1} | x_t, x_0), Ho et al. 2020, eqs. 6-7."""
    ### BEGIN SOLUTION
    alpha_bars = alpha_bars.to(xt.device)
    ab = alpha_bars[t].view(-1, 1, 1, 1)  # [B, 1, 1, 1]: alpha_bar_t
    ab_prev = torch.where(t > 0, alpha_bars[(t - 1).clamp(min=0)], 1.0).view(-1, 1, 1, 1)  # alpha_bar_{t-1}
    beta = 1 - ab / ab_prev  # beta_t
    mean = ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * xt
    variance = (1 - ab_prev) / (1 - ab) * beta  # beta_tilde_t, 0 at t = 0
    return mean.to(xt.dtype), variance
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_q_posterior", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_q_posterior(q_posterior)
### BEGIN HIDDEN TESTS
checks.check_q_posterior(q_posterior, seed=9, sizes=((5, 1, 6, 6), (8, 3, 4, 4)), T=1000)
checks.check_q_posterior(q_posterior, seed=10, sizes=((3, 1, 28, 28),), T=3)
### END HIDDEN TESTS

# %% [markdown]
# How much noise does one step back add? The forward step adds variance $\beta_t$; the step back, knowing $x_0$,
# only $\tilde\beta_t$: 0 at $t = 0$, about half of $\beta_t$ at $t = 1$, and nearly $\beta_t$ itself once $t$ is
# large (there $\bar\alpha_{t-1} \approx \bar\alpha_t$, so their ratio is close to 1).

# %%
posterior = checks.yours_or_labkit(checks.check_q_posterior, q_posterior, diffusion.q_posterior, "q_posterior")
t_show = torch.tensor([0, 1, 10, 100, 500, 999])
ones = torch.ones(len(t_show), 1, 1, 1, dtype=torch.float64)
_, var_show = posterior(ones, ones, t_show, cosine.alpha_bars)
for t, v in zip(t_show.tolist(), var_show.flatten().tolist()):
    print(f"t={t:>3}: beta_t = {float(cosine.betas[t]):.2e}   beta_tilde_t = {v:.2e}")
share = (var_show.flatten() / cosine.betas[t_show]).tolist()  # beta_tilde_t / beta_t at each shown t
claims.check("the step back adds variance 0 at t = 0, about half of beta_t at t = 1, nearly beta_t once t is large",
             share[0] == 0 and 0.35 < share[1] < 0.65 and min(share[3:]) > 0.95,
             "beta_tilde / beta at t = " + ", ".join(f"{t}: {r:.2f}" for t, r in zip(t_show.tolist(), share)))

# %% [markdown]
# ## 4. Watching a digit dissolve
#
# Real MNIST digits when `labkit` finds them (see `labkit.data`; Colab downloads them), otherwise synthetic
# seven-segment digits. Each row is one digit; each column one step $t$, with the same $\varepsilon$
# across a row.

# %%
digits, real = colab.lab_digits(train=True)
first_of_each = torch.tensor([int((digits.labels == d).nonzero()[0]) for d in range(6)])
x0 = digits.images[first_of_each]  # [6, 1, 28, 28] in [-1, 1]
ts = [0, 50, 100, 200, 300, 500, 700, 999]
fig = plotting.noise_grid(x0, linear, ts, generator=torch.Generator().manual_seed(0), title="linear schedule")
fig = plotting.noise_grid(x0, cosine, ts, generator=torch.Generator().manual_seed(0), title="cosine schedule")

# %% [markdown]
# Drag the slider to move through $t$ (cosine schedule). Widgets need a live kernel; the grids above are the
# static version of the same picture.

# %%
widgets.noise_slider(x0[:4], cosine, generator=torch.Generator().manual_seed(0))

# %% [markdown]
# ## 5. Why many small steps, and not one big one?
#
# Suppose we tried to go from $x_t$ back to $x_0$ in **one** step. The best possible guess in squared error
# is the posterior mean $\mathbb E[x_0 \mid x_t]$. For a finite set of training digits $\{x^{(i)}\}$ it can be
# computed exactly: each training digit is weighted by how likely it is to have produced $x_t$,
#
# $$\mathbb E[x_0 \mid x_t] = \sum_i w_i\, x^{(i)},\qquad
# w_i \propto \exp\Big(-\frac{\lVert x_t - \sqrt{\bar\alpha_t}\,x^{(i)}\rVert^2}{2(1-\bar\alpha_t)}\Big).$$
#
# This is the "ideal denoiser" for that data set. We apply it to held-out digits at several $t$.

# %%
n_ref = min(colab.pick(5000, 500), len(digits) - 6)
ref = digits.images[-n_ref:].reshape(n_ref, -1).double()  # [N, 784] training digits to weigh
test_digits = digits.images[:3].double()  # [3, 1, 28, 28], not among `ref`


def ideal_denoiser(xt, t, schedule):
    """E[x0 | x_t] under the empirical distribution of `ref`, and the effective number of digits mixed."""
    ab = float(schedule.alpha_bars[t])
    d2 = torch.cdist(xt.reshape(xt.shape[0], -1), ab ** 0.5 * ref) ** 2  # [B, N] squared distances
    w = torch.softmax(-d2 / (2 * (1 - ab)), dim=1)  # [B, N] posterior weights
    effective = 1 / (w ** 2).sum(dim=1)  # 1 = sure of one digit, N = no idea at all
    return (w @ ref).reshape(xt.shape), effective


steps = [50, 500, 700, 800, 850, 900, 950, 999]  # dense where the guesses stop depending on the digit
noise = torch.randn(test_digits.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
noisy, guess, mixed = [], [], []
for t in steps:
    xt = diffusion.q_sample(test_digits, torch.full((3,), t), noise, cosine)
    x0_hat, eff = ideal_denoiser(xt, t, cosine)
    noisy.append(xt.float())
    guess.append(x0_hat.float())
    mixed.append(float(eff.mean()))
rows = {}
for k in range(3):
    rows[f"noisy x_t ({k})"] = torch.stack([n[k] for n in noisy])
    rows[f"E[x0|x_t] ({k})"] = torch.stack([g[k] for g in guess])
fig = plotting.compare_rows(rows, col_titles=[f"t={t}" for t in steps],
                            title="noisy digit and the best one-step guess of the clean one (cosine schedule)")
mean_digit = ref.mean(0).reshape(1, 1, 28, 28).float()
fig = plotting.image_grid(mean_digit, title="the data set mean", size=2.0)
for t, m in zip(steps, mixed):
    print(f"t={t:>4}: the best guess averages about {m:.0f} of the {n_ref} training digits")
from_noise = float((guess[-1] - mean_digit).abs().max())  # t = 999: how far each guess is from the mean digit
claims.check("from pure noise (t = 999) the weights are almost uniform and the best guess is the mean digit; "
             "at small t it snaps to one training digit",
             mixed[-1] > 0.9 * n_ref and from_noise < 0.05 and mixed[0] < 1.5,
             f"digits averaged: {mixed[0]:.1f} at t = {steps[0]}, {mixed[-1]:.0f} of {n_ref} at t = 999; "
             f"largest pixel difference from the mean digit at t = 999: {from_noise:.3f}")

# %% [markdown]
# From pure noise ($t = 999$) the weights are almost uniform: the best one-step guess is the blurry **mean
# digit**, whatever the noise was. (At small $t$ this "ideal" denoiser snaps to the single closest training
# digit: it has memorised its data set. A neural network trained on many digits generalises instead.) A network trained to jump from noise to data in one step can only learn
# this blur. At small $t$ the posterior concentrates on a few digits that all look alike: predicting a
# slightly cleaner image is an easy, nearly deterministic regression. Diffusion models chain many such small,
# learnable steps.

# %% [markdown]
# ## 6. The same story in 2D, where you can see it
#
# A digit is a point in 784 dimensions, which no picture can show. Here the data are points in the plane
# instead: `labkit.toy2d.three_blobs()` is a mixture of three Gaussian blobs with weights 0.5 (blue), 0.3 (red)
# and 0.2 (green). Noised with the same $q(x_t \mid x_0)$ as the digits, a mixture of Gaussians stays one, so
# here everything a diffusion model has to learn is known exactly:
#
# * the noised density $q_t(x) = \sum_k w_k\, \mathcal N\big(x;\ \sqrt{\bar\alpha_t}\,\mu_k,\ (\bar\alpha_t s^2 + 1 - \bar\alpha_t) I\big)$;
# * its **score** $\nabla_x \log q_t(x)$, the direction in which the density of noised points grows fastest;
# * the best noise prediction $\varepsilon^*(x_t) = -\sqrt{1-\bar\alpha_t}\,\nabla_x \log q_t(x_t)$ (Song et al.
#   2021): a noise predictor *is* a score, up to that factor; and
# * the best one-step guess $\hat x_0 = \mathbb E[x_0 \mid x_t]$, the ideal denoiser of section 5 for blobs.
#
# Each panel below shows the same 600 points at one step $t$ (cosine schedule), with the same $\varepsilon$
# in every panel, and grey arrows for the direction of the score on a grid.

# %%
from labkit import samplers, toy2d

blobs = toy2d.three_blobs()
toy_ts = [0, 200, 400, 600, 800, 999]
fig = plotting.toy_panels(blobs, cosine, toy_ts, n=colab.pick(600, 200), generator=torch.Generator().manual_seed(0))
probe = torch.tensor([[0.0, 0.0], [2.0, 2.0]], dtype=torch.float64)  # two places: the centre, and far out
for t in toy_ts:
    length = toy2d.score(blobs, probe, float(cosine.alpha_bars[t])).norm(dim=1)
    print(f"t={t:>3}: score length at (0, 0): {length[0]:6.2f}   at (2, 2): {length[1]:6.2f}")
far = [float(toy2d.score(blobs, probe, float(cosine.alpha_bars[t])).norm(dim=1)[1]) for t in (0, 999)]
centre = float(toy2d.score(blobs, probe[:1], float(cosine.alpha_bars[999])).norm())
claims.check("at (2, 2) the score is about 30 times longer at t = 0 than at t = 999, and at the origin it falls to 0",
             20 < far[0] / far[1] < 45 and centre < 0.01,
             f"{far[0]:.1f} against {far[1]:.2f} ({far[0] / far[1]:.0f} times); at (0, 0), t = 999: {centre:.1e}")
axis = torch.linspace(-3, 3, 9, dtype=torch.float64)
points = torch.cartesian_prod(axis, axis)  # [81, 2] a grid like the arrows'
points = points[points.norm(dim=1) > 0.5]  # not the centre itself


def cosine_to(direction, arrows):
    return torch.nn.functional.cosine_similarity(arrows, direction, dim=1)


nearest = blobs.means[torch.cdist(points, blobs.means).argmin(dim=1)]  # [N, 2] the nearest blob's centre
into_blob = float((cosine_to(nearest - points, toy2d.score(blobs, points, float(cosine.alpha_bars[0]))) > 0.9).float().mean())
to_centre = float(cosine_to(-points, toy2d.score(blobs, points, float(cosine.alpha_bars[999]))).min())
claims.check("at t = 0 the arrows point into the nearest blob, at t = 999 every arrow points to the centre",
             into_blob > 0.9 and to_centre > 0.99,
             f"{into_blob:.0%} of grid points within 25 degrees of their nearest blob at t = 0; "
             f"cosine to the centre at t = 999 at least {to_centre:.3f}")

# %% [markdown]
# At $t = 0$ the arrows point into the nearest blob. As $t$ grows the blobs shrink towards the origin (they
# are scaled by $\sqrt{\bar\alpha_t}$) and spread out, until at $t = 999$ the points are one round cloud and
# every arrow points to the centre. The arrows have one length on purpose, because the real lengths differ
# too much to draw: at the point (2, 2) the printed score is about 30 times longer at $t = 0$ than at
# $t = 999$, and at the origin, the centre of the final cloud, it falls to 0. Near clean data the density is
# steep; in the noise it is nearly flat.
#
# **Samples moving along the score.** Because $\varepsilon^*$ is exact, `toy2d.exact_model(blobs, cosine)` is
# a perfect `model(x, t, y)`, and labkit's samplers run on it unchanged (a point is a tensor [2] instead of
# [1, 28, 28]). Below, 60 points of pure noise go through 40 steps of DDIM (you write this sampler in lab 07;
# `y = blobs.K` means "no class"). `samplers.Trajectory()` records every step.

# %%
n_toy = colab.pick(60, 30)
trajectory = samplers.Trajectory()
toy_samples = samplers.sample(toy2d.exact_model(blobs, cosine), (n_toy, 2), torch.full((n_toy,), blobs.K),
                              cosine, sampler="ddim", steps=40, null_class=blobs.K,
                              generator=torch.Generator().manual_seed(1), callback=trajectory)
fig = plotting.toy_trajectories(blobs, torch.cat([trajectory.x_t, toy_samples[None]]))
landed = torch.cdist(toy_samples.double(), blobs.means).argmin(dim=1)
for k, name in enumerate(["blue", "red", "green"]):
    w = float(blobs.weights[k])
    spread = (n_toy * w * (1 - w)) ** 0.5  # one standard deviation of a binomial count
    print(f"{name:>5} blob: weight {w:.2f}, expected {n_toy * w:.0f} +- {spread:.1f} samples, "
          f"got {int((landed == k).sum())}")
off_blob = float(torch.cdist(toy_samples.double(), blobs.means).min(dim=1).values.max())  # the farthest end
counts_ok = all(abs(int((landed == k).sum()) - n_toy * float(w)) < 2 * (n_toy * float(w) * (1 - float(w))) ** 0.5
                for k, w in enumerate(blobs.weights))
claims.check("every path ends inside a blob, and the counts differ from the expected ones by less than two "
             "standard deviations",
             off_blob < 4 * blobs.std and counts_ok,
             f"farthest end {off_blob:.2f} from its blob's centre, blob std {blobs.std}")

# %% [markdown]
# Each line is one sample's path from noise (grey dot) to its end (a dot in the colour of the nearest blob).
# The paths are smooth curves (DDIM on this model draws no noise after the start), and every one of them ends
# inside a blob, none between two blobs. The printed counts differ from the expected ones by less than two
# of their standard deviations (the number after +-): the exact model gives each blob its share of samples.
# The animation replays the run: blue dots are $x_t$, red crosses are the exact
# $\hat x_0 = \mathbb E[x_0 \mid x_t]$ at that step.

# %%
anim = plotting.toy_animation(blobs, trajectory, cosine, frames=colab.pick(20, 6))
data_mean = (blobs.weights[:, None] * blobs.means).sum(dim=0)  # [2] the weighted mean of the centres
first = float((trajectory.x0_hat[0].double() - data_mean).norm(dim=1).max())
last = float((trajectory.x_t[-1].double() - trajectory.x0_hat[-1].double()).norm(dim=1).max())
claims.check("in the first frame every red cross sits on the weighted mean of the centres; in the last, "
             "the dots have caught up with their crosses",
             first < 0.05 and last < 2 * blobs.std,
             f"crosses at most {first:.3f} from that mean at t = {trajectory.ts[0]}; dots at most {last:.2f} "
             f"from their crosses at t = {trajectory.ts[-1]}")
anim

# %% [markdown]
# In the first frame every red cross sits on the same point, the weighted mean of the three blob centres:
# from pure noise the best guess is the data mean, as the blurry mean digit of section 5 was. Step by step
# the crosses split into three groups, each on a blob, while the blue dots are still spread out; in the
# last frames the dots catch up with their crosses. (`anim.save("toy.gif")` writes the animation to a file.)

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_1", "locked": true, "schema_version": 3, "solution": false}
# ## Questions (look at the pictures)
#
# Answer each question in the cell below it, in a few sentences, with what you saw: a step $t$, a number, a row
# or a curve. Your answers are graded by hand (4 points, 1 per question).
#
# **Question 1 (1 point).** In the two noise grids, at which $t$ can you no longer tell which digit it was, for
# the linear and for the cosine schedule? How does that relate to the SNR = 1 line in the schedule plot?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_1", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** With the linear schedule the digits are still faintly readable at $t = 300$ and gone by
# $t = 500$; with the cosine schedule they survive to about $t = 700$ and are gone only near the end. The
# printed SNR < 1 starts at $t = 259$ (linear) and $t = 496$ (cosine): a digit stays readable a little past
# SNR = 1 and disappears once the noise is several times stronger than the signal (SNR around 0.1-0.3), so the
# cosine digit lasts about twice as long, exactly as its SNR curve crosses 1 about twice as late.
#
# **Rubric (1 point).** 1/2 point: a step for each schedule read from the grids (linear between 300 and 500,
# cosine between 500 and 999, cosine clearly later). 1/2 point: relates it to SNR = 1 (t = 259 vs 496, or the
# crossing seen in the plot): the digit fades out around and shortly after the SNR drops below 1.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_2", "locked": true, "schema_version": 3, "solution": false}
# **Question 2 (1 point).** The linear schedule's $\bar\alpha_t$ is almost zero for the last few hundred steps.
# What does that say about how the linear schedule spends its steps? Which schedule wastes fewer?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_2", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** From about $t = 600$ on, the linear $\bar\alpha_t$ is below 0.03: $x_t$ is pure noise, so
# the last ~40% of the steps all look the same and a network learns (and a sampler does) almost nothing there.
# The cosine schedule lets $\bar\alpha_t$ fall slowly at both ends (and almost linearly in the middle), so it
# spreads the steps over noise levels that still carry signal and wastes far fewer.
#
# **Rubric (1 point).** 1/2 point: the linear schedule spends many steps on (almost) pure noise, where nothing
# useful happens. 1/2 point: the cosine schedule wastes fewer, with a reason (slow fall at both ends / signal
# left until the end).
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_3", "locked": true, "schema_version": 3, "solution": false}
# **Question 3 (1 point).** Describe the best one-step guesses $\mathbb E[x_0 \mid x_t]$ as $t$ grows. At which
# $t$ do they stop depending on the digit? Compare the last row with the mean digit.

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_3", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** At small $t$ the guess is one sharp training digit (the printout says it averages about 1
# digit). As $t$ grows it averages more and more digits and becomes a blurry blend of similar digits; by about
# $t = 600$ (cosine) it no longer resembles the digit that was noised, and at $t = 999$ every guess is the same
# grey blob, identical to the data-set mean picture.
#
# **Rubric (1 point).** 1/2 point: sharp (one digit) to blurry average as t grows, with the number of digits
# averaged. 1/2 point: a t from the figure where the guess stops depending on the digit (anything from about 500
# to 999 if justified) and the t = 999 guesses equal the mean digit.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_4", "locked": true, "schema_version": 3, "solution": false}
# **Question 4 (1 point).** Why would you expect a network to learn the step from $t = 50$ more easily than from
# $t = 999$?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_4", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** At $t = 50$, $x_t$ still shows the digit: the posterior over clean digits is concentrated,
# so a slightly cleaner image is an almost deterministic, local function of $x_t$ (easy regression). At
# $t = 999$, $x_t$ carries almost no information about $x_0$: the best a one-step predictor can do is the blurry
# mean, and getting a real digit would need the whole, many-peaked distribution of digits at once.
#
# **Rubric (1 point).** 1/2 point: at t = 50 the target is nearly determined by x_t (concentrated posterior,
# small correction). 1/2 point: at t = 999 x_t says almost nothing about x_0, so the best one-step answer is the
# blurry mean.
# ### END SOLUTION
