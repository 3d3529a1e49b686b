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
# 1. prepare MNIST digits the way CLIP's image encoder expects them, ensemble several phrasings of a caption,
#    and compute CLIP's image-text cosine similarities, its zero-shot class probabilities and its
#    "clear or blurry?" probability;
# 2. score generated digits per digit, always beside real digits scored the same way;
# 3. find where CLIP fails on MNIST, with the classifier's numbers beside it (a confusion matrix, a correlation);
# 4. compute an FID (feature statistics, Fréchet distance) and a bootstrap interval, and explain from a
#    measurement why real digits have an FID floor that falls with the sample size.
#
# **Time budget.** Running all cells: about 2 minutes on a Colab T4 for the CLIP part (plus about 1 minute to
# download CLIP's weights once) and a few more for the FID section (estimates, not measured); measured on 2 CPU
# cores shared with other jobs (offline, tiny CLIP, load average about 10): 1.2 minutes; earlier runs under heavier
# load took up to 10 minutes, most of them in the FID section. Working
# through the lab: about 150 minutes. Points: 20 for the eleven functions, 4 for the written answers.
#
# **How it is graded.** Eleven functions (2 + 2 + 2 + 1 + 2 + 1 points for CLIP, 2 + 1 for comparing two
# judges, 2 + 3 + 2 for FID), each followed
# by a test cell (the tests you see, plus hidden ones with other inputs). The cells after them use your
# functions where their checks pass, labkit's otherwise (a line says which). Run the cells from top to
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
from labkit.evaluation import ClipScorer, ClipScores, PromptSet, classifier_accuracy, load_classifier, plot_best_worst, tiny_clip_scorer
from labkit.evaluation import clip as labkit_clip, measures
from labkit.embeddings import cosine_similarity as labkit_cosine
from labkit.checks import claims
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
# ## 3. What CLIP's image encoder reads
#
# CLIP was trained on colour photos of one fixed size, $S \times S$ pixels ($S = 224$ for ViT-B/32), each colour
# channel normalised with the mean and standard deviation of its training images. An MNIST digit is grey,
# $28 \times 28$, white on black, in $[0, 1]$. open_clip's own preprocessing works on PIL images; here it is on
# tensors, so that it runs on a GPU, on a batch, and (in lab 08) lets gradients through:
#
# 1. resize to $S \times S$ with **bicubic** interpolation (`F.interpolate(..., mode="bicubic",
#    align_corners=False)`, what torchvision's `Resize` does); bicubic overshoots a little next to sharp
#    strokes, so **clamp** the result back to $[0, 1]$;
# 2. copy the grey channel into the three colour channels ([B, 1, S, S] -> [B, 3, S, S]; `expand` or `repeat`);
# 3. normalise each channel $c$: $(x - \text{mean}_c) / \text{std}_c$.
#
# ### Exercise 3 (2 points)
# Write `clip_preprocess(images, size, mean, std)`: `images` `[B, 1, H, W]` in $[0, 1]$, `size` $S$ (an int),
# `mean`, `std` three numbers each (a tuple, one per channel R, G, B) -> `[B, 3, S, S]`. To combine per-channel
# numbers with a batch of images, shape them as in lab 01, here `[1, 3, 1, 1]`, in the images' dtype and device.

# %% nbgrader={"grade": false, "grade_id": "clip_preprocess", "locked": false, "schema_version": 3, "solution": true}
def clip_preprocess(images, size, mean, std):
    """[B, 1, H, W] in [0, 1] -> [B, 3, size, size]: bicubic resize, clamp to [0, 1], 3 channels, normalised."""
    ### BEGIN SOLUTION
    x = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)  # [B, 1, S, S]
    x = x.clamp(0, 1)  # bicubic overshoots next to sharp strokes
    x = x.expand(-1, 3, -1, -1)  # [B, 3, S, S]: grey into R, G and B
    mean = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_clip_preprocess", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_clip_preprocess(clip_preprocess)
### BEGIN HIDDEN TESTS
checks.check_clip_preprocess(clip_preprocess, seed=6, sizes=((2, 28, 224), (4, 16, 24)))
### END HIDDEN TESTS

# %% [markdown]
# **Prompt ensembling.** CLIP's answer depends on the wording of a caption: "a handwritten number 7", "the digit
# seven", ... Radford et al. (2021, sec. 3.1.4) average the embeddings of several phrasings of each caption
# into one: normalise each embedding to length 1, take the mean over the phrasings, and normalise the mean
# again (a mean of unit vectors is shorter than 1, the more so the more they disagree).
#
# ### Exercise 4 (1 point)
# Write `prompt_ensemble(text_emb)`: `text_emb` `[P, K, D]`, the embedding of phrasing $p$ of caption $k$ ->
# `[K, D]`, one unit-length embedding per caption.

