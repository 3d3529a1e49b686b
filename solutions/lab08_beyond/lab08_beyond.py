# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 08 — Beyond the lab: CLIP as a critic in the loop
#
# Lab 06 used CLIP to *judge* finished digits. CLIP is an ordinary differentiable network, so it can also
# *steer*: at every sampling step, ask which small change of the image would raise CLIP's score for a caption,
# and nudge the sample that way. This is classifier guidance (Dhariwal & Nichol 2021) with CLIP as the
# classifier, the idea behind early text-to-image systems (GLIDE's CLIP guidance, "CLIP-guided diffusion").
# Then we measure, honestly, what it changes, and catch CLIP being fooled.
#
# **Learning objectives.** After this lab you can
# 1. explain how the gradient of a critic's score enters the noise estimate, and write that combination;
# 2. take a classifier's gradient $\nabla_{x_t} \log p(y \mid x_t)$ with autograd and write classifier-guided
#    sampling (Dhariwal & Nichol 2021) around lab 05's step;
# 3. run CLIP-guided sampling and measure its effect with three judges (classifier accuracy, FID, CLIP score);
# 4. recognise when an optimised score stops measuring what you wanted (Goodhart's law) and show it.
#
# **Time budget.** Running all cells: about 4 minutes on a Colab T4 (plus about 1 minute to download CLIP
# once); on a laptop CPU about 10 minutes with the real CLIP (an estimate: not measured). Measured on 2 shared CPU
# cores at load about 10, with the tiny offline CLIP (no internet there): 2.4 minutes for the whole lab, classifier
# guidance of section 3 included (two runs, 2026-12-07). Working through the lab: about 75 minutes.
# Points: 11 (7 for the functions, 4 for the written answers).
#
# **How it is graded.** Three functions (7 points), each followed by its test cell (the tests you see, plus
# hidden ones). The demonstration after exercise 3 runs your loop when it passes its check, `labkit`'s otherwise.
# The rest is an experiment: run it, look, and answer the questions. Without internet (and while grading) CLIP
# is a tiny random model and every CLIP number is meaningless; the lab says so when that happens.
# The questions at the end are answered in writing and graded by hand (4 points).

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
# __LABKIT_COLAB_INSTALL__ (labkit build writes labkit.colab.INSTALL_CELL here: the Colab install)
from labkit import colab
DEVICE = colab.setup()

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false}
import time

import torch
import matplotlib.pyplot as plt

from labkit import diffusion, guidance, plotting, samplers
from labkit.clip_guidance import ClipGuidance, optimise_for_clip
from labkit.evaluation import PromptSet, classifier_accuracy
from labkit.checks import claims, lab08_beyond as checks
from labkit.checks.lab05_sampling import lab_model
from labkit.checks.lab06_clip import lab_clip
from labkit.checks.lab07_improvements import DigitJudge

FAST = colab.fast_mode()  # True in CI and while grading: expensive cells shrink
torch.manual_seed(0)  # every lab starts from the same random numbers
ON_GPU = DEVICE.type == "cuda"

# %% [markdown]
# ## 1. A critic's gradient
#
# The model, the real digits to compare with, and CLIP (real weights when it can download them).

# %%
model, schedule, meta = lab_model(DEVICE)
prompts = PromptSet(clear=("a handwritten number {k}",), blurry=("a blurry number",))
scorer, PRETRAINED_CLIP = lab_clip(DEVICE, prompts)
CLIP_TAG = "" if PRETRAINED_CLIP else " [random CLIP (offline)]"  # on every figure CLIP shaped
test_digits, REAL = colab.lab_digits(train=False, n=colab.pick(10000, 400))
judge = DigitJudge(device=DEVICE)  # the judge of `labkit evaluate` (and of lab 07)

# %% [markdown]
# CLIP's score for image $x$ and caption $c$ is the logit $s\cdot\cos(\mathrm{CLIP}(x), \mathrm{CLIP}(c))$.
# Every step from pixels to score (resize, normalise, the vision transformer) is differentiable, so
# `torch.autograd` gives $\nabla_x$ of the score: for each pixel, how the score changes if that pixel gets
# brighter. Here for three real digits and the caption of their own digit (red: brighter raises the score).

