# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 04 — Training: teaching a network to predict the noise
#
# Lab 01 wrote the forward process, lab 02 the U-Net and lab 03 its time and class embeddings. Training puts
# them together (Ho et al. 2020, Algorithm 1): take a real digit $x_0$, pick a random step $t$ and noise
# $\varepsilon$, make $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$, and teach the network to say which
# noise was added. Repeat a few hundred thousand times.
#
# **Learning objectives.** After this lab you can
# 1. write the noise-prediction loss (Ho et al. 2020, eq. 14), one optimisation step, label dropout, an
#    EMA of the weights and a warmup-cosine learning-rate schedule;
# 2. write the training loop itself (Algorithm 1), reproducible number for number from a seeded generator, and
#    run a real training job with it: checkpoints, resuming after an interruption, a loss curve and samples;
# 3. read a loss curve, and say what the learning rate and the number of diffusion steps $T$ do to it.
#
# **Time budget.** On a laptop CPU: about 9-13 minutes of training with your loop (4000 steps of 64 images: 523 s
# at 491 images/s and 760 s at 338 images/s in two runs on 2 cores, measured; much longer on a busy machine, and
# the cell says so), or skip training and
# use the shipped checkpoint (section 5); the other cells take about a minute. On a Colab GPU: a few minutes (not
# measured yet). Working through the lab: about 90 minutes.
#
# **How it is graded.** Six functions (2 + 2 + 1 + 1 + 3 + 1 points), each followed by a test cell (the tests you
# see, plus hidden ones with other inputs). Grading never trains the U-Net: the tests use tiny seeded inputs,
# and your training loop is compared, step by step, with labkit's on a small network. Later cells use
# `labkit`'s reference code where yours does not pass yet, so a bug in your answer never breaks the rest of
# the lab. The questions at the end are answered in writing and graded by hand (4 points).

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
# __LABKIT_COLAB_INSTALL__ (labkit build writes labkit.colab.INSTALL_CELL here: the Colab install)
from labkit import colab
DEVICE = colab.setup(require_gpu=False)

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false}
import tempfile
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
import matplotlib.pyplot as plt

from labkit import checkpoint, diffusion, plotting, recipes, samplers, schedules, training
from labkit.unet import UNet
from labkit.checks import claims
from labkit.checks import lab04_training as checks
from labkit.evaluation.classifier import classifier_accuracy

FAST = colab.fast_mode()  # True in CI and while grading: expensive cells shrink
torch.manual_seed(0)  # every lab starts from the same random numbers
ON_GPU = DEVICE.type == "cuda"

# %% [markdown]
# ## 1. The loss
#
# The network $\hat\varepsilon_\theta(x_t, t, y)$ sees the noisy digit, the step and the class, and predicts the
# noise. Its loss is the mean squared error against the noise that was really added (Ho et al. 2020, eq. 14,
# the "simplified" objective):
#
# $$L = \mathbb E_{t, x_0, \varepsilon}\,\big\lVert \varepsilon - \hat\varepsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,\ t,\ y\big)\big\rVert^2 .$$
#
# Here is one batch: the digit, the noise, the noisy input, and what an *untrained* network answers.

# %%
digits, REAL = colab.lab_digits(train=True, n=None if not FAST else 512)
schedule = schedules.make_schedule("cosine", T=1000)
g = torch.Generator().manual_seed(0)
x0, y = digits.images[:6], digits.labels[:6]
t = torch.tensor([20, 100, 250, 500, 750, 950])
noise = torch.randn(x0.shape, generator=g)
xt = diffusion.q_sample(x0, t, noise, schedule)
untrained = UNet(recipes.tiny().unet).eval()
with torch.no_grad():
    eps_hat = untrained(xt, t, y)
fig = plotting.compare_rows({"x0": x0, "noise eps": noise, "x_t": xt, "untrained eps_hat": eps_hat},
                            col_titles=[f"t={int(s)}" for s in t], title="one training batch")

# %% [markdown]
# ### Exercise 1 (2 points)
# Write `noise_prediction_loss(model, x0, y, t, noise, alpha_bars)`: `x0` and `noise` are `[B, C, H, W]`,
# `y` and `t` int64 `[B]`, `alpha_bars` `[T]` (float64). Make $x_t$ (as in lab 01; cast the per-image
# $\bar\alpha_t$ to `x0.dtype`), call `model(x_t, t, y)`, and return the mean squared error against `noise` as a
# tensor with one element (`F.mse_loss` does it), **not** a Python float: training back-propagates through it.

