# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 06 — Judging digits with CLIP and with FID
#
# How good are generated digits? Labs 05 and 07 ask an MNIST classifier. This lab asks a very different
# judge: CLIP (Radford et al. 2021), a pair of networks trained on 400 million image-caption pairs from the web
# to put an image and its caption close together in one embedding space. CLIP was never trained on MNIST, so
# it can score any caption ("a handwritten number 7", "a blurry number") but it can also be wrong in ways
# a digit classifier is not. You compute its scores yourself, then test how far to trust them. Then you write
# the FID that labs 04, 07 and 09 quote, and measure why it is always read beside a "floor".
#
# **Learning objectives.** After this lab you can
# 1. compute CLIP's image-text cosine similarities and its zero-shot class probabilities;
# 2. score generated digits per digit, always beside real digits scored the same way;
# 3. find where CLIP fails on MNIST, with the classifier's numbers beside it;
# 4. compute an FID (feature statistics, Fréchet distance) and a bootstrap interval, and explain from a
#    measurement why real digits have an FID floor that falls with the sample size.
#
# **Time budget.** Running all cells: about 2 minutes on a Colab T4 for the CLIP part (plus about 1 minute to
# download CLIP's weights once) and a few more for the FID section; measured on 2 CPU cores shared with other
# jobs (offline, tiny CLIP, load average above 10): about 10 minutes, 7 of them in the FID section. Working through the lab: about 90 minutes. Points: 11 for the
# five functions, 4 for the written answers.
#
# **How it is graded.** Five functions (2 + 2 points for CLIP, 2 + 3 + 2 for FID), each followed by a test
# cell (the tests you see, plus hidden ones with other inputs). The CLIP cells use `labkit`'s reference code;
# the FID cells use your functions where their checks pass, labkit's otherwise. Run the cells from top to
# bottom. CLIP's weights are downloaded from the internet: without it (or while grading) the lab runs on a
# tiny *random* CLIP model and every CLIP number is meaningless; the lab says so when that happens.
# The questions at the end are answered in writing and graded by hand (4 points).

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
# __LABKIT_COLAB_INSTALL__ (labkit build writes labkit.colab.INSTALL_CELL here: the Colab install)
from labkit import colab
DEVICE = colab.setup()

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false}
import torch
import torch.nn.functional as F
import matplotlib.pyplot as plt

from labkit import plotting, samplers
from labkit.errors import LabkitError
from labkit.evaluation import ClipScorer, PromptSet, classifier_accuracy, load_classifier, plot_best_worst, tiny_clip_scorer
from labkit.checks import lab06_clip as checks
from labkit.checks.lab05_sampling import lab_model

torch.manual_seed(0)  # every lab starts from the same random numbers
FAST = colab.fast_mode()  # True in CI and while grading: expensive cells shrink

# %% [markdown]
# ## 1. CLIP's score
#
# CLIP maps an image to a vector $u \in \mathbb R^D$ and a caption to a vector $v \in \mathbb R^D$. Their
# agreement is the **cosine similarity** $\cos(u, v) = \frac{u}{\lVert u\rVert} \cdot \frac{v}{\lVert v\rVert}$.
# For $N$ images and $K$ captions, normalise every row, then one matrix product gives all $N \times K$ scores
# (Radford et al. 2021, Figure 3).
#
# ### Exercise 1 (2 points)
# Write `cosine_similarity(image_emb, text_emb)`: `[N, D]` and `[K, D]` -> `[N, K]`, entry `[n, k]` the cosine
# similarity of image `n` and caption `k`. (`F.normalize(v, dim=-1)` divides each row by its length.)

# %% nbgrader={"grade": false, "grade_id": "cosine_similarity", "locked": false, "schema_version": 3, "solution": true}
def cosine_similarity(image_emb, text_emb):
    """[N, D], [K, D] -> [N, K] cosine similarities."""
    ### BEGIN SOLUTION
    return F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_cosine_similarity", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_cosine_similarity(cosine_similarity)
### BEGIN HIDDEN TESTS
checks.check_cosine_similarity(cosine_similarity, seed=9, sizes=((12, 10, 512), (2, 3, 1)))
### END HIDDEN TESTS