# %%
guide = ClipGuidance(model, scorer, schedule)
three = test_digits.images[:3].to(DEVICE)
labels3 = test_digits.labels[:3].to(DEVICE)
with torch.enable_grad():
    x = ((three + 1) / 2).requires_grad_(True)
    logits = guide.clip_logits(x, guide.text_embeddings(labels3))
    (grad,) = torch.autograd.grad(logits.sum(), x)
fig, axes = plt.subplots(2, 3, figsize=(7, 4.6))
for i in range(3):
    plotting.show_image(axes[0, i], three[i].cpu(), f'"a handwritten number {int(labels3[i])}": {float(logits[i].detach()):.1f}')
    m = float(grad[i].abs().max())
    axes[1, i].imshow(grad[i, 0].cpu().numpy(), cmap="RdBu_r", vmin=-m, vmax=m)
    axes[1, i].set_axis_off()
fig.suptitle("digits and the gradient of CLIP's score with respect to their pixels")
fig.tight_layout()

# %% [markdown]
# ## 2. Guidance by a critic
#
# The noise prediction is a scaled *score* (the gradient of the log-density of noisy images):
# $\hat\varepsilon = -\sqrt{1-\bar\alpha_t}\,\nabla_{x_t}\log p(x_t)$. To sample from $p(x_t)\,p(c \mid x_t)^s$
# instead, add $s\,\nabla_{x_t}\log p(c \mid x_t)$ to the score, that is (Dhariwal & Nichol 2021, Algorithm 2):
#
# $$\tilde\varepsilon = \hat\varepsilon - s\,\sqrt{1-\bar\alpha_t}\;g,\qquad g = \nabla_{x_t} \log p(c \mid x_t).$$
#
# CLIP was trained on clean images, not on noisy $x_t$, so `labkit.clip_guidance.ClipGuidance` shows it the
# model's current guess $\hat x_0$ and takes $g$ as the gradient of CLIP's logit through $\hat x_0$ back to
# $x_t$. (It also rescales $g$ per image to unit size, so that $s$ means the same for any CLIP model.)
#
# ### Exercise 1 (2 points)
# Write `guided_eps(eps_hat, grad, alpha_bar_t, scale)`: `eps_hat`, `grad` `[B, C, H, W]`; `alpha_bar_t`
# `[B, 1, 1, 1]`; `scale` a float. Return $\tilde\varepsilon$. Mind the sign: $\hat\varepsilon$ points towards
# the noise, the gradient towards higher scores.

# %% nbgrader={"grade": false, "grade_id": "guided_eps", "locked": false, "schema_version": 3, "solution": true}
def guided_eps(eps_hat, grad, alpha_bar_t, scale):
    """eps_hat - scale * sqrt(1 - alpha_bar_t) * grad."""
    ### BEGIN SOLUTION
    return eps_hat - scale * (1 - alpha_bar_t).sqrt() * grad
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_guided_eps", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_guided_eps(guided_eps)
### BEGIN HIDDEN TESTS
checks.check_guided_eps(guided_eps, seed=4, sizes=((3, 2, 5, 5),), scales=(0.5, 10.0))
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Classifier guidance, written out
#
# Dhariwal & Nichol guide with a classifier $p_\phi(y \mid x_t, t)$ trained on *noisy* images, so it can be asked
# at every step. The pull towards class $y$ is the gradient of its log-probability,
#
# $$g = \nabla_{x_t} \log p_\phi(y \mid x_t, t),\qquad \log p_\phi(y \mid x_t, t) = \mathrm{log\_softmax}\big(\text{classifier}(x_t, t)\big)_y,$$
#
# one gradient per image, with respect to that image's pixels. `torch.autograd.grad(out, inp)` returns
# $\partial\,\text{out} / \partial\,\text{inp}$ for a single number `out`. Images in a batch do not interact,
# so the gradient of the *sum* of the batch's log-probabilities is, row by row, each image's own gradient.
#
# ### Exercise 2 (2 points)
# Write `classifier_grad(classifier, x_t, t, y)`: `classifier(x, t)` returns logits `[B, K]`; `x_t` is
# `[B, C, H, W]`, `t` and `y` int64 `[B]`; return $g$ `[B, C, H, W]`. Autograd only differentiates with respect to
# a tensor that requires grad, and records nothing inside `torch.no_grad()` (the sampling loop below runs the model
# there): work on a detached copy of `x_t` that requires grad, inside `torch.enable_grad()`. Take the
# log-probability of each image's own class `y[i]`, not its raw logit.