# %% nbgrader={"grade": false, "grade_id": "noise_prediction_loss", "locked": false, "schema_version": 3, "solution": true}
def noise_prediction_loss(model, x0, y, t, noise, alpha_bars):
    """mean((noise - model(sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t, y))^2)  (Ho et al. 2020, eq. 14)."""
    ### BEGIN SOLUTION
    ab = alpha_bars.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))  # [B, 1, 1, 1]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    return F.mse_loss(model(x_t, t, y), noise)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_noise_prediction_loss", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_noise_prediction_loss(noise_prediction_loss)
### BEGIN HIDDEN TESTS
checks.check_noise_prediction_loss(noise_prediction_loss, seed=4, sizes=((2, 1, 28, 28), (5, 3, 4, 4)), T=1000)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. One training step
#
# Gradient descent in PyTorch is four lines, in this order: clear the old gradients (`backward` *adds* to
# `.grad`), compute the loss, back-propagate, update.
#
# ### Exercise 2 (2 points)
# Write `train_step(model, optimizer, compute_loss)`: `compute_loss()` returns this batch's loss (a scalar
# tensor); do one step and return the loss as a Python float (`loss.item()`). Call `compute_loss` once.

# %% nbgrader={"grade": false, "grade_id": "train_step", "locked": false, "schema_version": 3, "solution": true}
def train_step(model, optimizer, compute_loss):
    """zero_grad -> loss -> backward -> step; returns the loss value."""
    ### BEGIN SOLUTION
    optimizer.zero_grad()
    loss = compute_loss()
    loss.backward()
    optimizer.step()
    return loss.item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_train_step", "locked": true, "points": 2, "schema_version": 3, "solution": false}
checks.check_train_step(train_step)
### BEGIN HIDDEN TESTS
checks.check_train_step(train_step, seed=6, sizes=((3, 1, 10, 10),), lr=0.03)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Label dropout and the EMA
#
# Two small pieces the loop needs.
#
# **Label dropout** (Ho & Salimans 2022, Algorithm 1). Guidance (lab 07) needs the network's answer with *and*
# without the class. One network learns both if, in training, some labels are replaced by an extra "no class"
# index (`null_class` = 10 for MNIST's digits 0-9) with probability $p$ (here 10%).
#
# ### Exercise 3 (1 point)
# Write `drop_labels(y, p, null_class, generator)`: `y` is int64 `[B]`. Draw one number per label,
# `u = torch.rand(y.shape, device=y.device, generator=generator)`, and return new labels where each label with
# $u_i < p$ is `null_class` and the others are unchanged (`torch.where`). Do not change `y` in place: it is a
# slice of the data set's labels. Take the random numbers from `generator` exactly like this, so that a run can
# be replayed number for number (the check does).

# %% nbgrader={"grade": false, "grade_id": "drop_labels", "locked": false, "schema_version": 3, "solution": true}
def drop_labels(y, p, null_class, generator):
    """y [B] -> labels [B] where each one becomes null_class with probability p (u < p, u ~ U[0, 1))."""
    ### BEGIN SOLUTION
    drop = torch.rand(y.shape, device=y.device, generator=generator) < p  # [B] bool
    return torch.where(drop, torch.full_like(y, null_class), y)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_drop_labels", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_drop_labels(drop_labels)
### BEGIN HIDDEN TESTS
checks.check_drop_labels(drop_labels, seed=3, sizes=(5, 40), p=0.5)
### END HIDDEN TESTS

# %% [markdown]
# **The EMA** (exponential moving average) of the weights. The weights after the last step are noisy: each
# step moves them towards one batch. A running average over the recent steps samples better. After every
# optimiser step, each EMA parameter moves a small fraction $1 - d$ of the way towards the model's:
#
# $$\theta_{\text{EMA}} \leftarrow d\,\theta_{\text{EMA}} + (1 - d)\,\theta, \qquad d \text{ close to } 1 \ (0.995).$$
#
# ### Exercise 4 (1 point)
# Write `ema_update(ema, model, decay)`: `ema` and `model` are two networks of the same shape (the EMA is a
# copy of the model, `copy.deepcopy(model)`). Update every parameter of `ema` in place (pair them with
# `zip(ema.parameters(), model.parameters())`), inside `with torch.no_grad():` (an average is not part of any
# loss). The model does not change. Return nothing.