# %% nbgrader={"grade": false, "grade_id": "prompt_ensemble", "locked": false, "schema_version": 3, "solution": true}
def prompt_ensemble(text_emb):
    """[P, K, D] -> [K, D]: normalise, average over the P phrasings, normalise again."""
    ### BEGIN SOLUTION
    unit = F.normalize(text_emb, dim=-1)  # [P, K, D]: each phrasing at length 1
    return F.normalize(unit.mean(dim=0), dim=-1)  # [K, D]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_prompt_ensemble", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_prompt_ensemble(prompt_ensemble)
### BEGIN HIDDEN TESTS
checks.check_prompt_ensemble(prompt_ensemble, seed=8, sizes=((7, 10, 512), (1, 3, 5)))
### END HIDDEN TESTS

# %% [markdown]
# Your functions, applied to ten real digits (one of each) and five phrasings of each caption: your
# preprocessing feeds CLIP's image encoder, your ensemble makes the ten captions, your exercises 1 and 2 give
# the matrices. Each row is an image, each column a caption "a handwritten number $k$" (ensembled).

# %%
prep = checks.yours_or_labkit(checks.check_clip_preprocess, clip_preprocess, labkit_clip.clip_preprocess,
                              "clip_preprocess")
ensemble = checks.yours_or_labkit(checks.check_prompt_ensemble, prompt_ensemble, labkit_clip.prompt_ensemble,
                                  "prompt_ensemble")
cosine = checks.yours_or_labkit(checks.check_cosine_similarity, cosine_similarity, labkit_cosine, "cosine_similarity")
zero_shot = checks.yours_or_labkit(checks.check_zero_shot_probs, zero_shot_probs, labkit_clip.zero_shot_probs,
                                   "zero_shot_probs")
MEAN, STD = tuple(scorer.mean.flatten().tolist()), tuple(scorer.std.flatten().tolist())  # the model's numbers


def encode(images01):  # [N, 1, 28, 28] in [0, 1] -> [N, D] CLIP image embeddings, through your preprocessing
    with torch.no_grad():
        x = prep(images01.to(scorer.device), scorer.image_size, MEAN, STD).to(scorer.dtype)
        return scorer.model.encode_image(x).float().cpu()


test_digits, REAL = colab.lab_digits(train=False, n=colab.pick(10000, 300))
first = torch.stack([(test_digits.labels == d).nonzero()[0, 0] for d in range(10)])
ten = (test_digits.images[first] + 1) / 2  # [10, 1, 28, 28] in [0, 1], digits 0..9
image_emb = encode(ten)  # [10, D]
def captions(templates):  # -> [10, D]: one caption per digit, your ensemble of the templates' phrasings
    return ensemble(torch.stack([scorer.encode_text(PromptSet.fill(templates, k)) for k in range(10)], dim=1))


text_emb = captions(prompts.digit)  # five phrasings such as "a handwritten number {k}", "the digit {name}"
cos = cosine(image_emb, text_emb)  # [10, 10]
probs = zero_shot(cos, scorer.logit_scale)  # [10, 10]
gap = float((F.normalize(image_emb, dim=-1) - scorer.encode_images(ten)).abs().max())
print(f"your pipeline against labkit's scorer, largest difference in the unit image embeddings: {gap:.1e}")
fig = plotting.image_grid(ten * 2 - 1, ncols=10, title="the ten images (rows of the matrices below)", size=0.8)
fig = plotting.plot_matrix(cos, xlabel='caption k ("a handwritten number k" and 4 other phrasings, ensembled)',
                           ylabel="image of digit",
                           title="cosine similarity" + CLIP_TAG, symmetric=False, cmap="viridis")
fig = plotting.plot_matrix(probs, xlabel="k", ylabel="image of digit", title="zero-shot p(k | image)" + CLIP_TAG,
                           symmetric=False, cmap="viridis")

