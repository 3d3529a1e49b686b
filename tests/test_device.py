"""labkit.device on a CPU: the device order and the precision rule as pure functions, one choice shared by
every caller, device checks in the sampler, and a resume across device types. The same on a real GPU:
tests/test_cuda.py."""

import warnings

import pytest
import torch

from labkit import checkpoint, colab, device, recipes, samplers, training
from labkit.data import synthetic_digits
from labkit.errors import LabkitValueError
from labkit.evaluation import clip, command
from labkit.schedules import make_schedule
from labkit.unet import UNet

F16, BF16 = torch.float16, torch.bfloat16


@pytest.mark.parametrize("device_type,capability,expected", [
    ("cuda", (7, 5), (F16, True)),    # T4 (Colab): fp16 + GradScaler
    ("cuda", (7, 0), (F16, True)),    # V100
    ("cuda", (6, 1), (F16, True)),    # P100-class
    ("cuda", (8, 0), (BF16, False)),  # A100: Ampere, native bf16
    ("cuda", (8, 6), (BF16, False)),  # RTX 30xx / A10
    ("cuda", (9, 0), (BF16, False)),  # H100 / H200
    ("cuda", (12, 0), (BF16, False)),
    ("cpu", None, (None, False)),
    ("mps", None, (None, False)),
])
def test_auto_precision_by_device_and_capability(device_type, capability, expected):
    assert device.precision_for(device_type, capability) == expected


def test_explicit_precision_is_honoured_and_checked():
    assert device.precision_for("cuda", (9, 0), "fp16") == (F16, True)
    assert device.precision_for("cuda", (7, 5), "bf16") == (BF16, False)
    assert device.precision_for("cuda", (9, 0), "fp32") == (None, False)
    assert device.precision_for("cpu", None, "bf16") == (BF16, False)
    with pytest.raises(LabkitValueError, match="fp16"):
        device.precision_for("cpu", None, "fp16")
    with pytest.raises(LabkitValueError, match="fp8"):
        device.precision_for("cuda", (9, 0), "fp8")
    with pytest.raises(LabkitValueError, match="capability"):
        device.precision_for("cuda", None)
    assert device.resolve_precision("auto", "cpu") == (None, False)


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (True, False, "cuda"),
                                               (False, True, "mps"), (False, False, "cpu")])
def test_pick_device_order_cuda_mps_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(device, "cuda_available", lambda: cuda)
    monkeypatch.setattr(device, "mps_available", lambda: mps)
    assert device.pick_device() == torch.device(expected)
    assert device.pick_device("cpu") == torch.device("cpu")  # an explicit choice wins
    # every former picker now gives the same answer
    assert colab.device() == torch.device(expected)
    assert (recipes.auto().batch_size == recipes.gpu().batch_size) == (expected == "cuda")


def test_pick_device_refuses_what_is_not_here(monkeypatch):
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    monkeypatch.setattr(device, "mps_available", lambda: False)
    with pytest.raises(LabkitValueError, match="unknown device"):
        device.pick_device("gpu0")
    with pytest.raises(LabkitValueError, match="CUDA is not available"):
        device.pick_device("cuda")
    with pytest.raises(LabkitValueError, match="MPS is not available"):
        device.pick_device(torch.device("mps"))


def test_one_picker_shared_by_every_caller():
    for module in (training, checkpoint, command, clip):
        assert module.pick_device is device.pick_device, module.__name__
    assert training.resolve_precision is device.resolve_precision and training.PRECISIONS == device.PRECISIONS


def test_sampler_names_a_device_mismatch_before_the_first_step():
    """A generator, x_T or model on another device than y is one clear LabkitValueError ('meta' stands in
    for a second device on a CPU-only machine)."""
    model = UNet(recipes.tiny().unet)
    y_meta = torch.zeros(2, dtype=torch.long, device="meta")
    y_cpu = torch.zeros(2, dtype=torch.long)
    with pytest.raises(LabkitValueError, match="generator is on cpu but y is on meta"):
        samplers._check_devices(lambda x, t, y: x, y_meta, torch.Generator(), None)
    with pytest.raises(LabkitValueError, match="model is on cpu but y is on meta"):
        samplers._check_devices(model, y_meta, None, None)
    with pytest.raises(LabkitValueError, match="x_T is on meta"):
        samplers._check_devices(model, y_cpu, None, torch.zeros(2, 1, 28, 28, device="meta"))
    samplers._check_devices(model, y_cpu, torch.Generator(), torch.zeros(2, 1, 28, 28))  # all on the CPU: fine
    x = samplers.sample(model, (2, 1, 28, 28), y_cpu, make_schedule("cosine", 1000), steps=2,
                        generator=torch.Generator().manual_seed(0))
    assert x.device.type == "cpu" and torch.isfinite(x).all()


def test_resume_from_another_device_types_generator(tmp_path):
    """A checkpoint whose batch-generator state came from a GPU (16 bytes, Philox) resumes on the CPU with a
    warning and a reseeded generator instead of torch's 'RNG state is wrong size'. Also: no torch.compile."""
    digits = synthetic_digits(32, generator=torch.Generator().manual_seed(0))
    config = recipes.tiny(steps=2, out_dir=str(tmp_path / "run"), checkpoint_every=2)
    first = training.train(config, digits, device="cpu", progress=False)
    assert type(first.model) is UNet and not hasattr(first.model, "_orig_mod")  # eager, not torch.compile'd
    state = checkpoint.load_checkpoint(first.checkpoint)
    assert state["rng"]["data"].numel() == torch.Generator().get_state().numel()
    state["rng"]["data"] = torch.zeros(16, dtype=torch.uint8)  # what torch.Generator("cuda").get_state() holds
    checkpoint.save_checkpoint(first.checkpoint, {k: v for k, v in state.items() if k != "labkit"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = training.train(config.__class__(**{**config.__dict__, "total_steps": 4}), digits, device="cpu",
                                 progress=False)
    assert resumed.step == 4 and any("another kind of device" in str(w.message) for w in caught)
    assert all(torch.isfinite(p).all() for p in resumed.model.parameters())
