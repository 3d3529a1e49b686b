# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 07 — Improvements: better schedules, guidance, and fewer steps
#
# The DDPM of labs 04-05 works, but three later ideas made diffusion models practical: a noise schedule that
# wastes fewer steps (Nichol & Dhariwal 2021), classifier-free guidance that trades diversity for fidelity
# (Ho & Salimans 2022), and samplers that need 10-20 network evaluations instead of 1000 (DDIM, Song et al.
# 2021; DPM-Solver++, Lu et al. 2022). You implement the core of each and measure what it buys.
#
# **Learning objectives.** After this lab you can
# 1. compare the linear and cosine schedules through $\bar\alpha_t$ and the SNR, and through trained models, and
#    rescale a schedule so that its last step is pure noise (zero terminal SNR);
# 2. write classifier-free guidance as a wrapper around a model, read a fidelity-diversity trade-off curve, and
#    keep strongly guided guesses in range with dynamic thresholding;
# 3. write a DDIM step (with $\eta$) and a DPM-Solver++(2M) step and the loops around them, build the grid of time
#    steps they walk, and choose a sampler and a step count from a plot of quality and time against the number of
#    network evaluations.
#
# **Time budget.** Running all cells: about 10 minutes on a quiet laptop CPU (the schedule comparison then trains
# 1000 steps per model, about 2 minutes each at the 505 images/s lab 04 measured on 2 idle cores; measured for the
# whole lab: 53 minutes on 2 CPU cores shared with other jobs, load about 10, before the cells of exercises 1, 4, 7
# and 11 were added: they add about 1.5 minutes there, six short sampling runs of 100 digits at 10 s per 10 guided
# steps, measured at load 10-18), about 8 minutes on a Colab T4 (it trains two real models there).
# Working through the lab: about 120 minutes.
#
# **How it is graded.** Eleven functions (2 + 2 + 2 + 2 + 1 + 3 + 2 + 3 + 3 + 3 + 1 = 24 points), each followed by a test cell
# (the tests you see, plus hidden ones with other inputs). The rescaled schedules, the guidance sweep, the sampler
# table and the grid comparison run *your* functions when they pass their checks, and `labkit`'s when they do not
# (a line says which), so a bug in one answer never breaks the rest of the lab. Run the cells from top to bottom.
# The questions at the end are answered in writing and graded by hand (4 points).

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
# __LABKIT_COLAB_INSTALL__ (labkit build writes labkit.colab.INSTALL_CELL here: the Colab install)
from labkit import colab
DEVICE = colab.setup()

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false}
import time

import torch
import matplotlib.pyplot as plt

from labkit import guidance, plotting, recipes, samplers, schedules, training
from labkit.evaluation import measures
from labkit.checks import claims
from labkit.checks import lab07_improvements as checks

FAST = colab.fast_mode()  # True in CI and while grading: expensive cells shrink
ON_GPU = DEVICE.type == "cuda"
torch.manual_seed(0)  # every lab starts from the same random numbers
STEPS = colab.pick(20, 4)  # DPM-Solver++ steps per sample where the sampler is not the point

# %% [markdown]
# Real digits to compare against (the MNIST test set when `labkit` finds it), and the judge used throughout:
# the shipped MNIST classifier says how often a sample is recognised as its intended digit (**accuracy**:
# fidelity), and the Fréchet distance between classifier features of the samples and of real digits
# (**FID**: fidelity *and* diversity).
#
# **What FID measures** (lab 06, section 5, where you wrote it). Fit one Gaussian (mean and covariance) to the
# classifier features of the samples, another to those of real held-out digits; FID is the Fréchet distance
# between the two (Heusel et al. 2017):
# $\lVert\mu_s - \mu_r\rVert^2 + \mathrm{tr}\big(\Sigma_s + \Sigma_r - 2(\Sigma_s\Sigma_r)^{1/2}\big)$. Samples that all
# look alike (no diversity) shrink $\Sigma_s$; samples unlike real digits move $\mu_s$: both raise it.
# **Why it has a floor** (lab 06 measured it). Even real digits do not score 0, and the fewer there are, the
# higher they score: so FID is always printed beside the **floor**, the FID of $n$ *real* training digits
# against the same reference: "2x the floor" means twice what a perfect model would score at this $n$. At
# small $n$ both are noisy, and a sample can land *below* the floor by chance (lab 06 showed sets of real
# digits spread around it); only differences larger than that noise mean anything. The judge computes both
# exactly as `labkit evaluate` does, so its "x the floor" matches that command's report.
# **How large that noise is.** Each FID is also printed with a 90% interval for the distance itself, with the
# small-sample bias removed (`labkit.evaluation.fid_interval`: half-sets drawn without replacement; lab 06 showed
# why a plain bootstrap of FID is biased), in the same unit: a perfect model's interval holds 0x the floor. Two
# FIDs differ beyond sampling noise only when their intervals do not overlap.

# %%
test_digits, REAL = colab.lab_digits(train=False, n=colab.pick(10000, 400))
judge = checks.DigitJudge(device=DEVICE)  # the judge of `labkit evaluate`: the same samples, the same numbers

def se(r):
    """One standard error of an accuracy measured on r["n"] samples, sqrt(p (1 - p) / n): the sampling noise."""
    return (r["accuracy"] * (1 - r["accuracy"]) / r["n"]) ** 0.5


def fmt(r):
    return (f"accuracy {r['accuracy']:6.1%}   FID {r['fid']:7.3f}  ({r['fid_ratio']:.1f}x the real floor {r['floor']:.3f}, "
            f"n={r['n']}; without the bias {r['fid_low_ratio']:.1f}-{r['fid_high_ratio']:.1f}x)")


def fid_noise(a, b):
    """Whether two judged sets' FIDs differ beyond sampling noise: their 90% intervals do not overlap."""
    if a["fid_interval"] is None or b["fid_interval"] is None:
        return "too few samples to tell"
    return "within sampling noise" if a["fid_interval"].overlaps(b["fid_interval"]) else "beyond sampling noise"

# %% [markdown]
# ## 1. The cosine schedule
#
# Lab 01 drew both schedules. The linear schedule destroys the signal quickly: its $\bar\alpha_t$ is below 0.01
# for the last few hundred steps, which the network then spends on almost pure noise. The cosine schedule
# (Nichol & Dhariwal 2021, eq. 17) sets $\bar\alpha_t = f(t)/f(0)$ with $f(t) = \cos^2\!\big(\frac{t/T + s}{1+s}\cdot\frac{\pi}{2}\big)$,
# so $\bar\alpha_t$ falls almost linearly in the middle of the process and changes slowly near both ends
# (the paper's words). The lines under the plot check both sentences on these two schedules.

# %%
linear = schedules.make_schedule("linear", T=1000)
cosine = schedules.make_schedule("cosine", T=1000)
fig = plotting.plot_schedules({"linear": linear, "cosine": cosine})
for s in (linear, cosine):
    logsnr = s.log_snr()
    useful = int(((logsnr > -5) & (logsnr < 5)).sum())
    print(f"{s.name:>6}: steps with log-SNR in [-5, 5] (neither clean nor pure noise): {useful} of {s.T}")

