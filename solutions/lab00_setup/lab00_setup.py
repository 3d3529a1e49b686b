# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false}
# # Lab 00 — Setup: diffusion models on MNIST
#
# **What this course is.** A sequence of short labs in which you build a diffusion model for handwritten
# digits piece by piece: how images are noised (lab 01), the U-Net that predicts the noise (02), how it is told
# the step and the class (03), then training, sampling, guidance and evaluation in the later labs. Each lab
# asks you to write a few small functions; everything else is provided by the `labkit` library, which is also
# the reference answer for every exercise.
#
# **Learning objectives.** After this lab you can
# 1. open and run a lab in Google Colab (with a GPU) or on your own machine;
# 2. read the environment check: versions, device, where the data comes from;
# 3. submit a notebook and read the result of a test cell.
#
# **Time budget.** About 10 minutes. Running all cells: under a minute on a CPU or a Colab T4.
#
# ## How to run the labs
#
# **In Google Colab** (nothing to install):
# 1. Open the notebook in Colab (File > Upload notebook, or the link your instructor gives you).
# 2. *Runtime > Change runtime type > T4 GPU* (the labs also run on the CPU, only slower).
# 3. Run the first code cell: it installs `labkit` and its numeric dependencies (about a minute). It never
#    installs Jupyter packages: Colab's own must stay as they are.
# 4. When done, *File > Download > Download .ipynb* and submit that file.
#
# **On your own machine** (Python 3.10 or newer):
# ```
# git clone <course repository> && cd labkit
# python -m venv .venv && source .venv/bin/activate
# pip install -e '.[course]'
# jupyter lab notebooks/
# ```
# MNIST is downloaded on first use; offline, point `LABKIT_DATA` at a folder holding the four MNIST `.gz`
# files. Without MNIST the labs fall back to synthetic digits and say so.
#
# **Submitting.** Keep the notebook's name (`lab01_forward.ipynb`, ...), do not delete or copy the test cells,
# and run all cells once before submitting. If you upload to an LMS that renames files, that is fine.
#
# **Fast mode.** When the environment variable `LABKIT_FAST=1` is set (as in grading and CI) every expensive
# cell shrinks to a few steps. You never need it yourself.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false}
# __LABKIT_COLAB_INSTALL__ (labkit build writes labkit.colab.INSTALL_CELL here: the Colab install)
from labkit import colab
DEVICE = colab.setup()

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false}
import time

import torch

from labkit import data, plotting, unet
from labkit.checks import lab00_setup as checks

# %% [markdown]
# ## 1. The environment check
#
# The table lists what this notebook runs on. In Colab the device should read `cuda` (a T4 GPU); on a laptop
# `cpu` (or `mps` on Apple silicon) is fine.

# %%
for key, value in colab.environment().items():
    print(f"{key:>12}: {value}")

# %% [markdown]
# ## 2. The data
#
# `labkit` looks for MNIST in a few places (printed below) and downloads it there when it can.

# %%
print("searched:", ", ".join(str(p) for p in data.candidate_roots()))
digits, real = colab.lab_digits(train=True)
print("source:", "real MNIST" if real else "synthetic digits", f"| labels of the first 16: {digits.labels[:16].tolist()}")
fig = plotting.image_grid(digits.images[:16], ncols=8, title="the first 16 training digits")

# %% [markdown]
# ## 3. How fast is this machine?
#
# One training step of the default U-Net (forward and backward on a batch of 32 digits), timed. Later labs use
# this to size their training cells; expect about 0.02 s on a T4 and about a second on a laptop CPU.

# %%
config = colab.pick(unet.UNetConfig(), unet.UNetConfig(base_channels=8, channel_mults=(1,)))  # tiny in fast mode
batch = colab.pick(32, 2)
model = unet.UNet(config).to(DEVICE)
x = digits.images[:batch].to(DEVICE)
t = torch.randint(0, 1000, (batch,), device=DEVICE)
y = digits.labels[:batch].to(DEVICE)
for i in range(2):  # the first step includes one-off set-up costs; time the second
    start = time.perf_counter()
    model(x, t, y).pow(2).mean().backward()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    took = time.perf_counter() - start
print(f"{model.num_parameters():,} parameters, one training step (batch {batch}) on {DEVICE}: {took:.3f} s")

# %% [markdown]
# ## 4. A warm-up exercise (1 point)
#
# The model works on images in $[-1, 1]$; pictures show $[0, 1]$. Write `to_unit_range(x)` that maps
# $[-1, 1]$ linearly onto $[0, 1]$ ($-1 \mapsto 0$, $1 \mapsto 1$), for a tensor of any shape. Then run the
# test cell below it: a green line means the test passed; an error names what went wrong.

# %% nbgrader={"grade": false, "grade_id": "to_unit_range", "locked": false, "schema_version": 3, "solution": true}
def to_unit_range(x):
    """x in [-1, 1] (any shape) -> the same values mapped linearly onto [0, 1]."""
    ### BEGIN SOLUTION
    return (x + 1) / 2
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_to_unit_range", "locked": true, "points": 1, "schema_version": 3, "solution": false}
checks.check_to_unit_range(to_unit_range)
### BEGIN HIDDEN TESTS
checks.check_to_unit_range(to_unit_range, seed=1, sizes=((3, 5), (2, 1, 4, 4)))
### END HIDDEN TESTS

# %% [markdown]
# ## Questions
# 1. Which device did your notebook run on, and how long did one training step take? How many such steps
#    would fit into one minute?
# 2. Did the notebook find real MNIST? If not, what did it use instead?
#
# *Write your answers here.*
