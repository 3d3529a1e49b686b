# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 09 — The lab report: test the claims on your own model
#
# Reports on diffusion models are full of claims like these, all taken from a real student report about the
# model you built in labs 02-08:
#
# 1. "recognisable structure of digits like 1 or 7 reappears roughly halfway through denoising; loopy digits
#    (8) need more steps";
# 2. "skip connections are vital for keeping edges and shapes";
# 3. "training stability depends heavily on the learning rate and the number of diffusion steps", and "a cosine
#    schedule improves stability";
# 4. "CLIP gives simpler digits (1, 4) consistently higher scores than digits with closed loops (8, 9), so the
#    model finds straight strokes easier";
# 5. "classifier-free guidance trades fidelity against diversity", and "DDIM / DPM-Solver cut sampling time".
#
# Each of them can be **measured**. In this lab you measure every one on *your own* model (from lab 04; the
# shipped checkpoint if you have none), then write the report: every claim with its number, its spread and its
# picture, confirmed or refuted, and what the measurement cannot tell.
#
# **Learning objectives.** After this lab you can
# 1. turn a qualitative claim into a measurement with a number and a spread (many samples, not one picture);
# 2. separate what a judge likes from what a model does well, by scoring real data the same way;
# 3. design a fair ablation and a sweep (one change at a time, same budget, same seed);
# 4. write a short technical report: claim, number, picture, verdict, limitations.
#
# **Time budget.** Running all cells: about 15 minutes on a Colab T4 (two 1000-step ablation trainings, fourteen
# short sweep runs, plus about a minute to download CLIP once); about 10 minutes on a laptop CPU (9 to 14
# measured on a busy shared 2-core machine; 31 with this version's eleven exercises on the same machine at load 8 to
# 18, most of it the two ablation trainings and the DDPM-250 baseline), where the runs are smaller and, offline,
# CLIP is a tiny random stand-in. Working through the lab: about 120 minutes, most of it writing.
#
# **How it is graded.** Eleven small functions that compute the measurements (3 + 2 + 2 + 2 + 2 + 2 + 2 + 2 + 1 + 2 +
# 2 = 22 points, autograded as in the other labs: a test cell after each, plus hidden tests), and the written report at
# the end: six answers graded by hand (12 points, 2 each, with a rubric: each claim stated with its number and its
# picture, a verdict that follows from them, and the limitations). Later cells use your function where it passes
# its check and `labkit`'s reference where it does not (a line says which), so a bug in a function never breaks
# the rest of the lab. Hand in the notebook **and** one HTML
# file of it with all outputs (section 7). Run the cells from top to bottom.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
# __LABKIT_COLAB_INSTALL__ (labkit build writes labkit.colab.INSTALL_CELL here: the Colab install)
from labkit import colab
DEVICE = colab.setup()

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false}
import time
from dataclasses import replace

import torch
import matplotlib.pyplot as plt

from labkit import diffusion, plotting, recipes, samplers, training
from labkit.errors import LabkitError
from labkit.evaluation import classifier_accuracy, classifier_features, measures
from labkit.unet import UNetConfig
from labkit.checks import claims
from labkit.checks import lab09_report as checks

torch.manual_seed(0)  # every lab starts from the same random numbers
FAST = colab.fast_mode()  # True in CI and while grading: expensive cells shrink
ON_GPU = DEVICE.type == "cuda"
NUMBERS = {}  # every number the report quotes, collected as the lab goes (printed in section 6)

# %% [markdown]
# ## 0. Your model
#
# `MY_CHECKPOINT` is the checkpoint your lab 04 run wrote, found in the runs folder (`runs/lab04-cpu/loop.pt` or
# `runs/lab04-gpu/loop.pt` beside the notebook; in Colab on your Google Drive, which this cell mounts), or `None`
# when there is none: then the checkpoint that ships with labkit is used. You may also point it at another
# checkpoint. Whichever it is, **say so in your report**. (While the notebook is graded, your file is not there,
# and the shipped model is used.)

# %%
MY_CHECKPOINT = checks.lab04_checkpoint(colab.runs_dir())  # or a path, e.g. "runs/lab04-cpu/loop.pt"
print(f"MY_CHECKPOINT = {MY_CHECKPOINT!r}")

# %% [markdown]
# The model samples with its own recipe's settings (sampler, number of steps, guidance weight $w$). The judge is
# the shipped MNIST classifier, as in labs 05-08: **accuracy** (how often a sample is recognised as its intended
# digit) and the feature **FID** against real held-out digits, always beside its floor (the FID of as many real
# digits). Each FID comes with a 90% interval for the distance itself, its small-sample bias removed
# (`labkit.evaluation.fid_interval`), in the same unit: a perfect model's interval holds 0x the floor. Two FIDs
# differ beyond sampling noise only when their intervals do not overlap; quote the interval with the FID.

# %%
model, schedule, meta = checks.your_model(MY_CHECKPOINT, device=DEVICE)
recipe = meta.get("train") or {}
SAMPLER, NFE, W = recipe.get("sampler", "dpmpp_2m"), int(recipe.get("sample_steps", 15)), float(recipe.get("guidance", 1.0))
NFE = colab.pick(NFE, 4)  # fast mode: 4 steps only
test_digits, REAL = colab.lab_digits(train=False, n=colab.pick(10000, 400))
judge = checks.DigitJudge(device=DEVICE)  # the judge of `labkit evaluate`: the same samples, the same numbers
clf = judge.classifier
NUMBERS["model"] = ("yours: " + str(MY_CHECKPOINT)) if meta["yours"] else "the shipped checkpoint"
print(f"sampling with {SAMPLER}, {NFE} steps, w = {W:g}; {schedule}")


def draw(n_per_digit, *, net=model, sched=schedule, sampler=SAMPLER, steps=NFE, w=W, seed=0):
    """n_per_digit samples of each digit (labels 0..9, 0..9, ...) in [-1, 1], on the CPU, and their labels."""
    y = torch.arange(10, device=DEVICE).repeat(n_per_digit)
    x = samplers.sample(net, (len(y), 1, 28, 28), y, sched, sampler=sampler, steps=min(steps, sched.T), guidance=w,
                        clip=1.0, generator=torch.Generator(DEVICE).manual_seed(seed))
    return x.float().cpu(), y.cpu()


def fmt(r):
    return (f"accuracy {r['accuracy']:6.1%}   FID {r['fid_ratio']:5.1f}x the real floor (n={r['n']}; without "
            f"the bias {r['fid_low_ratio']:.1f}-{r['fid_high_ratio']:.1f}x)")


x, y = draw(colab.pick(4, 1))
r = judge(x, y)
NUMBERS["accuracy at its own settings"] = r["accuracy"]
print(fmt(r))
fig = plotting.image_grid(x, ncols=10, title="your model: one column per digit 0..9")

# %% [markdown]
# ## 1. "Digits like 1 or 7 appear halfway through denoising; loopy digits (8) need more steps"
#
# A picture of one trajectory proves nothing about "digits like 1". We sample **many** trajectories per digit
# and let the classifier judge the model's guess of the clean digit, $\hat x_0$, at every step: its probability
# for the intended digit. The steps are spread evenly over $t$ (`spacing="uniform"`), so "halfway through the
# steps" is also "halfway from $t = T-1$ to $0$".

# %%
STEPS = colab.pick(100 if ON_GPU else 40, 6)  # sampling steps
n_traj = colab.pick(50 if ON_GPU else 12, 2)  # trajectories per digit
y_traj = torch.arange(10, device=DEVICE).repeat_interleave(n_traj)  # [10 * n_traj]: 0..0, 1..1, ...
SHOW = sorted(set(torch.linspace(0, STEPS - 1, min(8, STEPS)).round().long().tolist()))  # steps to picture
first = torch.arange(10) * n_traj  # one trajectory of each digit, for the pictures
probs_by_step, judged_by_step, t_by_step, strips, first_answers = [], [], [], [], None

def watch(step, t, x_t, x0_hat):
    global first_answers
    images = (x0_hat.float().clamp(-1, 1) + 1) / 2  # [-1, 1] -> [0, 1], what the classifier reads
    judged = classifier_accuracy(images, y_traj, clf)
    probs_by_step.append(judged["intended_prob"])  # [N]
    judged_by_step.append(judged["probs"].cpu())  # [N, 10]: the judge's belief in every digit, for the control
    t_by_step.append(t)
    if step == 0:
        first_answers = judged["predicted"]  # [N]: what the classifier calls the very first guesses (from pure noise)
    if step in SHOW:
        strips.append(x0_hat[first.to(DEVICE)].float().cpu())

start = time.perf_counter()
samplers.sample(model, (len(y_traj), 1, 28, 28), y_traj, schedule, sampler="ddpm", steps=STEPS, spacing="uniform",
                guidance=W, clip=1.0, generator=torch.Generator(DEVICE).manual_seed(1), callback=watch)