# %% [markdown]
# ## 4. Generated digits beside real ones
#
# **Clear or blurry?** Zero-shot classification compares an image with ten captions. The same softmax over just
# two captions asks another question: for an image meant to be a $k$, is it closer to "a handwritten number
# $k$" (the *clear* caption $c$) or to "a blurry number" (the *blurry* caption $b$)? With
# $s$ = `logit_scale`,
#
# $$P(\text{clear} \mid n) = \frac{e^{s\cos(u_n, c_n)}}{e^{s\cos(u_n, c_n)} + e^{s\cos(u_n, b_n)}}
#   = \sigma\big(s\,(\cos(u_n, c_n) - \cos(u_n, b_n))\big),$$
#
# a softmax over two entries is the sigmoid $\sigma$ of the difference of their logits.
#
# ### Exercise 5 (2 points)
# Write `clear_probability(image_emb, clear_emb, blurry_emb, logit_scale)`: three `[N, D]` embeddings, row $n$
# the image and the two captions it is compared with (not every image against every caption), `logit_scale` a
# float -> `[N]`. The embeddings may not have length 1.

# %% nbgrader={"grade": false, "grade_id": "clear_probability", "locked": false, "schema_version": 3, "solution": true}
def clear_probability(image_emb, clear_emb, blurry_emb, logit_scale):
    """[N, D] x 3 -> [N]: softmax over (clear, blurry) of logit_scale * cosine, the clear caption's entry."""
    ### BEGIN SOLUTION
    u = F.normalize(image_emb, dim=-1)  # [N, D]
    clear = (u * F.normalize(clear_emb, dim=-1)).sum(dim=-1)  # [N]: cos(u_n, c_n), row by row
    blurry = (u * F.normalize(blurry_emb, dim=-1)).sum(dim=-1)  # [N]: cos(u_n, b_n)
    return torch.sigmoid(logit_scale * (clear - blurry))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_clear_probability", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_clear_probability(clear_probability)
### BEGIN HIDDEN TESTS
checks.check_clear_probability(clear_probability, seed=4, sizes=((30, 512), (1, 6)), scales=(100.0, 1.0))
### END HIDDEN TESTS

# %% [markdown]
# **CLIPScore.** Papers on text-to-image models report how well images match their captions with one number per
# pair, the CLIPScore of Hessel et al. (2021, eq. 1): $w \cdot \max(\cos(u_n, v_n), 0)$, with image $n$ and
# its own caption $v_n$. Hessel et al. take $w = 2.5$; torchmetrics and most papers report $w = 100$, as here.
# A negative cosine counts as 0.
#
# ### Exercise 6 (1 point)
# Write `clip_score(image_emb, text_emb)`: `[N, D]` and `[N, D]`, row $n$ an image and its own caption
# (embeddings of any length) -> `[N]`, $100 \cdot \max(\cos(u_n, v_n), 0)$.