# %% nbgrader={"grade": false, "grade_id": "classifier_grad", "locked": false, "schema_version": 3, "solution": true}
def classifier_grad(classifier, x_t, t, y):
    """grad of log softmax(classifier(x_t, t))[i, y[i]] with respect to x_t, per image: [B, C, H, W]."""
    ### BEGIN SOLUTION
    with torch.enable_grad():  # records the graph even where the caller switched it off
        x = x_t.detach().requires_grad_(True)  # a leaf to differentiate with respect to
        log_probs = torch.log_softmax(classifier(x, t), dim=1)  # [B, K]
        chosen = log_probs[torch.arange(len(y)), y]  # [B]: log p(y_i | x_i, t_i)
        (grad,) = torch.autograd.grad(chosen.sum(), x)
    return grad
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_classifier_grad", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_classifier_grad(classifier_grad)
### BEGIN HIDDEN TESTS
checks.check_classifier_grad(classifier_grad, seed=3, sizes=((6, 1, 28, 28), (2, 3, 4, 4)), T=1000)
### END HIDDEN TESTS

# %% [markdown]
# Guided sampling is lab 05's loop with one change: at every step the model's $\hat\varepsilon$ is replaced by
# the guided $\tilde\varepsilon$ of exercise 1, with $g$ from exercise 2 at the current $x$ and step
# (Dhariwal & Nichol 2021, Algorithm 2's $\varepsilon$ form, here on DDPM's ancestral step):
#
# $$\text{for } k = S-1, \dots, 0:\quad t = \texttt{timesteps}[k],\quad
# \tilde\varepsilon = \hat\varepsilon(x, t, y) - s\,\sqrt{1-\bar\alpha_k}\;g(x, t, y),\quad
# x \leftarrow \texttt{p\_sample\_step}(x, k, \tilde\varepsilon, \dots, \texttt{noises}[k]).$$
#
# ### Exercise 3 (3 points)
# Write `classifier_guided_loop(model, classifier, x_T, y, scale, timesteps, betas, alpha_bars, noises)`, which
# returns $x_0$. The arguments are those of lab 05's `sample_loop` plus the classifier and the strength
# `scale` $= s$: the model and the classifier see the real time step `timesteps[k]`; `betas`, `alpha_bars` and
# `noises` are indexed by the chain's step `k` (so $\bar\alpha_k$ is `alpha_bars[k]`). Call the model under
# `torch.no_grad()` (no gradient through it), your `classifier_grad` and `guided_eps`, and `labkit`'s
# `samplers.p_sample_step` (lab 05's step; it wants `k` as a `[B]` tensor). Keep `x` in `x_T`'s dtype.

