# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 05 — Sampling: from noise to a digit, one step at a time
#
# A trained noise predictor $\hat\varepsilon_\theta(x_t, t, y)$ does not draw anything by itself. A *sampler*
# starts from pure noise $x_{T-1} \sim \mathcal N(0, I)$ and walks back to $x_0$, asking the network at every
# step which noise to remove. In this lab you write that step and the loop around it, then run your loop on a
# pretrained model to watch digits appear.
#
# **Learning objectives.** After this lab you can
# 1. write the ancestral sampling step of DDPM (Ho et al. 2020, Algorithm 2) and say what its two terms do;
# 2. write the sampling loop around it, and the schedule of a chain of fewer steps than training used
#    ("respacing");
# 3. explain why no noise is added on the last step, why the noise term uses a standard deviation, and what the
#    other choice of variance, $\sigma_t^2 = \beta_t$, does to the samples;
# 4. read a denoising trajectory: the noisy $x_t$ and the model's guess $\hat x_0$ along the way;
# 5. measure when, during sampling, a digit becomes recognisable, with a measure that a biased judge cannot fool.
#
# **Time budget.** Running all cells: about 2 minutes on a quiet laptop CPU (measured: 3.3 minutes on 2 CPU cores
# shared with other jobs, load about 10), about 1 minute on a Colab T4 (an estimate, not measured).
# Working through the lab: about 120 minutes.
#
# **How it is graded.** Six functions (3 + 3 + 2 + 1 + 1 + 2 = 12 points), each followed by a test cell (the tests
# you see, plus hidden ones with other inputs). The cells after them run *your* functions when they pass their
# checks, and `labkit`'s when they do not (a line says which), so a bug in your answer never breaks the rest of
# the lab.
# Run the cells from top to bottom.
# The questions at the end are answered in writing and graded by hand (4 points).

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
# __LABKIT_COLAB_INSTALL__ (labkit build writes labkit.colab.INSTALL_CELL here: the Colab install)
from labkit import colab
DEVICE = colab.setup()

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false}
import time

import torch
import matplotlib.pyplot as plt

from labkit import diffusion, plotting, samplers
from labkit.evaluation import classifier_accuracy, load_classifier, measures
from labkit.checks import claims
from labkit.checks import lab05_sampling as checks

torch.manual_seed(0)  # every lab starts from the same random numbers
FAST = colab.fast_mode()  # True in CI and while grading: expensive cells shrink

# %% [markdown]
# ## 1. One step back
#
# Going forward, each step adds a little noise: $q(x_t \mid x_{t-1}) = \mathcal N(\sqrt{\alpha_t}\,x_{t-1}, \beta_t I)$.
# Going back, the network's noise estimate $\hat\varepsilon = \hat\varepsilon_\theta(x_t, t, y)$ gives the
# mean of the previous step, and a little fresh noise is added (Ho et al. 2020, Algorithm 2, line 4):
#
# $$x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\hat\varepsilon\Big)
#   + \sigma_t z, \qquad z \sim \mathcal N(0, I).$$
#
# The paper allows two choices of $\sigma_t^2$. **This lab uses the posterior variance**
# (Ho et al. 2020, eq. 7)
#
# $$\sigma_t^2 = \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t ,
# \qquad \bar\alpha_{-1} = 1 ,$$
#
# the variance of $q(x_{t-1} \mid x_t, x_0)$; `labkit`'s sampler uses it too. (The other choice,
# $\sigma_t^2 = \beta_t$, is slightly larger; both give good samples.) Steps are numbered $t = 0, \dots, T-1$
# in code, so the *last* step is $t = 0$: there $\bar\alpha_{t-1} = \bar\alpha_{-1} = 1$, so $\sigma_0 = 0$ and
# **no noise is added**: the step returns its mean, the final image.
#
# ### Exercise 1 (3 points)
# Write `p_sample_step(x_t, t, eps_hat, betas, alpha_bars, z)`:
# * `x_t`, `eps_hat`, `z`: `[B, C, H, W]` (use the `z` you are given; do not draw new noise);
# * `t`: int64 `[B]`, one step per image, some of them may be 0; `betas`, `alpha_bars`: `[T]` (float64);
# * return $x_{t-1}$, `[B, C, H, W]`.
#
# Watch out for three classic bugs: the noise term is the **standard deviation** $\sigma_t$ times $z$, not the
# variance; $\bar\alpha_{t-1}$ is `alpha_bars[t - 1]`, except at $t = 0$ where it is 1 (in Python
# `alpha_bars[-1]` is the *last* element!); and nothing is added at $t = 0$. `torch.where(t > 0, a, b)` picks
# per image. As in lab 01, reshape per-image values to `[B, 1, 1, 1]`.