# %% nbgrader={"grade": false, "grade_id": "clip_score", "locked": false, "schema_version": 3, "solution": true}
def clip_score(image_emb, text_emb):
    """[N, D], [N, D] -> [N]: 100 * max(cos(u_n, v_n), 0), each image with its own caption."""
    ### BEGIN SOLUTION
    cos = (F.normalize(image_emb, dim=-1) * F.normalize(text_emb, dim=-1)).sum(dim=-1)  # [N], row by row
    return 100 * cos.clamp(min=0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_clip_score", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_clip_score(clip_score)
### BEGIN HIDDEN TESTS
checks.check_clip_score(clip_score, seed=3, sizes=((20, 512), (2, 2)))
### END HIDDEN TESTS

# %% [markdown]
# A CLIP score of generated digits means little on its own: zero-shot CLIP is weak on MNIST, so the same score
# is computed for **real** MNIST digits with the same captions. Then "generated 7s get 90% of the score of real
# 7s" is a meaningful sentence. Every CLIP number below comes from your functions (or labkit's, where yours do
# not pass their checks yet): your preprocessing, your ensembles, your cosines, your zero-shot probabilities,
# your $P(\text{clear})$ and your CLIPScore (against the ensembled caption of the intended digit).

# %%
clear_p = checks.yours_or_labkit(checks.check_clear_probability, clear_probability, labkit_clip.clear_probability,
                                 "clear_probability")
score_pairs = checks.yours_or_labkit(checks.check_clip_score, clip_score, labkit_clip.clip_score, "clip_score")
digit_captions, clear_captions, blurry_captions = captions(prompts.digit), captions(prompts.clear), captions(prompts.blurry)


def clip_scores(images01, labels):  # [N, 1, 28, 28] in [0, 1], labels [N] -> (ClipScores, CLIPScore [N])
    img = torch.cat([encode(images01[i:i + 100]) for i in range(0, len(images01), 100)])  # [N, D]
    cos = cosine(img, digit_captions)  # [N, 10]
    clear = clear_p(img, clear_captions[labels], blurry_captions[labels], scorer.logit_scale)  # [N]
    scores = ClipScores(labels=labels, cosine=cos, probs=zero_shot(cos, scorer.logit_scale), clear_prob=clear)
    return scores, score_pairs(img, digit_captions[labels])


model, schedule, meta = lab_model(DEVICE)
n_each = colab.pick(30 if DEVICE.type == "cuda" else 10, 2)
y_gen = torch.arange(10, device=DEVICE).repeat_interleave(n_each)
x_gen = samplers.sample(model, (len(y_gen), 1, 28, 28), y_gen, schedule, steps=20, guidance=1.0, clip=1.0,
                        generator=torch.Generator(DEVICE).manual_seed(0))
gen01, y_gen = ((x_gen.float().cpu() + 1) / 2).clamp(0, 1), y_gen.cpu()
n_real = min(len(test_digits), colab.pick(1000 if DEVICE.type == "cuda" else 300, 100))
real01, y_real = (test_digits.images[:n_real] + 1) / 2, test_digits.labels[:n_real]

(gen_clip, gen_cs), (real_clip, real_cs) = clip_scores(gen01, y_gen), clip_scores(real01, y_real)
clf = load_classifier()
gen_cls, real_cls = classifier_accuracy(gen01, y_gen, clf), classifier_accuracy(real01, y_real, clf)

fig, axes = plt.subplots(1, 3, figsize=(15, 3.4))
bars = [("CLIP P(clear: handwritten number k vs blurry number)" + CLIP_TAG, gen_clip.per_digit()["clear_prob"],
         real_clip.per_digit()["clear_prob"]),
        ("CLIP zero-shot accuracy" + CLIP_TAG, gen_clip.per_digit()["accuracy"], real_clip.per_digit()["accuracy"]),
        ("MNIST classifier accuracy", gen_cls["per_digit"]["accuracy"], real_cls["per_digit"]["accuracy"])]
for ax, (title, gen_v, real_v) in zip(axes, bars):
    ks = torch.arange(10)
    ax.bar(ks - 0.2, [v if v is not None else 0 for v in gen_v], 0.4, label="generated")
    ax.bar(ks + 0.2, [v if v is not None else 0 for v in real_v], 0.4, label="real MNIST", color="0.6")
    ax.set(xlabel="digit", xticks=list(range(10)), ylim=(0, 1.05))
    ax.set_title(title, fontsize=9)
fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, frameon=False, fontsize=8)
fig.tight_layout(rect=(0, 0.07, 1, 1))  # the legend below the panels, where it covers no bar
print(f"overall      CLIP clear  CLIP zero-shot acc  CLIPScore  classifier acc")
print(f"generated    {gen_clip.overall()['clear_prob']:10.2f}  {gen_clip.overall()['accuracy']:18.1%}  "
      f"{gen_cs.mean():9.1f}  {gen_cls['accuracy']:14.1%}")
print(f"real MNIST   {real_clip.overall()['clear_prob']:10.2f}  {real_clip.overall()['accuracy']:18.1%}  "
      f"{real_cs.mean():9.1f}  {real_cls['accuracy']:14.1%}")
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
# ## 5. Where CLIP fails on MNIST
#
# The classifier was trained on MNIST; CLIP on captioned web images. Two views of their disagreement: which
# digits CLIP confuses (on **real** digits, where the truth is known), and whether CLIP's score tracks the
# classifier's confidence on generated digits.
#
# **Which digits does a judge confuse?** A *confusion matrix* counts, for each true class $k$ (a row), how often
# the judge answered $j$ (a column), as a share of the samples of class $k$:
# $C_{kj} = \#\{n: y_n = k, \hat y_n = j\} / \#\{n: y_n = k\}$. Each row sums to 1 and the diagonal holds
# the per-class accuracy. A class without samples keeps a row of zeros.
#
# ### Exercise 7 (2 points)
# Write `confusion_matrix(labels, predicted, num_classes)`: `labels`, `predicted` int64 `[N]` in
# `0..num_classes-1` -> `[K, K]` floating point (float32 or float64), row $k$ the true class.

# %% nbgrader={"grade": false, "grade_id": "confusion_matrix", "locked": false, "schema_version": 3, "solution": true}
def confusion_matrix(labels, predicted, num_classes):
    """[K, K]: row k = how the samples of class k were answered, as shares of that class (0 if it has none)."""
    ### BEGIN SOLUTION
    counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    for true, answer in zip(labels.tolist(), predicted.tolist()):
        counts[true, answer] += 1
    return counts / counts.sum(dim=1, keepdim=True).clamp(min=1)  # a class without samples: 0 / 1
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_confusion_matrix", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_confusion_matrix(confusion_matrix)
### BEGIN HIDDEN TESTS
checks.check_confusion_matrix(confusion_matrix, seed=2, cases=((300, 10), (4, 2)))
### END HIDDEN TESTS

