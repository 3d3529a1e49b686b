# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 10 — Flow matching: straight paths from noise to digits
#
# Diffusion models are slow because their paths from noise to data are curved: a sampler that takes big steps
# along a curve cuts the corners. *Flow matching* (Lipman et al. 2023; Liu et al. 2023, "rectified flow") trains
# the same network on a different target: the velocity of a **straight line** from a data point to its noise.
# Sampling then follows that velocity field with an ordinary ODE solver, and few, large steps go a long way.
# In this lab you write the loss, two solvers and guidance, watch the paths in 2D, straighten them by *reflow*
# until one step is enough, train a flow model on MNIST with your loss and your U-Net, and compare it with the
# diffusion samplers at 1 to 16 network evaluations.
#
# **Learning objectives.** After this lab you can
# 1. write the flow-matching loss for the linear interpolant $x_t = (1-t)\,x_0 + t\,\varepsilon$ and say why its
#    target $\varepsilon - x_0$ does not depend on $t$;
# 2. write Euler's and Heun's methods over a time grid, count their network evaluations, and place the steps
#    with a shifted grid;
# 3. apply classifier-free guidance to velocities, and explain why it is the same formula as for noises;
# 4. compare a flow's straight training lines with the paths its sampler and the diffusion samplers take, and
#    their quality per network evaluation on one judge;
# 5. couple each noise with the sample a trained flow takes it to, retrain on those pairs (reflow), and measure
#    how straight a flow's paths are.
#
# **Time budget.** Running all cells: measured 11 minutes on 2 CPU cores shared with other jobs (load about 10;
# the 400 MNIST training steps took 7 of them, at 60 images/s; the reflow on the 2D toy, 2000 steps, 17 s); an
# earlier run at load 13 took 20 minutes (24 images/s). On 2 idle cores the training takes about a minute (at the
# 505 images/s lab 04 measured there). Not measured on a GPU yet (3000 steps of 256 there).
# Working through the lab: about 120 minutes.
#
# **How it is graded.** Nine functions (3 + 2 + 3 + 3 + 2 + 2 + 2 + 3 + 3 = 23 points), each followed by a test
# cell (the tests you see, plus hidden ones with other inputs). The cells after them run *your* functions when they
# pass their checks, and `labkit`'s when they do not (a line says which), so a bug in one answer never breaks the
# rest of the lab.
# Run the cells from top to bottom. The questions at the end are answered in writing and graded by hand (5 points).

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
# __LABKIT_COLAB_INSTALL__ (labkit build writes labkit.colab.INSTALL_CELL here: the Colab install)
from labkit import colab
DEVICE = colab.setup()

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false}
import copy
import math
import time

import torch
import torch.nn.functional as F
import matplotlib.pyplot as plt

from labkit import flow, plotting, recipes, samplers, schedules, toy2d, training
from labkit.checks import claims
from labkit.checks import lab10_flow as checks

torch.manual_seed(0)  # every lab starts from the same random numbers
FAST = colab.fast_mode()  # True in CI and while grading: expensive cells shrink
ON_GPU = DEVICE.type == "cuda"

# %% [markdown]
# ## 1. The straight line and its velocity
#
# Take a data point $x_0$ and a noise sample $\varepsilon \sim \mathcal N(0, I)$ and join them by a straight line,
# with time $t \in [0, 1]$: data at $t = 0$, noise at $t = 1$ (as in diffusion, where large $t$ is noisy):
#
# $$x_t = (1 - t)\,x_0 + t\,\varepsilon, \qquad \frac{d x_t}{dt} = \varepsilon - x_0 .$$
#
# The velocity along the line is the same at every $t$. A network $v_\theta(x_t, t, y)$ cannot know which
# $(x_0, \varepsilon)$ produced the $x_t$ it sees, so regressing on that target teaches it the *average* velocity
# $v^*(x, t) = \mathbb E[\varepsilon - x_0 \mid x_t = x]$ (Lipman et al. 2023, eqs. 8-9; Liu et al. 2023, eq. 1).
# The **flow-matching loss** is
#
# $$\mathcal L = \mathbb E_{t \sim U[0,1],\, x_0,\, \varepsilon}\, \big\lVert v_\theta(x_t, t, y) - (\varepsilon - x_0) \big\rVert^2 .$$
#
# **Conventions differ.** Lipman et al. and Liu et al. put the *noise* at $t = 0$ and the data at $t = 1$
# ($x_t = t\,x_1 + (1 - t)\,x_0$ with $x_0$ the noise, target data minus noise). This lab uses the reversed time,
# data at 0 (the convention of Stable Diffusion 3, Esser et al. 2024): same lines, the velocity's sign flipped.
#
# **The network's time input.** The model here is `model(x, t, y)` with a *float* $t \in [0, 1]$, one per image.
# Your U-Net from labs 02-03 embeds its time input with sinusoids made for steps $0 \dots 999$, so the lab wraps it
# in `flow.TimeScaled`, which hands the network $999\,t$. You never scale $t$ yourself.
#
# ### Exercise 1 (3 points)
# Write `flow_matching_loss(model, x0, y, t, noise)`:
# * `x0`, `noise`: `[B, C, H, W]`; `y`: int64 `[B]`; `t`: float `[B]` in $[0, 1]$, one per image (reshape it to
#   `[B, 1, 1, 1]`, as in lab 01);
# * return the mean squared error over batch and pixels (`F.mse_loss`), a 0-d tensor that can be back-propagated.
#
# Watch the sign of the target: the velocity points from the data towards the noise.

