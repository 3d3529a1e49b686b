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
# 2. run CLIP-guided sampling and measure its effect with three judges (classifier accuracy, FID, CLIP score);
# 3. recognise when an optimised score stops measuring what you wanted (Goodhart's law) and show it.
#
# **Time budget.** Running all cells: about 4 minutes on a Colab T4 (plus about 1 minute to download CLIP
# once); on a laptop CPU about 10 minutes with the real CLIP. Working through the lab: about 45 minutes.
#
# **How it is graded.** One short function (2 points) and its test cell (the tests you see, plus hidden ones).
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

from labkit import guidance, plotting, samplers
from labkit.clip_guidance import ClipGuidance, optimise_for_clip
from labkit.evaluation import PromptSet, classifier_accuracy
from labkit.checks import lab08_beyond as checks
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
# ## 3. What does CLIP guidance change?
#
# Classifier-free guidance ($w = 1$) stays on; CLIP guidance with strength $s$ goes on top, towards the caption
# "a handwritten number $k$" for the intended digit $k$. Same starting noise for every $s$. Three judges:
# the MNIST classifier (accuracy), the feature FID against real digits (beside its floor), and CLIP itself
# (zero-shot p(intended digit), and the caption's logit that guidance pushes up).

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
    print(f"s = {s:4}: classifier {r['accuracy']:6.1%}   FID {r['fid_ratio']:5.1f}x floor   "
          f"CLIP p(intended) {r['clip_prob']:.2f}   CLIP logit {r['clip_logit']:6.2f}   ({seconds:.1f} s)")
if not PRETRAINED_CLIP:
    print("\n(tiny random CLIP: the CLIP numbers, and what guidance does, are meaningless here)")
if not meta["pretrained"]:
    print("(no shipped checkpoint: the samples come from an untrained stand-in)")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
xs = list(scales)
axes[0].plot(xs, [measured[s]["accuracy"] for s in xs], "o-")
axes[0].set(ylabel="classifier accuracy", title="does the classifier see the digit?" + CLIP_TAG)
axes[1].plot(xs, [measured[s]["fid_ratio"] for s in xs], "o-", color="C1")
axes[1].set(ylabel="FID / real floor", title="distance to real digits" + CLIP_TAG)
axes[2].plot(xs, [measured[s]["clip_logit"] for s in xs], "o-", color="C2", label="caption logit (pushed up)")
axes[2].set(ylabel="CLIP logit", title="what CLIP thinks" + CLIP_TAG)
ax2 = axes[2].twinx()
ax2.plot(xs, [measured[s]["clip_prob"] for s in xs], "s--", color="C3", label="zero-shot p(intended)")
ax2.set_ylabel("CLIP zero-shot p(intended)")
for ax in axes:
    ax.set(xlabel="CLIP guidance strength s")
    ax.grid(alpha=0.3)
fig.tight_layout()
fig = plotting.compare_rows({f"s={s:g}": grids[s][:10] for s in scales}, col_titles=[str(d) for d in range(10)],
                            title="same noise, more and more CLIP guidance" + CLIP_TAG)

# %% [markdown]
# ## 4. Fooling the critic
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
# section 4 exploits). (With the tiny random CLIP the maps mean nothing, and a good answer says so.)
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
# pushes; the classifier's accuracy holds at small $s$ and then falls; the FID against the floor grows (worse).
# There is usually no $s$ where all three improve: at best a small $s$ raises CLIP's score while accuracy and
# FID barely move. At the largest $s$ the grids show broken digits: blotches, textures and distorted strokes.
#
# **Rubric (1 point).** 1/2 point: the direction of each judge. 1/2 point: no s improves all three (or a
# justified small s), and the grids at large s described.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_3", "locked": true, "schema_version": 3, "solution": false}
# **Question 3 (1 point).** In section 4 the CLIP logit rises a lot. Do the images look like the caption? What
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