# %% nbgrader={"grade": false, "grade_id": "classifier_guided_loop", "locked": false, "schema_version": 3, "solution": true}
def classifier_guided_loop(model, classifier, x_T, y, scale, timesteps, betas, alpha_bars, noises):
    """Ancestral sampling with eps_hat - scale * sqrt(1 - alpha_bar_k) * grad log p(y | x, t) at every step -> x_0."""
    ### BEGIN SOLUTION
    x = x_T
    B = x.shape[0]
    for k in range(len(timesteps) - 1, -1, -1):
        t = timesteps[k].expand(B)  # [B]: the real time step
        k_b = torch.full((B,), k, dtype=torch.long, device=x.device)  # [B]: the chain's step
        with torch.no_grad():  # no gradient through the model
            eps_hat = model(x, t, y)
        grad = classifier_grad(classifier, x, t, y)
        alpha_bar = alpha_bars.to(x.device)[k_b].view(-1, 1, 1, 1)  # [B, 1, 1, 1]
        eps = guided_eps(eps_hat, grad, alpha_bar, scale)
        x = samplers.p_sample_step(x, k_b, eps, betas, alpha_bars, noises[k]).to(x_T.dtype)
    return x
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_classifier_guided_loop", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_classifier_guided_loop(classifier_guided_loop)
### BEGIN HIDDEN TESTS
checks.check_classifier_guided_loop(classifier_guided_loop, seed=5, sizes=((4, 1, 8, 8),), T=60, steps=(None, 2, 11), scales=(1.0, 6.0))
checks.check_classifier_guided_loop(classifier_guided_loop, seed=6, sizes=((1, 3, 4, 4), (5, 1, 6, 6)), T=25, steps=(7, 3))
### END HIDDEN TESTS

# %% [markdown]
# **Your loop on the real model.** labkit ships no noise-aware classifier, so the guide here is a stand-in built
# from the judge's MNIST classifier, the way section 2 lets CLIP judge: it looks at the model's guess
# $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$ (exercise 7 of lab 01; $\hat\varepsilon$ held
# fixed), and its logits are multiplied by $\sqrt{\bar\alpha_t}$, a temperature that makes it less sure of itself
# the noisier $x_t$ is (without it the gradient through $\hat x_0$ grows like $1/\sqrt{\bar\alpha_t}$ and the first
# steps blow up). The model is asked for "no class" (`y = 10`), so all the pull towards a digit comes from the
# guide. Same starting noise for every $s$. The judge is *the same network* that guides, so its accuracy is not an
# independent measurement (section 5 shows what optimising a judge does): look at the pictures too.

# %%
guided_loop = checks.yours_or_labkit(checks.check_classifier_guided_loop, classifier_guided_loop,
                                     samplers.classifier_guided_loop, "classifier_guided_loop")
mnist = judge.classifier


def no_class(x, t, y):
    return model(x, t, torch.full_like(y, 10))  # the unconditional model


def mnist_on_x0_hat(x, t):
    """logits [B, 10] of the MNIST classifier for the model's guess x0_hat, tempered by sqrt(alpha_bar_t)."""
    with torch.no_grad():
        eps_hat = model(x, t, torch.full_like(t, 10))  # held fixed: no gradient through the U-Net
    x0_hat = diffusion.predict_x0_from_eps(x, t, eps_hat, schedule)
    ab = schedule.alpha_bars.to(x.device, x.dtype)[t].view(-1, 1)  # [B, 1]
    return mnist((x0_hat + 1) / 2) * ab.sqrt()


guide_steps = colab.pick(20, 4)
grid = samplers.timestep_grid(schedule, guide_steps)  # [S] descending
timesteps = grid.flip(0).to(DEVICE)  # [S] ascending
betas, alpha_bars = samplers.respaced(schedule, grid)
y_guided = torch.arange(10, device=DEVICE).repeat(colab.pick(2, 1))
g = torch.Generator(DEVICE).manual_seed(0)
x_T = torch.randn((len(y_guided), 1, 28, 28), generator=g, device=DEVICE)
noises = torch.randn((guide_steps, len(y_guided), 1, 28, 28), generator=g, device=DEVICE)
guided_rows, guided_acc = {}, {}
for s in colab.pick([0.0, 1.0, 3.0], [0.0, 3.0]):
    x0 = guided_loop(no_class, mnist_on_x0_hat, x_T, y_guided, s, timesteps, betas, alpha_bars, noises)
    acc = guided_acc[s] = judge(x0, y_guided)["accuracy"]
    guided_rows[f"s={s:g}"] = x0[:10].cpu()
    print(f"s = {s:3}: the MNIST classifier sees the wanted digit in {acc:6.1%} of {len(y_guided)} samples")
fig = plotting.compare_rows(guided_rows, col_titles=[str(d) for d in range(10)],
                            title="an unconditional model guided towards 0..9 by a classifier (same noise)")