# %% nbgrader={"grade": false, "grade_id": "flow_matching_loss", "locked": false, "schema_version": 3, "solution": true}
def flow_matching_loss(model, x0, y, t, noise):
    """mean of (model((1 - t) x0 + t noise, t, y) - (noise - x0))^2 over batch and pixels."""
    ### BEGIN SOLUTION
    t_b = t.view(-1, *([1] * (x0.dim() - 1)))  # [B, 1, 1, 1]
    x_t = (1 - t_b) * x0 + t_b * noise
    v_hat = model(x_t, t, y)
    return F.mse_loss(v_hat, noise - x0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_flow_matching_loss", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_flow_matching_loss(flow_matching_loss)
### BEGIN HIDDEN TESTS
checks.check_flow_matching_loss(flow_matching_loss, seed=5, sizes=((7, 1, 28, 28), (2, 3, 4, 4)))
checks.check_flow_matching_loss(flow_matching_loss, seed=6, sizes=((1, 1, 6, 6), (9, 2, 3, 5)))
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Following the velocity: Euler
#
# To draw a sample, start from noise $x_1 \sim \mathcal N(0, I)$ at $t = 1$ and integrate $dx/dt = v(x, t)$ *down*
# to $t = 0$ over a descending grid $1 = t_0 > t_1 > \dots > t_S = 0$. Euler's method takes the slope at the start
# of each step and walks straight:
#
# $$x_{t_{k+1}} = x_{t_k} + (t_{k+1} - t_k)\, v(x_{t_k}, t_k) .$$
#
# The time step $t_{k+1} - t_k$ is **negative**: the sample moves *against* the velocity $\varepsilon - x_0$,
# away from the noise and towards the data.
#
# ### Exercise 2 (2 points)
# Write `euler_step(x_t, v_hat, t, t_next)`: `x_t`, `v_hat`: `[B, C, H, W]`; `t`, `t_next`: float `[B]` (one per
# image) $\to$ $x_{t_\text{next}}$, `[B, C, H, W]`, in `x_t`'s dtype (the times may be float64: `.to(x_t.dtype)`).

# %% nbgrader={"grade": false, "grade_id": "euler_step", "locked": false, "schema_version": 3, "solution": true}
def euler_step(x_t, v_hat, t, t_next):
    """x_t + (t_next - t) * v_hat, per image."""
    ### BEGIN SOLUTION
    dt = (t_next - t).to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))  # [B, 1, 1, 1], negative
    return x_t + dt * v_hat
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_euler_step", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_euler_step(euler_step)
### BEGIN HIDDEN TESTS
checks.check_euler_step(euler_step, seed=3, sizes=((5, 1, 28, 28), (1, 2, 3, 3)))
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 3 (3 points)
# Write `euler_loop(model, x_1, y, times)`, which returns $x_0$:
#
# ```
# x <- x_1
# for k = 0, 1, ..., S-1:                     a grid of S + 1 times has S steps
#     v_hat <- model(x, t_k, y)               t_k = times[k] for every image: a float [B] tensor
#     x <- euler_step(x, v_hat, t_k, t_{k+1})
# ```
#
# * `x_1`: `[B, C, H, W]` (the noise); `y`: int64 `[B]`; `times`: float64 `[S + 1]`, descending from 1 to 0
#   (uniform or not: use the grid you are given);
# * call **your** `euler_step`; `times[k].expand(B)` makes the `[B]` tensor. The model computes in float32:
#   give it `x` in `x_1`'s dtype. $S$ network evaluations.

# %% nbgrader={"grade": false, "grade_id": "euler_loop", "locked": false, "schema_version": 3, "solution": true}
@torch.no_grad()
def euler_loop(model, x_1, y, times):
    """Euler's method from times[0] = 1 down to times[-1] = 0 -> x_0 [B, C, H, W]."""
    ### BEGIN SOLUTION
    x, B = x_1, x_1.shape[0]
    for k in range(len(times) - 1):
        t, t_next = times[k].expand(B), times[k + 1].expand(B)  # [B] each
        x = euler_step(x, model(x, t.to(x.dtype), y), t, t_next)
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_euler_loop", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_euler_loop(euler_loop)
### BEGIN HIDDEN TESTS
checks.check_euler_loop(euler_loop, seed=4, sizes=((4, 1, 8, 8),), steps=(2, 7))
checks.check_euler_loop(euler_loop, seed=5, sizes=((1, 3, 4, 4), (5, 1, 6, 6)), steps=(3, 1))
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Two slopes per step: Heun
#
# Euler uses the slope at the start of a step only; on a curved path it overshoots. Heun's method (the explicit
# trapezoid rule; Karras et al. 2022, Algorithm 1, without their noise "churn") first takes the Euler step to a
# prediction, evaluates the slope *there*, and then takes the step with the average of the two slopes:
#
# $$d = v(x, t_k), \quad \tilde x = x + (t_{k+1} - t_k)\, d, \quad \tilde d = v(\tilde x, t_{k+1}), \quad
#   x \leftarrow x + (t_{k+1} - t_k)\, \tfrac{1}{2}(d + \tilde d) .$$
#
# Two evaluations per step, error per unit time shrinking like $h^2$ instead of Euler's $h$. **In this lab every
# step is corrected, the last one too** (Karras et al. skip the correction at $\sigma = 0$, where their ODE is
# singular; a flow's velocity at $t = 0$ is finite), so $S$ steps cost $2S$ evaluations.
#
# ### Exercise 4 (3 points)
# Write `heun_loop(model, x_1, y, times)` with the arguments of `euler_loop`, returning $x_0$. Call your
# `euler_step` for both the prediction and the step.

# %% nbgrader={"grade": false, "grade_id": "heun_loop", "locked": false, "schema_version": 3, "solution": true}
@torch.no_grad()
def heun_loop(model, x_1, y, times):
    """Heun's method (Euler predictor, trapezoid corrector) from times[0] = 1 down to 0 -> x_0 [B, C, H, W]."""
    ### BEGIN SOLUTION
    x, B = x_1, x_1.shape[0]
    for k in range(len(times) - 1):
        t, t_next = times[k].expand(B).to(x.dtype), times[k + 1].expand(B).to(x.dtype)  # [B] each
        d = model(x, t, y)
        x_pred = euler_step(x, d, t, t_next)
        d_next = model(x_pred, t_next, y)
        x = euler_step(x, (d + d_next) / 2, t, t_next)
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_heun_loop", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_heun_loop(heun_loop)
### BEGIN HIDDEN TESTS
checks.check_heun_loop(heun_loop, seed=4, sizes=((4, 1, 8, 8),), steps=(2, 5))
checks.check_heun_loop(heun_loop, seed=5, sizes=((1, 3, 4, 4), (5, 1, 6, 6)), steps=(1, 3))
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Guidance for velocities
#
# Classifier-free guidance (lab 07; Ho & Salimans 2022, eq. 6) extrapolates from the unconditional prediction
# towards the conditional one. For velocities it is the same formula,
#
# $$v_\text{guided} = (1 + w)\, v(x, t, y) - w\, v(x, t, \varnothing),$$
#
# because at a fixed $(x_t, t)$ the velocity is an affine function of the noise prediction,
# $v = (\hat\varepsilon - x_t) / (1 - t)$, and the two weights $1 + w$ and $-w$ sum to 1: guiding $v$ is guiding
# $\hat\varepsilon$.
#
# ### Exercise 5 (2 points)
# Write `cfg_velocity(model, x, t, y, w, null_class)`: `x`: `[B, C, H, W]`; `t`: float `[B]`; `y`: int64 `[B]`;
# `w`: a float $\ge 0$; the unconditional prediction gives every image the label `null_class`. One call on a
# doubled batch (`torch.cat`) is faster than two, as in lab 07; either is accepted.

# %% nbgrader={"grade": false, "grade_id": "cfg_velocity", "locked": false, "schema_version": 3, "solution": true}
def cfg_velocity(model, x, t, y, w, null_class):
    """(1 + w) * model(x, t, y) - w * model(x, t, null_class for every image)."""
    ### BEGIN SOLUTION
    B = x.shape[0]
    null = torch.full_like(y, null_class)
    v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))  # [2B, C, H, W]
    return (1 + w) * v[:B] - w * v[B:]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_cfg_velocity", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_cfg_velocity(cfg_velocity)
### BEGIN HIDDEN TESTS
checks.check_cfg_velocity(cfg_velocity, seed=3, sizes=((4, 1, 5, 5),), ws=(1.0, 3.0), classes=(10, 2))
### END HIDDEN TESTS