# %% [markdown]
# **Do two judges agree?** Pearson's correlation coefficient of paired numbers $x_n, y_n$ (here: the classifier's
# and CLIP's confidence in the intended digit of each generated image) measures how close they lie to a rising
# ($r = 1$) or falling ($r = -1$) straight line:
#
# $$r = \frac{\sum_n (x_n - \bar x)(y_n - \bar y)}{\sqrt{\sum_n (x_n - \bar x)^2 \sum_n (y_n - \bar y)^2}} .$$
#
# ### Exercise 8 (1 point)
# Write `pearson_r(x, y)`: `[N]` and `[N]` -> $r$ (a float or a 0-d tensor), without `torch.corrcoef`.

# %% nbgrader={"grade": false, "grade_id": "pearson_r", "locked": false, "schema_version": 3, "solution": true}
def pearson_r(x, y):
    """Pearson's r of the pairs (x_n, y_n): [N], [N] -> one number in [-1, 1]."""
    ### BEGIN SOLUTION
    dx, dy = x - x.mean(), y - y.mean()  # [N] each, centred
    return (dx * dy).sum() / ((dx * dx).sum() * (dy * dy).sum()).sqrt()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_pearson_r", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_pearson_r(pearson_r)
### BEGIN HIDDEN TESTS
checks.check_pearson_r(pearson_r, seed=5, cases=((200, -0.9), (3, 1.0)))
### END HIDDEN TESTS

# %%
confusion_of = checks.yours_or_labkit(checks.check_confusion_matrix, confusion_matrix, measures.confusion_matrix,
                                      "confusion_matrix")
correlation = checks.yours_or_labkit(checks.check_pearson_r, pearson_r, measures.pearson_r, "pearson_r")
confusion = confusion_of(y_real, real_clip.predicted, 10).float()  # [10, 10] on the real digits
fig = plotting.plot_matrix(confusion, xlabel="CLIP's zero-shot answer", ylabel="true digit (real MNIST)",
                           title="CLIP zero-shot confusion on real digits" + CLIP_TAG, symmetric=False, cmap="viridis")

fig, ax = plt.subplots(figsize=(5, 3.8))
ax.scatter(gen_cls["intended_prob"], gen_clip.intended_prob, c=y_gen, cmap="tab10", s=14)
ax.set(xlabel="classifier p(intended digit)", ylabel="CLIP zero-shot p(intended digit)",
       title="generated digits: do the two judges agree?" + CLIP_TAG)
ax.grid(alpha=0.3)
r = correlation(gen_cls["intended_prob"].double().cpu(), gen_clip.intended_prob.double().cpu())
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
# ## 6. FID: what it measures, why it has a floor, why a small sample can fall below it
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
# ### Exercise 9 (2 points)
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
# ### Exercise 10 (3 points)
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
# ### Exercise 11 (2 points)
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

ns, floors = list(floor_table), [float(v[0].mean()) for v in floor_table.values()]
lower, more = floors[0] / floors[-1], ns[-1] / ns[0]
claims.check("the floor falls with n, roughly as 1/n (by between half and twice the factor by which n grows)",
             all(a > b for a, b in zip(floors, floors[1:])) and 0.5 <= lower / more <= 2,
             f"{floors[0]:.3f} at n = {ns[0]}, {floors[-1]:.3f} at n = {ns[-1]}: {lower:.0f}x lower for {more:.0f}x "
             "more digits")
spread = {n: (float(f.min() / f.mean()), float(f.max() / f.mean())) for n, (f, _, _) in floor_table.items()}
claims.check("in every row some set of real digits scores below 0.8x the floor and some above 1.2x",
             all(lo < 0.8 and hi > 1.2 for lo, hi in spread.values()),
             ", ".join(f"n = {n}: {lo:.2f}x .. {hi:.2f}x" for n, (lo, hi) in spread.items()))
claims.check("in every row the whole bootstrap interval lies above the FID of the set it was resampled from",
             all(low > f[0] for f, low, _ in floor_table.values()),
             ", ".join(f"n = {n}: [{low:.3f}, {high:.3f}] for {float(f[0]):.3f}" for n, (f, low, high) in floor_table.items()))
claims.check("in every row the bootstrap interval is wider than the range of the independent sets",
             all(high - low > f.max() - f.min() for f, low, high in floor_table.values()),
             ", ".join(f"n = {n}: {high - low:.3f} against {float(f.max() - f.min()):.3f}"
                       for n, (f, low, high) in floor_table.items()))

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