nearly_noise = {s.name: int((s.alpha_bars < 0.01).sum()) for s in (linear, cosine)}
claims.check("the linear schedule's alpha_bar is below 0.01 for the last few hundred steps, the cosine's for far fewer",
             nearly_noise["linear"] >= 200 and nearly_noise["cosine"] < nearly_noise["linear"] / 2,
             f"steps with alpha_bar < 0.01: linear {nearly_noise['linear']}, cosine {nearly_noise['cosine']}")
middle = torch.arange(250, 750)
straight = {s.name: measures.r_squared(middle.double(), s.alpha_bars[middle].double()) for s in (linear, cosine)}
claims.check("the cosine schedule's alpha_bar falls almost linearly in the middle (t = 250..749)",
             straight["cosine"] > 0.99, f"R^2 of a straight line there: cosine {straight['cosine']:.4f}, "
             f"linear {straight['linear']:.4f}")

# %% [markdown]
# ### Where the schedules end
#
# Sampling starts from pure noise, $x_T \sim \mathcal N(0, I)$. Neither schedule ends there: at its last step
# $t = T-1$ the network is trained on an $x_{T-1} = \sqrt{\bar\alpha_{T-1}}\,x_0 + \sqrt{1-\bar\alpha_{T-1}}\,\varepsilon$
# that still holds a trace of the digit, and at sampling time it is handed one that holds none. Lin et al. 2024
# ("Common Diffusion Noise Schedules and Sample Steps are Flawed") call this a flaw, and fix it with their
# Algorithm 1: rescale $s_t = \sqrt{\bar\alpha_t}$ so that the last step is pure noise (SNR exactly 0) and the
# first step is unchanged,
#
# $$s_t \;\leftarrow\; (s_t - s_{T-1})\,\frac{s_0}{s_0 - s_{T-1}},$$
#
# then go back to betas: $\bar\alpha_t = s_t^2$, $\alpha_t = \bar\alpha_t / \bar\alpha_{t-1}$ with $\alpha_0 = \bar\alpha_0$
# (nothing comes before step 0), $\beta_t = 1 - \alpha_t$.
#
# ### Exercise 1 (2 points)
# Write `enforce_zero_terminal_snr(betas)`: `betas` is a float64 tensor `[T]`; return the rescaled betas `[T]` (the
# last one comes out exactly 1). `torch.cumprod` and `torch.cat` help; do not change `betas` itself.

# %% nbgrader={"grade": false, "grade_id": "enforce_zero_terminal_snr", "locked": false, "schema_version": 3, "solution": true}
def enforce_zero_terminal_snr(betas):
    """betas [T] -> betas [T] with sqrt(alpha_bar) shifted to 0 at T-1 and scaled back at 0 (Lin et al. 2024, Alg. 1)."""
    ### BEGIN SOLUTION
    root = torch.cumprod(1 - betas, dim=0).sqrt()  # [T] s_t = sqrt(alpha_bar_t)
    first, last = root[0], root[-1]
    root = (root - last) * first / (first - last)  # shift: s_{T-1} = 0; scale: s_0 as before
    alpha_bars = root ** 2
    alphas = torch.cat([alpha_bars[:1], alpha_bars[1:] / alpha_bars[:-1]])  # alpha_0 = alpha_bar_0
    return 1 - alphas
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_enforce_zero_terminal_snr", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_enforce_zero_terminal_snr(enforce_zero_terminal_snr)
### BEGIN HIDDEN TESTS
checks.check_enforce_zero_terminal_snr(enforce_zero_terminal_snr, seed=4, sizes=((300, "random"), (200, "cosine"), (2, "random")))
### END HIDDEN TESTS

# %% [markdown]
# Both schedules before and after, with your function (or labkit's, a line says which): how much of the digit
# $x_t$ holds, $\sqrt{\bar\alpha_t}$, over the last 200 steps.

# %%
zero_snr = checks.yours_or_labkit(checks.check_enforce_zero_terminal_snr, enforce_zero_terminal_snr,
                                  schedules.enforce_zero_terminal_snr, "enforce_zero_terminal_snr")
signal = {}  # name -> sqrt(alpha_bar) [T]
for s in (linear, cosine):
    signal[s.name] = s.alpha_bars.sqrt()
    signal[s.name + ", zero terminal SNR"] = torch.cumprod(1 - zero_snr(s.betas), dim=0).sqrt()
print("schedule                      sqrt(alpha_bar) at t = 0   at t = T-1 (what x_T holds of the digit)")
for label, root in signal.items():
    print(f"{label:>28}   {root[0]:22.6f}   {root[-1]:.2e}")
fig, ax = plt.subplots(figsize=(6, 3.4))
tail = torch.arange(800, 1000)
for label, root in signal.items():
    ax.plot(tail, root[tail], ls="--" if "zero" in label else "-", label=label)
ax.set(xlabel="step t", ylabel="sqrt(alpha_bar_t)", yscale="log", ylim=(1e-5, 0.5),
       title="the signal left in x_t near the end (0 is off the log scale)")
ax.legend(frameon=False, fontsize=8)
ax.grid(alpha=0.3)
claims.check("neither schedule ends at pure noise: the linear schedule keeps about 0.006 of the digit at T-1, the "
             "cosine over 100 times less",
             0.004 < signal["linear"][-1] < 0.008 and signal["cosine"][-1] < signal["linear"][-1] / 100,
             f"sqrt(alpha_bar_T-1): linear {signal['linear'][-1]:.2e}, cosine {signal['cosine'][-1]:.2e}")
claims.check("after the rescaling the last step holds no signal at all and the first step is unchanged",
             all(float(signal[n + ", zero terminal SNR"][-1]) == 0.0
                 and abs(float(signal[n + ", zero terminal SNR"][0] - signal[n][0])) < 1e-12 for n in ("linear", "cosine")),
             "; ".join(f"{n}: {float(signal[n + ', zero terminal SNR'][-1]):.1e} at T-1, first step changed by "
                       f"{abs(float(signal[n + ', zero terminal SNR'][0] - signal[n][0])):.0e}" for n in ("linear", "cosine")))

# %% [markdown]
# The labs' models keep the schedules they were trained with, for a reason: at SNR 0 the noise prediction says
# nothing about the digit, and $\hat x_0 = (x_t - \sqrt{1-\bar\alpha}\,\hat\varepsilon)/\sqrt{\bar\alpha}$ divides
# by 0. Lin et al. therefore train such a schedule with the "v-prediction" of Salimans & Ho (2022) and need a new
# training run. Their second fix needs none: sampling grids that start at $T-1$ (section 3).

# %% [markdown]
# Does it matter for a trained model? We train the same network twice, once per schedule, with the same
# data, seed and budget, and sample both the same way. On a GPU these are real models (1500 steps, a few
# minutes); on a CPU `CPU_STEPS` = 1000 steps each (about 2 minutes each on 2 idle cores: weak models, but the
# comparison is fair, and a slower machine says so and takes longer); in fast mode (grading, CI) a few steps
# each, which only shows that the code runs.

# %%
train_digits, _ = colab.lab_digits(train=True, n=None if not FAST else 512, verbose=False)
if FAST:
    make = lambda name: recipes.tiny(steps=3, schedule=name)  # noqa: E731
elif ON_GPU:
    make = lambda name: recipes.gpu(steps=1500, schedule=name, out_dir=None, sample_every=0)  # noqa: E731