# %% [markdown]
# ## 5. Straight lines in training, paths in sampling, in 2D
#
# In 2D the whole picture is exact: for the mixture of three Gaussian blobs of lab 01's toy
# (`labkit.toy2d.three_blobs`) the ideal velocity $v^*$ and the ideal noise predictor are known in closed form
# (`toy2d.flow_velocity`, `toy2d.exact_model`), so what is left to see is the *path* each sampler takes. The same
# 40 noise points go through DDPM (ancestral) and DDIM ($\eta = 0$) on the cosine schedule, and through your Euler
# loop on the exact flow, `toy_steps` steps each. The first panel shows what the flow was *trained* on: the
# straight lines from each noise point to a data point drawn at random. The number under each panel is the mean
# **path length divided by the distance from start to end**: 1 for a straight line, more for a curved or
# jittery one.

# %%
euler = checks.yours_or_labkit(checks.check_euler_loop, euler_loop, flow.euler_loop, "euler_loop")
heun = checks.yours_or_labkit(checks.check_heun_loop, heun_loop, flow.heun_loop, "heun_loop")
mix = toy2d.three_blobs()
toy_schedule = schedules.make_schedule("cosine", 1000)
n_paths, toy_steps = 40, colab.pick(50, 10)
g = torch.Generator().manual_seed(0)
start = torch.randn(n_paths, 2, generator=g, dtype=torch.float64)  # the same noise for every sampler
y_toy = torch.full((n_paths,), mix.K)  # "no class": the whole mixture


def diffusion_path(sampler):
    """[steps + 1, N, 2]: the x_t of every step of a labkit sampler on the exact noise predictor, then x_0."""
    trajectory = samplers.Trajectory()
    x0 = samplers.sample(toy2d.exact_model(mix, toy_schedule), (n_paths, 2), y_toy, toy_schedule, sampler=sampler,
                         steps=toy_steps, null_class=mix.K, x_T=start.clone(), callback=trajectory,
                         generator=torch.Generator().manual_seed(1))
    return torch.cat([trajectory.x_t, x0[None]])


def flow_path(loop):
    """[steps + 1, N, 2]: the x at every model call of your loop on the exact velocity, then x_0."""
    seen = []
    exact = toy2d.exact_flow_model(mix)

    def watched(x, t, y):
        seen.append(x.detach().clone())
        return exact(x, t, y)

    # the toy's points are [N, 2]: your loop's [B, 1, 1, 1] reshape works on [N, 2, 1, 1] images of one pixel
    x0 = loop(lambda x, t, y: watched(x[:, :, 0, 0], t, y)[:, :, None, None], start[:, :, None, None].clone(), y_toy,
              flow.time_grid(toy_steps))
    return torch.cat([torch.stack(seen), x0[None, :, :, 0, 0]])


def length_ratio(path):
    """mean over points of (length of the path) / (distance from its start to its end)."""
    length = (path[1:] - path[:-1]).norm(dim=-1).sum(0)  # [N]
    return float((length / (path[-1] - path[0]).norm(dim=-1)).mean())


data_points, _ = toy2d.sample(mix, n_paths, torch.Generator().manual_seed(3))
lines = torch.stack([(1 - s) * start + s * data_points for s in torch.linspace(0, 1, toy_steps + 1).tolist()])
paths = {"flow training lines": lines, "DDPM (ancestral)": diffusion_path("ddpm"), "DDIM (eta = 0)": diffusion_path("ddim"),
         "flow sampling (Euler)": flow_path(euler)}
fig, axes = plt.subplots(1, 4, figsize=(16, 4.3), sharex=True, sharey=True)
for ax, (name, path) in zip(axes, paths.items()):
    for i in range(n_paths):
        ax.plot(path[:, i, 0], path[:, i, 1], "-", lw=0.8, alpha=0.7)
    ax.scatter(path[0, :, 0], path[0, :, 1], s=8, c="grey", label="start (noise)")
    ax.scatter(path[-1, :, 0], path[-1, :, 1], s=10, c="black", label="end")
    ax.scatter(mix.means[:, 0], mix.means[:, 1], marker="x", s=80, c="red", label="blob centres")
    ax.set(title=name, xlabel=f"path length / distance: {length_ratio(path):.2f}", aspect="equal")
fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
fig.tight_layout(rect=(0, 0.06, 1, 1))  # the legend below the panels, not over the paths
plt.show()
ratios = {name: length_ratio(path) for name, path in paths.items()}
for name, ratio in ratios.items():
    print(f"{name:>21}: path length / start-to-end distance = {ratio:.3f}")
shown = ", ".join(f"{name} {ratio:.3f}" for name, ratio in ratios.items())
claims.check("the training lines are straight (ratio 1)", abs(ratios["flow training lines"] - 1) < 1e-6, shown)
claims.check("DDPM's paths jitter more than DDIM's and the flow's",
             ratios["DDPM (ancestral)"] > max(ratios["DDIM (eta = 0)"], ratios["flow sampling (Euler)"]), shown)
claims.check("the flow's sampling paths are not straighter than DDIM's",
             ratios["flow sampling (Euler)"] >= ratios["DDIM (eta = 0)"], shown)

# %% [markdown]
# The training lines are straight by construction (ratio 1). DDPM's paths jitter: every step adds fresh noise.
# The sampling paths of DDIM and of the flow are smooth but bent, and on this toy **the flow's sampling paths are
# not straighter than DDIM's** (compare the printed ratios): the network learns the *average* velocity over all
# the lines through a point, and an average of straight lines to three different blobs is not a straight line.
# Each path first heads for the middle of the mixture, then turns towards the blob it ends on. (Making the sampling
# paths themselves straight is what *reflow* does, Liu et al. 2023: retrain on the pairs (noise, end point) that
# the first flow produces; section 6.) What a few large steps reach is a separate question, measured here: the share of end
# points within 3 standard deviations of a blob centre at 1, 2, 4 and 8 steps, and how spread out they are.

# %%
def landed(x):
    """share of points within 3 std of their nearest blob centre."""
    d = torch.cdist(x.double(), mix.means).min(1).values
    return float((d < 3 * mix.std).double().mean())


many = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
y_many = torch.full((2000,), mix.K)
print("steps   DDIM: on a blob, spread   flow Euler: on a blob, spread")
one_step = {}
for steps in (1, 2, 4, 8):
    x_ddim = samplers.sample(toy2d.exact_model(mix, toy_schedule), (2000, 2), y_many, toy_schedule, sampler="ddim",
                             steps=steps, null_class=mix.K, x_T=many.clone())
    x_flow = flow.euler_loop(toy2d.exact_flow_model(mix), many.clone(), y_many, flow.time_grid(steps))
    print(f"{steps:5}   {landed(x_ddim):12.1%} {float(x_ddim.std(0).mean()):7.3f}   "
          f"{landed(x_flow):18.1%} {float(x_flow.std(0).mean()):7.3f}")
    if steps == 1:
        one_step = {"DDIM": x_ddim, "flow": x_flow}