# %% nbgrader={"grade": false, "grade_id": "p_sample_step", "locked": false, "schema_version": 3, "solution": true}
def p_sample_step(x_t, t, eps_hat, betas, alpha_bars, z):
    """x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_hat) / sqrt(alpha_t) + sqrt(beta_tilde_t) * z."""
    ### BEGIN SOLUTION
    def per_image(values):  # [T] -> [B, 1, 1, 1] at each image's t
        return values.to(x_t.device)[t].to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))

    beta, ab = per_image(betas), per_image(alpha_bars)
    ab_all = alpha_bars.to(x_t.device)
    ab_prev = torch.where(t > 0, ab_all[(t - 1).clamp(min=0)], torch.ones_like(ab_all[t]))  # alpha_bar_{-1} = 1
    ab_prev = ab_prev.to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
    mean = (x_t - beta / (1 - ab).sqrt() * eps_hat) / (1 - beta).sqrt()
    var = (1 - ab_prev) / (1 - ab) * beta  # beta_tilde_t, exactly 0 at t = 0
    return mean + var.sqrt() * z
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_p_sample_step", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_p_sample_step(p_sample_step)
### BEGIN HIDDEN TESTS
checks.check_p_sample_step(p_sample_step, seed=7, sizes=((5, 1, 28, 28), (3, 3, 4, 4)), T=1000)
checks.check_p_sample_step(p_sample_step, seed=8, sizes=((3, 1, 6, 6),), T=3)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. The sampling loop
#
# Algorithm 2 repeats your step from pure noise down to the clean image. Training used $T = 1000$ steps; a
# sampler may visit fewer, a *chain* of $S$ of them: step $k = S-1, \dots, 0$ of the chain is the time step
# `timesteps[k]` of the training schedule. Between two visited steps the chain adds the noise the skipped steps
# would have added together: its own `betas` and `alpha_bars`, of length $S$ (a "respaced" schedule, Nichol &
# Dhariwal 2021, section 4: $\bar\alpha$ at the visited steps, $\beta_k = 1 - \bar\alpha_k / \bar\alpha_{k-1}$).
# Your step does not change at all: it only sees a shorter schedule. With every step visited
# (`timesteps = torch.arange(T)`), the chain is the schedule itself.
#
# ### Exercise 2 (3 points)
# Write `sample_loop(model, x_T, y, timesteps, betas, alpha_bars, noises)`, which returns $x_0$:
#
# ```
# x <- x_T
# for k = S-1, ..., 1, 0:
#     eps_hat <- model(x, t, y)          with t = timesteps[k], one per image: int64 [B]
#     x <- p_sample_step(x, k, eps_hat, betas, alpha_bars, noises[k])      k also as an int64 [B] tensor
# ```
#
# * `model(x, t, y)`: the noise predictor; `x_T`: `[B, C, H, W]`; `y`: int64 `[B]`;
# * `timesteps`: int64 `[S]`, ascending; `betas`, `alpha_bars`: `[S]` (float64), the chain's schedule;
# * `noises`: `[S, B, C, H, W]`; the $z$ of step $k$ is `noises[k]` (the check fixes the randomness this way;
#   `noises[0]` goes unused, since $\sigma_0 = 0$).
#
# Call **your** `p_sample_step`. Two indices, two jobs: the model needs the real time step `timesteps[k]`, your
# step needs the chain's $k$ (it indexes `betas` and `alpha_bars`). `torch.full((B,), k)` and `t.expand(B)` make
# the `[B]` tensors. Your step computes in float64 if you let it (the schedule is float64) while the model's
# weights are float32: give the model `x` in `x_T`'s dtype. The check runs your loop on a small test model that
# says which of its inputs is wrong.