chance = 0.1 + 2 * (0.1 * 0.9 / len(y_guided)) ** 0.5  # one in ten, plus two standard errors of this sample
claims.check("without guidance about one in ten samples is the wanted digit (chance), with s = 1 about half, "
             "with s = 3 most of them",
             guided_acc[0.0] <= chance and 0.3 <= guided_acc.get(1.0, 0.5) <= 0.7 and guided_acc[3.0] > 0.7,
             f"{guided_acc[0.0]:.0%} at s = 0 (chance plus two standard errors: {chance:.0%}), "
             f"{guided_acc.get(1.0, float('nan')):.0%} at s = 1, {guided_acc[3.0]:.0%} at s = 3, of {len(y_guided)} samples")

# %% [markdown]
# Without guidance ($s = 0$) the unconditional model draws digits of its own choosing, and about one in ten
# matches the wanted one by chance. With $s = 1$ about half, with $s = 3$ most of them become the wanted digit. Push much harder
# ($s = 10$, try it) and the samples break down: the guide's gradient overwhelms the model's $\hat\varepsilon$.

# %% [markdown]
# ## 4. What does CLIP guidance change?
#
# Classifier-free guidance ($w = 1$) stays on; CLIP guidance with strength $s$ goes on top, towards the caption
# "a handwritten number $k$" for the intended digit $k$. Same starting noise for every $s$. Three judges:
# the MNIST classifier (accuracy), the feature FID against real digits (beside its floor, with the 90% interval
# of lab 07 for the distance without its small-sample bias: two FIDs differ beyond noise only when their intervals
# do not overlap), and CLIP itself (zero-shot p(intended digit), and the caption's logit that guidance pushes up).

# %%
scales = colab.pick([0.0, 0.5, 1.0, 2.0, 4.0, 8.0], [0.0, 4.0])
n_each = colab.pick(20 if ON_GPU else 4, 1)
steps = colab.pick(20, 4)
y = torch.arange(10, device=DEVICE).repeat(n_each)
base = guidance.guided(model, 1.0, null_class=10)
measured, grids = {}, {}
for s in scales:
    critic = ClipGuidance(base, scorer, schedule, scale=s, prompt="a handwritten number {k}")
    start = time.perf_counter()
    x = samplers.sample(critic, (len(y), 1, 28, 28), y, schedule, steps=steps, guidance=0.0, clip=1.0,
                        generator=torch.Generator(DEVICE).manual_seed(0))
    seconds = time.perf_counter() - start
    x01 = ((x.float().cpu() + 1) / 2).clamp(0, 1)
    clip_scores = scorer.score(x01, y.cpu())
    with torch.no_grad():
        logit = guide.clip_logits(x01.to(DEVICE), guide.text_embeddings(y)).cpu()
    r = judge(x, y)
    r.update(clip_prob=clip_scores.overall()["intended_prob"], clip_logit=float(logit.mean()), seconds=seconds)
    measured[s], grids[s] = r, x[:20].cpu()
    print(f"s = {s:4}: classifier {r['accuracy']:6.1%}   FID {r['fid_ratio']:5.1f}x floor "
          f"(without the bias {r['fid_low_ratio']:.1f}-{r['fid_high_ratio']:.1f}x)   "
          f"CLIP p(intended) {r['clip_prob']:.2f}   CLIP logit {r['clip_logit']:6.2f}   ({seconds:.1f} s)")
logits = [measured[s]["clip_logit"] for s in scales]
claims.check("CLIP guidance pushes the caption's logit up: it rises with every step up in s",
             all(a < b for a, b in zip(logits, logits[1:])),
             "mean logit " + ", ".join(f"{v:.2f}" for v in logits) + " at s = " + ", ".join(f"{s:g}" for s in scales))
if not PRETRAINED_CLIP:
    print("\n(tiny random CLIP: the CLIP numbers, and what guidance does, are meaningless here)")
if not meta["pretrained"]:
    print("(no shipped checkpoint: the samples come from an untrained stand-in)")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