data_spread = float(toy2d.sample(mix, 2000, torch.Generator().manual_seed(7))[0].std(0).mean())
print(f"the mixture's own spread (2000 data points): {data_spread:.3f}")
claims.check("the mixture's own spread is about 1.0", abs(data_spread - 1) < 0.1, f"{data_spread:.3f}")
claims.check("with one step neither sampler puts a point on a blob, and the end points' spread is near 0",
             all(landed(x) == 0 and float(x.std(0).mean()) < 0.05 for x in one_step.values()),
             ", ".join(f"{k}: {landed(x):.1%} on a blob, spread {float(x.std(0).mean()):.3f}" for k, x in one_step.items()))

# %% [markdown]
# With one step neither sampler puts a point on a blob, and the spread of the end points is near 0: the first step
# of either goes to the model's best guess of $x_0$ given pure noise, close to the mean of the mixture, between
# the blobs. From two steps on, the table says which sampler has more points on the blobs at the same number of
# steps (the mixture's own spread, the same number for its data, is about 1.0).
#
# ### Where to put the steps
#
# A uniform grid gives every stretch of time the same number of steps, wherever the paths bend. Esser et al.
# (2024, "Scaling Rectified Flow Transformers", eq. 23) move the steps with a **shifted grid**: take the uniform
# grid $u = 1, 1 - \tfrac1S, \dots, 0$ and map each time through
#
# $$t = \frac{s\,u}{1 + (s - 1)\,u} .$$
#
# The ends stay at 1 and 0; $s > 1$ crowds the steps towards $t = 1$ (the noise), $s < 1$ towards $t = 0$ (the data),
# $s = 1$ is the uniform grid. (Stable Diffusion 3 shifts towards the noise, $s = 3$, for its large images.)
#
# ### Exercise 6 (2 points)
# Write `shifted_time_grid(steps, shift)` $\to$ the `[steps + 1]` grid above, descending from 1 to 0, in float64
# (build $u$ with `torch.linspace`; it is the grid `flow.time_grid(steps)` of the loops above).

# %% nbgrader={"grade": false, "grade_id": "shifted_time_grid", "locked": false, "schema_version": 3, "solution": true}
def shifted_time_grid(steps, shift):
    """shift * u / (1 + (shift - 1) * u) for the uniform grid u = 1, ..., 0 -> [steps + 1]."""
    ### BEGIN SOLUTION
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)  # [steps + 1]: 1, 1 - 1/steps, ..., 0
    return shift * u / (1 + (shift - 1) * u)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_shifted_time_grid", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_shifted_time_grid(shifted_time_grid)
### BEGIN HIDDEN TESTS
checks.check_shifted_time_grid(shifted_time_grid, seed=3, cases=((6, 2.0), (3, 1.0), (2, 0.5)))
### END HIDDEN TESTS

# %% [markdown]
# The exact flow with your Euler loop on three grids, the same 2000 noise points as above: the share of end points
# on a blob.

# %%
grid_fn = checks.yours_or_labkit(checks.check_shifted_time_grid, shifted_time_grid, flow.shifted_time_grid,
                                 "shifted_time_grid")


def as_pixels(model):
    """A model of points [N, 2] as one of 'images' [N, 2, 1, 1] of one pixel, the shape your functions take."""
    return lambda x, t, y: model(x[:, :, 0, 0], t, y)[:, :, None, None]


first_flow = as_pixels(toy2d.exact_flow_model(mix))  # the exact velocity v* (the perfect first flow of section 6)
shifts = {"towards the data (s = 1/3)": 1 / 3, "uniform (s = 1)": 1.0, "towards the noise (s = 3)": 3.0}
on_grid = {}
print("Euler steps   " + "   ".join(shifts))
for steps in (2, 3, 4, 8):
    for label, s_ in shifts.items():
        x = euler(first_flow, many[:, :, None, None].clone(), y_many, grid_fn(steps, s_))[:, :, 0, 0]
        on_grid[(label, steps)] = landed(x)
    print(f"{steps:11}   " + "   ".join(f"{on_grid[(label, steps)]:{len(label)}.1%}" for label in shifts))
claims.check("at 2 steps, crowding the steps towards the data puts more points on the blobs than the uniform grid, "
             "and crowding them towards the noise fewer",
             on_grid[("towards the data (s = 1/3)", 2)] > on_grid[("uniform (s = 1)", 2)]
             > on_grid[("towards the noise (s = 3)", 2)],
             ", ".join(f"{label}: {on_grid[(label, 2)]:.1%}" for label in shifts))

# %% [markdown]
# On this toy the paths run nearly straight towards the middle of the mixture first and bend late, close to the
# data, where each point's blob is decided: steps are worth more there. Which shift is best depends on where a
# model's paths bend; for large images, whose coarse shape is decided at high noise, Esser et al. found shifting
# towards the noise better. Section 6 takes the other road: instead of placing the steps around the bends, it
# straightens the paths.
#
# ## 6. Reflow: straighten the paths, then take one step
#
# A trained flow does more than draw samples: its ODE sends each noise $x_1$ to **one** sample $x_0$, so it pairs
# noises with samples, a *coupling*. Training drew the pairs independently (any data point with any noise), and
# their straight lines cross everywhere; the network learns their average and its paths bend. Liu et al. (2023,
# "Flow Straight and Fast", Algorithm 1) train a new flow, **with the same loss**, on the flow's own pairs
# $(x_0, x_1)$. Two paths of an ODE never cross, so the lines between coupled pairs hardly do: few lines pass through
# a point, their average is nearly the line itself, and the new flow's paths are nearly straight. On a straight
# path Euler's method is exact, with any step size: **one** step goes from noise to sample. This is *reflow*
# ("rectified flow"; repeating it gives the 2-, 3-, ... rectified flows).
#
# How straight is a flow? Liu et al. measure it with the **straightness**, the mean squared gap between the
# velocity along each path and the velocity of the straight line from its start to its end:
#
# $$S = \int_0^1 \mathbb E\, \big\lVert (x_1 - x_0) - v(x_t, t) \big\rVert^2\, dt ,$$
#
# where $x_t$ runs along the ODE's path from $x_1$ to $x_0$ (in this lab's time direction the velocity integrates
# to $x_1 - x_0$, noise minus end point). $S = 0$ exactly when every path is a straight line walked at constant
# speed.
#
# ### Exercise 7 (2 points)
# Write `reflow_pairs(model, y, times, shape, batch_size, generator)`, the new coupling:
# * draw **all** the noises at once, `x_1 = torch.randn((N, *shape), generator=generator)` with `N = len(y)`
#   (`shape` is one image's, e.g. `(1, 28, 28)`);
# * run **your** `euler_loop` on them over `times`, `batch_size` images at a time (`x_1[i : i + batch_size]` with
#   their labels; the last batch may be shorter), and `torch.cat` the end points;
# * return the pair `(x_0, x_1)`: `x_0[i]` is where the flow takes the noise `x_1[i]`.