# %% nbgrader={"grade": false, "grade_id": "sample_loop", "locked": false, "schema_version": 3, "solution": true}
def sample_loop(model, x_T, y, timesteps, betas, alpha_bars, noises):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) down the chain k = S-1, ..., 0 -> x_0 [B, C, H, W]."""
    ### BEGIN SOLUTION
    x = x_T
    B = x.shape[0]
    for k in range(len(timesteps) - 1, -1, -1):
        t = timesteps[k].expand(B)  # [B]: the model's time step
        k_b = torch.full((B,), k, dtype=torch.long, device=x.device)  # [B]: the chain's step
        eps_hat = model(x, t, y)
        x = p_sample_step(x, k_b, eps_hat, betas, alpha_bars, noises[k]).to(x_T.dtype)
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_sample_loop", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_sample_loop(sample_loop)
### BEGIN HIDDEN TESTS
checks.check_sample_loop(sample_loop, seed=5, sizes=((4, 1, 8, 8),), T=60, steps=(None, 2, 11))
checks.check_sample_loop(sample_loop, seed=6, sizes=((1, 3, 4, 4), (5, 1, 6, 6)), T=25, steps=(7,))
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 3 (2 points)
# Write `respaced(schedule, grid)`, the schedule of a chain that visits only the steps of `grid`:
# * `schedule`: a `labkit` `Schedule`; `schedule.alpha_bars` and `schedule.betas` are `[T]` float64;
# * `grid`: int64 `[S]`, the visited time steps in the order sampling visits them: **descending**, ending at 0
#   (what `samplers.timestep_grid` returns);
# * return `(betas, alpha_bars)`, each `[S]` float64, in **ascending** order of $t$: entry $k$ belongs to the
#   $k$-th smallest visited step $t_k$ (the `timesteps[k]` of exercise 2), and
#
# $$\bar\alpha^{\text{chain}}_k = \bar\alpha_{t_k}, \qquad
#   \beta^{\text{chain}}_k = 1 - \frac{\bar\alpha^{\text{chain}}_k}{\bar\alpha^{\text{chain}}_{k-1}}, \qquad
#   \bar\alpha^{\text{chain}}_{-1} = 1 .$$
#
# The schedule's own $\beta_t$ is the noise of *one* step; a step of the chain must add the noise of all the
# steps it skips, and since $\bar\alpha$ is a product, that is a ratio of two $\bar\alpha$'s. Careful with
# $k = 0$, as in exercise 1. With every step visited you get the schedule itself back.

# %% nbgrader={"grade": false, "grade_id": "respaced", "locked": false, "schema_version": 3, "solution": true}
def respaced(schedule, grid):
    """(betas [S], alpha_bars [S]) of the chain visiting grid's steps (Nichol & Dhariwal 2021, section 4)."""
    ### BEGIN SOLUTION
    ascending = grid.flip(0)  # [S]: t_0 < t_1 < ... < t_{S-1}
    alpha_bars = schedule.alpha_bars[ascending]  # [S]: alpha_bar at the visited steps
    previous = torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])  # [S]: alpha_bar_{k-1}, 1 before the first
    betas = 1 - alpha_bars / previous  # [S]: the noise added between two visited steps
    return betas, alpha_bars
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_respaced", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_respaced(respaced)
### BEGIN HIDDEN TESTS
checks.check_respaced(respaced, seed=4, cases=(("cosine", 1000, 100), ("linear", 100, 2), ("linear", 25, None)))
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Ten digits from a trained model
#
# Your loop, on your lab 04 model when its checkpoint is in the runs folder (`runs/lab04-cpu/loop.pt`; in Colab
# only if your Drive is already mounted), else on the pretrained checkpoint that ships with `labkit` (trained as
# in lab 04); the first line below says which. A chain of `STEPS`
# steps spread over the 1000 (`samplers.timestep_grid`, the spacing `labkit`'s samplers use). `draw` makes the
# starting noise and every step's noise from one seed.

# %%
model, schedule, meta = checks.trained_model(DEVICE, runs=colab.runs_dir(mount=False))  # yours from lab 04, if here
PRETRAINED = meta["pretrained"]
loop = checks.yours_or_labkit(checks.check_sample_loop, sample_loop, samplers.sample_loop, "sample_loop")
respace = checks.yours_or_labkit(checks.check_respaced, respaced, samplers.respaced, "respaced")
STEPS = colab.pick(250 if DEVICE.type == "cuda" else 100, 8)  # steps in the chain (T = 1000 on a GPU is fine too)
grid = samplers.timestep_grid(schedule, STEPS)  # [STEPS] descending, ends at t = 0
timesteps = grid.flip(0).to(DEVICE)  # [STEPS] ascending: the model's t at chain step k
betas, alpha_bars = respace(schedule, grid)  # [STEPS] each: the chain's schedule
print(f"{schedule}; sampling with a chain of {STEPS} steps, t = {timesteps[-1].item()} ... {timesteps[0].item()}")
print(f"the chain's betas run from {betas.min():.2g} to {betas.max():.2g}; "
      f"the schedule's one-step betas from {schedule.betas.min():.2g} to {schedule.betas.max():.2g}")


def draw(y, seed, model=model):
    """x_0 [B, 1, 28, 28] for labels y, from your loop (or labkit's), all noise drawn from one seed."""
    g = torch.Generator(DEVICE).manual_seed(seed)
    x_T = torch.randn((len(y), 1, 28, 28), generator=g, device=DEVICE)
    noises = torch.randn((STEPS, len(y), 1, 28, 28), generator=g, device=DEVICE)
    with torch.no_grad():
        return loop(model, x_T, y, timesteps, betas, alpha_bars, noises)


per_digit = colab.pick(4, 1)
y = torch.arange(10, device=DEVICE).repeat(per_digit)  # [10 * per_digit]: 0..9, 0..9, ...
start = time.perf_counter()
x0 = draw(y, seed=0)
print(f"{len(y)} digits in {time.perf_counter() - start:.1f} s on {DEVICE}")
fig = plotting.image_grid(x0.clamp(-1, 1), ncols=10, title="one column per digit 0..9 (DDPM ancestral sampling)")