else:  # a budget in steps, not seconds: both schedules train exactly as long on every machine
    make = lambda name: recipes.cpu(minutes=None, total_steps=CPU_STEPS, schedule=name, out_dir=None)  # noqa: E731
CPU_STEPS = 1000
PATIENCE_S = 300  # more than this many seconds projected per schedule: say so


def slow_machine_note(info):
    """After 20 steps: one visible line when the budget will take long on this machine (training goes on)."""
    steps = make("cosine").total_steps
    if info.step == 20 and not FAST and info.elapsed_s / 20 * steps > PATIENCE_S:
        print(f"NOTE: this machine needs about {info.elapsed_s / 20 * steps / 60:.0f} minutes per schedule for the "
              f"{steps} steps the comparison needs: let it run, or skip this cell (fewer steps compare nothing).")
    return False


trained = {}
for name in ("linear", "cosine"):
    start = time.perf_counter()
    result = training.train(make(name), data=train_digits, device=DEVICE, progress=not FAST,
                            callback=slow_machine_note)
    trained[name] = result
    loss = f"final loss {result.losses[-1][1]:.4f}" if result.losses else "too few steps to log a loss"
    print(f"{name}: {result.step} steps in {time.perf_counter() - start:.0f} s, {loss}")

# %%
n_cmp = colab.pick(50, 2)  # samples per digit
y_cmp = torch.arange(10, device=DEVICE).repeat(n_cmp)
rows, comparison = {}, {}
for name, result in trained.items():
    x = samplers.sample(result.ema, (len(y_cmp), 1, 28, 28), y_cmp, result.schedule, sampler="dpmpp_2m", steps=STEPS,
                        guidance=1.0, clip=1.0, generator=torch.Generator(DEVICE).manual_seed(0))
    comparison[name] = judge(x, y_cmp)
    rows[name] = x[:10]
    print(f"{name:>6} schedule: {fmt(comparison[name])}")
print(f"the two FIDs differ {fid_noise(comparison['linear'], comparison['cosine'])} (90% intervals)")
fig = plotting.compare_rows(rows, col_titles=[str(d) for d in range(10)],
                            title="same network, data and budget; only the schedule differs")

# %% [markdown]
# ## 2. Classifier-free guidance
#
# The model was trained with the label replaced by "no class" 10% of the time, so one network predicts both
# $\hat\varepsilon(x_t, t, y)$ and $\hat\varepsilon(x_t, t, \varnothing)$. Guidance extrapolates away from the
# unconditional prediction (Ho & Salimans 2022, eq. 6):
#
# $$\tilde\varepsilon = (1 + w)\,\hat\varepsilon(x_t, t, y) - w\,\hat\varepsilon(x_t, t, \varnothing).$$
#
# $w = 0$ is the plain conditional model. (Some libraries call $s = 1 + w$ the "scale"; here $w$ follows the paper.)
#
# ### Exercise 2 (2 points)
# Write `cfg_combine(eps_cond, eps_uncond, w)`: two tensors of the same shape and a float; return the guided
# noise estimate.

# %% nbgrader={"grade": false, "grade_id": "cfg_combine", "locked": false, "schema_version": 3, "solution": true}
def cfg_combine(eps_cond, eps_uncond, w):
    """(1 + w) * eps_cond - w * eps_uncond  (Ho & Salimans 2022, eq. 6)."""
    ### BEGIN SOLUTION
    return (1 + w) * eps_cond - w * eps_uncond
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_cfg_combine", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_cfg_combine(cfg_combine)
### BEGIN HIDDEN TESTS
checks.check_cfg_combine(cfg_combine, seed=5, sizes=((2, 3, 4, 4),), ws=(7.5, 1.0, 0.25))
### END HIDDEN TESTS

# %% [markdown]
# Guidance is not a new sampler: it is a new *model*. Wrapped around the network, it answers every
# `model(x, t, y)` with the guided prediction, and any sampler runs on it unchanged.
#
# ### Exercise 3 (2 points)
# Write `cfg_eps(model, x, t, y, w, null_class)`: the guided noise prediction of `model` at `(x, t, y)`, with
# **your** `cfg_combine`. The unconditional prediction is the same network told "no class": every image's label
# replaced by `null_class` (`torch.full_like(y, null_class)`). `x`: `[B, C, H, W]`; `t`, `y`: int64 `[B]`.
# Two calls of the model are fine; one call on a doubled batch (`torch.cat`) is what `labkit.guidance` does,
# faster on a GPU. The check runs it on small test models whose "no class" label differs.

# %% nbgrader={"grade": false, "grade_id": "cfg_eps", "locked": false, "schema_version": 3, "solution": true}
def cfg_eps(model, x, t, y, w, null_class):
    """The guided prediction: cfg_combine(model(x, t, y), model(x, t, no class), w)."""
    ### BEGIN SOLUTION
    eps_cond = model(x, t, y)
    eps_uncond = model(x, t, torch.full_like(y, null_class))
    return cfg_combine(eps_cond, eps_uncond, w)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_cfg_eps", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_cfg_eps(cfg_eps)
### BEGIN HIDDEN TESTS
checks.check_cfg_eps(cfg_eps, seed=3, sizes=((4, 1, 8, 8),), ws=(7.5, 1.0), classes=(10, 7))
### END HIDDEN TESTS

# %% [markdown]
# Now a trained model (yours from lab 04 when its checkpoint is in the runs folder, else the one that ships with
# labkit: the first line says which), guided by your `cfg_eps` (or labkit's, if yours does not pass yet). We sweep $w$ and
# measure fidelity (accuracy) against fidelity-and-diversity (FID) for the same starting noise; `labkit`'s
# DPM-Solver++ draws the samples (you write its loop below).

# %%
model, schedule, meta = checks.trained_model(DEVICE, runs=colab.runs_dir(mount=False))  # yours from lab 04, if here
NULL = model.config.null_class  # the model's "no class" label (10 for MNIST)
guide = checks.yours_or_labkit(checks.check_cfg_eps, cfg_eps, guidance.cfg_eps, "cfg_eps")


def guided(model, w):
    """model(x, t, y) guided with weight w: your cfg_eps (or labkit's) around the network."""
    return lambda x, t, y: guide(model, x, t, y, w, NULL)


ws = colab.pick([0.0, 0.5, 1.0, 2.0, 4.0, 8.0], [0.0, 2.0])
n_w = colab.pick(100 if ON_GPU else 30, 2)  # samples per digit and w
y_w = torch.arange(10, device=DEVICE).repeat(n_w)
sweep, grids = {}, {}
for w in ws:
    x = samplers.sample(guided(model, w), (len(y_w), 1, 28, 28), y_w, schedule, sampler="dpmpp_2m", steps=STEPS,
                        clip=1.0, generator=torch.Generator(DEVICE).manual_seed(0))
    sweep[w] = judge(x, y_w)
    grids[w] = x[:30]
    print(f"w = {w:4}: {fmt(sweep[w])}")