# %% nbgrader={"grade": false, "grade_id": "reflow_pairs", "locked": false, "schema_version": 3, "solution": true}
def reflow_pairs(model, y, times, shape, batch_size, generator):
    """(x_0, x_1): N noises drawn once, and where euler_loop takes each of them."""
    ### BEGIN SOLUTION
    x_1 = torch.randn((len(y), *shape), generator=generator)  # [N, *shape]: every noise, drawn once
    ends = []
    for i in range(0, len(y), batch_size):
        ends.append(euler_loop(model, x_1[i:i + batch_size], y[i:i + batch_size], times))
    return torch.cat(ends), x_1
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_reflow_pairs", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_reflow_pairs(reflow_pairs)
### BEGIN HIDDEN TESTS
checks.check_reflow_pairs(reflow_pairs, seed=3, cases=((9, (1, 3, 3), 4, 2), (4, (3, 2, 2), 1, 3)))
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 8 (3 points)
# Write `reflow_train(model, optimizer, x_0, x_1, y, steps, batch_size, generator)`, flow matching on the coupled
# pairs. `x_0`, `x_1`: `[N, C, H, W]`, pair `i` being `(x_0[i], x_1[i])`; `y`: int64 `[N]`. For each of the `steps`
# steps:
#
# ```
# idx <- torch.randint(0, N, (batch_size,), generator=generator)     which pairs: one index per pair
# t   <- torch.rand(batch_size, generator=generator)                  one time per image, in this order
# gradient step on flow_matching_loss(model, x_0[idx], y[idx], t, x_1[idx])      (zero_grad, backward, step)
# ```
#
# Put the model in training mode first, use **your** `flow_matching_loss`, and return the list of the step losses (floats,
# `loss.item()`). The noise of each image is **its own** `x_1[idx]`, not a fresh draw: with fresh noise this would be
# ordinary flow matching again.

# %% nbgrader={"grade": false, "grade_id": "reflow_train", "locked": false, "schema_version": 3, "solution": true}
def reflow_train(model, optimizer, x_0, x_1, y, steps, batch_size, generator):
    """steps gradient steps of flow matching on the pairs (x_0[idx], x_1[idx]) -> the list of the losses."""
    ### BEGIN SOLUTION
    model.train()  # training mode (dropout, normalisation layers)
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(x_0), (batch_size,), generator=generator)  # [B]: the same pairs for x_0 and x_1
        t = torch.rand(batch_size, generator=generator)  # [B]: one time per image
        optimizer.zero_grad()
        loss = flow_matching_loss(model, x_0[idx], y[idx], t, x_1[idx])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_reflow_train", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_reflow_train(reflow_train)
### BEGIN HIDDEN TESTS
checks.check_reflow_train(reflow_train, seed=2, shape=(2, 3, 3), N=30, steps=5, batch_size=7)
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 9 (3 points)
# Write `straightness(model, x_1, y, times)`, the sum that approximates $S$ along Euler's path:
# * walk the path as `euler_loop` does (your `euler_step`), keeping the velocity $v_k = $ `model(x, t_k, y)` of
#   every step; the end point is $x_0$;
# * the chord is `x_1 - x_0`; each step adds $(t_k - t_{k+1})\,\lVert \text{chord} - v_k \rVert^2$ per image,
#   the squared norm summed over the pixels (`.flatten(1).sum(1)`): the integral over $t$ weighs each step by its
#   width, and the grid may be uneven;
# * return the mean over the images, one number. With one step, $S = 0$ for any model (why?): measure with many.

# %% nbgrader={"grade": false, "grade_id": "straightness", "locked": false, "schema_version": 3, "solution": true}
@torch.no_grad()
def straightness(model, x_1, y, times):
    """sum over steps of (t_k - t_{k+1}) * ||(x_1 - x_0) - v_k||^2 per image, averaged over the images."""
    ### BEGIN SOLUTION
    x, B = x_1, x_1.shape[0]
    velocities = []
    for k in range(len(times) - 1):
        t, t_next = times[k].expand(B).to(x.dtype), times[k + 1].expand(B).to(x.dtype)  # [B] each
        v = model(x, t, y)
        velocities.append(v)
        x = euler_step(x, v, t, t_next)
    chord = x_1 - x  # [B, C, H, W]: the straight line's velocity
    total = 0
    for k, v in enumerate(velocities):
        total = total + (times[k] - times[k + 1]) * ((chord - v) ** 2).flatten(1).sum(1)  # [B]
    return total.mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_straightness", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_straightness(straightness)
### BEGIN HIDDEN TESTS
checks.check_straightness(straightness, seed=4, sizes=((4, 1, 6, 6),), steps=(2, 6))
checks.check_straightness(straightness, seed=5, sizes=((1, 3, 4, 4), (5, 1, 6, 6)), steps=(3, 1))
### END HIDDEN TESTS

# %% [markdown]
# ### One reflow on the 2D toy
#
# The first flow is the **exact** velocity $v^*$ of section 5 (`first_flow`, a perfectly trained flow), so whatever changes is
# the coupling's doing. Your `reflow_pairs` pairs `n_pairs` noises with where 100 Euler steps of $v^*$ take them;
# a small network (`toy2d.VelocityMLP`: three hidden layers of 128) learns the new flow from those pairs with
# your `reflow_train` (Adam, batches of 256). Then both flows draw from the same noise: their paths with 50 Euler
# steps (the 40 starting points of section 5), your `straightness` on 2000 noises, and what 1, 2, 4 and 8
# Euler steps reach.

# %%
pairs_fn = checks.yours_or_labkit(checks.check_reflow_pairs, reflow_pairs, flow.reflow_pairs, "reflow_pairs")
train_fn = checks.yours_or_labkit(checks.check_reflow_train, reflow_train, flow.reflow_train, "reflow_train")
straight_fn = checks.yours_or_labkit(checks.check_straightness, straightness, flow.straightness, "straightness")

n_pairs, reflow_steps = colab.pick(4000, 400), colab.pick(2000, 100)
y_pairs = torch.full((n_pairs,), mix.K)
x0_pairs, x1_pairs = pairs_fn(first_flow, y_pairs, flow.time_grid(colab.pick(100, 20)), (2, 1, 1), 1000,
                              torch.Generator().manual_seed(4))
reflowed = toy2d.VelocityMLP(seed=0)
clock = time.perf_counter()
toy_losses = train_fn(reflowed, torch.optim.Adam(reflowed.parameters(), lr=3e-3), x0_pairs, x1_pairs, y_pairs,
                      reflow_steps, 256, torch.Generator().manual_seed(5))
reflowed.eval()
print(f"{n_pairs} pairs; {reflow_steps} reflow steps in {time.perf_counter() - clock:.0f} s, loss "
      f"{sum(toy_losses[:50]) / 50:.3f} over the first 50 steps, {sum(toy_losses[-50:]) / 50:.4f} over the last 50")

flows = {"first flow (exact v*)": first_flow, "after one reflow (learned)": reflowed}


def path_of(model, steps):
    """[steps + 1, 40, 2]: the points of your Euler loop from section 5's 40 starting points, then x_0."""
    seen = []

    def watched(x, t, y):
        seen.append(x[:, :, 0, 0].detach().clone())
        return model(x, t, y)

    end = euler(watched, start[:, :, None, None].clone(), y_toy, flow.time_grid(steps))
    return torch.cat([torch.stack(seen), end[None, :, :, 0, 0]])