# %% [markdown]
# ## 3b. Which variance?
#
# Ho et al. (2020, section 3.2) tried two variances for the noise $\sigma_t z$ of the reverse step, and found
# that both gave similar samples with $T = 1000$ steps:
#
# * $\sigma_t^2 = \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$ (eq. 7, your step's): the
#   right variance if all the data were one fixed image $x_0$; 0 at $t = 0$;
# * $\sigma_t^2 = \beta_t$: the right one if the data were pure noise, $x_0 \sim \mathcal N(0, I)$; it is
#   the larger of the two, $\tilde\beta_t \le \beta_t$.
#
# They differ most at the last steps of sampling, where $\bar\alpha_{t-1}$ is close to 1. Does the choice matter
# on a chain of 100 steps? The cells below measure it.
#
# ### Exercise 4 (1 point)
# Write `sigma_squared(betas, alpha_bars, kind)`: `betas`, `alpha_bars` `[T]` (float64) -> `[T]`, the variance
# $\sigma_t^2$ of every step, $\tilde\beta_t$ when `kind == "beta_tilde"` and $\beta_t$ when `kind == "beta"`
# (a new tensor, not `betas` itself). The same three traps as in exercise 1 wait at $t = 0$.

# %% nbgrader={"grade": false, "grade_id": "sigma_squared", "locked": false, "schema_version": 3, "solution": true}
def sigma_squared(betas, alpha_bars, kind):
    """sigma_t^2 [T]: beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t, or beta_t."""
    ### BEGIN SOLUTION
    if kind == "beta":
        return betas.clone()
    previous = torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])  # [T]: alpha_bar_{t-1}, 1 at t = 0
    return (1 - previous) / (1 - alpha_bars) * betas
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_sigma_squared", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_sigma_squared(sigma_squared)
### BEGIN HIDDEN TESTS
checks.check_sigma_squared(sigma_squared, seed=2, Ts=(1000, 2), kinds=("beta", "beta_tilde"))
### END HIDDEN TESTS

# %% [markdown]
# To compare the two, a number for how speckled an image is: its **grain**, the mean absolute difference between
# neighbouring pixels (the anisotropic *total variation* of Rudin, Osher & Fatemi 1992, per pair of pixels):
#
# $$\mathrm{TV}(x) = \tfrac12\Big(\operatorname{mean}_{c,i,j} |x_{c,i+1,j} - x_{c,i,j}|
#   + \operatorname{mean}_{c,i,j} |x_{c,i,j+1} - x_{c,i,j}|\Big).$$
#
# A flat image has 0; a clean digit has large differences only along its strokes' edges; grain adds them
# everywhere.
#
# ### Exercise 5 (1 point)
# Write `total_variation(images)`: `[B, C, H, W]` -> `[B]`, one value per image (slices such as
# `x[..., 1:, :]` and `x[..., :-1, :]` pair each pixel with its neighbour below).

# %% nbgrader={"grade": false, "grade_id": "total_variation", "locked": false, "schema_version": 3, "solution": true}
def total_variation(images):
    """[B, C, H, W] -> [B]: the mean |difference| of vertical and of horizontal neighbours, averaged."""
    ### BEGIN SOLUTION
    down = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(dim=1)  # [B] vertical pairs
    right = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(dim=1)  # [B] horizontal pairs
    return (down + right) / 2
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_total_variation", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_total_variation(total_variation)
### BEGIN HIDDEN TESTS
checks.check_total_variation(total_variation, seed=3, sizes=((10, 1, 28, 28), (1, 2, 3, 9)))
### END HIDDEN TESTS

# %% [markdown]
# Both choices through **your** loop, from the same noise: your step adds $\sqrt{\tilde\beta_k}\,z$, so handing
# it $z \sqrt{\beta_k / \tilde\beta_k}$ instead makes it add $\sqrt{\beta_k}\,z$ (at $k = 0$ both add nothing,
# as in Algorithm 2). The chain is the one of section 3; the grain is your `total_variation`, averaged over
# the images.