# %% [markdown]
# **Zero-shot classification.** Write one caption per class ("a handwritten number 0", ..., "... 9"). CLIP's
# probability that image $n$ shows class $k$ is a softmax over the captions of the scaled cosines,
# $p(k \mid n) = \mathrm{softmax}_k(s \cdot \cos(u_n, v_k))$, where $s$ = `logit_scale` is a temperature CLIP
# learned during training (100 for the OpenAI models): cosines lie close together, and $s$ spreads them out.
#
# ### Exercise 2 (2 points)
# Write `zero_shot_probs(cosine, logit_scale)`: `cosine` `[N, K]`, `logit_scale` a float -> `[N, K]`
# probabilities, each row summing to 1.

# %% nbgrader={"grade": false, "grade_id": "zero_shot_probs", "locked": false, "schema_version": 3, "solution": true}
def zero_shot_probs(cosine, logit_scale):
    """softmax over the K captions of logit_scale * cosine."""
    ### BEGIN SOLUTION
    return (logit_scale * cosine).softmax(dim=-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_zero_shot_probs", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_zero_shot_probs(zero_shot_probs)
### BEGIN HIDDEN TESTS
checks.check_zero_shot_probs(zero_shot_probs, seed=2, sizes=((5, 10),), scales=(1.0, 50.0))
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Loading CLIP
#
# `ClipScorer.from_pretrained` downloads a real CLIP model (ViT-B/32 trained on LAION-2B, through
# `open_clip`) on first use. Offline, and whenever the notebook is graded, we fall back to a tiny
# **randomly initialised** CLIP: same code, same shapes, meaningless numbers. The captions used for the
# "clear or blurry?" contrast are "a handwritten number $k$" against "a blurry number".

# %%
prompts = PromptSet(clear=("a handwritten number {k}",), blurry=("a blurry number",))
PRETRAINED_CLIP = False
if not FAST:
    try:
        scorer = ClipScorer.from_pretrained("ViT-B-32", "laion2b_s34b_b79k", device=DEVICE, prompts=prompts)
        PRETRAINED_CLIP = True
    except LabkitError as exc:
        print(f"Could not load pretrained CLIP: {exc}")
if not PRETRAINED_CLIP:
    scorer = tiny_clip_scorer(device=DEVICE, prompts=prompts)
    print("=" * 78 + "\n!!  TINY RANDOM CLIP MODEL: every CLIP number and picture below is MEANINGLESS.  !!\n"
          "!!  (offline or fast mode). Run in Colab with internet for the real model.       !!\n" + "=" * 78)
print(f"CLIP model: {scorer.name}, image size {scorer.image_size}, logit_scale {scorer.logit_scale:.1f}")
CLIP_TAG = "" if PRETRAINED_CLIP else " [random CLIP (offline)]"  # on every CLIP figure's title

# %% [markdown]
# Your two functions, applied to real CLIP embeddings of ten real digits (one of each). Each row is an image,
# each column a caption "a handwritten number $k$".

# %%
test_digits, REAL = colab.lab_digits(train=False, n=colab.pick(10000, 300))
first = torch.stack([(test_digits.labels == d).nonzero()[0, 0] for d in range(10)])
ten = (test_digits.images[first] + 1) / 2  # [10, 1, 28, 28] in [0, 1], digits 0..9
image_emb = scorer.encode_images(ten)  # [10, D]
text_emb = scorer.encode_text([f"a handwritten number {k}" for k in range(10)])  # [10, D]
cos = F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T  # labkit's answer to exercise 1
probs = (scorer.logit_scale * cos).softmax(dim=-1)  # and to exercise 2
fig = plotting.image_grid(ten * 2 - 1, ncols=10, title="the ten images (rows of the matrices below)", size=0.8)
fig = plotting.plot_matrix(cos, xlabel='caption "a handwritten number k"', ylabel="image of digit",
                           title="cosine similarity" + CLIP_TAG, symmetric=False, cmap="viridis")
fig = plotting.plot_matrix(probs, xlabel="k", ylabel="image of digit", title="zero-shot p(k | image)" + CLIP_TAG,
                           symmetric=False, cmap="viridis")

# %% [markdown]
# ## 3. Generated digits beside real ones
#
# A CLIP score of generated digits means little on its own: zero-shot CLIP is weak on MNIST, so the same score
# is computed for **real** MNIST digits with the same captions. Then "generated 7s get 90% of the score of real
# 7s" is a meaningful sentence.

# %%
model, schedule, meta = lab_model(DEVICE)
n_each = colab.pick(30 if DEVICE.type == "cuda" else 10, 2)
y_gen = torch.arange(10, device=DEVICE).repeat_interleave(n_each)
x_gen = samplers.sample(model, (len(y_gen), 1, 28, 28), y_gen, schedule, steps=20, guidance=1.0, clip=1.0,
                        generator=torch.Generator(DEVICE).manual_seed(0))
gen01, y_gen = ((x_gen.float().cpu() + 1) / 2).clamp(0, 1), y_gen.cpu()
n_real = min(len(test_digits), colab.pick(1000 if DEVICE.type == "cuda" else 300, 100))
real01, y_real = (test_digits.images[:n_real] + 1) / 2, test_digits.labels[:n_real]

gen_clip, real_clip = scorer.score(gen01, y_gen), scorer.score(real01, y_real)
clf = load_classifier()
gen_cls, real_cls = classifier_accuracy(gen01, y_gen, clf), classifier_accuracy(real01, y_real, clf)

fig, axes = plt.subplots(1, 3, figsize=(15, 3.4))
bars = [("CLIP P(handwritten number k vs blurry number)", gen_clip.per_digit()["clear_prob"], real_clip.per_digit()["clear_prob"]),
        ("CLIP zero-shot accuracy", gen_clip.per_digit()["accuracy"], real_clip.per_digit()["accuracy"]),
        ("MNIST classifier accuracy", gen_cls["per_digit"]["accuracy"], real_cls["per_digit"]["accuracy"])]
for ax, (title, gen_v, real_v) in zip(axes, bars):
    ks = torch.arange(10)
    ax.bar(ks - 0.2, [v if v is not None else 0 for v in gen_v], 0.4, label="generated")
    ax.bar(ks + 0.2, [v if v is not None else 0 for v in real_v], 0.4, label="real MNIST", color="0.6")
    ax.set(title=title + CLIP_TAG, xlabel="digit", xticks=list(range(10)), ylim=(0, 1.22))  # room above the bars
    ax.legend(frameon=False, fontsize=8, loc="upper center", ncol=2)  # in that room, not over bars that reach 1
fig.tight_layout()
print(f"overall      CLIP clear  CLIP zero-shot acc  classifier acc")
print(f"generated    {gen_clip.overall()['clear_prob']:10.2f}  {gen_clip.overall()['accuracy']:18.1%}  {gen_cls['accuracy']:14.1%}")
print(f"real MNIST   {real_clip.overall()['clear_prob']:10.2f}  {real_clip.overall()['accuracy']:18.1%}  {real_cls['accuracy']:14.1%}")
if not PRETRAINED_CLIP:
    print("(tiny random CLIP: the CLIP columns are meaningless)")
if not meta["pretrained"]:
    print("(no shipped checkpoint: the 'generated' digits come from an untrained stand-in)")

# %% [markdown]
# The best and the worst generated samples of each digit by CLIP's "clear vs blurry" score, with the score
# in yellow. Do CLIP's favourites look like the best digits to you?

# %%
k = min(4, n_each)
fig = plot_best_worst(gen01, y_gen, gen_clip.clear_prob, k=k)
fig

# %% [markdown]
# ## 4. Where CLIP fails on MNIST
#
# The classifier was trained on MNIST; CLIP on captioned web images. Two views of their disagreement: which
# digits CLIP confuses (on **real** digits, where the truth is known), and whether CLIP's score tracks the
# classifier's confidence on generated digits.

# %%
confusion = torch.zeros(10, 10)
for true, pred in zip(y_real.tolist(), real_clip.predicted.tolist()):
    confusion[true, pred] += 1
confusion = confusion / confusion.sum(dim=1, keepdim=True).clamp(min=1)
fig = plotting.plot_matrix(confusion, xlabel="CLIP's zero-shot answer", ylabel="true digit (real MNIST)",
                           title="CLIP zero-shot confusion on real digits" + CLIP_TAG, symmetric=False, cmap="viridis")

fig, ax = plt.subplots(figsize=(5, 3.8))
ax.scatter(gen_cls["intended_prob"], gen_clip.intended_prob, c=y_gen, cmap="tab10", s=14)
ax.set(xlabel="classifier p(intended digit)", ylabel="CLIP zero-shot p(intended digit)",
       title="generated digits: do the two judges agree?" + CLIP_TAG)
ax.grid(alpha=0.3)
r = torch.corrcoef(torch.stack([gen_cls["intended_prob"].float(), gen_clip.intended_prob.float()]))[0, 1]
print(f"correlation between the two judges over {len(y_gen)} generated digits: {float(r):.2f}")

# %%
wrong = (real_clip.predicted != y_real) & (real_clip.probs.max(dim=1).values > 0.5)  # confidently wrong
idx = wrong.nonzero()[:, 0][:10]
if len(idx):
    titles = [f"{int(y_real[i])} -> CLIP {int(real_clip.predicted[i])} ({float(real_clip.probs[i].max()):.0%})" for i in idx]
    fig = plotting.image_grid(real01[idx] * 2 - 1, ncols=5, titles=titles, title="real digits CLIP gets confidently wrong" + CLIP_TAG)
else:
    print("CLIP was never confidently wrong on these real digits.")

# %% [markdown]
# ## 5. FID: what it measures, why it has a floor, why a small sample can fall below it
#
# CLIP and the classifier judge one image at a time. Labs 04, 07 and 09 also quote an **FID** (Fréchet
# Inception Distance, Heusel et al. 2017), which judges a whole *set* of images: are they like real digits,
# *and as varied*? The recipe has three steps.
#
# 1. Run a network on every image and keep a feature vector: here the shipped MNIST classifier's last hidden
#    layer, $D = 128$ numbers per image. (The original FID uses an Inception network trained on ImageNet, so
#    these numbers cannot be compared with published FIDs.)
# 2. Summarise each set by the mean $\mu$ and the covariance $\Sigma$ of its features: a Gaussian fitted to it.
# 3. Measure the Fréchet distance between the two Gaussians (Dowson & Landau 1982):
#    $$\mathrm{FID} = \lVert\mu_1 - \mu_2\rVert^2 + \mathrm{Tr}\big(\Sigma_1 + \Sigma_2 - 2\,(\Sigma_1\Sigma_2)^{1/2}\big).$$
#
# Samples unlike real digits move $\mu$; samples that all look alike shrink $\Sigma$: both raise the FID. Two
# identical Gaussians are at 0.
#
# ### Exercise 3 (2 points)
# Write `feature_stats(features)`: `features` `[N, D]`, one row per image -> `(mu, sigma)`: `mu` `[D]`, each
# feature's mean over the $N$ images, and `sigma` `[D, D]`, the covariance
# $\Sigma = \frac{1}{N-1}\sum_n (f_n - \mu)(f_n - \mu)^\top$ with the unbiased normaliser $N - 1$ (as
# `torch.cov` and `numpy.cov` use). If you call `torch.cov`, read its documentation first: it wants one row
# per *variable*, not per observation.

# %% nbgrader={"grade": false, "grade_id": "feature_stats", "locked": false, "schema_version": 3, "solution": true}
def feature_stats(features):
    """features [N, D] -> (mean [D], covariance [D, D] with the unbiased N - 1)."""
    ### BEGIN SOLUTION
    n = features.shape[0]
    mu = features.mean(dim=0)  # [D]: each feature's mean over the images
    centred = features - mu  # [N, D]
    sigma = centred.T @ centred / (n - 1)  # [D, D]
    return mu, sigma
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_feature_stats", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_feature_stats(feature_stats)
### BEGIN HIDDEN TESTS
checks.check_feature_stats(feature_stats, seed=5, sizes=((7, 7), (40, 12), (3, 2)))
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 4 (3 points)
# Write `frechet_distance(mu1, sigma1, mu2, sigma2)` -> one number (a float or a 0-d tensor): the FID formula
# above, from two means `[D]` and two covariances `[D, D]`.
#
# The awkward term is $\mathrm{Tr}\big((\Sigma_1\Sigma_2)^{1/2}\big)$. torch has no matrix square root of a
# product, but you need only its trace: $\sum_i \sqrt{\lambda_i}$ over the eigenvalues $\lambda_i$ of the
# product $\Sigma_1\Sigma_2$ (not of each matrix). `torch.linalg.eigvals(sigma1 @ sigma2)` finds them, but
# the product is not symmetric: the result is complex with rounding noise, and slow. A faster, stabler route:
# with $A = \Sigma_1^{1/2}$, the symmetric matrix $A\,\Sigma_2\,A$ has the same eigenvalues as $\Sigma_1\Sigma_2$
# (real and $\ge 0$), and symmetric matrices have `torch.linalg.eigh` / `eigvalsh`. The square root of a
# symmetric matrix $\Sigma = V\,\mathrm{diag}(\lambda)\,V^\top$ (from `eigh`) is
# $V\,\mathrm{diag}(\sqrt{\lambda})\,V^\top$. Either way, treat tiny negative eigenvalues (rounding) as 0 before a
# square root, and compute in float64 (`.double()`): with fewer images than features many eigenvalues are 0
# up to rounding, and a square root magnifies rounding ($\sqrt{10^{-7}} \approx 3\cdot 10^{-4}$).

# %% nbgrader={"grade": false, "grade_id": "frechet_distance", "locked": false, "schema_version": 3, "solution": true}
def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), one number."""
    ### BEGIN SOLUTION
    mu1, sigma1, mu2, sigma2 = (v.double() for v in (mu1, sigma1, mu2, sigma2))
    lam, vecs = torch.linalg.eigh(sigma1)  # sigma1 = V diag(lam) V^T
    root1 = (vecs * lam.clamp(min=0).sqrt()) @ vecs.T  # [D, D] sigma1^(1/2), symmetric
    eigenvalues = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp(min=0)  # [D], those of sigma1 sigma2
    trace_sqrt = eigenvalues.sqrt().sum()  # Tr((sigma1 sigma2)^(1/2))
    diff = mu1 - mu2  # [D]
    return float(diff @ diff + torch.trace(sigma1) + torch.trace(sigma2) - 2 * trace_sqrt)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_frechet_distance", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_frechet_distance(frechet_distance)
### BEGIN HIDDEN TESTS
checks.check_frechet_distance(frechet_distance, seed=4, dims=(2, 5, 32))
### END HIDDEN TESTS

# %% [markdown]
# **How sure is one FID?** Another set of $N$ generated images would give another FID. The **percentile
# bootstrap** (Efron 1979) estimates how much from the one set you have: draw $B$ *resamples*, each $N$
# indices drawn uniformly from $0..N-1$ **with replacement** (some images repeat, others are left out),
# compute the statistic on each resample, and report the $\frac{1 - \text{level}}{2}$ and
# $\frac{1 + \text{level}}{2}$ quantiles of the $B$ values (for level 0.9: the 5th and the 95th percentile).
#
# ### Exercise 5 (2 points)
# Write `bootstrap_interval(samples, statistic, resamples, level, generator)` -> a float64 tensor `[2]`,
# `(low, high)`. `samples` `[N, ...]` is resampled along its first dimension; `statistic` is a function from
# one resample to a number. So that a run can be replayed from its seed, draw all the indices in **one** call
# of `torch.randint` from `generator`: an int64 tensor `[resamples, N]`, row $b$ = resample $b$. Read the
# quantiles with `torch.quantile` (its default, linear interpolation between ranks).

# %% nbgrader={"grade": false, "grade_id": "bootstrap_interval", "locked": false, "schema_version": 3, "solution": true}
def bootstrap_interval(samples, statistic, resamples, level, generator):
    """Percentile bootstrap interval (low, high) of statistic(samples): float64 [2]."""
    ### BEGIN SOLUTION
    n = samples.shape[0]
    idx = torch.randint(0, n, (resamples, n), generator=generator, device=samples.device)  # [B, N]
    values = torch.tensor([float(statistic(samples[i])) for i in idx], dtype=torch.float64)  # [B]
    tail = (1 - level) / 2
    return torch.quantile(values, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_bootstrap_interval", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_bootstrap_interval(bootstrap_interval)
### BEGIN HIDDEN TESTS
checks.check_bootstrap_interval(bootstrap_interval, seed=3, cases=((20, 80, 0.95, "max"), (9, 60, 0.5, "fid"), (40, 120, 0.99, "mean")))
### END HIDDEN TESTS

# %% [markdown]
# **The floor, measured.** Now FID on real digits only. The reference is the MNIST test set; against it we score
# sets of $n$ *real training* digits, which come from the very distribution a perfect generator would sample.
# If FID were a perfect measure they would all score 0. For each $n$ the cell draws 10 independent sets (the
# dots), and computes a 90% bootstrap interval from the first of them alone (the bar). Your three functions
# do the work when their checks pass; labkit's otherwise.

# %%
from labkit.evaluation import classifier_features, fid as labkit_fid

stats_of = checks.yours_or_labkit(checks.check_feature_stats, feature_stats, labkit_fid.feature_stats, "feature_stats")
distance = checks.yours_or_labkit(checks.check_frechet_distance, frechet_distance, labkit_fid.frechet_distance,
                                  "frechet_distance")
interval = checks.yours_or_labkit(checks.check_bootstrap_interval, bootstrap_interval, labkit_fid.bootstrap_interval,
                                  "bootstrap_interval")
train_digits, _ = colab.lab_digits(train=True, n=colab.pick(5000, 600))
ref_features = classifier_features((test_digits.images + 1) / 2, clf)  # [T, 128] the test digits
pool = classifier_features((train_digits.images + 1) / 2, clf)  # [M, 128] real training digits
mu_ref, sigma_ref = stats_of(ref_features)  # the reference Gaussian: [128], [128, 128]
print(f"reference: {len(ref_features)} test digits; pool: {len(pool)} training digits; features [*, {pool.shape[1]}]")


def fid_vs_test(features):  # the FID of a set of features against the test digits
    return distance(*stats_of(features), mu_ref, sigma_ref)


g, g_boot = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)  # the sets; the resamples
sizes, sets, boot = colab.pick((40, 100, 300, 1000), (40, 100)), colab.pick(10, 3), colab.pick(100, 20)
floor_table = {}
print(f"    n   floor (mean of {sets} sets)   lowest .. highest set (x the floor)   first set   its 90% bootstrap")
for n in sizes:
    draws = [pool[torch.randperm(len(pool), generator=g)[:n]] for _ in range(sets)]  # sets of n real digits
    fids = torch.tensor([fid_vs_test(f) for f in draws])
    low, high = interval(draws[0], fid_vs_test, boot, 0.9, g_boot).tolist()
    floor_table[n] = (fids, low, high)
    floor = fids.mean()
    print(f"{n:5d}   {floor:20.3f}   {fids.min():6.3f} .. {fids.max():6.3f} ({fids.min() / floor:.2f}x .. "
          f"{fids.max() / floor:.2f}x)   {fids[0]:9.3f}   [{low:.3f}, {high:.3f}]")

fig, ax = plt.subplots(figsize=(6, 3.8))
for n, (fids, low, high) in floor_table.items():
    ax.scatter([n] * len(fids), fids, s=12, color="0.5")
    ax.plot([n * 1.08] * 2, [low, high], color="C3", lw=3)
ax.plot(list(floor_table), [float(v[0].mean()) for v in floor_table.values()], "k--", lw=1, label="mean of the sets")
ax.plot([], [], color="C3", lw=3, label="90% bootstrap interval (first set)")
ax.set(xscale="log", yscale="log", xlabel="n (real training digits)", ylabel="FID vs the test digits",
       title="FID of real digits: the floor and its spread")
ax.legend(frameon=False, fontsize=8)
ax.grid(alpha=0.3)

# %% [markdown]
# What the measurement shows (the numbers quoted are those of a normal run; fast mode uses fewer digits).
#
# * **The floor falls with $n$, roughly as $1/n$**: from about 1.76 at $n = 40$ to about 0.09 at $n = 1000$, some
#   19 times lower for 25 times more digits. Real digits are not at 0 because $\mu$ and $\Sigma$ estimated from $n$
#   images carry an estimation error, and FID adds up the squares of those errors (Chong & Forsyth 2020 show this
#   bias of FID is about proportional to $1/n$). So an FID means nothing without its $n$: labs 07 and 09
#   compare every FID with the floor of the *same* $n$ ("2x the floor").
# * **Sets of real digits spread around the floor**: in every row the lowest of the sets sits at about 0.6-0.75
#   times the floor and the highest at about 1.4-1.9 times it. A generator exactly as good as real data draws
#   sets like these, so at small $n$ it can score *below* the floor (0.7x is luck, not a better-than-real model), and
#   differences between two models smaller than this spread mean nothing. The floor labs 07 and 09 print is
#   labkit's `RealReference.floor`: the mean of 3 such sets, drawn with a fixed seed.
# * **The bootstrap interval misses its own set's FID**: in every row the whole interval lies *above* the FID of
#   the set it was resampled from (at $n = 40$: about [2.17, 5.46] for a set at 1.74), and it is wider than the
#   range (lowest to highest) of the independent sets. A resample drawn with replacement holds only about 63%
#   distinct digits ($1 - 1/e$), and as the first point shows, fewer digits means a higher FID. The bootstrap
#   treats a resample like a fresh set of $n$; for FID it behaves like a smaller set, so its bootstrap is biased
#   upwards. This is why labs 07 and 09 print no bootstrap interval beside an FID: the spread of sets of real
#   digits above is the honest noise level.
#
# **A bootstrap that works.** The bootstrap is sound for a plain average, such as the classifier's mean
# confidence in the intended digit over the generated digits of section 3:

# %%
confidence = gen_cls["intended_prob"].double()  # [N] p(intended digit) per generated digit
low, high = interval(confidence, lambda v: v.mean(), 1000, 0.9, g_boot).tolist()
print(f"mean confidence of {len(confidence)} generated digits: {confidence.mean():.3f}, "
      f"90% bootstrap interval [{low:.3f}, {high:.3f}]")

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_1", "locked": true, "schema_version": 3, "solution": false}
# ## Questions (look at the pictures)
#
# Answer each question in the cell below it, in a few sentences, with what you saw: a step $t$, a number, a row
# or a curve. Your answers are graded by hand (4 points, 1 per question).
#
# **Question 1 (1 point).** In the similarity matrix, is the diagonal (image of $k$, caption $k$) the brightest
# entry of each row? How far apart are the cosines in a row, and what does `logit_scale` do about that?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_1", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** With the real CLIP the diagonal is the brightest entry in most rows but not all (zero-shot
# CLIP is weak on MNIST). The cosines in a row lie very close together (a few hundredths apart, all around
# 0.2-0.3). `logit_scale` (100) multiplies them before the softmax, so differences of 0.02 become logit
# differences of 2 and the probabilities become decisive. (With the tiny random CLIP used offline the matrix
# means nothing, and a good answer says so.)
#
# **Rubric (1 point).** 1/2 point: diagonal read correctly, cosines close together. 1/2 point: logit_scale
# spreads them (a temperature) before the softmax.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_2", "locked": true, "schema_version": 3, "solution": false}
# **Question 2 (1 point).** In the bar charts, for which digits does CLIP do worst *on real MNIST*? Given that,
# what can a low CLIP score of a generated 9 tell you, and what can't it?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_2", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** The digits with the lowest real-MNIST bars (read from the chart; often those with closed
# loops or that look alike, such as 9 and 6). A low score on a generated 9 means little on its own if real 9s
# score low too: only the ratio to the real-digit score says whether the generated 9s are worse than real ones.
# It cannot tell you whether a human or the classifier would recognise the 9.
#
# **Rubric (1 point).** 1/2 point: the worst real digits named from the chart. 1/2 point: compare with the
# real-digit baseline; an absolute CLIP score does not measure recognisability.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_3", "locked": true, "schema_version": 3, "solution": false}
# **Question 3 (1 point).** Look at CLIP's best and worst generated samples. Are its favourites the clearest
# digits, or do they share something else (thickness, size, position)?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_3", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Its favourites tend to share thick, large, high-contrast, centred strokes, not necessarily
# the most correct shape; its least favourite are thin, faint, small or unusual ones, some of them perfectly
# readable. CLIP rewards image statistics it saw on the web (bold, poster-like figures) more than digit
# correctness.
#
# **Rubric (1 point).** 1/2 point: a concrete shared property seen in the pictures. 1/2 point: concludes whether
# CLIP's preference tracks clarity or something else.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_4", "locked": true, "schema_version": 3, "solution": false}
# **Question 4 (1 point).** From the confusion matrix and the scatter plot: would you use CLIP to *grade* MNIST
# samples? What would you use it for instead? (Lab 08 uses it to *steer* sampling.)

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_4", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** No: on real MNIST its zero-shot accuracy is far below the classifier's (the confusion matrix
# has large off-diagonal entries) and its score tracks the classifier's confidence only loosely (a weak trend in
# the scatter). Use it where no dedicated judge exists: open-vocabulary properties beyond the label ("a thick
# 7"), relative comparisons against the same score on real digits, or as a differentiable critic to steer
# sampling.
#
# **Rubric (1 point).** 1/2 point: no, with evidence from the confusion matrix / scatter. 1/2 point: a sensible
# other use.
# ### END SOLUTION