w_best = min(ws, key=lambda w: sweep[w]["fid_ratio"])
claims.check("guidance trades diversity for fidelity: the largest w is recognised more often than w = 0, "
             "and its FID is worse than the best w's, beyond sampling noise",
             sweep[ws[-1]]["accuracy"] > sweep[0.0]["accuracy"]
             and sweep[ws[-1]]["fid_ratio"] > sweep[w_best]["fid_ratio"]
             and fid_noise(sweep[ws[-1]], sweep[w_best]) == "beyond sampling noise",
             f"accuracy {sweep[0.0]['accuracy']:.1%} at w = 0, {sweep[ws[-1]]['accuracy']:.1%} at w = {ws[-1]:g}; "
             f"FID/floor {sweep[ws[-1]]['fid_ratio']:.1f}x there (interval {sweep[ws[-1]]['fid_low_ratio']:.1f}-"
             f"{sweep[ws[-1]]['fid_high_ratio']:.1f}x), best {sweep[w_best]['fid_ratio']:.1f}x at w = {w_best:g} "
             f"({sweep[w_best]['fid_low_ratio']:.1f}-{sweep[w_best]['fid_high_ratio']:.1f}x)")

fig, ax = plt.subplots(figsize=(5.5, 3.8))
ax.errorbar([sweep[w]["fid_ratio"] for w in ws], [sweep[w]["accuracy"] for w in ws],
            yerr=[se(sweep[w]) for w in ws], fmt="o-", capsize=3)  # error bars: one standard error of the accuracy
for w in ws:
    ax.annotate(f"w={w:g}", (sweep[w]["fid_ratio"], sweep[w]["accuracy"]), textcoords="offset points", xytext=(5, 5))
ax.set(xlabel="FID / real floor (lower: closer to real digits)", ylabel="classifier accuracy (bars: 1 s.e.)",
       title="the fidelity-diversity trade-off of guidance")
ax.grid(alpha=0.3)

# %%
for w in ws[:: max(1, len(ws) // 3)]:
    fig = plotting.image_grid(grids[w], ncols=10, title=f"w = {w:g} (same noise in every grid)", size=0.8)

# %% [markdown]
# ### Keeping strongly guided guesses in range
#
# At a large $w$ the guided prediction overshoots: the model's guess of the clean digit,
# $\hat x_0 = (x_t - \sqrt{1-\bar\alpha}\,\tilde\varepsilon)/\sqrt{\bar\alpha}$, reaches far outside the pixel range
# $[-1, 1]$. The samplers here clip it to $[-1, 1]$ ("static thresholding"), which flattens every pixel beyond into the
# same saturated value. Imagen (Saharia et al. 2022, section 2.3) uses **dynamic thresholding** instead: per image,
# $s$ = the `percentile`-th quantile of $|\hat x_0|$ over its pixels, but at least 1; then clamp $\hat x_0$ to
# $[-s, s]$ and divide by $s$. The image comes back into $[-1, 1]$ with its contrast; one that was already in range
# ($s = 1$) only loses its few outliers.
#
# ### Exercise 4 (2 points)
# Write `dynamic_threshold(x0_hat, percentile)`: `x0_hat` is `[B, C, H, W]`, `percentile` a fraction such as 0.995.
# Return the thresholded images, `[B, C, H, W]`. (`torch.quantile(v, q, dim=1)` of `v = ....flatten(1)` gives one
# value per image; `clamp` also takes tensors as bounds.)

# %% nbgrader={"grade": false, "grade_id": "dynamic_threshold", "locked": false, "schema_version": 3, "solution": true}
def dynamic_threshold(x0_hat, percentile):
    """s = max(1, quantile(|x0_hat|, percentile)) per image; clamp to [-s, s], divide by s (Saharia et al. 2022)."""
    ### BEGIN SOLUTION
    s = torch.quantile(x0_hat.flatten(1).abs(), percentile, dim=1)  # [B]
    s = s.clamp(min=1).view(-1, 1, 1, 1)  # [B, 1, 1, 1]: images within [-1, 1] stay as they are
    return x0_hat.clamp(-s, s) / s
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_dynamic_threshold", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_dynamic_threshold(dynamic_threshold)
### BEGIN HIDDEN TESTS
checks.check_dynamic_threshold(dynamic_threshold, seed=2, sizes=((6, 1, 28, 28),), percentiles=(0.99, 0.5))
### END HIDDEN TESTS

# %% [markdown]
# The largest $w$ of the sweep again, from the same noise, once with $\hat x_0$ clipped to $[-1, 1]$ and once with
# your `dynamic_threshold` (or labkit's, a line says which) at the 99.5th percentile, through `sample`'s `clip`
# argument, which also takes a function of $\hat x_0$.

# %%
thresh = checks.yours_or_labkit(checks.check_dynamic_threshold, dynamic_threshold, samplers.dynamic_threshold,
                                "dynamic_threshold")
w_big = ws[-1]
y_t = torch.arange(10, device=DEVICE).repeat(colab.pick(10, 1))  # samples per digit
kept_in_range, rows_t = {}, {}
for label, clip in (("clipped to [-1, 1]", 1.0), ("dynamic thresholding", lambda x0: thresh(x0, 0.995))):
    x = samplers.sample(guided(model, w_big), (len(y_t), 1, 28, 28), y_t, schedule, sampler="dpmpp_2m", steps=STEPS,
                        clip=clip, generator=torch.Generator(DEVICE).manual_seed(0))
    kept_in_range[label] = judge(x, y_t)
    rows_t[label] = x[:10]
    print(f"w = {w_big:g}, {label:>20}: {fmt(kept_in_range[label])}")
fig = plotting.compare_rows(rows_t, col_titles=[str(d) for d in range(10)],
                            title=f"w = {w_big:g}, same noise: two ways to keep x0_hat in range")

# %% [markdown]
# Compare the two rows and their numbers. Dividing by $s$ pulls *every* pixel towards 0, the background too: on a
# photograph that is a change of contrast, but most pixels of an MNIST digit sit exactly at the black $-1$, and the
# early, noisy guesses can have a large $s$. Does your run show a grey background or lost strokes, and what does the
# judge say? Imagen needed dynamic thresholding for weights of 5 to 30 on photographs: whether an improvement helps
# depends on the data, which is what the measurement is for.

# %% [markdown]
# ## 3. Fewer steps: DDIM and DPM-Solver++
#
# **DDIM** (Song et al. 2021, eq. 12) reuses the trained network but takes a different, possibly deterministic,
# path from step $t$ to any earlier step $t'$. With $\bar\alpha = \bar\alpha_t$, $\bar\alpha' = \bar\alpha_{t'}$,
#
# $$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha}\,\hat\varepsilon}{\sqrt{\bar\alpha}},\qquad
# x_{t'} = \sqrt{\bar\alpha'}\,\hat x_0 + \sqrt{1-\bar\alpha'-\sigma^2}\,\hat\varepsilon + \sigma z,\qquad
# \sigma = \eta\sqrt{\frac{1-\bar\alpha'}{1-\bar\alpha}}\sqrt{1-\frac{\bar\alpha}{\bar\alpha'}}\ \ \text{(eq. 16)}.$$
#
# $\eta = 0$ is deterministic (an ODE solver); $\eta = 1$ on every step is DDPM again.
#
# ### Exercise 5 (1 point)
# Write `ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)`, the $\sigma$ of eq. 16: `alpha_bar_t`, `alpha_bar_prev` are
# `[B, 1, 1, 1]`, `eta` a float; return $\sigma$, `[B, 1, 1, 1]`.

# %% nbgrader={"grade": false, "grade_id": "ddim_sigma", "locked": false, "schema_version": 3, "solution": true}
def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta):
    """eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev)  (Song et al. 2021, eq. 16)."""
    ### BEGIN SOLUTION
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t)).sqrt() * (1 - alpha_bar_t / alpha_bar_prev).sqrt()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_ddim_sigma", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_ddim_sigma(ddim_sigma)
### BEGIN HIDDEN TESTS
checks.check_ddim_sigma(ddim_sigma, seed=7, sizes=((9, 1, 1, 1),), etas=(0.3, 2.0))
### END HIDDEN TESTS