# %%
variance = checks.yours_or_labkit(checks.check_sigma_squared, sigma_squared, samplers.sigma_squared, "sigma_squared")
small, large = variance(betas, alpha_bars, "beta_tilde"), variance(betas, alpha_bars, "beta")  # [STEPS] each
boost = torch.where(small > 0, (large / small.clamp(min=1e-300)).sqrt(), torch.ones_like(small))  # [STEPS]
for k in sorted({1, STEPS // 2, STEPS - 1}):
    print(f"chain step k = {k:3d} (t = {int(timesteps[k])}): sigma = {large[k].sqrt():.4f} with beta, "
          f"{small[k].sqrt():.4f} with beta_tilde ({float(boost[k]):.1f}x)")
y_var = torch.arange(10, device=DEVICE).repeat(colab.pick(5, 1))  # [10 * 5]
g = torch.Generator(DEVICE).manual_seed(3)
x_T = torch.randn((len(y_var), 1, 28, 28), generator=g, device=DEVICE)
noises = torch.randn((STEPS, len(y_var), 1, 28, 28), generator=g, device=DEVICE)
with torch.no_grad():
    x_small = loop(model, x_T, y_var, timesteps, betas, alpha_bars, noises)
    x_large = loop(model, x_T, y_var, timesteps, betas, alpha_bars, noises * boost.view(-1, 1, 1, 1, 1).to(noises))


tv = checks.yours_or_labkit(checks.check_total_variation, total_variation, measures.total_variation, "total_variation")


def grain(x):  # [B, 1, 28, 28] -> the mean grain over the batch
    return float(tv(x.float().clamp(-1, 1).cpu()).mean())


clf = load_classifier(DEVICE)
for label, x in (("beta_tilde", x_small), ("beta", x_large)):
    judged = classifier_accuracy((x.float().clamp(-1, 1) + 1) / 2, y_var, clf)
    print(f"sigma^2 = {label:10s}: grain {grain(x):.3f}, classifier accuracy {judged['accuracy']:.0%} "
          f"of {len(y_var)}")
fig = plotting.compare_rows({"beta_tilde": x_small[:10].cpu().clamp(-1, 1), "beta": x_large[:10].cpu().clamp(-1, 1)},
                            col_titles=[str(d) for d in range(10)], title="the same noise, two variances")
claims.check("the two sigmas differ by less than a factor 2 at every step of this chain", float(boost.max()) < 2,
             f"largest ratio {float(boost.max()):.2f}, at chain step k = {int(boost.argmax())}")
claims.check("from the same noise the two variances give digits of nearly the same grain (within 5%)",
             abs(grain(x_large) - grain(x_small)) < 0.05 * grain(x_small),
             f"grain {grain(x_large):.3f} with beta against {grain(x_small):.3f} with beta_tilde")

# %% [markdown]
# On this chain the two $\sigma$'s differ by less than a factor 2, most at the last steps, where $\sigma$ is below
# 0.01 anyway, and the same noise gives nearly the same digits: as Ho et al. found for $T = 1000$, the choice hardly
# matters here. Nichol & Dhariwal (2021, section 3.1) argue it matters more with fewer steps, and let the network
# learn $\sigma_t$ between the two instead. Do your two rows of digits differ anywhere you can see?

# %% [markdown]
# ## 4. The denoising trajectory
#
# To see inside the loop without changing it, wrap the model: `samplers.Watched(model, watch)` is a model that
# also calls `watch(t, x_t, eps_hat)` every time the loop asks it. From what it sees we compute the model's current
# guess of the clean digit, $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$
# (`diffusion.predict_x0_from_eps`), and keep a few steps for one sample of each digit, drawn as strips, noise on the left.

# %%
frames = []  # (t, x_t, x0_hat) on the CPU, one per step


def keep(t, x_t, eps_hat):
    x0_hat = diffusion.predict_x0_from_eps(x_t, t, eps_hat, schedule)
    frames.append((int(t[0]), x_t.float().cpu(), x0_hat.float().clamp(-1, 1).cpu()))


y10 = torch.arange(10, device=DEVICE)
draw(y10, seed=1, model=samplers.Watched(model, keep))
show = sorted(set(torch.linspace(0, len(frames) - 1, min(8, len(frames))).round().long().tolist()))
cols = [f"t={frames[i][0]}" for i in show]
fig = plotting.compare_rows({f"{d}: x_t": torch.stack([frames[i][1][d] for i in show]) for d in range(0, 10, 2)},
                            col_titles=cols, title="the noisy sample x_t on its way to a digit")
fig = plotting.compare_rows({f"{d}: x0_hat": torch.stack([frames[i][2][d] for i in show]) for d in range(0, 10, 2)},
                            col_titles=cols, title="the model's guess of the clean digit at the same steps")

# %% [markdown]
# The same run as an animation (your loop's steps, all ten digits): top row $x_t$, bottom row $\hat x_0$. It plays
# in JupyterLab, Colab and the feedback page (an animated PNG); a viewer that cannot animate shows its first frame.

# %%
ts_run = [f[0] for f in frames]
anim = plotting.denoising_animation(torch.stack([f[1] for f in frames]), torch.stack([f[2] for f in frames]), ts_run,
                                    frames=colab.pick(25, 4))
anim

# %% [markdown]
# Look at the first columns: are the model's earliest guesses $\hat x_0$ noise, a blurry average digit (compare
# the "ideal denoiser" of lab 01), or already a digit? Then follow a strip to the right: where does it stop
# changing identity? Question 1 asks for what you see. The classifier below gives a number for "when".
#
# ## 5. When does the digit appear?
#
# Let the shipped MNIST classifier judge every $\hat x_0$ along the way, again as your loop passes it: its
# probability for the *intended* digit, as a function of the step, averaged over many samples of each digit. For
# comparison it also judges the noisy $x_t$ itself at every step (question 2).

# %%
n_each = colab.pick(20 if DEVICE.type == "cuda" else 10, 2)  # samples per digit
y_many = torch.arange(10, device=DEVICE).repeat_interleave(n_each)  # [10 * n_each]
conf_by_step, conf_xt_by_step, t_by_step, first_calls, probs_by_step = [], [], [], [], []


def judge(t, x_t, eps_hat):
    x0_hat = diffusion.predict_x0_from_eps(x_t, t, eps_hat, schedule)
    images = (x0_hat.float().clamp(-1, 1) + 1) / 2  # [-1, 1] -> [0, 1], what the classifier reads
    judged = classifier_accuracy(images, y_many, clf)
    conf_by_step.append(judged["intended_prob"])  # [N]
    probs_by_step.append(judged["probs"].cpu())  # [N, 10]: all ten probabilities, for the margin below
    conf_xt_by_step.append(classifier_accuracy((x_t.float().clamp(-1, 1) + 1) / 2, y_many, clf)["intended_prob"])
    if not t_by_step:
        first_calls.append(judged["predicted"])  # [N]: what it calls the very first guesses
    t_by_step.append(int(t[0]))


start = time.perf_counter()
draw(y_many, seed=2, model=samplers.Watched(model, judge))
print(f"{len(y_many)} trajectories in {time.perf_counter() - start:.1f} s")
conf = torch.stack(conf_by_step)  # [steps, N]
per_digit_conf = conf.view(len(t_by_step), 10, n_each).mean(dim=2)  # [steps, 10]
fig = plotting.plot_curves(t_by_step, {str(d): per_digit_conf[:, d] for d in range(10)}, marker="",
                           xlabel="step t (sampling runs right to left)", ylabel="classifier p(intended digit) on x0_hat",
                           title="when does each digit become recognisable?")
fig.axes[0].legend(ncol=5, frameon=False, fontsize=7, title="digit", loc="lower right")  # where the curves are not
fig.axes[0].invert_xaxis()  # last: a cell that ends in .legend(...) prints <Legend at 0x...>

# %% [markdown]
# **The judge has a bias.** Before reading a curve as "digit $d$ appears at step $t$", ask what the classifier
# says when there is no digit yet. The **control** below is what it calls the very first guesses, made from
# pure noise: if it calls most of them one digit, that digit's curve starts high for a reason that has nothing
# to do with the model.
#
# %%
calls = torch.bincount(first_calls[0].cpu(), minlength=10).float() / len(y_many)  # [10] share of first guesses
print("control, the classifier on the very first guesses (pure noise through the model):")
print("  " + "   ".join(f"{d}: {float(calls[d]):.0%}" for d in range(10)))

# %% [markdown]
# A single number per digit: the step **from which on** the mean confidence *stays* at or above 0.5. The
# *first* step at which it reaches 0.5 would also count a lucky early guess, or the judge's bias above: a digit
# the classifier reads into noise would "appear" at the very first step. Lab 09 asks for the same measure for
# every trajectory at once (`recognisable_from`); here it is one curve at a time.
#
# ### Exercise 6 (2 points)
# Write `t_from(curve, ts, threshold)`:
# * `curve`: `[steps]` float, one confidence per sampling step, **row 0 the first step** (pure noise), the last
#   row the clean image; `ts`: int64 `[steps]`, the time step $t$ of each row (descending, not evenly spaced);
# * return the $t$ (an `int`) of the first row of the final run of rows with `curve >= threshold` (reaching
#   the threshold counts), that is the $t$ from which the curve stays at or above it to the end; and **-1**
#   when even the last value is below it (never recognisable).
#
# Walking back from the last row is the easiest way: stop at the first row (from the end) that is below.

# %% nbgrader={"grade": false, "grade_id": "t_from", "locked": false, "schema_version": 3, "solution": true}
def t_from(curve, ts, threshold):
    """The t from which curve [steps] stays >= threshold to the end; -1 if its last value is below."""
    ### BEGIN SOLUTION
    k = len(curve)  # will be the first row of the final run at or above the threshold
    while k > 0 and curve[k - 1] >= threshold:
        k -= 1
    if k == len(curve):
        return -1  # even the last value is below: never recognisable
    return int(ts[k])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_t_from", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_t_from(t_from)
### BEGIN HIDDEN TESTS
checks.check_t_from(t_from, seed=3, steps=40, threshold=0.75)
checks.check_t_from(t_from, seed=5, steps=5, threshold=0.25)
### END HIDDEN TESTS

# %% [markdown]
# Your measure on the curves above (larger $t$ = earlier in sampling), beside what the *first crossing* would
# have said:

# %%
stays_from = checks.yours_or_labkit(checks.check_t_from, t_from, measures.t_from, "t_from")
ts_judged = torch.tensor(t_by_step)  # [steps] the t of each row of the curves
appear = {d: int(stays_from(per_digit_conf[:, d].cpu(), ts_judged, 0.5)) for d in range(10)}  # -1: never
order = sorted(appear, key=lambda d: -appear[d])
for d in order:
    when = f"t = {appear[d]}" if appear[d] >= 0 else "never (in this run)"
    crossing = next((t for t, p in zip(t_by_step, per_digit_conf[:, d].tolist()) if p >= 0.5), None)
    bias = "   <- above 0.5 on the first guesses already: the judge's bias" if float(per_digit_conf[0, d]) >= 0.5 else ""
    print(f"digit {d}: stays recognisable (mean p >= 0.5) from {when} (first crossing: t = {crossing}); "
          f"final p = {float(per_digit_conf[-1, d]):.2f}{bias}")

x0_from = int(stays_from(per_digit_conf.mean(dim=1).cpu(), ts_judged, 0.5))  # all digits together, on x0_hat
xt_from = int(stays_from(torch.stack(conf_xt_by_step).mean(dim=1).cpu(), ts_judged, 0.5))  # on the noisy x_t
print(f"\nall digits together: x0_hat stays recognisable from t = {x0_from}, "
      f"the noisy x_t itself from t = {xt_from if xt_from >= 0 else 'never'}")
claims.check("the model's guess x0_hat is recognisable long before x_t itself (at least 250 of the 1000 steps)",
             x0_from >= 0 and (xt_from < 0 or x0_from - xt_from >= 250),
             f"from t = {x0_from} against t = {xt_from}")

# %% [markdown]
# **A measure with the control built in.** The control line says how often the judge calls noise each digit,
# but the table above still cannot date a digit the judge is fond of. Subtract the bias, sample by sample: how
# much more does the judge believe "this is a $y_n$" of the sample meant to be a $y_n$ than of the samples meant
# to be *other* digits, at the same step?
#
# $$\text{margin}_n = p(y_n \mid x_n) - \frac{1}{\#\{m : y_m \ne y_n\}} \sum_{m:\, y_m \ne y_n} p(y_n \mid x_m).$$
#
# If the judge calls every early guess an 8, the 8s and the other digits all get a high $p(8 \mid \cdot)$ and
# the 8s' margin stays near 0 until they really differ from the rest. (Lab 09 has you write this margin,
# `above_control`; here labkit's `measures.above_control` computes it.)
#
# Below: the margin at every step, averaged per digit, and the step from which it stays at or above 0.5 (your
# `t_from` again): a digit now counts as recognisable when the judge is at least 0.5 surer of it on its own
# samples than on the others.

# %%
margin_of = measures.above_control  # [N, K], [N] -> [N] (lab 09: your own)
labels_cpu = y_many.cpu()
margins = torch.stack([margin_of(p, labels_cpu).float() for p in probs_by_step])  # [steps, N]
per_digit_margin = margins.view(len(t_by_step), 10, n_each).mean(dim=2)  # [steps, 10]
fig = plotting.plot_curves(t_by_step, {str(d): per_digit_margin[:, d] for d in range(10)}, marker="",
                           xlabel="step t (sampling runs right to left)", ylabel="margin over the control",
                           title="the same curves, the judge's bias subtracted")
fig.axes[0].legend(ncol=5, frameon=False, fontsize=7, title="digit", loc="lower right")
fig.axes[0].invert_xaxis()
margin_from = {d: int(stays_from(per_digit_margin[:, d], ts_judged, 0.5)) for d in range(10)}
for d in sorted(margin_from, key=lambda d: -margin_from[d]):
    when = f"t = {margin_from[d]}" if margin_from[d] >= 0 else "never (in this run)"
    print(f"digit {d}: margin stays >= 0.5 from {when} (without the control: "
          f"{appear[d] if appear[d] >= 0 else 'never'}); first-step margin {float(per_digit_margin[0, d]):+.2f}")
start_margins = per_digit_margin[0]
claims.check("with the control subtracted no digit starts recognisable: every digit's margin at the first step "
             "is below 0.5", bool((start_margins < 0.5).all()),
             f"largest first-step margin {float(start_margins.max()):+.2f}, digit {int(start_margins.argmax())}")
if not PRETRAINED:
    print("\nThese numbers come from the stand-in model (no shipped checkpoint here): they mean nothing.")
elif FAST:
    print(f"\nFast mode: only {n_each} samples per digit and {STEPS} steps; run the full lab for reliable curves.")

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_1", "locked": true, "schema_version": 3, "solution": false}
# ## Questions (look at the pictures)
#
# Answer each question in the cell below it, in a few sentences, with what you saw: a step $t$, a number, a row
# or a curve. Your answers are graded by hand (4 points, 1 per question).
#
# **Question 1 (1 point).** In the $\hat x_0$ strips, describe the first guesses. Which features appear first:
# the overall blob, the stroke thickness, the digit's identity? At which $t$ does each strip stop changing
# identity?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_1", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** The very first guess (t = 994) is black-and-white noise: there $\sqrt{\bar\alpha_t} \approx 0.007$,
# so dividing by it blows the model's small errors up, and the picture shows them clamped to [-1, 1]. A few steps
# later (t = 980) it is still speckled, with a brighter blob in the middle where digits have ink (lab 01's mean
# digit under the noise). Next a blurry overall shape and position appear (t = 925), then the identity, and last
# the stroke thickness and sharp edges. Most strips stop changing
# identity early in sampling, around $t$ = 950-700 with the shipped model (the later steps only sharpen); the
# exact $t$ differs per digit, and a strip can still change late (in one run the 8 turned into a 6-like shape
# between t = 713 and 266).
#
# **Rubric (1 point).** 1/2 point: noise or a blob first, identity next, fine detail (thickness, edges) last. 1/2 point: a
# t per strip (or a range) read from the student's own strips.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_2", "locked": true, "schema_version": 3, "solution": false}
# **Question 2 (1 point).** Compare the $x_t$ strip with the $\hat x_0$ strip of the same digit: at the step
# where $\hat x_0$ is already clear, how does $x_t$ look? Why can the model be confident long before $x_t$ looks
# like a digit?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_2", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Where $\hat x_0$ is already a clear digit, $x_t$ still looks like pure noise (the signal is
# scaled by $\sqrt{\bar\alpha_t}$, well under the noise): in the strips the 0, 2, 4 and 6 are clear in $\hat x_0$
# at t = 713 while their $x_t$ is noise; the classifier agrees (all digits together, $\hat x_0$ stays
# recognisable from t = 877, $x_t$ itself only from t = 133 in a normal-mode run on 2 CPU cores). The model was trained to find that faint signal:
# summed over hundreds of pixels a weak coarse shape is detectable even when each pixel is mostly noise, and the
# class label plus what it learned about digits fill in the rest.
#
# **Rubric (1 point).** 1/2 point: x_t still looks like noise. 1/2 point: a reason (coarse signal detectable
# over many pixels; the label and the learned prior of digits).
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_3", "locked": true, "schema_version": 3, "solution": false}
# **Question 3 (1 point).** From the plots and the two tables: which digits commit first, and which last? For a
# digit the control line flags, use the margin over the control. Do digits with a distinctive outline (a ring, one stroke) commit
# before digits that share strokes with others (3, 5, 8; 4, 7, 9)? Suggest a reason from the shapes. Do the
# curves rise gradually or suddenly?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_3", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** In the shipped-model run (10 per digit, a chain of 100 steps, 2 CPU cores), 0, 7 and 1 stay
# above 0.5 first (t about 920-890), then 2 and 4 (865, 836), and 3, 6, 9 and 5 last (t about 820-780). 8's
# number in the first table means nothing: the control shows the classifier calls 100% of the very first guesses
# an 8, so its curve starts high before any digit. With the control subtracted, 8's margin stays above 0.5 from
# t = 889, with 1 and 7 (0 from 909): 8 commits early, not first. Digits with
# a distinctive coarse outline (a ring, one stroke) are settled by the coarse structure that appears first;
# digits that share parts with others (3/5/8, 4/9/7) need finer detail, which appears later. The curves rise
# over a short range of steps: a fairly sudden commitment after a flat start.
#
# **Rubric (1 point).** 1/2 point: first and last digits read from the student's own plots and tables, the digit
# the control flags (8 here) placed by its margin, not by the first table. 1/2 point: a shape-based reason and gradual vs sudden.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_4", "locked": true, "schema_version": 3, "solution": false}
# **Question 4 (1 point).** Your step adds noise $\sigma_t z$ at every step except the last. What would you
# expect to see if it also added noise at $t = 0$? And if it used the variance $\tilde\beta_t$ where $\sigma_t$
# belongs?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_4", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Noise at $t = 0$ stays in the final image, since no later step removes it: grainy, speckled
# digits (and with the `alpha_bars[-1]` bug $\sigma_0$ is large: almost pure grain). Using $\tilde\beta_t$
# instead of $\sigma_t = \sqrt{\tilde\beta_t}$ adds far too little noise (e.g. 0.0001 instead of 0.01): the
# sampler becomes nearly deterministic and under-dispersed, giving over-smooth, blurry, too similar digits.
#
# **Rubric (1 point).** 1/2 point: noise at t = 0 remains visible as grain. 1/2 point: variance instead of std
# gives too little noise, so smooth / blurry / less varied samples.
# ### END SOLUTION