# %% nbgrader={"grade": false, "grade_id": "ema_update", "locked": false, "schema_version": 3, "solution": true}
def ema_update(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter, in place."""
    ### BEGIN SOLUTION
    with torch.no_grad():  # an average is not part of any loss: no gradients
        for e, p in zip(ema.parameters(), model.parameters()):
            e.mul_(decay).add_(p, alpha=1 - decay)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_ema_update", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_ema_update(ema_update)
### BEGIN HIDDEN TESTS
checks.check_ema_update(ema_update, seed=2, decay=0.99)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. The training loop
#
# Now the whole of Algorithm 1 (Ho et al. 2020): repeat { pick a batch; drop some labels; pick $t$ and
# $\varepsilon$; one gradient step on the loss; update the EMA }.
#
# ### Exercise 5 (3 points)
# Write `train_loop(model, ema, optimizer, images, labels, alpha_bars, steps, batch_size, generator,
# label_dropout, ema_decay, first_step=0)` with your functions from exercises 1-4. `images` is `[N, C, H, W]`,
# `labels` int64 `[N]`, `alpha_bars` `[T]`. First put the model in training mode (`model.train()`: the
# grader hands it over in eval mode, as after sampling). Then, for each step number `step` from `first_step`
# to `first_step + steps - 1`:
#
# 1. the batch: `idx = torch.randint(0, N, (batch_size,), device=images.device, generator=generator)`,
#    `x0 = images[idx]`, and the labels `labels[idx]` through `drop_labels(..., label_dropout, 10, generator)`;
# 2. `t = torch.randint(0, T, (batch_size,), device=..., generator=generator)`: steps 0 .. T-1;
# 3. `noise = torch.randn(x0.shape, device=..., generator=generator)`, once;
# 4. `train_step(model, optimizer, compute_loss)` where `compute_loss` returns
#    `noise_prediction_loss(model, x0, y, t, noise, alpha_bars)` (a `lambda:` does it);
# 5. `ema_update(ema, model, decay)` with a warm-up of the decay,
#    `decay = min(ema_decay, (1 + step) / (10 + step))` (labkit's `training.ema_decay_at`), so that a short run
#    does not keep averaging in its random start;
#
# and return the list of the `steps` losses (what `train_step` returns). Every random number comes from
# `generator`, in exactly this order (indices, dropout mask, $t$, noise): the check runs your loop and
# labkit's from the same seed on a small network and compares the weights and the EMA after a few steps,
# then checks that a 40-step run lowers the loss. `first_step` lets a run continue over several calls.

# %% nbgrader={"grade": false, "grade_id": "train_loop", "locked": false, "schema_version": 3, "solution": true}
def train_loop(model, ema, optimizer, images, labels, alpha_bars, steps, batch_size, generator,
               label_dropout, ema_decay, first_step=0):
    """steps steps of Algorithm 1 with label dropout and an EMA; returns the list of losses."""
    ### BEGIN SOLUTION
    model.train()  # normalisation and dropout layers behave as in training
    device, T = images.device, len(alpha_bars)
    losses = []  # one float per step
    for step in range(first_step, first_step + steps):
        idx = torch.randint(0, len(images), (batch_size,), device=device, generator=generator)  # [B]
        x0 = images[idx]  # [B, C, H, W]
        y = drop_labels(labels[idx], label_dropout, 10, generator)  # [B]
        t = torch.randint(0, T, (batch_size,), device=device, generator=generator)  # [B]
        noise = torch.randn(x0.shape, device=device, generator=generator)  # [B, C, H, W]
        loss = train_step(model, optimizer, lambda: noise_prediction_loss(model, x0, y, t, noise, alpha_bars))
        ema_update(ema, model, min(ema_decay, (1 + step) / (10 + step)))  # EMA decay with a warm-up
        losses.append(loss)
    return losses
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_train_loop", "locked": true, "points": 3, "schema_version": 3, "solution": false}
checks.check_train_loop(train_loop)
### BEGIN HIDDEN TESTS
checks.check_train_loop(train_loop, seed=3, shape=(3, 6, 6), first_step=7, p=0.5)
### END HIDDEN TESTS

# %% [markdown]
# **The learning rate over a run.** AdamW takes steps of about the learning rate's size, and the right size
# changes during training. At the start the weights are random and Adam's estimates of the gradient's scale rest
# on a handful of batches: full-size steps can throw the network into a bad region (the loss jumps or becomes
# NaN). So the rate climbs linearly from small to `lr` over the first `warmup_steps` steps (Goyal et al. 2017).
# At the end, small steps let the weights settle instead of bouncing around the minimum: the rate falls along
# half a cosine to `min_ratio * lr` (Loshchilov & Hutter 2017). With $W$ = `warmup_steps`, $S$ = `total_steps`:
#
# $$\text{lr}(s) = \begin{cases} \text{lr}\cdot\dfrac{s+1}{W} & s < W\\[6pt]
#   \text{lr}_{\min} + (\text{lr} - \text{lr}_{\min})\,\dfrac{1 + \cos(\pi p)}{2},\quad
#   p = \min\!\Big(1, \dfrac{s - W}{\max(1, S - W)}\Big) & s \ge W \end{cases}
#   \qquad \text{lr}_{\min} = \text{min\_ratio}\cdot\text{lr}.$$
#
# ### Exercise 6 (1 point)
# Write `warmup_cosine_lr(steps, lr, warmup_steps, total_steps, min_ratio)`: `steps` is an int64 tensor `[N]` of
# step numbers (in any order, some past `total_steps`); return the learning rates, a float tensor `[N]`. Compute
# both branches for every step and pick per step with `torch.where`. With `warmup_steps = 0` there is no warmup.
# The real training below sets the learning rate with your function (when it passes its check) before every
# chunk of steps.

# %% nbgrader={"grade": false, "grade_id": "warmup_cosine_lr", "locked": false, "schema_version": 3, "solution": true}
def warmup_cosine_lr(steps, lr, warmup_steps, total_steps, min_ratio):
    """steps int64 [N] -> learning rates [N]: linear warmup to lr, then a half cosine down to min_ratio * lr."""
    ### BEGIN SOLUTION
    s = steps.double()  # [N]
    warm = lr * (s + 1) / max(1, warmup_steps)  # [N]
    p = ((s - warmup_steps) / max(1, total_steps - warmup_steps)).clamp(0.0, 1.0)  # [N], 1 after the end
    lr_min = min_ratio * lr
    cosine = lr_min + (lr - lr_min) * 0.5 * (1 + torch.cos(torch.pi * p))  # [N]
    return torch.where(s < warmup_steps, warm, cosine)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_warmup_cosine_lr", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_warmup_cosine_lr(warmup_cosine_lr)
### BEGIN HIDDEN TESTS
checks.check_warmup_cosine_lr(warmup_cosine_lr, seed=4, cases=((3e-4, 7, 30, 0.05), (1e-2, 1, 9, 0.2)))
### END HIDDEN TESTS

# %% [markdown]
# ## 5. Real training, with your loop
#
# `labkit.training.run_loop` drives a loop through a real run: it builds the U-Net and its EMA, AdamW, and a
# seeded generator, then calls the loop in chunks of 100 steps. Between chunks it sets the learning rate
# (with your `warmup_cosine_lr` when it passes its check, else labkit's; the cell says which), logs the
# chunk's mean loss, saves a checkpoint (atomically: a crash never leaves half a file), and every two minutes
# shows the loss curve and one sample of each digit from the EMA. If your `train_loop` passes its check it is the loop that trains; otherwise labkit's
# `training.train_loop` does (the cell says which). The network it trains is **your U-Net from lab 03** when lab
# 03's last cells saved it (`my_unet.py` in the runs folder: `runs/`, or your Google Drive in Colab), it still
# passes lab 03's check and it makes no tensor on the CPU behind the GPU's back (tried on PyTorch's `meta`
# device); otherwise labkit's `UNet` (again, the cell says which and why). The checkpoint also holds the
# EMA under labkit's names, so labs 05-09 can load your trained network.
#
# The checkpoint holds the weights, the EMA, the optimiser and the generator's state: **run the cell again
# after an interruption and it continues where it stopped**, and ends with the weights an unbroken run would
# have. In Colab it is written to your Google Drive, so it survives the runtime.
#
# (`labkit.training.train`, used by `labkit train` and in section 6, is the same loop with what a long run
# adds: mixed precision on GPUs, gradient clipping and a loss weighting that favours the noisy steps.)
#
# On a CPU the run is `STEPS` steps of 64 images (2 cores: about 9-13 minutes; a slower machine takes
# longer, and the cell says so after two minutes). Set `USE_SHIPPED = True` to skip training and load the
# checkpoint that ships with labkit instead.

# %%
USE_SHIPPED = False  # CPU only: True skips training and loads labkit's pretrained checkpoint
STEPS = 4000  # CPU: a budget in steps (2 cores: about 9-13 minutes; readable digits from ~1000-2000)
PATIENCE_MIN = 15  # more than this many minutes projected for STEPS: say so, and offer the shipped checkpoint
RUNS = colab.runs_dir()  # in Colab your Google Drive (mounted here), so the run survives the runtime
if FAST:
    config = recipes.tiny(steps=4, out_dir=None)
elif ON_GPU:
    config = recipes.gpu(out_dir=f"{RUNS}/lab04-gpu")
else:
    config = recipes.cpu(minutes=None, total_steps=STEPS, out_dir=f"{RUNS}/lab04-cpu")
LOOP, whose = checks.loop_to_use(train_loop)
LR = checks.yours_or_labkit(checks.check_warmup_cosine_lr, warmup_cosine_lr, training.warmup_cosine_lr,
                            "warmup_cosine_lr")
NETWORK, whose_net = checks.network_to_use(colab.load_my_network(RUNS))  # the U-Net lab 03 saved, if it passes
if NETWORK is not None:
    config = replace(config, unet=replace(config.unet, attention=False))  # lab 03's network has no attention
print(f"training {whose_net} with {whose}: {config.total_steps} steps of {config.batch_size} images, lr {config.lr}, "
      f"checkpoints in {config.out_dir}")

# %%
snapshots = {}
result_schedule = schedules.make_schedule(config.schedule, config.T)
clock = time.perf_counter()

def show(step, losses, ema):
    """Every two minutes: the loss curve so far and one digit of each class from the EMA (same noise each time)."""
    if not snapshots and not FAST:  # the first report: this machine's speed, measured
        minutes = (time.perf_counter() - clock) / step * config.total_steps / 60
        if minutes > PATIENCE_MIN:
            print(f"NOTE: this machine needs about {minutes:.0f} minutes for the {config.total_steps} steps whose "
                  f"pictures the text below describes. Let it run, or stop the cell and set USE_SHIPPED = True.")
    yy = torch.arange(10, device=DEVICE)
    snapshots[step] = samplers.sample(ema, (10, 1, 28, 28), yy, result_schedule, steps=10, guidance=1.0, clip=1.0,
                                      generator=torch.Generator(DEVICE).manual_seed(0)).cpu()
    steps_, values = zip(*losses)
    fig, axes = plt.subplots(1, 2, figsize=(11, 2.4), gridspec_kw={"width_ratios": [1, 2.2]})
    axes[0].plot(steps_, values)
    axes[0].set(xlabel="step", yscale="log", title=f"loss (step {step}: {values[-1]:.4f})")
    axes[1].imshow(torch.cat(list(snapshots[step].clamp(-1, 1)[:, 0]), dim=1), cmap="gray")
    axes[1].set(title=f"EMA samples at step {step}", xticks=[], yticks=[])
    plt.show()

if USE_SHIPPED and not ON_GPU and not FAST:
    print("Skipping training: using the checkpoint that ships with labkit.")
    model, result_schedule, meta = checkpoint.load_model(None, device=DEVICE)
    losses = []
else:
    start = time.perf_counter()
    result = training.run_loop(LOOP, config, digits, device=DEVICE, chunk=colab.pick(100, 2), report=show,
                               report_every_s=colab.pick(120, 1e9), network=NETWORK, lr_schedule=LR)
    model, losses = result.ema, result.losses
    print(f"{result.step} steps, {result.images_per_s:.0f} images/s, {time.perf_counter() - start:.0f} s "
          f"(checkpoint: {result.checkpoint})")
    if len(losses) >= 2:  # for question 4: how much the loss still falls in the second half of the run
        half = min(losses, key=lambda sl: abs(sl[0] - losses[-1][0] / 2))  # (step, mean loss of its chunk)
        print(f"loss at step {half[0]}: {half[1]:.4f}; at step {losses[-1][0]}: {losses[-1][1]:.4f} "
              f"({1 - losses[-1][1] / half[1]:.0%} lower)")
    if FAST:
        print("Fast mode: a handful of steps only; the pictures below show noise, not digits.")

# %%
if losses:
    steps_, values = zip(*losses)
    fig = plotting.plot_curves(steps_, {"training loss": values}, xlabel="step", ylabel="MSE", logy=True,
                               marker="", title="loss curve (mean over each chunk of steps)")
if snapshots:
    fig = plotting.compare_rows({f"step {s}": x for s, x in snapshots.items()}, col_titles=[str(d) for d in range(10)],
                                title="EMA samples during training (same noise each time)")
yy = torch.arange(10, device=DEVICE).repeat(colab.pick(4, 1))
x = samplers.sample(model, (len(yy), 1, 28, 28), yy, result_schedule, steps=20, guidance=1.0, clip=1.0,
                    generator=torch.Generator(DEVICE).manual_seed(1))
fig = plotting.image_grid(x, ncols=10, title="samples from the final model")
accuracy = classifier_accuracy((x.float().cpu() + 1) / 2, yy.cpu())["accuracy"]
print(f"the shipped classifier recognises {accuracy:.0%} of these {len(yy)} digits as the digit asked for")

# %% [markdown]
# **Resume.** A stopped run loses nothing but the steps since its last checkpoint. Here a small run is
# stopped after 2 steps and started again with a budget of 4: the second call continues from step 2, and
# ends with the same weights as a run of 4 steps that was never stopped.

# %%
with tempfile.TemporaryDirectory() as folder:
    small = recipes.tiny(steps=2, out_dir=f"{folder}/stopped", checkpoint_every=1)
    first = training.run_loop(LOOP, small, digits, device=DEVICE, chunk=1)
    second = training.run_loop(LOOP, replace(small, total_steps=4), digits, device=DEVICE, chunk=1)
    unbroken = training.run_loop(LOOP, replace(small, total_steps=4, out_dir=f"{folder}/unbroken"), digits,
                                 device=DEVICE, chunk=1)
    gap = max((a - b).abs().max().item() for a, b in zip(second.ema.parameters(), unbroken.ema.parameters()))
    print(f"first call stopped at step {first.step}; the second resumed and ran {second.step - first.step} "
          f"more steps, to step {second.step}; largest difference to the unbroken run's EMA: {gap:g}")
claims.check("the resumed run ends with exactly the weights of the run that was never stopped", gap == 0.0,
             f"largest difference of the EMA weights: {gap:g}")

# %% [markdown]
# ## 6. A small experiment: learning rate and $T$
#
# Short runs of a small network, changing one thing at a time, with everything else (data, seed, batch)
# fixed. In fast mode each run is a few steps, only to show the code works.

# %%
exp_steps = colab.pick(400 if ON_GPU else 150, 2)
exp_data = digits.subset(colab.pick(20000, 256))

def short_run(**changes):
    cfg = recipes.tiny(steps=exp_steps, batch_size=64, log_every=max(1, exp_steps // 15), **changes)
    return training.train(cfg, data=exp_data, device=DEVICE, progress=False).losses

start = time.perf_counter()
by_lr = {f"lr {lr:g}": short_run(lr=lr) for lr in (2e-4, 2e-3, 2e-2)}
by_T = {f"T = {T}": short_run(T=T) for T in (50, 1000)}
print(f"5 runs of {exp_steps} steps in {time.perf_counter() - start:.0f} s")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for ax, (title, runs) in zip(axes, (("learning rate (T = 1000)", by_lr), ("number of diffusion steps (lr 2e-3)", by_T))):
    for label, curve in runs.items():
        s_, v_ = zip(*curve)
        ax.plot(s_, v_, label=label, lw=2)
    ax.set(title=title, xlabel="step", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
axes[0].set_ylabel("training loss (MSE)")
fig.tight_layout()

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_1", "locked": true, "schema_version": 3, "solution": false}
# ## Questions (look at the pictures)
#
# Answer each question in the cell below it, in a few sentences, with what you saw: a step $t$, a number, a row
# or a curve. Your answers are graded by hand (4 points, 1 per question).
#
# **Question 1 (1 point).** In the "one training batch" picture, at which $t$ could *you* guess the noise from
# $x_t$? At which $t$ is predicting the noise easy, and why is predicting it at $t = 20$ hard even though $x_t$
# looks clean?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_1", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** At large $t$ (several hundred and up) $x_t$ is almost all noise, so the noise is nearly
# $x_t$ itself (rescaled): easy to guess. At $t = 20$ the noise is a faint layer on a clean-looking digit; to
# predict it you must know the clean digit pixel by pixel, since
# $\varepsilon = (x_t - \sqrt{\bar\alpha_t}x_0)/\sqrt{1-\bar\alpha_t}$ and any error in $x_0$ is multiplied by
# the large $1/\sqrt{1-\bar\alpha_t}$.
#
# **Rubric (1 point).** 1/2 point: easy at large t, because x_t is mostly noise. 1/2 point: hard at small t
# because predicting a tiny noise means knowing x_0 exactly (errors amplified).
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_2", "locked": true, "schema_version": 3, "solution": false}
# **Question 2 (1 point).** In the snapshots taken during training, what appears first: blobs, strokes, the
# right digit per column?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_2", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** First speckled white patches of roughly a digit's size and place (step 400 in a CPU run), then
# stroke-like shapes, often not yet the right digit (step 800), and last the right digit in each column with clean
# strokes: in that run the 3, 4 and 7 were right by step 1200 and most columns by step 2100, about half of the
# 4000 steps; at step 4000 the classifier recognised all 40 digits of the final grid. In another measured run, with
# lab 03's U-Net, most columns were right by step 1000 and all ten by step 1900.
#
# **Rubric (1 point).** 1 point for an order read from the snapshots (typically blobs, then strokes, then the
# right digit), with at least one step number or snapshot as evidence; 1/2 point without evidence.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_3", "locked": true, "schema_version": 3, "solution": false}
# **Question 3 (1 point).** Learning rate and $T$. Which learning-rate curve falls fastest at first, which ends
# lowest, and does any become unstable? The two $T$ runs average their losses over different sets of noise
# levels: can you compare their values directly? What *would* you compare to decide which $T$ is better?

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_3", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Typically lr 2e-2 falls fastest at first but is noisy and may jump up or stall (unstable),
# 2e-4 falls slowest, and 2e-3 ends lowest. The $T$ losses cannot be compared directly: each is an average of
# noise-prediction errors over different noise levels, which are not equally hard, so the numbers measure
# different tasks. Compare what matters instead: samples from both models, with the same sampler and number of
# steps, judged by classifier accuracy (and FID against its floor, which lab 06 teaches).
#
# **Rubric (1 point).** 1/2 point: the learning-rate curves read correctly (fastest, lowest, any instability)
# from the student's own plot. 1/2 point: T losses not comparable (different noise levels) and compare sample
# quality (accuracy, FID) instead.
# ### END SOLUTION

# %% [markdown] nbgrader={"grade": false, "grade_id": "question_4", "locked": true, "schema_version": 3, "solution": false}
# **Question 4 (1 point).** Compare the loss curve with the snapshots over the second half of your run: how much
# does the loss still fall, and how much do the samples still change? Why is the loss a poor measure of sample
# quality here? (Hint: what part of the loss can no model remove?)

# %% [markdown] nbgrader={"grade": true, "grade_id": "answer_4", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# ### BEGIN SOLUTION
# **Model answer.** Read from the student's run: the line under the training cell reports how much lower the loss
# is at the end than halfway. Two measured CPU runs of 4000 steps: in one the snapshots went from about half of the
# columns right (around step 2000) to every digit of the final grid recognised; in the other (lab 03's U-Net) every
# column was already right at step 1900 and the second half only cleaned the strokes, while the loss still fell by
# 16%. Either way the change in the loss says little about the change in the samples. Most of the loss is
# irreducible: at all but the smallest $t$ the noise cannot be predicted
# exactly from $x_t$ (many clean digits fit the same $x_t$), so even a perfect model has a large loss. What
# improves the samples (fine detail, the right digit at the right step) changes the average only a little, and
# the average weighs the noise levels differently from how much each matters for the samples. Judge samples by
# accuracy and FID.
#
# **Rubric (1 point).** 1/2 point: an irreducible part of the loss (noise not predictable from x_t). 1/2 point:
# improvements that matter for samples are small changes in the average / weighting over t, so use sample
# metrics.
# ### END SOLUTION