probs = torch.stack(probs_by_step)  # [STEPS, N]: row = sampling step (0 = pure noise), column = trajectory
print(f"{len(y_traj)} trajectories of {STEPS} steps in {time.perf_counter() - start:.0f} s")
middle = t_by_step[STEPS // 2]
claims.check("halfway through the steps is also halfway from t = T-1 to 0 (the steps are spread evenly over t)",
             abs(middle - (schedule.T - 1) / 2) <= schedule.T / STEPS,
             f"step {STEPS // 2} of {STEPS} is t = {middle}, T = {schedule.T}")
fig = plotting.compare_rows({f"digit {d}": torch.stack([s[d] for s in strips]) for d in (1, 4, 7, 0, 8, 9)},
                            col_titles=[f"step {s}\nt={t_by_step[s]}" for s in SHOW],
                            title="the model's guess x0_hat along one trajectory per digit")

# %% [markdown]
# When is a digit "recognisable"? Not at the first step where the classifier happens to agree: early guesses
# are noise or grey blobs (lab 05's strips), and the judge may read a digit into them by chance. We use the step **from which on** the
# classifier stays convinced.
#
# ### Exercise 1 (3 points)
# Write `recognisable_from(probs, threshold)`: `probs` is `[steps, N]` (row $j$ = sampling step $j$, counted from
# the pure noise; column $n$ = one trajectory). Return an int64 tensor `[N]`: for each trajectory the smallest
# step $k$ such that `probs[j, n] >= threshold` for **every** $j \ge k$, and `steps` (= `probs.shape[0]`) for a
# trajectory that is below the threshold at its last step. Example: a column `[0.9, 0.2, 0.7, 0.8]` with
# threshold 0.5 gives 2.

# %% nbgrader={"grade": false, "grade_id": "recognisable_from", "locked": false, "schema_version": 3, "solution": true}
def recognisable_from(probs, threshold):
    """[steps, N] -> int64 [N]: the first step of the final run of steps with probs >= threshold."""
    ### BEGIN SOLUTION
    steps = probs.shape[0]
    above = probs >= threshold  # [steps, N]
    final_run = above.flip(0).long().cumprod(dim=0).sum(dim=0)  # [N]: how many of the last steps are above
    return steps - final_run
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_recognisable_from", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_recognisable_from(recognisable_from)
### BEGIN HIDDEN TESTS
checks.check_recognisable_from(recognisable_from, seed=5, sizes=((40, 9), (3, 60)), threshold=0.75)
### END HIDDEN TESTS

# %% [markdown]
# One number per trajectory is not yet a claim about "digits like 1". Over the trajectories of one digit we
# report the **median** and the **interquartile range** (IQR, from the 25th to the 75th percentile): robust to a
# few trajectories that never commit, unlike the mean and the standard deviation.
#
# ### Exercise 2 (2 points)
# Write `quartiles_per_digit(values, labels, num_classes=10)`: `values` float `[N]`, `labels` int64 `[N]`.
# Return `[num_classes, 3]`: for each class $k$ the 25th percentile, the median and the 75th percentile of
# `values[labels == k]`, with linear interpolation between data points (what `torch.quantile` does by
# default). Every class has at least two values.

# %% nbgrader={"grade": false, "grade_id": "quartiles_per_digit", "locked": false, "schema_version": 3, "solution": true}
def quartiles_per_digit(values, labels, num_classes=10):
    """[N], [N] -> [num_classes, 3]: 25th percentile, median, 75th percentile of each class."""
    ### BEGIN SOLUTION
    q = torch.tensor([0.25, 0.5, 0.75], dtype=values.dtype, device=values.device)
    return torch.stack([torch.quantile(values[labels == k], q) for k in range(num_classes)])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_quartiles_per_digit", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_quartiles_per_digit(quartiles_per_digit)
### BEGIN HIDDEN TESTS
checks.check_quartiles_per_digit(quartiles_per_digit, seed=3, sizes=((31, 10), (9, 2)))
### END HIDDEN TESTS

# %% [markdown]
# A judge has biases of its own: the MNIST classifier reads one digit into pure noise (the control line below shows
# which), so by the measure above that digit looks "recognisable" from the first step. A **control** removes the
# bias: ask how much more the judge believes "this is a $y_n$" of trajectory $n$, meant to be digit $y_n$, than of
# the trajectories meant to be other digits, at the same step. With `probs[m, k]` $= p(k \mid x_m)$ the judge's
# probabilities at one step,
#
# $$\text{margin}_n \;=\; p(y_n \mid x_n) \;-\; \frac{1}{\lvert\{m : y_m \ne y_n\}\rvert}\sum_{m:\ y_m \ne y_n} p(y_n \mid x_m).$$
#
# A judge that calls every early guess an 8 gives the 8s a margin near 0 until the trajectories really differ.
#
# ### Exercise 3 (2 points)
# Write `above_control(probs, labels)`: `probs` float `[N, K]` (each row sums to 1), `labels` int64 `[N]`. Return the
# margins, float `[N]`. Every digit has at least two samples. (Indexing with a tensor of labels, `probs[:, labels]`,
# gives one column per sample.)

# %% nbgrader={"grade": false, "grade_id": "above_control", "locked": false, "schema_version": 3, "solution": true}
def above_control(probs, labels):
    """[N, K], [N] -> [N]: p(y_n | x_n) minus the mean of p(y_n | x_m) over the samples m of other digits."""
    ### BEGIN SOLUTION
    own = probs.gather(1, labels[:, None])[:, 0]  # [N] p(y_n | x_n)
    other = labels[:, None] != labels[None, :]  # [n, m]: sample m is meant to be another digit than n
    belief = probs[:, labels].T  # [n, m]: p(y_n | x_m)
    control = (belief * other).sum(dim=1) / other.sum(dim=1)  # [N]
    return own - control
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_above_control", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_above_control(above_control)
### BEGIN HIDDEN TESTS
checks.check_above_control(above_control, seed=4, sizes=((31, 5), (100, 10)))
### END HIDDEN TESTS

# %% [markdown]
# Now `labkit`'s versions of both (`labkit.evaluation.measures`) on your trajectories, with threshold 0.5.
# The result is the fraction of the sampling steps done when each trajectory commits (0.5 = halfway).
# The control line says which digit the judge reads into pure noise. The last table builds the control into the
# measure with your `above_control` (or labkit's, a line says which): a trajectory counts as recognisable only
# where the judge believes "this is a d" of it by at least 0.5 more than of the trajectories meant to be other
# digits, at the same step. The margin is never above $p(y_n \mid x_n)$, so the control can only delay a
# commitment, never advance it.

# %%
THRESHOLD = 0.5
k = measures.recognisable_from(probs.cpu(), THRESHOLD)  # [N] step index, STEPS = never
frac = k.double() / STEPS  # [N] fraction of the steps done (1.0: not recognisable at the end)
q = measures.quartiles_per_digit(frac, y_traj.cpu())  # [10, 3]
q_strict = measures.quartiles_per_digit(measures.recognisable_from(probs.cpu(), 0.9).double() / STEPS, y_traj.cpu())
never = [int((k[y_traj.cpu() == d] == STEPS).sum()) for d in range(10)]
print(f"digit   median   IQR (25%-75%)    t at the median   never (of {n_traj})   median with threshold 0.9")
for d in range(10):
    t_med = t_by_step[min(int(round(float(q[d, 1]) * STEPS)), STEPS - 1)]
    print(f"{d:>5}   {q[d, 1]:6.2f}   {q[d, 0]:.2f} - {q[d, 2]:.2f}      {t_med:>9}          {never[d]:>3}"
          f"          {q_strict[d, 1]:6.2f}")
share = torch.bincount(first_answers.cpu(), minlength=10).double() / len(first_answers)  # [10]
favourite = int(share.argmax())
print(f"control: at step 0 the classifier calls {share[favourite]:.0%} of ALL first guesses (whatever the intended "
      f"digit) a {favourite}" + (f": it reads a {favourite} into noise, so {favourite}s look 'recognisable' from the start"
                                 if share[favourite] > 0.5 else ": no digit dominates its reading of noise"))
NUMBERS["1: median fraction of steps before commitment, per digit (threshold 0.5)"] = [round(float(v), 2) for v in q[:, 1]]
NUMBERS["1: IQR per digit"] = [round(float(v), 2) for v in q[:, 2] - q[:, 0]]
NUMBERS["1: median with threshold 0.9"] = [round(float(v), 2) for v in q_strict[:, 1]]
NUMBERS["1: control, share of first guesses called the same digit"] = f"{share[favourite]:.0%} called {favourite}"

# The control built into the measure: a digit counts as recognisable only where the judge believes it of this
# trajectory more than of the trajectories meant to be other digits (measures.above_control), by at least 0.5.
control_of = checks.yours_or_labkit(checks.check_above_control, above_control, measures.above_control, "above_control")
margins = torch.stack([control_of(p, y_traj.cpu()).double() for p in judged_by_step])  # [STEPS, N]
k_ctrl = measures.recognisable_from(margins, THRESHOLD)  # [N] step index, with the control
frac_ctrl = k_ctrl.double() / STEPS  # [N]
q_ctrl = measures.quartiles_per_digit(frac_ctrl, y_traj.cpu())
print("\nwith the control built in (p(intended) minus what the judge gives that digit on the other digits' "
      "trajectories, >= 0.5 from then on):")
print("digit   median   IQR (25%-75%)")
for d in range(10):
    print(f"{d:>5}   {q_ctrl[d, 1]:6.2f}   {q_ctrl[d, 0]:.2f} - {q_ctrl[d, 2]:.2f}")
NUMBERS["1: median fraction of steps, judged against the control (margin >= 0.5)"] = \
    [round(float(v), 2) for v in q_ctrl[:, 1]]
NUMBERS["1: IQR per digit, against the control"] = [round(float(v), 2) for v in q_ctrl[:, 2] - q_ctrl[:, 0]]
claims.check("the control can only delay a commitment, never advance it",
             bool((k_ctrl >= k).all()), f"{int((k_ctrl > k).sum())} of {len(k)} trajectories commit later with it, "
             f"{int((k_ctrl < k).sum())} earlier")

fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
ax = axes[0]
ax.errorbar(range(10), q[:, 1], yerr=[q[:, 1] - q[:, 0], q[:, 2] - q[:, 1]], fmt="o", capsize=4, lw=2)
ax.axhline(0.5, color="grey", ls="--", lw=1)
ax.set(xlabel="digit", ylabel="fraction of sampling steps done", xticks=list(range(10)), ylim=(0, 1.02),
       title=f"when the classifier commits (median and IQR, {n_traj} trajectories per digit)")
per_digit = probs.cpu().view(STEPS, 10, n_traj).median(dim=2).values  # [STEPS, 10]
for d in range(10):
    axes[1].plot(torch.arange(STEPS) / STEPS, per_digit[:, d], label=str(d), lw=2 if d in (1, 7, 8) else 1)
axes[1].set(xlabel="fraction of sampling steps done", ylabel="median p(intended digit | x0_hat)",
            title="the classifier's confidence along the way")
axes[1].legend(ncol=5, frameon=False, fontsize=8, title="digit")
fig.tight_layout()

# %% [markdown]
# ### Does 8 need more steps than the rest?
#
# The medians differ from digit to digit, but with a dozen trajectories per digit, is a difference real? One number
# answers "does digit $k$ commit later than the others" for the whole spread of its trajectories: the probability
# that a trajectory of digit $k$ commits later than one of another digit, ties counted half (Mann & Whitney 1947):
#
# $$P_k \;=\; \frac{1}{n_k\,n_{\text{rest}}}\sum_{i:\ y_i = k}\ \sum_{j:\ y_j \ne k} \Big([v_i > v_j] + \tfrac12\,[v_i = v_j]\Big).$$
#
# $P_k = 0.5$: no later, no earlier; $P_k = 1$: every trajectory of $k$ commits after every other one. When the
# digits do not differ, $P_k$ scatters around 0.5 with a standard deviation of about
# $\sqrt{(n_k + n_{\text{rest}} + 1)/(12\,n_k n_{\text{rest}})}$ (ties make it a little smaller, so the rule is
# cautious). We call digit $k$ **later** when $P_k$ is more than two such deviations above 0.5, **earlier** when more
# than two below, and **not decided** in between: "8 needs more steps" gets a verdict either way, or an honest
# "this measurement cannot tell".
#
# ### Exercise 4 (2 points)
# Write `later_than_rest(values, labels, num_classes=10)`: `values` float `[N]`, `labels` int64 `[N]`. Return
# $P_k$ for every class, float `[num_classes]`. Every class has at least one value, and there are values of other
# classes. (Broadcasting `a[:, None] - b[None, :]` gives every pair at once.)

# %% nbgrader={"grade": false, "grade_id": "later_than_rest", "locked": false, "schema_version": 3, "solution": true}
def later_than_rest(values, labels, num_classes=10):
    """[N], [N] -> [num_classes]: P(a value of class k > a value of another class), ties counted half."""
    ### BEGIN SOLUTION
    out = []
    for k in range(num_classes):
        mine, rest = values[labels == k], values[labels != k]
        diff = mine[:, None] - rest[None, :]  # [n_k, n_rest]: every pair once
        out.append((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())
    return torch.stack(out)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_later_than_rest", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_later_than_rest(later_than_rest)
### BEGIN HIDDEN TESTS
checks.check_later_than_rest(later_than_rest, seed=6, sizes=((60, 10), (23, 4)))
### END HIDDEN TESTS

# %%
later = checks.yours_or_labkit(checks.check_later_than_rest, later_than_rest, measures.later_than_rest,
                               "later_than_rest")
P = later(frac_ctrl, y_traj.cpu())  # [10], commitment judged against the control
n_rest = len(y_traj) - n_traj
deviation = ((n_traj + n_rest + 1) / (12 * n_traj * n_rest)) ** 0.5  # P's spread when no digit differs


def verdict(p):
    return "later" if p > 0.5 + 2 * deviation else "earlier" if p < 0.5 - 2 * deviation else "not decided"


print(f"P(a trajectory of this digit commits later than one of another digit), with the control; "
      f"no difference: 0.5 +- {deviation:.3f}")
for d in range(10):
    print(f"{d:>5}   P = {float(P[d]):.2f}   {verdict(float(P[d]))}")
NUMBERS["1: P(commits later than the other digits), with the control"] = [round(float(v), 2) for v in P]
NUMBERS["1: 8 needs more steps?"] = (f"{verdict(float(P[8]))} (P_8 = {float(P[8]):.2f}, no difference: "
                                     f"0.5 +- 2 x {deviation:.3f}, {n_traj} trajectories of 8 against {n_rest})")

# %% [markdown]
# ## 2. "Skip connections are vital for keeping edges and shapes"
#
# An ablation: the same network (your model's U-Net configuration) trained twice from the same seed on the same
# data for the same number of steps, once with and once without its skip connections. Then two measurements:
# how well each network recovers a clean digit from $x_t$ in one step, over the whole image and on the **edge
# pixels** of the digit alone (where the clean image changes fast), and what its samples look like.
# Both trainings get the same budget in steps, `ABLATION_STEPS`: 1000 on a GPU; 600 on a CPU, with one block per
# level and no attention (a minute or two each on 2 cores; a slower machine says so): weak models, but the
# comparison is fair on every machine. In fast mode a few steps, which only shows that the code runs.

# %%
train_digits, _ = colab.lab_digits(train=True, n=None if not FAST else 512, verbose=False)
unet = UNetConfig.from_dict(meta["unet"]) if meta.get("unet") else recipes.cpu().unet
ABLATION_STEPS = 1000 if ON_GPU else 600  # a budget in steps, not seconds: the same on every machine
if FAST:
    ablation = recipes.tiny(steps=3)
elif ON_GPU:
    ablation = recipes.gpu(steps=ABLATION_STEPS, unet=unet, out_dir=None, sample_every=0, checkpoint_every=0)
else:
    ablation = recipes.cpu(minutes=None, total_steps=ABLATION_STEPS, out_dir=None,
                           unet=replace(unet, blocks_per_level=1, attention=False))


def slow_note(info, patience_s=300):
    """After 20 steps: one visible line when this machine will take long for the budget (training goes on)."""
    if info.step == 20 and not FAST and info.elapsed_s / 20 * ablation.total_steps > patience_s:
        print(f"NOTE: this machine needs about {info.elapsed_s / 20 * ablation.total_steps / 60:.0f} minutes per "
              f"training for the {ablation.total_steps} steps: let it run (fewer steps would compare nothing).")
    return False


with_skips = training.train(replace(ablation, unet=replace(ablation.unet, skips=True)), data=train_digits,
                            device=DEVICE, progress=not FAST, callback=slow_note)
without = training.train(replace(ablation, unet=replace(ablation.unet, skips=False)), data=train_digits,
                         device=DEVICE, progress=not FAST, callback=slow_note)
nets = {"with skips": with_skips, "without skips": without}
for label, res in nets.items():
    params = sum(p.numel() for p in res.model.parameters())
    print(f"{label:>14}: {res.step} steps, {params:,} parameters, final loss {res.losses[-1][1]:.4f}")

# %%
n_eval = colab.pick(512, 16)
x0, y0 = test_digits.images[:n_eval].to(DEVICE), test_digits.labels[:n_eval].to(DEVICE)
noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
T_abl = with_skips.schedule.T
ts = [int(f * T_abl) for f in (0.05, 0.2, 0.4, 0.6, 0.8)]
edges = torch.zeros_like(x0, dtype=torch.bool)  # pixels where the clean digit changes fast: its strokes' borders
edges[..., :, 1:] |= (x0[..., :, 1:] - x0[..., :, :-1]).abs() > 0.5
edges[..., 1:, :] |= (x0[..., 1:, :] - x0[..., :-1, :]).abs() > 0.5
errors = {}  # (label, "all" or "edges") -> [len(ts), n_eval] per-image squared error
with torch.no_grad():
    for label, res in nets.items():
        all_px, edge_px = [], []
        for t in ts:
            tt = torch.full((n_eval,), t, device=DEVICE)
            xt = diffusion.q_sample(x0, tt, noise, res.schedule)
            x0_hat = diffusion.predict_x0_from_eps(xt, tt, res.ema(xt, tt, y0), res.schedule).clamp(-1, 1)
            sq = (x0_hat - x0) ** 2
            all_px.append(sq.flatten(1).mean(1).cpu())
            edge_px.append(((sq * edges).flatten(1).sum(1) / edges.flatten(1).sum(1).clamp(min=1)).cpu())
        errors[label, "all"], errors[label, "edges"] = torch.stack(all_px), torch.stack(edge_px)

step_index = torch.arange(len(ts)).repeat_interleave(n_eval)  # which t each value belongs to
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
for ax, where in zip(axes, ("all", "edges")):
    for label in nets:
        qs = measures.quartiles_per_digit(errors[label, where].flatten(), step_index, len(ts))  # [len(ts), 3]
        ax.fill_between(ts, qs[:, 0], qs[:, 2], alpha=0.2)
        ax.plot(ts, qs[:, 1], "o-", lw=2, label=label)
        key = f"2: median one-step x0 error ({'all' if where == 'all' else 'edge'} pixels), {label}, t={ts}"
        NUMBERS[key] = [round(float(v), 4) for v in qs[:, 1]]
    part = "whole image" if where == "all" else "edge pixels only"
    ax.set(xlabel="step t", yscale="log", title=f"one-step x0 error, {part}")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
axes[0].set_ylabel("squared error per pixel (median, IQR band)")
fig.tight_layout()

# %%
rows = {}
for label, res in nets.items():
    xs, ys = draw(colab.pick(10, 1), net=res.ema, sched=res.schedule)
    r = judge(xs, ys)
    NUMBERS[f"2: samples, {label}"] = fmt(r)
    print(f"{label:>14}: {fmt(r)}")
    rows[label] = xs[:10]
t_show = ts[2]
tt = torch.full((8,), t_show, device=DEVICE)
xt = diffusion.q_sample(x0[:8], tt, noise[:8], with_skips.schedule)
with torch.no_grad():
    guesses = {label: diffusion.predict_x0_from_eps(xt, tt, res.ema(xt, tt, y0[:8]), res.schedule).clamp(-1, 1)
               for label, res in nets.items()}
fig = plotting.compare_rows({f"x_t (t={t_show})": xt, **{f"x0_hat {k}": v for k, v in guesses.items()}, "clean x0": x0[:8]},
                            title="one-step guesses of the clean digit, with and without skips")
fig = plotting.compare_rows(rows, col_titles=[str(d) for d in range(10)], title="samples, same noise, same training budget")

# %% [markdown]
# ## 3. "Training stability depends on the learning rate and the number of diffusion steps $T$; a cosine schedule helps"
#
# A sweep: a small network trained from the same start on the same batches, changing **one** thing at a time
# (learning rate, $T$, schedule). Loss values of different $T$ or schedules are averages over different noise
# levels, so they cannot be compared directly (lab 04). Every run is therefore also judged on held-out digits
# at the *same* three noise levels (log-SNR 2, 0 and -2, whatever $T$ and the schedule): the median error of
# its one-step guess $\hat x_0$ (lower is better); on a GPU, where the runs are long enough to draw digits,
# also by the accuracy of its samples. A run whose loss becomes NaN is reported as diverged; one whose loss
# ends within 10% of its first value as "did not learn" (a loss stuck near 1.0 means the network predicts no
# noise at all). On a GPU each setting runs with two seeds, so you can see how much of a difference is the seed.

# %% [markdown]
# ### Exercise 5 (2 points)
# Write `heldout_x0_error(model, images, labels, noise, alpha_bars, log_snrs)`: `images` and `noise` are
# `[B, C, H, W]`, `labels` int64 `[B]`, `alpha_bars` `[T]`, `log_snrs` a tuple of levels such as `(2.0, 0.0, -2.0)`.
# For each level $L$:
# 1. the step $t$ whose log-SNR, $\log\big(\bar\alpha_t / (1 - \bar\alpha_t)\big)$ (natural log), is closest to $L$
#    (`argmin` of the absolute difference);
# 2. $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ with the given `noise` (lab 01);
# 3. the model's one-step guess $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$,
#    $\hat\varepsilon$ = `model(x_t, t, labels)` with `t` an int64 tensor `[B]`, clamped to $[-1, 1]$;
# 4. each image's mean squared error to $x_0$ (a `[B]` tensor).
#
# Return the **median** of all $B \times$ `len(log_snrs)` errors together, a 0-d tensor. (The median, not the
# mean: a few hopeless images must not decide the comparison. The tests use an odd number of errors.)

# %% nbgrader={"grade": false, "grade_id": "heldout_x0_error", "locked": false, "schema_version": 3, "solution": true}
def heldout_x0_error(model, images, labels, noise, alpha_bars, log_snrs):
    """The median one-step x0 error of ``model`` on held-out images at the steps closest to the given log-SNRs."""
    ### BEGIN SOLUTION
    log_snr = torch.log(alpha_bars / (1 - alpha_bars))  # [T]
    errors = []
    for level in log_snrs:
        t = int((log_snr - level).abs().argmin())
        ab = alpha_bars[t].to(images.dtype)
        x_t = ab.sqrt() * images + (1 - ab).sqrt() * noise  # [B, C, H, W]
        eps_hat = model(x_t, torch.full((len(images),), t, device=images.device), labels)
        x0_hat = ((x_t - (1 - ab).sqrt() * eps_hat) / ab.sqrt()).clamp(-1, 1)
        errors.append(((x0_hat - images) ** 2).flatten(1).mean(1))  # [B]
    return torch.cat(errors).median()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_heldout_x0_error", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_heldout_x0_error(heldout_x0_error)
### BEGIN HIDDEN TESTS
checks.check_heldout_x0_error(heldout_x0_error, seed=3, sizes=((7, 1, 5, 5),), levels=((3.0, -1.0, -4.0),))
### END HIDDEN TESTS

# %%
if FAST:
    sweep_base = recipes.tiny(steps=2, log_every=1)
elif ON_GPU:
    sweep_base = recipes.gpu(steps=800, batch_size=256, warmup_steps=50, log_every=20, out_dir=None, sample_every=0,
                             checkpoint_every=0, unet=UNetConfig(base_channels=32, channel_mults=(1, 2),
                                                                 blocks_per_level=1, attention=False, patch=2))
else:
    sweep_base = recipes.tiny(steps=200, batch_size=64, log_every=10)
BASE = "base: lr 2e-3, T 1000, cosine"
SWEEP = {BASE: {}, "lr 2e-4": {"lr": 2e-4}, "lr 2e-2": {"lr": 2e-2}, "lr 1e-1": {"lr": 1e-1},
         "T 50": {"T": 50}, "T 250": {"T": 250}, "linear schedule": {"schedule": "linear"}}
seeds = [0, 1] if ON_GPU and not FAST else [0]
sweep_data = train_digits.subset(colab.pick(20000, 256))
held = test_digits.images[:colab.pick(256, 16)].to(DEVICE)  # held-out digits for the denoising error
held_y = test_digits.labels[:len(held)].to(DEVICE)
held_noise = torch.randn(held.shape, generator=torch.Generator().manual_seed(3)).to(DEVICE)


x0_error = checks.yours_or_labkit(checks.check_heldout_x0_error, heldout_x0_error, measures.heldout_x0_error,
                                  "heldout_x0_error")


@torch.no_grad()
def heldout_error(res):
    """Median squared error of the one-step x0_hat on held-out digits at log-SNR 2, 0, -2 (any T, any schedule)."""
    return float(x0_error(res.ema, held, held_y, held_noise, res.schedule.alpha_bars.to(DEVICE), (2.0, 0.0, -2.0)))


sweep = {}  # name -> one dict per seed: losses, error, accuracy (None: not measured), note
start = time.perf_counter()
for name, change in SWEEP.items():
    sweep[name] = []
    for seed in seeds:
        cfg = replace(sweep_base, lr=change.get("lr", 2e-3), T=change.get("T", 1000),
                      schedule=change.get("schedule", "cosine"), seed=seed)
        try:
            res = training.train(cfg, data=sweep_data, device=DEVICE, progress=False)
        except LabkitError as exc:  # the loss became NaN / inf
            sweep[name].append({"losses": [], "error": None, "accuracy": None, "note": str(exc).split(":")[0]})
            continue
        accuracy = None
        if ON_GPU or FAST:  # a few hundred CPU steps draw no digits yet: their samples would all score ~10%
            xs, ys = draw(colab.pick(10, 1), net=res.ema, sched=res.schedule, sampler="dpmpp_2m",
                          steps=colab.pick(10, 4), w=1.0, seed=seed)
            accuracy = judge(xs, ys)["accuracy"]
        first, last = res.losses[0][1], res.losses[-1][1]
        stuck = " (did not learn: within 10% of its first value)" if last >= 0.9 * first else ""
        sweep[name].append({"losses": res.losses, "error": heldout_error(res), "accuracy": accuracy,
                            "note": f"final loss {last:.3f}{stuck}"})
print(f"{len(SWEEP) * len(seeds)} runs of {sweep_base.total_steps} steps in {time.perf_counter() - start:.0f} s")
print(f"{'run':>32}   held-out x0 error per seed (lower is better)   sample accuracy   training loss")
for name, runs in sweep.items():
    err = ", ".join("diverged" if r["error"] is None else f"{r['error']:.4f}" for r in runs)
    acc = ", ".join("-" if r["accuracy"] is None else f"{r['accuracy']:.0%}" for r in runs)
    print(f"{name:>32}   {err:>44}   {acc:>15}   {'; '.join(r['note'] for r in runs)}")
    NUMBERS[f"3: held-out x0 error per seed, {name}"] = ["diverged" if r["error"] is None else round(r["error"], 4)
                                                        for r in runs]
    if any(r["accuracy"] is not None for r in runs):
        NUMBERS[f"3: sample accuracy per seed, {name}"] = [r["accuracy"] for r in runs]

fig, axes = plt.subplots(1, 4, figsize=(18, 3.6))
groups = (("learning rate", [BASE, "lr 2e-4", "lr 2e-2", "lr 1e-1"]),
          ("number of diffusion steps T", [BASE, "T 50", "T 250"]),
          ("schedule", [BASE, "linear schedule"]))
for ax, (title, names) in zip(axes, groups):
    for k, name in enumerate(names):
        for s, run in enumerate(sweep[name]):
            if run["losses"]:
                steps_, values = zip(*run["losses"])
                ax.plot(steps_, values, color=plotting.ACCENT[k % len(plotting.ACCENT)], lw=2, ls="-" if s == 0 else ":",
                        label=name.split(":")[0] if s == 0 else None)
    ax.set(title=title, xlabel="training step", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
axes[0].set_ylabel("training loss" + (" (dotted: second seed)" if len(seeds) > 1 else ""))
for i, (name, runs) in enumerate(sweep.items()):
    values = [r["error"] for r in runs if r["error"] is not None]
    axes[3].plot([i] * len(values), values, "o", color="0.3")
axes[3].set(title="held-out x0 error (lower is better)", xticks=range(len(sweep)), yscale="log")
axes[3].set_xticklabels([name.split(":")[0] for name in sweep], rotation=45, ha="right", fontsize=8)
axes[3].grid(alpha=0.3)
fig.tight_layout()

# %% [markdown]
# ## 4. "CLIP gives simpler digits (1, 4) higher scores than loopy ones (8, 9): the model finds straight strokes easier"
#
# Two claims in one sentence. The first is about CLIP, the second about the model. A score of generated digits
# alone cannot separate them: CLIP may simply like 1s, whoever drew them. So we score **real** MNIST digits the
# same way, and divide: "generated 8s get 90% of the CLIP score of real 8s" is a statement about the model.
# The score is CLIP's zero-shot probability of the intended digit (lab 06). Offline or in fast mode CLIP is a
# tiny random stand-in, and every CLIP number below is meaningless (a banner says so).

# %%
scorer, PRETRAINED_CLIP = checks.lab_clip(DEVICE)
CLIP_TAG = "" if PRETRAINED_CLIP else " [random CLIP (offline)]"  # on every CLIP figure's title, as in lab 06
x_gen, y_gen = draw(colab.pick(100 if ON_GPU else 30, 2))
gen01 = ((x_gen + 1) / 2).clamp(0, 1)
n_real = min(len(test_digits), colab.pick(1000 if ON_GPU else 300, 60))
real01, y_real = (test_digits.images[:n_real] + 1) / 2, test_digits.labels[:n_real]
gen_clip, real_clip = scorer.score(gen01, y_gen), scorer.score(real01, y_real)
print(f"CLIP {scorer.name}: {len(y_gen)} generated and {n_real} real digits scored")

# %% [markdown]
# ### Exercise 6 (2 points)
# Write `relative_clip_score(gen_scores, gen_labels, real_scores, real_labels, num_classes=10)`: scores float
# `[N]` and `[M]` with their digits int64 `[N]` and `[M]`. Return `[num_classes]`: for each digit $k$, the mean
# score of the generated digits $k$ divided by the mean score of the real digits $k$ (1.0: as good as real digits).

# %% nbgrader={"grade": false, "grade_id": "relative_clip_score", "locked": false, "schema_version": 3, "solution": true}
def relative_clip_score(gen_scores, gen_labels, real_scores, real_labels, num_classes=10):
    """[num_classes]: mean generated score / mean real score, per digit."""
    ### BEGIN SOLUTION
    gen = torch.stack([gen_scores[gen_labels == k].mean() for k in range(num_classes)])
    real = torch.stack([real_scores[real_labels == k].mean() for k in range(num_classes)])
    return gen / real
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_relative_clip_score", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_relative_clip_score(relative_clip_score)
### BEGIN HIDDEN TESTS
checks.check_relative_clip_score(relative_clip_score, seed=4, sizes=((40, 40, 10), (21, 60, 5)))
### END HIDDEN TESTS

# %%
clip_gen = torch.tensor([v if v is not None else float("nan") for v in gen_clip.per_digit()["intended_prob"]])
clip_real = torch.tensor([v if v is not None else float("nan") for v in real_clip.per_digit()["intended_prob"]])
clip_rel = measures.relative_clip_score(gen_clip.intended_prob, y_gen, real_clip.intended_prob, y_real)  # [10]
cls_gen = classifier_accuracy(gen01, y_gen, clf)["per_digit"]["accuracy"]
print("digit   CLIP real   CLIP generated   generated / real   classifier accuracy (generated)")
for d in range(10):
    print(f"{d:>5}   {clip_real[d]:9.3f}   {clip_gen[d]:14.3f}   {clip_rel[d]:16.2f}   {cls_gen[d]:>10.1%}")
for label, values in (("CLIP on real digits", clip_real), ("CLIP on generated digits", clip_gen),
                      ("CLIP generated / real", clip_rel)):
    NUMBERS[f"4: {label}, digits 0-9"] = [round(float(v), 3) for v in values]
NUMBERS["4: CLIP model"] = scorer.name + ("" if PRETRAINED_CLIP else " (TINY RANDOM: meaningless)")

fig, axes = plt.subplots(1, 3, figsize=(15, 3.4))
ks = torch.arange(10)
axes[0].bar(ks - 0.2, clip_gen, 0.4, label="generated")
axes[0].bar(ks + 0.2, clip_real, 0.4, label="real MNIST", color="0.6")
axes[0].set(title="CLIP p(intended digit)" + CLIP_TAG, ylim=(0, 1.22))  # room above the bars for the legend
axes[0].legend(frameon=False, fontsize=8, loc="upper center", ncol=2)
axes[1].bar(ks, clip_rel)
axes[1].axhline(1.0, color="grey", ls="--", lw=1)
axes[1].set(title="CLIP score: generated / real" + CLIP_TAG)
axes[2].bar(ks, cls_gen, color="0.4")
axes[2].set(title="classifier accuracy (generated)", ylim=(0, 1.05))
for ax in axes:
    ax.set(xlabel="digit", xticks=list(range(10)))
fig.tight_layout()

# %% [markdown]
# ## 5. "Guidance trades fidelity for diversity" and "DDIM / DPM-Solver cut sampling time"
#
# **Guidance.** Fidelity is the classifier's accuracy. Diversity is how different two samples of the *same*
# digit are: the mean distance between the classifier features (its 128-dimensional penultimate layer, the
# features FID uses) of two different samples of that digit, beside the same number for real digits.
#
# ### Exercise 7 (2 points)
# Write `within_class_diversity(features, labels, num_classes=10)`: `features` `[N, D]`, `labels` int64 `[N]`.
# Return `[num_classes]`: for each class the mean Euclidean distance between two **different** samples of that
# class (every class has at least two). `torch.cdist(a, b)` gives all pairwise distances.

# %% nbgrader={"grade": false, "grade_id": "within_class_diversity", "locked": false, "schema_version": 3, "solution": true}
def within_class_diversity(features, labels, num_classes=10):
    """[num_classes]: mean distance between two different samples of each class."""
    ### BEGIN SOLUTION
    out = []
    for k in range(num_classes):
        f = features[labels == k]
        n = f.shape[0]
        out.append(torch.cdist(f, f).sum() / (n * (n - 1)))  # the diagonal (self-distances) is 0
    return torch.stack(out)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_within_class_diversity", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_within_class_diversity(within_class_diversity)
### BEGIN HIDDEN TESTS
checks.check_within_class_diversity(within_class_diversity, seed=6, sizes=((60, 128, 10), (7, 2, 3)))
### END HIDDEN TESTS

# %%
ws = colab.pick([0.0, 0.5, 1.0, 2.0, 4.0, 8.0] if ON_GPU else [0.0, 0.5, 1.0, 2.0, 4.0], [0.0, 2.0])
n_w = colab.pick(50 if ON_GPU else 12, 2)  # samples per digit and w
real_div = measures.within_class_diversity(classifier_features(real01, clf), y_real)  # [10]
guidance_rows, grids = [], {}
for w in ws:
    xs, ys = draw(n_w, w=w)
    r = judge(xs, ys)
    div = measures.within_class_diversity(classifier_features((xs + 1) / 2, clf), ys)  # [10]
    rel = float((div / real_div).nanmean())
    guidance_rows.append((w, r["accuracy"], rel, r["fid_ratio"]))
    grids[w] = xs[:30]
    print(f"w = {w:3g}: {fmt(r)}   diversity {rel:.2f}x that of real digits")
NUMBERS["5: guidance (w, accuracy, diversity / real, FID / floor)"] = [tuple(round(v, 3) for v in row)
                                                                        for row in guidance_rows]
fig, ax = plt.subplots(figsize=(5.5, 3.8))
ax.plot([row[2] for row in guidance_rows], [row[1] for row in guidance_rows], "o-", lw=2)
for w, acc, rel, _ in guidance_rows:
    ax.annotate(f"w={w:g}", (rel, acc), textcoords="offset points", xytext=(5, 5))
ax.set(xlabel="diversity within a digit / that of real digits", ylabel="classifier accuracy",
       title="fidelity against diversity as guidance grows")
ax.grid(alpha=0.3)
for w in (ws[0], ws[-1]):
    fig = plotting.image_grid(grids[w], ncols=10, title=f"w = {w:g} (same noise)", size=0.8)

# %% [markdown]
# **Samplers.** The same digits from the same noise with each sampler and a number of network evaluations
# (NFE); we time each run and judge it. The baseline is what the claim is about: DDPM with **many** steps
# (`BASE_STEPS`: 1000 on a GPU, 250 on a CPU). A speed-up means something only at equal quality, and "equal"
# needs a definition that sampling noise cannot fake: here, accuracy at most 3 points, or two standard errors of
# the difference (whichever is larger), below the baseline's; or (a second judge) an FID at most 25% above the
# baseline's. DDPM with fewer steps ("respacing") is itself a way to save time, so it is in the table too.
#
# ### Exercise 8 (2 points)
# Write `speedup_at_quality(seconds, quality, target, baseline_seconds)`: `seconds` and `quality` are `[S, K]`
# (row $s$ = one sampler, column = one setting, in no particular order), `target` and `baseline_seconds` floats.
# Return float `[S]`: for each sampler, `baseline_seconds` divided by the time of its **fastest** setting whose
# quality is at least `target`; `0.0` for a sampler none of whose settings reaches the target.

# %% nbgrader={"grade": false, "grade_id": "speedup_at_quality", "locked": false, "schema_version": 3, "solution": true}
def speedup_at_quality(seconds, quality, target, baseline_seconds):
    """[S, K], [S, K] -> [S]: baseline_seconds / fastest time with quality >= target (0 if none)."""
    ### BEGIN SOLUTION
    good_enough = torch.where(quality >= target, seconds, torch.full_like(seconds, float("inf")))
    fastest = good_enough.min(dim=1).values  # [S], inf where no setting reaches the target
    return torch.where(torch.isinf(fastest), torch.zeros_like(fastest), baseline_seconds / fastest)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_speedup_at_quality", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_speedup_at_quality(speedup_at_quality)
### BEGIN HIDDEN TESTS
checks.check_speedup_at_quality(speedup_at_quality, seed=8, sizes=((3, 7), (5, 2)))
### END HIDDEN TESTS

# %% [markdown]
# "As good as the baseline" must not be decided by luck. An accuracy $p$ measured on $n$ samples has a binomial
# standard error $\sqrt{p(1-p)/n}$; the difference of two such accuracies (a sampler's and the baseline's, each on
# $n$ samples) has variance twice that. We call a sampler as good when its accuracy is at most **two standard
# errors of that difference** below the baseline's, and never demand more than 3 points:
#
# $$\text{margin}(p, n) = \max\Big(0.03,\ 2\sqrt{2\,p(1-p)/n}\Big),\qquad p \text{ clamped to } [1/n,\ 1 - 1/n]$$
#
# (the clamp: a measured 100% does not mean a standard error of 0).
#
# ### Exercise 9 (1 point)
# Write `accuracy_margin(p, n)`: `p` is a float64 tensor `[K]` of accuracies (0 and 1 included), `n` an int; return
# the margins, `[K]`. `torch.clamp(x, min=...)` is an elementwise max with a number.

# %% nbgrader={"grade": false, "grade_id": "accuracy_margin", "locked": false, "schema_version": 3, "solution": true}
def accuracy_margin(p, n):
    """[K] accuracies on n samples -> [K] margins: max(0.03, 2 sqrt(2 p (1 - p) / n)), p within [1/n, 1 - 1/n]."""
    ### BEGIN SOLUTION
    p = p.clamp(1 / n, 1 - 1 / n)
    return torch.clamp(2 * torch.sqrt(2 * p * (1 - p) / n), min=0.03)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_accuracy_margin", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_accuracy_margin(accuracy_margin)
### BEGIN HIDDEN TESTS
checks.check_accuracy_margin(accuracy_margin, seed=5, ns=(60, 7))
### END HIDDEN TESTS

# %%
if FAST:
    nfes = [2, 4]
elif ON_GPU:
    nfes = [5, 10, 20, 50, 100, 250]
else:
    nfes = [5, 10, 20, 50]
nfes = [n for n in nfes if n <= schedule.T]
BASE_STEPS = min(colab.pick(1000 if ON_GPU else 250, 4), schedule.T)  # the baseline: DDPM with many steps
n_nfe = colab.pick(30 if ON_GPU else 15, 1)  # samples per digit
names = ("ddpm", "ddim", "dpmpp_2m")


def timed_run(name, nfe):
    if ON_GPU:
        torch.cuda.synchronize()
    start = time.perf_counter()
    xs, ys = draw(n_nfe, sampler=name, steps=nfe)  # draw() returns on the CPU: the GPU has finished
    return time.perf_counter() - start, judge(xs, ys)


n = 10 * n_nfe
base_seconds, base = timed_run("ddpm", BASE_STEPS)
print(f"baseline: DDPM with {BASE_STEPS} steps: {base_seconds:.1f} s for {n} samples, accuracy {base['accuracy']:.1%}, "
      f"FID {base['fid_ratio']:.2f}x the floor (without the bias {base['fid_low_ratio']:.1f}-{base['fid_high_ratio']:.1f}x)")
seconds, accuracy, fid = (torch.zeros(len(names), len(nfes)) for _ in range(3))
print(f"sampler    NFE   seconds   ms per sample and NFE   accuracy   FID / floor   without bias, 90%   vs baseline   "
      f"({n} samples, w = {W:g})")
for i, name in enumerate(names):
    for j, nfe in enumerate(nfes):
        seconds[i, j], r = timed_run(name, nfe)
        accuracy[i, j], fid[i, j] = r["accuracy"], r["fid_ratio"]
        same = (r["fid_interval"] is None or base["fid_interval"] is None
                or r["fid_interval"].overlaps(base["fid_interval"]))  # FID within the noise of the baseline's
        print(f"{name:>8} {nfe:>5} {seconds[i, j]:9.2f} {1000 * seconds[i, j] / (n * nfe):17.2f} "
              f"{r['accuracy']:14.1%} {r['fid_ratio']:10.1f}x   {r['fid_low_ratio']:6.1f}-{r['fid_high_ratio']:.1f}x   "
              f"{'within noise' if same else 'differs'}")
# "as good as the baseline", two ways: accuracy at most max(3 points, 2 standard errors of a difference of two
# accuracies from n samples each) lower; FID / floor at most 25% higher (quality = -FID: higher is better)
margin_of = checks.yours_or_labkit(checks.check_accuracy_margin, accuracy_margin, measures.accuracy_margin,
                                   "accuracy_margin")
margin = float(margin_of(torch.tensor([base["accuracy"]], dtype=torch.float64), n)[0])
by_accuracy = measures.speedup_at_quality(seconds, accuracy, base["accuracy"] - margin, base_seconds)
by_fid = measures.speedup_at_quality(seconds, -fid, -1.25 * base["fid_ratio"], base_seconds)
print(f"\nspeed-up over DDPM with {BASE_STEPS} steps, 0 = never as good:")
for name, s_acc, s_fid in zip(names, by_accuracy, by_fid):
    print(f"{name:>8}: {s_acc:5.1f}x at accuracy >= baseline - {margin:.1%},   {s_fid:5.1f}x at FID <= 1.25 x baseline")
NUMBERS[f"5: speed-up over DDPM-{BASE_STEPS} at accuracy >= baseline - {margin:.1%}"] = \
    {name: round(float(v), 1) for name, v in zip(names, by_accuracy)}
NUMBERS[f"5: speed-up over DDPM-{BASE_STEPS} at FID <= 1.25 x baseline"] = \
    {name: round(float(v), 1) for name, v in zip(names, by_fid)}

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for i, name in enumerate(names):
    se = (accuracy[i] * (1 - accuracy[i]) / n).sqrt()  # one binomial standard error per point
    axes[0].errorbar(nfes, accuracy[i], yerr=se, fmt="o-", capsize=3, label=name, lw=2)
    axes[1].plot(nfes, seconds[i], "o-", label=name, lw=2)
axes[0].axhline(base["accuracy"], color="black", lw=1, label=f"DDPM-{BASE_STEPS}")
axes[0].axhline(base["accuracy"] - margin, color="black", lw=1, ls="--", label="as good as the baseline")
axes[1].axhline(base_seconds, color="black", lw=1, label=f"DDPM-{BASE_STEPS}")
axes[0].set(ylabel="classifier accuracy (+- 1 standard error)", title="quality against network evaluations")
axes[1].set(ylabel=f"seconds for {10 * n_nfe} samples", yscale="log", title=f"wall time on {DEVICE}")
for ax in axes:
    ax.set(xlabel="network evaluations (NFE)", xscale="log")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
fig.tight_layout()

# %% [markdown]
# **Which settings are worth using?** A speed-up at one quality target is one view of the table. The whole table: a
# setting is *dominated* when another one is at most as slow and at least as good, and strictly better in one of
# the two; every dominated setting wastes time, quality or both. The others form the **Pareto front** of time
# against quality, the only settings worth choosing from (which one depends on how much time you have).
#
# ### Exercise 10 (2 points)
# Write `pareto_front(seconds, quality)`: `seconds` and `quality` float `[M]`, one entry per setting (higher quality
# is better). Return a bool tensor `[M]`: True for the settings no other setting dominates. Two settings with the
# same time and the same quality do not dominate each other: both are on the front.

# %% nbgrader={"grade": false, "grade_id": "pareto_front", "locked": false, "schema_version": 3, "solution": true}
def pareto_front(seconds, quality):
    """[M], [M] -> bool [M]: True where no other setting is as fast and as good, and strictly better in one."""
    ### BEGIN SOLUTION
    as_fast = seconds[None, :] <= seconds[:, None]  # [i, j]: j takes at most i's time
    as_good = quality[None, :] >= quality[:, None]  # [i, j]: j is at least as good as i
    better = (seconds[None, :] < seconds[:, None]) | (quality[None, :] > quality[:, None])  # strictly, in one
    return ~(as_fast & as_good & better).any(dim=1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_pareto_front", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_pareto_front(pareto_front)
### BEGIN HIDDEN TESTS
checks.check_pareto_front(pareto_front, seed=2, sizes=(40, 7))
### END HIDDEN TESTS

# %% [markdown]
# The error bars so far were $\pm$ one binomial standard error, $\sqrt{p(1-p)/n}$: at a measured 100% that is 0, as
# if 100 samples proved a perfect sampler. Wilson's score interval (Wilson 1927) does not collapse at 0% or 100%
# and never leaves $[0, 1]$: with $z = 1.96$ for 95%,
#
# $$\text{centre} = \frac{p + z^2/(2n)}{1 + z^2/n},\qquad
# \text{half} = \frac{z}{1 + z^2/n}\sqrt{\frac{p(1-p)}{n} + \frac{z^2}{4n^2}},\qquad
# [\text{centre} - \text{half},\ \text{centre} + \text{half}].$$
#
# ### Exercise 11 (2 points)
# Write `wilson_interval(p, n, z=1.96)`: `p` a float64 tensor `[K]` of accuracies (0 and 1 included), `n` an int,
# `z` a float. Return `[K, 2]`: each accuracy's lower and upper end.

# %% nbgrader={"grade": false, "grade_id": "wilson_interval", "locked": false, "schema_version": 3, "solution": true}
def wilson_interval(p, n, z=1.96):
    """[K] accuracies on n samples -> [K, 2]: Wilson's score interval [lower, upper] (Wilson 1927)."""
    ### BEGIN SOLUTION
    shrink = 1 + z ** 2 / n
    centre = (p + z ** 2 / (2 * n)) / shrink
    half = z / shrink * torch.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2))
    return torch.stack([centre - half, centre + half], dim=-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_wilson_interval", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_wilson_interval(wilson_interval)
### BEGIN HIDDEN TESTS
checks.check_wilson_interval(wilson_interval, seed=9, ns=(150, 12), zs=(1.0, 2.5))
### END HIDDEN TESTS

# %%
front_of = checks.yours_or_labkit(checks.check_pareto_front, pareto_front, measures.pareto_front, "pareto_front")
settings = [f"{name}-{nfe}" for name in names for nfe in nfes]  # the order of seconds.flatten()
fronts = {"accuracy": front_of(seconds.flatten(), accuracy.flatten()),
          "FID": front_of(seconds.flatten(), -fid.flatten())}  # -FID: higher is better
for judged_by, on_front in fronts.items():
    print(f"worth using by {judged_by} (no other setting is as fast and as good): "
          + ", ".join(f"{s} ({float(sec):.1f} s)" for s, keep, sec in zip(settings, on_front, seconds.flatten()) if keep))
    NUMBERS[f"5: on the Pareto front of {judged_by} against time"] = [s for s, keep in zip(settings, on_front) if keep]
interval_of = checks.yours_or_labkit(checks.check_wilson_interval, wilson_interval, measures.wilson_interval,
                                     "wilson_interval")
fig, ax = plt.subplots(figsize=(6, 3.8))
for i, name in enumerate(names):
    ends = interval_of(accuracy[i].double(), n)  # [len(nfes), 2]: 95% Wilson intervals
    below, above = (accuracy[i] - ends[:, 0]).clamp(min=0), (ends[:, 1] - accuracy[i]).clamp(min=0)
    ax.errorbar(seconds[i], accuracy[i], yerr=[below, above], fmt="o", capsize=3, label=name)
keep = fronts["accuracy"].bool()
order = torch.argsort(seconds.flatten()[keep])
ax.plot(seconds.flatten()[keep][order], accuracy.flatten()[keep][order], "k--", lw=1, label="Pareto front")
ax.set(xlabel=f"seconds for {n} samples", xscale="log", ylabel="classifier accuracy (bars: 95% Wilson)",
       title="time against quality: the settings worth using")
ax.grid(alpha=0.3)
ax.legend(frameon=False)
plt.show()

# %% [markdown]
# ## 6. Your numbers
#
# Everything the report quotes, in one place. Copy numbers from here (and name the figure each comes from).

# %%
if not meta["pretrained"]:
    print("NOTE: no checkpoint could be loaded: every number comes from an UNTRAINED stand-in model.")
if FAST:
    print("Fast mode: tiny runs that only show the code works. Run the notebook normally before you write.")
for key, value in NUMBERS.items():
    print(f"{key}: {value}")

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_1", "locked": true, "schema_version": 3, "solution": false}
# ## The report
#
# Write one answer per claim, each in the answer cell below it (double-click the cell to edit it). Each answer should
# * **state the claim** as the original report put it;
# * **quote your measurement**: the number(s), with their spread where there is one, and the sample size;
# * **name the picture** it comes from (e.g. "figure: when the classifier commits");
# * give a **verdict**: confirmed, refuted, or not decided by this measurement, and *why* it follows from the
#   numbers;
# * where your measurement could mislead, say so (that part also goes into the limitations).
#
# Four to eight sentences per claim are enough. Say once, in the first answer, which model you measured.
#
# **Question 1 (2 points).** The claim: "Recognisable structure of digits like 1 or 7 reappears roughly halfway
# through denoising; loopy digits (8) need more steps." (Section 1.)

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_1", "locked": false, "points": 2, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** (the shipped checkpoint, measured on a CPU: 12 trajectories per digit, 40 DDPM steps spread
# evenly over $t$, $w = 0.5$; a T4 run has 50 per digit and 100 steps). "Recognisable" is the step from which the
# classifier's p(intended digit | $\hat x_0$) stays at or above 0.5 (table in section 1, figure "when the
# classifier commits"). 1s and 7s commit after a median of 7% and 10% of the steps (IQR 7-10% for both, $t$
# about 900), far earlier than halfway; with the stricter threshold 0.9 after 15-16%. **Halfway: refuted.** Every
# digit commits within the first 15% of the steps at 0.5; the latest are 5 (15%; 54% at 0.9), 2 and 3 (12%; 40%
# and 32% at 0.9). For 8 the plain measure fails: the classifier calls 100% of all first guesses an 8 (the control
# line), so 8s look recognisable from step 0. With the control built in (the judge must believe "8" of the 8s'
# trajectories at least 0.5 more than of the other digits' at the same step), 8 commits after a median of 9% of
# the steps (IQR 7-10%): later than 0, 1 and 4 (7%), earlier than 2, 3 and 9 (12%) and 5 (15%). Over the whole
# spread, the probability that an 8 commits later than a trajectory of another digit is $P_8 = 0.35$; with 12 against
# 108 trajectories, "no difference" allows $0.5 \pm 2 \times 0.088$, so the 8 is **not decided** (if anything
# earlier), while 5 (0.87), 2 (0.72) and 9 (0.68) commit later than the rest and 0, 1 and 4 (0.22-0.28) earlier.
# **Loopy digits later: not supported** for 8 on this model (a larger run could decide it); the digits that commit
# last are 5, 2 and 9. The $\hat x_0$ strips agree: the identity is fixed early, the strokes sharpen later.
#
# **Rubric (2 points).** 1 point: the claim measured with numbers from this notebook (commitment step or fraction
# for 1, 7 and 8 with a spread such as the IQR, the number of trajectories) and the figure named. 1 point: a
# verdict that follows from the numbers, treating "halfway" and "loopy digits later" separately, and deciding the
# 8 with the measure that has the control built in (the plain measure's 8 is the judge's bias, not the model's) and
# with a spread (P_8 against its "no difference" band, or the IQRs), saying "not decided" where the data cannot tell.
# No point for a verdict without numbers.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_2", "locked": true, "schema_version": 3, "solution": false}
# **Question 2 (2 points).** The claim: "Skip connections are vital for keeping edges and shapes." (Section 2.)

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_2", "locked": false, "points": 2, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** (CPU: the shipped model's U-Net with one block per level and no attention, trained 600 steps
# with skips and 600 without, from the same seed; 512 held-out digits.) Without skips the one-step $\hat x_0$ error
# is higher at every $t$ (figure "one-step x0 error"): median 0.042 against 0.027 at $t = 400$ and 0.36 against
# 0.16 at $t = 800$ over the whole image; on the edge pixels 0.16 against 0.12 at $t = 400$ and 0.38 against 0.26
# at $t = 600$. At $t = 50$ the gap is smallest (edges 0.0080 against 0.0069): with little noise the input itself
# still shows the edges. The training loss ends at 0.066 against 0.034. The samples differ most: with skips 83% are
# recognised (FID 3.6 times the floor), without skips 10%, chance (FID 179 times). Verdict: **confirmed for this
# short training**: without skips the network loses the shapes (no recognisable digits) and more of the edges at
# mid and high noise; whether "vital" holds after full training needs a longer run.
#
# **Rubric (2 points).** 1 point: numbers for both networks (error on edges and/or the whole image at named $t$,
# sample accuracy or FID), the equal budget stated, the figure named. 1 point: a verdict that separates edges
# from shapes (or says why it cannot) and takes the short training into account.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_3", "locked": true, "schema_version": 3, "solution": false}
# **Question 3 (2 points).** The claim: "Training stability depends heavily on the learning rate and the number of
# diffusion steps", and "a cosine schedule improves stability". (Section 3.)

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_3", "locked": false, "points": 2, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** (CPU sweep: the tiny network, 200 steps per run, one seed; held-out $\hat x_0$ error at the same
# three noise levels for every run, lower is better). The learning rate decides everything here: 2e-4 learns
# too slowly (error 0.40, loss 0.82), 2e-3 gives 0.14, 2e-2 the best 0.080, and 1e-1 fails (0.47, loss stuck at
# 1.00: the network predicts no noise at all) without ever becoming NaN, because gradients are clipped (figure
# "learning rate"). $T$ and the schedule change the error by under 5%: T 50 0.149, T 250 0.144, T 1000 0.142,
# linear 0.143 against cosine 0.142; their loss curves cannot be compared by value (different noise levels).
# Verdict: **learning rate confirmed** (a factor 6 in error between 2e-2 and 1e-1), **$T$ and "cosine improves
# stability" not shown**: differences this small need several seeds and longer runs (the T4 run has two seeds).
#
# **Rubric (2 points).** 1 point: numbers for the lr runs and the $T$ / schedule runs (held-out error or sample
# accuracy, diverged or not), with run length and number of seeds. 1 point: a verdict per factor that uses the
# spread between seeds or says that one seed cannot decide, and does not compare loss values across different $T$.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_4", "locked": true, "schema_version": 3, "solution": false}
# **Question 4 (2 points).** The claim: "CLIP gives simpler digits (1, 4) consistently higher scores than digits
# with closed loops (8, 9), so the model finds straight strokes easier." (Section 4.)

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_4", "locked": false, "points": 2, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Measured offline, so CLIP was the tiny *random* stand-in (the banner): its scores mean nothing,
# and the claim must be tested with ViT-B/32 in Colab. The method in this notebook separates the two halves:
# CLIP's zero-shot p(intended digit) on 300 real and 300 generated digits, per digit, and their ratio (figure
# "CLIP score: generated / real"). If real 1s and 4s also score higher than real 8s and 9s, "CLIP likes straight
# strokes" is a fact about CLIP, not about the model. Whether the model "finds straight strokes easier" shows in
# the ratio (here 0.97-1.02 for every digit, meaningless with a random CLIP) and, better, in the classifier's
# accuracy on generated digits: 100% for 1, 4, 8 and 9 alike (96.7% for 3). Verdict: **the conclusion does not
# follow from CLIP scores**; by the classifier the model draws 8s and 9s as well as 1s and 4s.
#
# **Rubric (2 points).** 1 point: CLIP scores on real and generated digits compared per digit (1, 4, 8, 9 and
# the ratios), or, with the tiny CLIP, a clear statement that the numbers are meaningless and what the ratio
# would show. 1 point: the two halves separated ("CLIP likes 1s" against "the model draws 1s well"), with the
# classifier's per-digit accuracy as the second judge.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_5", "locked": true, "schema_version": 3, "solution": false}
# **Question 5 (2 points).** The claims: "Classifier-free guidance trades fidelity against diversity", and "DDIM /
# DPM-Solver cut sampling time". (Section 5.)

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_5", "locked": false, "points": 2, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** (CPU, 120 samples per $w$, 150 per sampler setting.) Guidance: from $w = 0$ to $w = 4$ the
# accuracy rises from 95.8% to 100% while the diversity within a digit falls from 1.06 to 0.67 times that of real
# digits (figure "fidelity against diversity"; the $w = 4$ grid shows thick, alike digits). The FID is lowest at
# $w = 0.5$ (0.79 times the floor, against 1.03 at $w = 0$ and 2.48 at $w = 4$): a little guidance helps both,
# more buys no accuracy (saturated from $w = 1$) and costs diversity. **Confirmed above $w = 0.5$.** Samplers: the
# baseline, DDPM with 250 steps, took 83-126 s for 150 samples in two runs (100% accuracy, FID 0.71 times the
# floor); the time per sample and NFE is about the same for the three samplers (2.2-3.7 ms, varying with the
# machine's load), so time is proportional to the steps. DDPM itself with only 5 steps keeps 100% accuracy (50-68x
# faster), and with 20 steps its FID (0.7) too (13x). DDIM and
# DPM-Solver++ never reach the baseline's quality here: their accuracy stays at 92-96% up to 50 steps (4 points
# and more below; 2 standard errors of the difference are 1.9 points with 150 samples, so the 3-point margin
# decides), and their FID at 1.0-1.5 times the floor with 10 or more steps (DPM-Solver++ at 5 steps: 1.5, DDIM
# 7.8). Verdict: **"fewer steps cut time" confirmed, by a factor of 10 to 50; "DDIM / DPM-Solver are what cut it"
# refuted on this model at $w = 0.5$**: respaced DDPM does it better, and the deterministic samplers lose a few
# points of accuracy. The Pareto front agrees: by accuracy only DDPM with 5 steps is worth using (4.7 s for 150
# samples); by FID, DDPM with 5, 10 and 20 steps and DPM-Solver++ with 5.
#
# **Rubric (2 points).** 1 point: guidance numbers (accuracy and diversity or FID at two or more $w$) and the
# speed-up numbers with their quality target. 1 point: verdicts that follow, e.g. noticing that fidelity is
# saturated, that the time per NFE is equal, or that the verdict on samplers depends on the target and judge.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_6", "locked": true, "schema_version": 3, "solution": false}
# **Question 6 (2 points): limitations.** What do your measurements *not* show? Think of: the judges (a classifier
# trained on MNIST, CLIP), sample sizes and seeds, training budgets of the ablation and the sweep, the model you
# measured, and anything that surprised you.

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_6", "locked": false, "points": 2, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** (1) The judges: every fidelity number comes from one MNIST classifier; it reads an 8 into
# every first guess (noise), which makes the plain measure of claim 1 useless for 8s (the control fixes it),
# and "recognisable" depends on its threshold (0.5 against 0.9 moves 5s from 15% to 54% of the steps). CLIP was a random stand-in offline: claim 4 is
# untested. (2) Sample sizes: 12 trajectories per digit, 60-120 samples per setting; an accuracy step is 1.7
# points and FID on 60 samples is noisy. (3) Training budgets: the ablation and the sweep train for a minute or
# less, one seed: they show early training, and a difference there may vanish or grow later. (4) One model, one
# data set, timings on a shared CPU. Next: the T4 run (more samples, two seeds, real CLIP), a second fidelity
# judge, and longer ablations.
#
# **Rubric (2 points).** 1 point: at least three concrete limitations tied to this notebook's measurements
# (judges, sample size and seeds, training budget, CLIP stand-in, one model). 1 point: for at least one, what it
# could change in a verdict above, or how to remove it.
# ### END SOLUTION

# %% [markdown]
# ## 7. Hand it in
#
# Run every cell (Run > Run All Cells), check the report reads well with the pictures, save, then export the
# notebook with its outputs to **one HTML file**, pictures included:
#
# ```bash
# labkit report lab09_report.ipynb              # writes lab09_report.html beside it
# ```
#
# (`jupyter nbconvert --to html --embed-images lab09_report.ipynb` does the same.) In Colab: File > Download >
# Download .ipynb, then run the command on your machine, or upload the file to the Colab runtime and run
# `!labkit report lab09_report.ipynb` in a cell. Hand in both files: the notebook (its functions are
# autograded, its answers graded by hand) and the HTML (the report as it reads, with every picture).