z = torch.randn(2000, 2, 1, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
y_z = torch.full((2000,), mix.K)
S = {name: float(straight_fn(model, z, y_z, flow.time_grid(toy_steps))) for name, model in flows.items()}
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
for ax, (name, model) in zip(axes, flows.items()):
    path = path_of(model, toy_steps)
    for i in range(n_paths):
        ax.plot(path[:, i, 0], path[:, i, 1], "-", lw=0.8, alpha=0.7)
    ax.scatter(path[0, :, 0], path[0, :, 1], s=8, c="grey", label="start (noise)")
    ax.scatter(path[-1, :, 0], path[-1, :, 1], s=10, c="black", label="end")
    ax.scatter(mix.means[:, 0], mix.means[:, 1], marker="x", s=80, c="red", label="blob centres")
    ax.set(title=f"{name}, {toy_steps} Euler steps", aspect="equal",
           xlabel=f"straightness S = {S[name]:.4f}; length / distance {length_ratio(path):.3f}")
axes[0].legend(loc="lower left", fontsize=7)
plt.show()
print(f"straightness S on 2000 noises, {toy_steps} Euler steps: " + ", ".join(f"{k} {v:.4f}" for k, v in S.items()))
claims.check("one reflow makes the paths far straighter: S falls more than tenfold",
             S["after one reflow (learned)"] < S["first flow (exact v*)"] / 10,
             ", ".join(f"{k} {v:.4f}" for k, v in S.items()))

# %%
ends = {(name, steps): euler(model, z.clone(), y_z, flow.time_grid(steps))[:, :, 0, 0]
        for name, model in flows.items() for steps in (1, 2, 4, 8)}
on_blob = {key: landed(x) for key, x in ends.items()}
print("Euler steps   " + "   ".join(f"{name}: on a blob" for name in flows))
for steps in (1, 2, 4, 8):
    print(f"{steps:11}   " + "   ".join(f"{on_blob[(name, steps)]:{len(name) + 11}.1%}" for name in flows))
fig, axes = plt.subplots(1, 4, figsize=(16, 4.3), sharex=True, sharey=True)
for ax, (name, steps) in zip(axes, [(n, s) for n in flows for s in (1, 2)]):
    x = ends[(name, steps)]
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
    ax.scatter(mix.means[:, 0], mix.means[:, 1], marker="x", s=80, c="red")
    ax.set(title=f"{name}\n{steps} Euler step{'s' if steps > 1 else ''}: {on_blob[(name, steps)]:.0%} on a blob",
           aspect="equal", xlim=(-2.5, 2.5), ylim=(-2.5, 2.5))
plt.show()
shares = torch.bincount(torch.cdist(ends[("after one reflow (learned)", 1)], mix.means).argmin(1), minlength=mix.K)
print("after one reflow, 1 step: share of the points nearest each blob " +
      ", ".join(f"{float(s) / 2000:.2f}" for s in shares) + " (the mixture's weights: " +
      ", ".join(f"{float(w):.2f}" for w in mix.weights) + ")")
claims.check("with one step the first flow puts no point on a blob, the reflowed flow most of them",
             on_blob[("first flow (exact v*)", 1)] < 0.05 and on_blob[("after one reflow (learned)", 1)] > 0.5,
             f"{on_blob[('first flow (exact v*)', 1)]:.1%} against {on_blob[('after one reflow (learned)', 1)]:.1%}")
claims.check("at 2 steps the reflowed flow still puts more points on the blobs",
             on_blob[("after one reflow (learned)", 2)] > on_blob[("first flow (exact v*)", 2)],
             f"{on_blob[('after one reflow (learned)', 2)]:.1%} against {on_blob[('first flow (exact v*)', 2)]:.1%}")

# %% [markdown]
# The first flow's paths bend (section 5); after one reflow they are nearly straight lines, and $S$ says by how
# much. One Euler step of the first flow lands every point between the blobs (its best guess from pure noise is
# the mixture's mean); one step of the reflowed flow lands most of them on a blob, because its velocity at
# $t = 1$ already points at where the path ends. Compare the 4- and 8-step rows too: the reflowed flow is a
# *learned* network, trained on pairs from a 100-step solver, and what it reaches with many steps is limited by
# how well it learned them (question 5). On MNIST reflow works the same way with your three functions, at a cost
# that does not fit this lab on a CPU: thousands of pairs, each from a full guided sampling run, and then a second
# training as long as section 7's.
#
# ## 7. A flow model for MNIST, trained with your loss
#
# The network is **your U-Net from lab 03** when lab 03 saved it (`my_unet.py` in the runs folder), it still
# passes lab 03's check and it runs on any device (as in lab 04), else `labkit`'s `UNet` (the cell says which and
# why), with the CPU recipe's size (about 0.8M
# parameters, working on 14x14x4 pixel-unshuffled images). It is wrapped in `flow.TimeScaled` and trained from
# scratch with **your** `flow_matching_loss` (if it passes its check), 10% label dropout for guidance, AdamW
# (learning rate $2 \cdot 10^{-3}$ with a short warm-up and a cosine decay) and an EMA of the weights, `STEPS` steps
# of 64 images on a CPU. That is a short run: the shipped diffusion checkpoint it is compared with below trained
# far longer (its step count is printed), so the comparison is of samplers per evaluation, not of training budgets.
#
# A slow machine says so after 20 steps (a visible line with its projected minutes); let it run, or lower `STEPS`.

# %%
STEPS = 400 if not ON_GPU else 3000  # CPU: a budget in steps (the number the text below was written for)
BATCH = 64 if not ON_GPU else 256
PATIENCE_MIN = 12  # more than this many minutes projected: say so
train_digits, _ = colab.lab_digits(train=True, n=None if not FAST else 512, verbose=False)
net_config = recipes.tiny().unet if FAST else (recipes.gpu() if ON_GPU else recipes.cpu()).unet
velocity_model, whose_net = checks.flow_network(colab.load_my_network(colab.runs_dir(mount=False)), net_config)
velocity_model = velocity_model.to(DEVICE)
loss_fn = checks.yours_or_labkit(checks.check_flow_matching_loss, flow_matching_loss, flow.flow_matching_loss,
                                 "flow_matching_loss")
steps_to_run = colab.pick(STEPS, 4)
print(f"training {whose_net} as a velocity model: {steps_to_run} steps of {BATCH} images on {DEVICE}")

ema = copy.deepcopy(velocity_model).requires_grad_(False)
optimizer = torch.optim.AdamW(velocity_model.parameters(), lr=2e-3, weight_decay=0.0)
g_train = torch.Generator(DEVICE).manual_seed(0)
images, labels = train_digits.images.to(DEVICE), train_digits.labels.to(DEVICE)
losses, clock = [], time.perf_counter()
velocity_model.train()
for step in range(steps_to_run):
    for group in optimizer.param_groups:  # warm-up over 100 steps, then a cosine decay to 5%
        progress = step / max(1, steps_to_run)
        group["lr"] = 2e-3 * min(1.0, (step + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
    idx = torch.randint(0, len(images), (BATCH,), device=DEVICE, generator=g_train)
    x0 = images[idx]  # [B, 1, 28, 28] in [-1, 1]
    y = training.drop_labels(labels[idx], 0.1, 10, g_train)  # [B], 10 = "no class" for guidance
    t = torch.rand(BATCH, device=DEVICE, generator=g_train)  # [B], t ~ U[0, 1]
    noise = torch.randn(x0.shape, device=DEVICE, generator=g_train)
    loss = training.train_step(velocity_model, optimizer, lambda: loss_fn(velocity_model, x0, y, t, noise),
                               max_grad_norm=1.0)
    training.ema_update(ema, velocity_model, training.ema_decay_at(step, 0.995))
    losses.append(loss)
    if step == 19 and not FAST:
        minutes = (time.perf_counter() - clock) / 20 * steps_to_run / 60
        print(f"20 steps in {time.perf_counter() - clock:.0f} s: about {minutes:.0f} minutes for all {steps_to_run}")
        if minutes > PATIENCE_MIN:
            print(f"NOTE: this machine is slow for this cell (about {minutes:.0f} minutes). Let it run, or stop it "
                  f"and lower STEPS (fewer steps give blurrier digits than the text below describes).")
seconds = time.perf_counter() - clock
ema.eval()
print(f"{steps_to_run} steps in {seconds:.0f} s ({steps_to_run * BATCH / seconds:.0f} images/s); "
      f"loss over the first 50 steps {sum(losses[:50]) / len(losses[:50]):.3f}, over the last 50 "
      f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
fig = plotting.plot_curves(list(range(len(losses))), {"flow-matching loss": losses}, xlabel="step", ylabel="MSE",
                           logy=True, marker="", title="training loss (one batch per step)")

# %% [markdown]
# ## 8. Digits at 1, 2, 4, 8 and 16 network evaluations
#
# The trained flow (its EMA) with guidance $w = 1$ (your `cfg_velocity`, if it passes), the same noise in every
# row: Euler with $S$ = 1, 2, 4, 8, 16 steps and Heun with 1, 2, 4, 8 steps, i.e. 2, 4, 8, 16 evaluations. As in
# lab 07, "evaluations" (NFE) counts calls of the network per sample; guidance evaluates the conditional and the
# unconditional prediction in one call on a doubled batch.

# %%
guide = checks.yours_or_labkit(checks.check_cfg_velocity, cfg_velocity, flow.cfg_velocity, "cfg_velocity")
W = 1.0


def guided_velocity(x, t, y):
    return guide(ema, x, t, y, W, 10)


def flow_samples(solver, nfe, y, seed):
    """x_0 [B, 1, 28, 28] with nfe network evaluations, from the noise of ``seed``."""
    x_1 = torch.randn((len(y), 1, 28, 28), generator=torch.Generator(DEVICE).manual_seed(seed), device=DEVICE)
    steps = nfe if solver == "euler" else nfe // 2
    loop = euler if solver == "euler" else heun
    with torch.no_grad():
        return loop(guided_velocity, x_1, y, flow.time_grid(steps).to(DEVICE)).clamp(-1, 1)


y10 = torch.arange(10, device=DEVICE)
rows = {f"Euler, {n} NFE": flow_samples("euler", n, y10, seed=0) for n in (1, 2, 4, 8, 16)}
rows.update({f"Heun, {n} NFE": flow_samples("heun", n, y10, seed=0) for n in (2, 4, 8, 16)})
fig = plotting.compare_rows(rows, col_titles=[str(d) for d in range(10)],
                            title="your flow model: one column per digit, the same noise in every row")

# %% [markdown]
# ## 9. Quality against evaluations, on one judge
#
# The shipped classifier judges every setting (lab 07's judge: **accuracy**, the share recognised as the intended
# digit, and **FID** on its features, beside the floor of real digits). In the same run, the diffusion samplers
# of lab 07 sample from the **shipped diffusion checkpoint** (guidance $w = 1$, the same NFE): DDIM ($\eta = 0$)
# and DPM-Solver++(2M). Read the two models' columns side by side with care: the networks differ in training
# time (the flow model's is the short run above), so the table compares how each sampler *spends* evaluations;
# the trend along a row says more than one cell.

# %%
judge = checks.DigitJudge(device=DEVICE)
diffusion_model, schedule, meta = checks.lab_model(DEVICE)
claims.check("the shipped diffusion checkpoint trained far longer than the flow model of section 7",
             (meta.get("step") or 0) >= 5 * steps_to_run,
             f"{meta.get('step')} training steps against {steps_to_run}")
n_per_digit = colab.pick(10, 2)
y_n = torch.arange(10, device=DEVICE).repeat(n_per_digit)
nfes = (1, 2, 4, 8, 16) if not FAST else (1, 2)


def diffusion_samples(sampler, nfe, y, seed):
    g = torch.Generator(DEVICE).manual_seed(seed)
    return samplers.sample(diffusion_model, (len(y), 1, 28, 28), y, schedule, sampler=sampler, steps=nfe,
                           guidance=W, generator=g).clamp(-1, 1)


settings = {"flow Euler": lambda n: flow_samples("euler", n, y_n, seed=1),
            "flow Heun": lambda n: flow_samples("heun", n, y_n, seed=1) if n >= 2 else None,
            "DDIM (shipped)": lambda n: diffusion_samples("ddim", n, y_n, seed=1),
            "DPM-Solver++ (shipped)": lambda n: diffusion_samples("dpmpp_2m", n, y_n, seed=1)}
table = {name: {} for name in settings}
for name, draw in settings.items():
    for nfe in nfes:
        start = time.perf_counter()
        x = draw(nfe)
        if x is None:
            continue
        table[name][nfe] = dict(judge(x, y_n), seconds=time.perf_counter() - start)
print(f"{len(y_n)} samples per cell; accuracy / FID as a multiple of the real floor (n = {len(y_n)})")
print(f"{'NFE':>24} " + " ".join(f"{n:>13}" for n in nfes))
for name, by_nfe in table.items():
    cells = [f"{by_nfe[n]['accuracy']:5.0%} / {by_nfe[n]['fid_ratio']:4.1f}x" if n in by_nfe else f"{'-':>13}" for n in nfes]
    print(f"{name:>24} " + " ".join(f"{c:>13}" for c in cells))
if FAST:
    print("Fast mode: an untrained flow model and one sample per digit; the numbers mean nothing.")

fig, ax = plt.subplots(figsize=(6, 3.4))
for name, by_nfe in table.items():
    ns = sorted(by_nfe)
    ax.plot(ns, [by_nfe[n]["accuracy"] for n in ns], "o-", label=name)
ax.set(xscale="log", xticks=list(nfes), xticklabels=[str(n) for n in nfes], xlabel="network evaluations (NFE)",
       ylabel="classifier accuracy", ylim=(0, 1.02), title="quality against evaluations (guidance w = 1)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Read the table row by row: how fast does each sampler's accuracy rise with the NFE, and where does it stop
# improving? Question 3 asks for numbers from your own table.

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_1", "locked": true, "schema_version": 3, "solution": false}
# ## Questions (look at the pictures)
#
# Answer each question in the cell below it, in a few sentences, with what you saw: a number, a row, a panel.
# Your answers are graded by hand (4 points, 1 per question).
#
# **Question 1 (1 point).** The target of the flow-matching loss is $\varepsilon - x_0$, the same at every $t$.
# Why is the learned velocity $v^*(x, t)$ nevertheless a function of $t$ (and of $x$)? What does a model with
# one Euler step produce, and why (section 5's table, row 1, and the Euler 1-NFE row of section 8)?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_1", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** The network never sees $(x_0, \varepsilon)$, only $x_t$; many pairs lead to the same $x_t$,
# so the best prediction is the average $\mathbb E[\varepsilon - x_0 \mid x_t]$, which depends on where $x_t$ is
# and how noisy it is ($t$). One Euler step from $t = 1$ gives $x_1 - v(x_1, 1) = \mathbb E[x_0 \mid x_1]$: with
# pure noise as input, that is the mean of the data (of the class, with a label): in 2D every point lands at the
# mixture's mean between the blobs (spread 0.000 in the table), on MNIST a blurry average of the class. In the
# instructor's runs with labkit's U-Net the classifier still recognised 81-91% of those (guided) averages, but
# their FID was 16-18x the floor against 3.2x at 8 NFE: the digits all look alike. With lab 03's own U-Net
# (the solution's, same 400 steps) it recognised 62% at 27.5x, against 91% at 5.2x at 8 NFE: expect the
# student's numbers anywhere in that range; the gap between 1 and 8 NFE is the point.
#
# **Rubric (1 point).** 1/2 point: averaging over the pairs that reach the same x_t (conditional expectation).
# 1/2 point: one step gives the (class) mean / a blurry average, read from the student's own output.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_2", "locked": true, "schema_version": 3, "solution": false}
# **Question 2 (1 point).** In section 5, compare the four panels and their ratios. The flow was trained on
# straight lines only: why are its sampling paths not straight? Which had the straighter sampling paths in your
# run, DDIM or the flow, and which put more points on the blobs at 2 and at 4 steps?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_2", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Many training lines pass through the same point $x_t$, towards different blobs; the network
# learns their average velocity, and an average of straight lines is not a straight line: a path first heads for
# the middle of the mixture and bends towards one blob when its destination is decided. In the instructor's run
# (50 steps, 40 paths) the flow's ratio was higher than DDIM's (the printed ratios: DDIM's paths were the
# straighter ones, DDPM's jitter far above both), yet the flow put more points on the blobs at 2 and 4 steps
# (the second table): where the bending happens matters more for few large steps than how much there is.
#
# **Rubric (1 point).** 1/2 point: the average of straight lines to several blobs is not straight. 1/2 point:
# the comparison read from the student's own ratios and table (straighter is not the same as better at 2-4 steps).
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_3", "locked": true, "schema_version": 3, "solution": false}
# **Question 3 (1 point).** From your table in section 9: at which NFE does each sampler first reach its best
# accuracy (within a few points)? At the same NFE, is Heun better or worse than Euler, and why can a second-order
# method lose at very small NFE?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_3", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** (Instructor's run, 100 samples per cell, 400 training steps on a busy 2-core CPU.) Flow Euler
# was at its plateau from 2 NFE (81% at 1, 97% at 2, 95% after; FID 3.2x the floor from 8 NFE); flow Heun
# needed 8 NFE (10%, 30%, 94%, 90% at 2, 4, 8, 16); DDIM 8-16 (43% at 4, 94% at 8, 98% at 16); DPM-Solver++ 8
# (10% up to 4, 99% at 8 and 16). At equal NFE Heun was worse than Euler everywhere: it takes half as many steps,
# each twice as long, and at 2 NFE its single step is broken in a specific way: the second slope is taken at
# $t = 0$, where the velocity of a clean image is $-x$ (no noise left to remove), so the average of the two slopes
# removes only half the noise ($x_1/2$ + the mean remains). A second-order method pays only when steps are short
# enough for the path to be nearly straight within each. At 16 NFE the shipped diffusion model (4650 training
# steps) beat the short-trained flow (98-99% and 1.4-1.8x against 95% and 3.1x): that is the training budget.
#
# **Rubric (1 point).** 1/2 point: the plateau NFE per row read from the table. 1/2 point: Heun vs Euler at equal
# NFE with the reason (half as many, twice as long steps; second order pays only when steps are small).
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_4", "locked": true, "schema_version": 3, "solution": false}
# **Question 4 (1 point).** A classmate's `euler_step` returns `x_t + (t - t_next) * v_hat`. What do their
# samples look like, and which check message would have warned them? Then: why is guidance for velocities the
# same formula as guidance for noises?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_4", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Their step moves *along* the velocity $\varepsilon - x_0$, i.e. towards more noise: starting
# from noise they go further away from the data, and the samples are amplified noise, not digits (the check names
# "the step went towards the noise ... the sign is reversed"). Guidance: at fixed $(x_t, t)$,
# $v = (\hat\varepsilon - x_t)/(1 - t)$ is affine in $\hat\varepsilon$; since $(1 + w) - w = 1$, the $x_t$ terms
# cancel to the same $-x_t/(1-t)$ and $(1+w) v_c - w v_u = ((1+w)\hat\varepsilon_c - w \hat\varepsilon_u - x_t)/(1-t)$.
#
# **Rubric (1 point).** 1/2 point: samples move towards noise (grow, no digits), named sign error. 1/2 point:
# affine relation with weights summing to 1.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_5", "locked": true, "schema_version": 3, "solution": false}
# **Question 5 (1 point).** In section 6, why does one Euler step of the reflowed flow land on the blobs when one
# step of the *exact* first flow cannot? A classmate's `reflow_train` draws the indices twice, one `idx` for
# `x_0` and another for `x_1`: what flow does their network learn, and what would their 1-step samples look
# like? Finally, read your 8-step row: what did reflow cost, and where does that cost come from?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_5", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** One Euler step from $t = 1$ goes to $x_1 - v(x_1, 1)$. For the first flow $v(x_1, 1)$ is an
# average over all data points (any data point can pair with any noise), so the step lands at the mixture's mean,
# between the blobs (0% on a blob). After reflow each noise has *one* partner, the end of its own path, and the
# paths are nearly straight ($S$ fell from about 1.07 to about 0.004 in the instructor's run), so
# $v(x_1, 1) \approx x_1 - x_0$ and one step lands on $x_0$ (88% on a blob against 0%; 90% against 41% at 2 steps),
# in the mixture's proportions (0.50, 0.30, 0.20 of the points nearest each blob).
# With two index draws the pairs are independent again: that is ordinary flow matching, the network learns the
# first flow's bent field back, and its 1-step samples collapse to the mean like the exact first flow's. Cost:
# at 8 steps the exact first flow put 98% on a blob and the reflowed one 95% (93% each at 4): the new flow is a small
# network fitted to a finite set of pairs in a short training, so its paths end slightly off the blobs; the
# exact $v^*$ has no such error (and reflow's pairs themselves carry the 100-step solver's error).
#
# **Rubric (1 point).** 1/2 point: one step needs the velocity at t = 1 to point at the path's own end (a
# coupling, straight paths), read from the student's numbers. 1/2 point: two index draws = independent pairs =
# ordinary flow matching (1-step samples at the mean), and the cost named (the learned model's error).
# ### END SOLUTION