# %% [markdown]
# "$\eta = 1$ is DDPM again": on the full chain ($t' = t - 1$) your $\sigma$ with $\eta = 1$ should be DDPM's
# posterior standard deviation $\sqrt{\tilde\beta_t}$, $\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$
# (lab 05), at every step of the cosine schedule.

# %%
sigma_of = checks.yours_or_labkit(checks.check_ddim_sigma, ddim_sigma, samplers.ddim_sigma, "ddim_sigma")
ab, ab_prev = cosine.alpha_bars[1:].view(-1, 1, 1, 1), cosine.alpha_bars[:-1].view(-1, 1, 1, 1)  # t = 1 .. T-1
ddpm_std = ((1 - ab_prev) / (1 - ab) * cosine.betas[1:].view(-1, 1, 1, 1)).sqrt()  # sqrt(beta_tilde_t)
gap = float((sigma_of(ab, ab_prev, 1.0) - ddpm_std).abs().max())
claims.check("with eta = 1 and t' = t - 1, DDIM's sigma is DDPM's posterior standard deviation at every step",
             gap < 1e-6, f"largest difference over t = 1..{cosine.T - 1}: {gap:.1e}")

# %% [markdown]
# ### Exercise 6 (3 points)
# Write `ddim_step(x_t, eps_hat, alpha_bar_t, alpha_bar_prev, eta, z)` with **your** `ddim_sigma`: `x_t`, `eps_hat`,
# `z` are `[B, C, H, W]`; `alpha_bar_t`, `alpha_bar_prev` are per image, already shaped `[B, 1, 1, 1]`
# (`alpha_bar_prev = 1` on the final step to clean data); `eta` is a float. Return $x_{t'}$.

# %% nbgrader={"grade": false, "grade_id": "ddim_step", "locked": false, "schema_version": 3, "solution": true}
def ddim_step(x_t, eps_hat, alpha_bar_t, alpha_bar_prev, eta, z):
    """One DDIM step from alpha_bar_t to alpha_bar_prev (Song et al. 2021, eqs. 12 and 16)."""
    ### BEGIN SOLUTION
    x0_hat = (x_t - (1 - alpha_bar_t).sqrt() * eps_hat) / alpha_bar_t.sqrt()
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    direction = (1 - alpha_bar_prev - sigma ** 2).clamp(min=0).sqrt() * eps_hat
    return alpha_bar_prev.sqrt() * x0_hat + direction + sigma * z
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_ddim_step", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_ddim_step(ddim_step)
### BEGIN HIDDEN TESTS
checks.check_ddim_step(ddim_step, seed=3, sizes=((5, 1, 28, 28),), etas=(0.2, 1.0))
### END HIDDEN TESTS

# %% [markdown]
# A sampler walks a **grid**: a descending list of time steps $[t_0 > t_1 > \dots]$. Step $i$ goes from
# $t = $ `grid[i]` to the next grid step `grid[i + 1]`, and the last one goes to clean data, where $\bar\alpha' = 1$.
# Which steps? Lin et al. 2024 (table 2) compare three ways of spreading `steps` of them evenly over $0, \dots, T-1$
# (the paper counts $t$ from 1 to $T$; here $t$ is the paper's minus 1), with $i = 0, \dots, \text{steps}-1$:
#
# | spacing | $t_i$ | $T = 1000$, 10 steps |
# |---|---|---|
# | `"linspace"` | $\mathrm{round}\big((T-1)(1 - i/(\text{steps}-1))\big)$ | 999, 888, 777, ..., 111, 0 |
# | `"leading"` | $(\text{steps}-1-i)\cdot\lfloor T/\text{steps}\rfloor$ | 900, 800, 700, ..., 100, 0 |
# | `"trailing"` | $\mathrm{round}(T - i\,T/\text{steps}) - 1$ | 999, 899, 799, ..., 199, 99 |
#
# round() rounds halves to the even neighbour (as `torch.round` does). Sampling starts from pure noise: a grid that
# does not start at $T-1$ hands the network pure noise at a step where it expects to see some of the digit.
# (`samplers.timestep_grid(schedule, steps)`, which the cells below use, spaces the steps evenly in log-SNR
# instead, as Lu et al. 2022 recommend; its `spacing="uniform"` is "linspace".)
#
# ### Exercise 7 (2 points)
# Write `spaced_timesteps(T, steps, spacing)`: `T` and `steps` are ints ($2 \le$ `steps` $\le T$), `spacing` is one
# of `"linspace"`, `"leading"`, `"trailing"`. Return the grid, int64 `[steps]`, descending.