xs = list(scales)
tag = CLIP_TAG.replace(" [", "\n[")  # on a line of its own: three long titles side by side would overlap
axes[0].plot(xs, [measured[s]["accuracy"] for s in xs], "o-")
axes[0].set(ylabel="classifier accuracy", title="does the classifier see the digit?" + tag)
centre = [measured[s]["fid_corrected_ratio"] for s in xs]  # FID without its small-sample bias / floor
bars = [[max(0, c - measured[s]["fid_low_ratio"]) for c, s in zip(centre, xs)],
        [max(0, measured[s]["fid_high_ratio"] - c) for c, s in zip(centre, xs)]]
axes[1].errorbar(xs, centre, yerr=bars, fmt="o-", capsize=3, color="C1")
axes[1].set(ylabel="FID without its bias / floor (90%)", title="distance to real digits (0: perfect)" + tag)
axes[2].plot(xs, [measured[s]["clip_logit"] for s in xs], "o-", color="C2", label="caption logit (pushed up)")
axes[2].set(ylabel="CLIP logit", title="what CLIP thinks" + tag)
ax2 = axes[2].twinx()
ax2.plot(xs, [measured[s]["clip_prob"] for s in xs], "s--", color="C3", label="zero-shot p(intended)")
ax2.set_ylabel("CLIP zero-shot p(intended)")
ax2.legend(handles=axes[2].get_lines() + ax2.get_lines(), loc="lower right", frameon=False, fontsize=8)
for ax in axes:
    ax.set(xlabel="CLIP guidance strength s")
    ax.grid(alpha=0.3)
fig.tight_layout()
fig = plotting.compare_rows({f"s={s:g}": grids[s][:10] for s in scales}, col_titles=[str(d) for d in range(10)],
                            title="same noise, more and more CLIP guidance" + CLIP_TAG)

# %% [markdown]
# ## 5. Fooling the critic
#
# Guidance combines CLIP's push with the diffusion model's knowledge of digits. What does CLIP reward when it
# is the *only* judge? Below, images are changed directly by gradient ascent on CLIP's logit for their
# caption: first a plain grey square ("a handwritten number 3"), then real digits towards the caption of
# *another* digit. The MNIST classifier judges the results.

# %%
opt_steps = colab.pick(100, 3)
grey = torch.full((5, 1, 28, 28), 0.5)
targets = torch.tensor([3, 3, 3, 7, 7])
made, before, after = optimise_for_clip(scorer, grey, targets, steps=opt_steps, lr=0.02)
real5 = ((test_digits.images[:5] + 1) / 2).clamp(0, 1)
other = (test_digits.labels[:5] + 5) % 10  # a different digit for each
moved, before_r, after_r = optimise_for_clip(scorer, real5, other, steps=opt_steps, lr=0.02)

def verdict(images, wanted):
    r = classifier_accuracy(images, wanted, judge.classifier)
    return r["predicted"], r["intended_prob"]

pred_g, p_g = verdict(made, targets)
pred_r, p_r = verdict(moved, other)
titles = [f"CLIP {float(b):.1f}->{float(a):.1f}\nclf says {int(p)}" for b, a, p in zip(before, after, pred_g)]
titles += [f"CLIP {float(b):.1f}->{float(a):.1f}\nwant {int(o)}, clf {int(p)}" for b, a, o, p in zip(before_r, after_r, other, pred_r)]
fig = plotting.image_grid(torch.cat([made, moved]), ncols=5, titles=titles, unit_range=True,
                          title="optimised for CLIP's caption alone (top: from grey, bottom: from real digits)" + CLIP_TAG)
print(f"CLIP logit rose by {float((after - before).mean()):.1f} (grey) and {float((after_r - before_r).mean()):.1f} "
      f"(real digits); the classifier agrees with the caption for {int((pred_g == targets).sum())}/5 and "
      f"{int((pred_r == other).sum())}/5 of them.")
rise = torch.cat([after - before, after_r - before_r])  # [10] how much each image's logit rose
claims.check("optimising the pixels raises CLIP's logit for the caption on every image", bool((rise > 0).all()),
             f"rises from {float(rise.min()):.1f} to {float(rise.max()):.1f}")
if not PRETRAINED_CLIP:
    print("(tiny random CLIP: run with the real model to see what it really rewards)")

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_1", "locked": true, "schema_version": 3, "solution": false}
# ## Questions (look at the pictures)
#
# Answer each question in the cell below it, in a few sentences, with what you saw: a step $t$, a number, a row
# or a curve. Your answers are graded by hand (4 points, 1 per question).
#
# **Question 1 (1 point).** In the gradient maps of section 1, where are the large values: on the strokes,
# around them, or spread over the whole square? What does that say about what CLIP looks at?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_1", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** With the real CLIP the large values are spread over the whole square as a fine, noise-like
# pattern, only weakly concentrated on and around the strokes. CLIP's score responds to textures and to pixels
# far from the digit, not only to the strokes a person reads, so small scattered changes can move it (which
# section 5 exploits). (With the tiny random CLIP the maps mean nothing, and a good answer says so.)
#
# **Rubric (1 point).** 1/2 point: where the values are, read from the maps. 1/2 point: what that implies (CLIP
# is sensitive to texture and background, not only the strokes).
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_2", "locked": true, "schema_version": 3, "solution": false}
# **Question 2 (1 point).** As $s$ grows, what happens to each judge in the three plots? Is there an $s$ where
# all three improve? Describe the grids at the largest $s$.

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_2", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** CLIP's own numbers (caption logit, zero-shot p) rise with $s$, since that is what guidance
# pushes; the classifier's accuracy holds at small $s$ and then falls; the FID against the floor grows (worse),
# though with 40 samples (a CPU run) only differences whose intervals do not overlap count.
# There is usually no $s$ where all three improve: at best a small $s$ raises CLIP's score while accuracy and
# FID barely move. At the largest $s$ the grids show broken digits: blotches, textures and distorted strokes.
#
# **Rubric (1 point).** 1/2 point: the direction of each judge. 1/2 point: no s improves all three (or a
# justified small s), and the grids at large s described.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_3", "locked": true, "schema_version": 3, "solution": false}
# **Question 3 (1 point).** In section 5 the CLIP logit rises a lot. Do the images look like the caption? What
# does the classifier say? Explain with Goodhart's law ("when a measure becomes a target, it ceases to be a good
# measure").

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_3", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** No: the grey square gets faint scribbles and noise-like texture, and the real digits hardly
# change to the eye; the classifier does not see the captioned digit (it keeps the original digit or calls the
# square something arbitrary). Optimised directly, the CLIP logit stops measuring "looks like a 3": the
# optimiser finds pixel patterns that raise the score without making the digit (an adversarial example).
#
# **Rubric (1 point).** 1/2 point: images do not look like the caption; classifier disagrees. 1/2 point:
# Goodhart: the optimised score is exploited, so it no longer measures what it meant to.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_4", "locked": true, "schema_version": 3, "solution": false}
# **Question 4 (1 point).** Why does guided *sampling* resist this failure better than optimising the pixels
# directly? What would you change (a noise-aware CLIP, a different caption, a smaller $s$ late in sampling) and
# how would you measure whether it helped?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_4", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** In sampling, CLIP's push is small at each step and added to the diffusion model's
# prediction, which keeps pulling the image back towards digit-like images; CLIP also judges $\hat x_0$, a
# plausible digit, and the noise added later washes out fine adversarial patterns. Pixel ascent has no such
# prior. Changes: a CLIP trained on noisy images, a schedule that lowers $s$ as $t \to 0$, caption ensembles or
# augmentations (crops, blur) against adversarial gradients. Measure with judges that were not optimised:
# classifier accuracy and FID against the floor at the same CLIP score, plus a second, held-out CLIP.
#
# **Rubric (1 point).** 1/2 point: the diffusion prior (and noise) keeps samples on digit-like images. 1/2
# point: a concrete change and a measurement with judges that were not the target.
# ### END SOLUTION