# %% nbgrader={"grade": false, "grade_id": "spaced_timesteps", "locked": false, "schema_version": 3, "solution": true}
def spaced_timesteps(T, steps, spacing):
    """int64 [steps], descending: Lin et al. 2024, table 2 ("linspace", "leading", "trailing"), t from 0."""
    ### BEGIN SOLUTION
    i = torch.arange(steps, dtype=torch.float64)  # [steps]
    if spacing == "linspace":
        return torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long()
    if spacing == "leading":
        return ((steps - 1 - i) * (T // steps)).long()
    if spacing == "trailing":
        return (T - i * T / steps).round().long() - 1
    raise ValueError(f"unknown spacing {spacing!r}")
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_spaced_timesteps", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_spaced_timesteps(spaced_timesteps)
### BEGIN HIDDEN TESTS
checks.check_spaced_timesteps(spaced_timesteps, seed=3, cases=((1000, 12), (60, 11), (20, 20)))
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 8 (3 points)
# Write `ddim_loop(model, x_T, y, grid, alpha_bars, eta, noises)`, which returns $x_0$, with **your** `ddim_step`:
#
# ```
# x <- x_T
# for i, t in enumerate(grid):
#     eps_hat <- model(x, t, y)                     t one per image: int64 [B]
#     x <- ddim_step(x, eps_hat, alpha_bar at t, alpha_bar at the next grid step (1 after the last), eta, noises[i])
# ```
#
# `grid`: int64 `[S]`, descending; `alpha_bars`: `[T]`, the whole schedule; `eta`: a float; `noises`:
# `[S, B, C, H, W]`, the $z$ of step $i$ (unused when $\eta = 0$). A single value `alpha_bars[t]` (a 0-d tensor)
# broadcasts like `[B, 1, 1, 1]`. The check walks grids that start at $T-1$, short grids and a one-step grid.

# %% nbgrader={"grade": false, "grade_id": "ddim_loop", "locked": false, "schema_version": 3, "solution": true}
def ddim_loop(model, x_T, y, grid, alpha_bars, eta, noises):
    """DDIM down the descending grid (Song et al. 2021, eq. 12), noises[i] at step i -> x_0 [B, C, H, W]."""
    ### BEGIN SOLUTION
    x = x_T
    for i in range(len(grid)):
        eps_hat = model(x, grid[i].expand(x.shape[0]), y)
        ab_t = alpha_bars[grid[i]]  # a 0-d tensor: broadcasts like [B, 1, 1, 1]
        ab_prev = alpha_bars[grid[i + 1]] if i + 1 < len(grid) else torch.ones_like(ab_t)  # 1: clean data
        x = ddim_step(x, eps_hat, ab_t, ab_prev, eta, noises[i])
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_ddim_loop", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_ddim_loop(ddim_loop)
### BEGIN HIDDEN TESTS
checks.check_ddim_loop(ddim_loop, seed=4, sizes=((4, 1, 8, 8),), T=60, steps=(9, 2), etas=(0.5,))
### END HIDDEN TESTS

# %% [markdown]
# **DPM-Solver++(2M)** (Lu et al. 2022, Algorithm 2) treats sampling as an ODE in
# $\lambda = \log(\alpha/\sigma)$ (half the log-SNR; $\alpha = \sqrt{\bar\alpha}$, $\sigma = \sqrt{1-\bar\alpha}$)
# and uses the *previous* step's $\hat x_0$ as well, for second-order accuracy at the price of one network
# call per step. With $h = \lambda_{t'} - \lambda_t$ and, from the previous step, $h_{\text{last}} = \lambda_t - \lambda_{\text{last}}$:
#
# $$r = \frac{h_{\text{last}}}{h},\qquad D = \Big(1 + \frac{1}{2r}\Big)\hat x_0 - \frac{1}{2r}\,\hat x_0^{\text{prev}},\qquad
# x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t - \alpha_{t'}\,\big(e^{-h} - 1\big)\,D .$$
#
# On the first step there is no previous $\hat x_0$: then $D = \hat x_0$ (this first-order step is DDIM with $\eta = 0$).
#
# ### Exercise 9 (3 points)
# Write `dpmpp_2m_step(x_t, x0_hat, x0_prev, alpha_bar_t, alpha_bar_prev, alpha_bar_last)`: `x0_prev` and
# `alpha_bar_last` are `None` on the first step; all `alpha_bar_*` are `[B, 1, 1, 1]` and strictly between
# 0 and 1 here (labkit handles the final jump to clean data separately). Return $x_{t'}$.

# %% nbgrader={"grade": false, "grade_id": "dpmpp_2m_step", "locked": false, "schema_version": 3, "solution": true}
def dpmpp_2m_step(x_t, x0_hat, x0_prev, alpha_bar_t, alpha_bar_prev, alpha_bar_last):
    """One DPM-Solver++(2M) step in data-prediction form (Lu et al. 2022, Algorithm 2)."""
    ### BEGIN SOLUTION
    def lam(ab):  # lambda = log(alpha / sigma)
        return 0.5 * torch.log(ab / (1 - ab))

    h = lam(alpha_bar_prev) - lam(alpha_bar_t)
    D = x0_hat
    if x0_prev is not None:
        r = (lam(alpha_bar_t) - lam(alpha_bar_last)) / h
        D = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * x0_prev
    ratio = ((1 - alpha_bar_prev) / (1 - alpha_bar_t)).sqrt()  # sigma_prev / sigma_t
    return ratio * x_t - alpha_bar_prev.sqrt() * torch.expm1(-h) * D
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_dpmpp_2m_step", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_dpmpp_2m_step(dpmpp_2m_step)
### BEGIN HIDDEN TESTS
checks.check_dpmpp_2m_step(dpmpp_2m_step, seed=6, sizes=((3, 1, 28, 28),))
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 10 (3 points)
# Write `dpmpp_2m_loop(model, x_T, y, grid, alpha_bars)`, which returns $x_0$, with **your** `dpmpp_2m_step`. Each
# step computes $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$ from the model's
# $\hat\varepsilon$ and hands it to your step together with the **previous** step's $\hat x_0$ and $\bar\alpha_t$
# (`None` and `None` on the first step, which is then first order). Carry them from step to step: after each
# step, this step's $\hat x_0$ and $\bar\alpha_t$ become the next step's `x0_prev` and `alpha_bar_last`. The last
# step goes to clean data ($\bar\alpha' = 1$, $\lambda' = \infty$), where the formula breaks down: there the
# answer is $\hat x_0$ itself. Same `grid` and `alpha_bars` as in exercise 8; no noise (it is an ODE solver).

# %% nbgrader={"grade": false, "grade_id": "dpmpp_2m_loop", "locked": false, "schema_version": 3, "solution": true}
def dpmpp_2m_loop(model, x_T, y, grid, alpha_bars):
    """DPM-Solver++(2M) down the descending grid (Lu et al. 2022, Algorithm 2) -> x_0 [B, C, H, W]."""
    ### BEGIN SOLUTION
    x, x0_prev, ab_last = x_T, None, None
    for i in range(len(grid)):
        eps_hat = model(x, grid[i].expand(x.shape[0]), y)
        ab_t = alpha_bars[grid[i]]  # a 0-d tensor: broadcasts like [B, 1, 1, 1]
        x0_hat = (x - (1 - ab_t).sqrt() * eps_hat) / ab_t.sqrt()
        last = i + 1 == len(grid)  # the step to clean data: there the answer is x0_hat itself
        x = x0_hat if last else dpmpp_2m_step(x, x0_hat, x0_prev, ab_t, alpha_bars[grid[i + 1]], ab_last)
        x0_prev, ab_last = x0_hat, ab_t  # the history of the next step
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_dpmpp_2m_loop", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_dpmpp_2m_loop(dpmpp_2m_loop)
### BEGIN HIDDEN TESTS
checks.check_dpmpp_2m_loop(dpmpp_2m_loop, seed=5, sizes=((4, 1, 8, 8),), T=60, steps=(10, 2))
### END HIDDEN TESTS

# %% [markdown]
# ### Quality and time against the number of network evaluations
#
# Each sampler draws the same digits from the same starting noise with a given number of steps (NFE: network
# function evaluations per sample; guidance doubles the batch, not the NFE count), all on the model guided with
# $w = 1$ and on the same grid: DDIM ($\eta = 0$) and DPM-Solver++ are your loops (or labkit's, a line says
# which), DDPM is lab 05's ancestral sampler from `labkit`. No sampler clips $\hat x_0$ here. We time each run and
# judge the results.

# %%
if FAST:
    nfes = [2, 4]
elif ON_GPU:
    nfes = [5, 10, 20, 50, 100, 250, 1000]
else:
    nfes = [5, 10, 20, 50, 100]
n_nfe = colab.pick(50 if ON_GPU else 10, 1)  # samples per digit
y_n = torch.arange(10, device=DEVICE).repeat(n_nfe)
ddim = checks.yours_or_labkit(checks.check_ddim_loop, ddim_loop, samplers.ddim_loop, "ddim_loop")
dpmpp = checks.yours_or_labkit(checks.check_dpmpp_2m_loop, dpmpp_2m_loop, samplers.dpmpp_2m_loop, "dpmpp_2m_loop")
guided_1 = guided(model, 1.0)
alpha_bars = schedule.alpha_bars.to(DEVICE)  # [T]


@torch.no_grad()
def run(sampler, nfe, y, seed):
    """x_0 [B, 1, 28, 28] from one sampler with nfe steps, starting from the noise of ``seed``."""
    g = torch.Generator(DEVICE).manual_seed(seed)
    x_T = torch.randn((len(y), 1, 28, 28), generator=g, device=DEVICE)
    grid = samplers.timestep_grid(schedule, nfe).to(DEVICE)  # [nfe] descending
    if sampler == "ddim":
        no_noise = torch.zeros((1,) + tuple(x_T.shape), device=DEVICE).expand(nfe, *x_T.shape)  # eta = 0 uses none
        return ddim(guided_1, x_T, y, grid, alpha_bars, 0.0, no_noise)
    if sampler == "dpmpp_2m":
        return dpmpp(guided_1, x_T, y, grid, alpha_bars)
    return samplers.sample(guided_1, tuple(x_T.shape), y, schedule, sampler="ddpm", steps=nfe, x_T=x_T, generator=g)


results = {s: {} for s in ("ddpm", "ddim", "dpmpp_2m")}
for sampler in results:
    for nfe in nfes:
        if ON_GPU:
            torch.cuda.synchronize()
        start = time.perf_counter()
        x = run(sampler, nfe, y_n, seed=0).clamp(-1, 1)
        if ON_GPU:
            torch.cuda.synchronize()
        r = judge(x, y_n)
        r["seconds"] = time.perf_counter() - start
        results[sampler][nfe] = r
        print(f"{sampler:>8} NFE {nfe:4}: {fmt(r)}  {r['seconds']:6.2f} s")

# The introduction's claim: DDIM and DPM-Solver++ need 10-20 evaluations, not 1000. "As good" = within the
# sampling noise of accuracy at this n: max(3 points, 2 standard errors of a difference).
knee = 20
best = {s: max(r["accuracy"] for r in results[s].values()) for s in ("ddim", "dpmpp_2m")}
if knee in nfes:  # (not in fast mode)
    claims.check(f"DDIM and DPM-Solver++ reach their best accuracy (within sampling noise) by {knee} evaluations",
                 all(results[s][knee]["accuracy"] >= best[s] - float(measures.accuracy_margin(best[s], len(y_n)))
                     for s in best),
                 "; ".join(f"{s}: {results[s][knee]['accuracy']:.0%} at {knee}, best {best[s]:.0%}" for s in best))

fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for sampler, by_nfe in results.items():
    axes[0].errorbar(nfes, [by_nfe[n]["accuracy"] for n in nfes], yerr=[se(by_nfe[n]) for n in nfes], fmt="o-",
                     capsize=3, label=sampler)
    centre = [by_nfe[n]["fid_corrected_ratio"] for n in nfes]  # the bias-free FID / floor, with its 90% interval
    bars = [[max(0, c - by_nfe[n]["fid_low_ratio"]) for c, n in zip(centre, nfes)],
            [max(0, by_nfe[n]["fid_high_ratio"] - c) for c, n in zip(centre, nfes)]]
    axes[1].errorbar(nfes, centre, yerr=bars, fmt="o-", capsize=3, label=sampler)
    axes[2].plot(nfes, [by_nfe[n]["seconds"] for n in nfes], "o-", label=sampler)
axes[0].set(ylabel="classifier accuracy (bars: 1 s.e.)", title=f"fidelity ({len(y_n)} samples per point)")
axes[1].set(ylabel="FID without its bias / floor (90%)", title="distance to real digits (0: perfect)")
axes[1].set_yscale("symlog", linthresh=1)  # linear below 1x the floor (an interval may reach 0), log above
axes[2].set(ylabel=f"seconds for {len(y_n)} samples", title=f"wall time on {DEVICE}", yscale="log")
for ax in axes:
    ax.set(xlabel="network evaluations (NFE)", xscale="log")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
fig.tight_layout()

# %%
strips = {}
for sampler in results:
    strips[sampler] = torch.stack([run(sampler, nfe, torch.tensor([3], device=DEVICE), seed=4)[0].clamp(-1, 1)
                                   for nfe in nfes])
fig = plotting.compare_rows(strips, col_titles=[f"NFE {n}" for n in nfes], title="one '3', same starting noise")
if not meta["pretrained"]:
    print("No shipped checkpoint here: these samples come from an untrained stand-in, so the numbers mean nothing.")

# %% [markdown]
# ### Where the curves flatten
#
# Each sampler's accuracy rises with the NFE and then flattens: past some number of evaluations, more cost time and
# buy nothing that the sampling noise could not explain. That number, the "knee", is the step count to choose.
#
# ### Exercise 11 (1 point)
# Write `fewest_evaluations(nfes, quality, margin)`: `nfes` int64 `[K]`, the numbers of evaluations of the columns
# (in any order); `quality` `[S, K]`, one row per sampler (higher is better); `margin` a float. Return int64 `[S]`:
# for each sampler the smallest NFE whose quality is at least that sampler's own best minus `margin`.

# %% nbgrader={"grade": false, "grade_id": "fewest_evaluations", "locked": false, "schema_version": 3, "solution": true}
def fewest_evaluations(nfes, quality, margin):
    """[K], [S, K] -> int64 [S]: per row, the smallest NFE with quality >= the row's best - margin."""
    ### BEGIN SOLUTION
    best = quality.max(dim=1, keepdim=True).values  # [S, 1]: each sampler's own best
    good = quality >= best - margin  # [S, K]
    never = torch.full_like(nfes, int(nfes.max()) + 1)  # more than any NFE: never the smallest
    return torch.where(good, nfes[None, :], never[None, :]).min(dim=1).values
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_fewest_evaluations", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_fewest_evaluations(fewest_evaluations)
### BEGIN HIDDEN TESTS
checks.check_fewest_evaluations(fewest_evaluations, seed=5, sizes=((5, 7), (1, 3)), margins=(0.0, 0.03125))
### END HIDDEN TESTS

# %% [markdown]
# Your table through your function (or labkit's): the margin is each sampler's sampling noise, two standard errors
# of a difference of two accuracies at this $n$ and at least 3 points (`measures.accuracy_margin`, lab 09).

# %%
knee_of = checks.yours_or_labkit(checks.check_fewest_evaluations, fewest_evaluations, measures.fewest_evaluations,
                                 "fewest_evaluations")
nfe_tensor = torch.tensor(nfes)  # [K]
for sampler, by_nfe in results.items():
    accuracies = torch.tensor([[by_nfe[n]["accuracy"] for n in nfes]], dtype=torch.float64)  # [1, K]
    margin = float(measures.accuracy_margin(float(accuracies.max()), len(y_n)))
    knee_nfe = int(knee_of(nfe_tensor, accuracies, margin)[0])
    print(f"{sampler:>8}: {knee_nfe:4} evaluations reach its best accuracy within {margin:.1%}: "
          f"{by_nfe[knee_nfe]['seconds']:.1f} s, against {by_nfe[nfes[-1]]['seconds']:.1f} s at {nfes[-1]}")

# %% [markdown]
# ### Where the grid starts
#
# The same model ($w = 1$) and the same starting noise, DDIM ($\eta = 0$, your loop or labkit's) with 10 steps on
# each of the three grids (your `spaced_timesteps` or labkit's), and on labkit's log-SNR grid for comparison. Each
# line says where its grid starts and how much of the digit an $x_t$ holds there, $\sqrt{\bar\alpha_t}$: sampling
# hands the network pure noise at that step whatever it expects.

# %%
spaced = checks.yours_or_labkit(checks.check_spaced_timesteps, spaced_timesteps, samplers.spaced_timesteps,
                                "spaced_timesteps")
GRID_STEPS = colab.pick(10, 3)
y_g = torch.arange(10, device=DEVICE).repeat(colab.pick(10, 1))  # samples per digit
x_T = torch.randn((len(y_g), 1, 28, 28), generator=torch.Generator(DEVICE).manual_seed(0), device=DEVICE)
no_noise = torch.zeros((GRID_STEPS,) + tuple(x_T.shape), device=DEVICE)  # eta = 0 uses none
time_grids = {s: spaced(schedule.T, GRID_STEPS, s) for s in ("linspace", "leading", "trailing")}
time_grids["log-SNR (labkit)"] = samplers.timestep_grid(schedule, GRID_STEPS)
by_grid = {}
for label, grid in time_grids.items():
    with torch.no_grad():
        x = ddim(guided_1, x_T, y_g, grid.to(DEVICE), alpha_bars, 0.0, no_noise).clamp(-1, 1)
    by_grid[label] = judge(x, y_g)
    first_t = int(grid[0])
    print(f"{label:>16}: t = {first_t:4} .. {int(grid[-1]):3}, sqrt(alpha_bar) at the start "
          f"{float(alpha_bars[first_t].sqrt()):.4f}   {fmt(by_grid[label])}")
leading_start = int(time_grids["leading"][0])
claims.check("the 'leading' grid never visits T-1: it starts where x_t still holds more of the digit than at T-1",
             leading_start < schedule.T - 1 and float(alpha_bars[leading_start]) > float(alpha_bars[-1]),
             f"starts at t = {leading_start}, sqrt(alpha_bar) {float(alpha_bars[leading_start].sqrt()):.4f} there "
             f"against {float(alpha_bars[-1].sqrt()):.2e} at T-1")

# %% [markdown]
# Look at the "leading" line against the others: does this model pay for being handed pure noise at a step where it
# expects part of the digit? (With few steps the grids also differ in where they spend them: "trailing" never
# visits the last, least noisy steps, and lets the final jump to clean data cover them.)

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_1", "locked": true, "schema_version": 3, "solution": false}
# ## Questions (look at the pictures)
#
# Answer each question in the cell below it, in a few sentences, with what you saw: a step $t$, a number, a row
# or a curve. Your answers are graded by hand (4 points, 1 per question).
#
# **Question 1 (1 point).** Schedules: in the two rows of digits from the same training budget, which schedule's
# digits look better? Relate it to the count of "useful" steps printed under the schedule plot.

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_1", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Usually the cosine schedule's digits are cleaner and more often the right digit. It has many
# more useful steps (where $\bar\alpha_t$ is neither about 1 nor about 0), so training spends its budget on
# noise levels that matter and sampling does not waste steps on pure noise. (Short CPU runs are noisy: an answer
# that reports the opposite from its own pictures, with this reasoning, is fine.)
#
# **Rubric (1 point).** 1/2 point: which looks better, read from the student's own rows. 1/2 point: linked to
# the useful-step count (training and sampling effort spent where there is signal).
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_2", "locked": true, "schema_version": 3, "solution": false}
# **Question 2 (1 point).** Guidance: describe the grids as $w$ grows (stroke thickness, variety between samples
# of one digit). Which $w$ would you ship, and why is the answer not simply "the one with the highest accuracy"?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_2", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** As $w$ grows the strokes get thicker, bolder and more prototypical, the samples of one digit
# look more and more alike, and at the largest $w$ they become over-saturated with blotchy artefacts. Accuracy
# rises and saturates while the FID first improves and then gets worse (diversity lost). Ship a moderate $w$
# (about 0.5-2, near the lowest FID/floor with high accuracy): the highest accuracy comes with collapsed
# diversity and artefacts that accuracy alone does not see.
#
# **Rubric (1 point).** 1/2 point: thickness up, variety down (artefacts at large w). 1/2 point: a w chosen with
# the FID / diversity trade-off, not accuracy alone.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_3", "locked": true, "schema_version": 3, "solution": false}
# **Question 3 (1 point).** Samplers: read your table and strips at the smallest NFE (5 and 10). Which samplers
# give recognisable digits there, and how do the others fail (if any do)? Where do the curves flatten, and what
# does that mean for the time you need per sample?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_3", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** It depends on the run; answer from the student's own table. On 2 CPU cores with the shipped
# model and these unclipped loops, DDPM gave 100% recognisable digits already at 5 NFE (FID 2.1x the floor) and
# DDIM 81% (33x), while DPM-Solver++(2M) failed completely at 5 NFE (10%, 480x: blotches, no digits) and was
# fine from 10 NFE on (100%, 1.1x). Why DPM-Solver++ fails: its first step starts where $\sqrt{\bar\alpha_t}
# \approx 0.007$, so $\hat x_0$ multiplies the model's error by about 150, and with 5 large steps the
# second-order extrapolation carries that error on; `labkit.samplers.sample` clips $\hat x_0$ to [-1, 1]
# (`clip=1.0`) for this reason. DDIM's few-step digits are smooth but vague. Accuracy flattens within 10-20 NFE
# for all three; FID/floor keeps improving a little longer. Each evaluation is one call of the same network, so time per
# sample grows in proportion to the NFE (the measured seconds scatter on a busy machine), and past the knee more
# steps cost time for nothing.
#
# **Rubric (1 point).** 1/2 point: which samplers work at 5-10 NFE *as the student's own table shows*, with a
# description of any failure. 1/2 point: where the curves flatten and the consequence for time (time
# proportional to NFE).
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_4", "locked": true, "schema_version": 3, "solution": false}
# **Question 4 (1 point).** DDPM adds fresh noise at every step; DDIM ($\eta = 0$) and DPM-Solver++ add none
# after the start. Why does theory expect DDPM to need more steps than the other two? Does your table show it,
# and if not, what could make few-step DDPM work well on this model?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_4", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Each DDPM step injects new noise that later steps must remove again; with big steps the
# noise injected and the error of each step are large, and they only average out over many small steps (it
# solves a stochastic equation). DDIM with $\eta = 0$ and DPM-Solver++ follow a deterministic, smooth trajectory
# (the probability-flow ODE) that a few large, (for DPM-Solver++) second-order steps can follow accurately.
# With the shipped model the table does not show it: in our run DDPM was the best of the three at 5 NFE (100%,
# 2.1x the floor). Possible reasons (plausible, not measured in this lab): the step grid is evenly spaced in
# log-SNR and starts at the floor, the fresh noise of each DDPM step also washes out the large early errors of
# $\hat x_0$ that the deterministic samplers carry along (none of these loops clips $\hat x_0$), and a
# classifier-accuracy judge forgives some grain.
#
# **Rubric (1 point).** 1/2 point: the injected noise must be removed by later steps, so theory wants many
# small steps; the deterministic samplers follow a smooth path. 1/2 point: says honestly whether the
# student's own numbers show it, with a plausible reason if not.
# ### END SOLUTION
