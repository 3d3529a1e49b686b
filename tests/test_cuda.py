"""What only a GPU exercises: the autocast dtype the card gets, generators and noise on the GPU, checkpoints
saved on the GPU and loaded on the CPU (and back), torch.compile off by default.

Marked ``cuda`` and skipped without an NVIDIA GPU; ``benchmarks/gpu_check.sh`` runs them on a GPU machine
(``python -m pytest -m cuda tests/test_cuda.py``). The CPU halves of the same rules: tests/test_device.py.
"""

from dataclasses import replace

import pytest
import torch

from labkit import colab, device, plotting, recipes, samplers, training
from labkit.checkpoint import export_release, load_checkpoint, load_model
from labkit.data import synthetic_digits
from labkit.diffusion import diffusion_loss
from labkit.errors import LabkitValueError
from labkit.schedules import make_schedule
from labkit.unet import UNet

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (benchmarks/gpu_check.sh runs these)"),
]
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def digits():
    return synthetic_digits(256, generator=torch.Generator().manual_seed(0))


def _first_conv(model: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_every_picker_chooses_the_gpu():
    assert device.pick_device() == CUDA and colab.device() == CUDA
    assert recipes.auto().batch_size == recipes.gpu().batch_size
    model, _, meta = load_model(None)  # the shipped checkpoint, on the default device
    assert next(model.parameters()).device.type == "cuda" and meta["step"]


def test_auto_precision_matches_the_cards_compute_capability():
    capability = torch.cuda.get_device_capability()
    expected = (torch.bfloat16, False) if capability >= (8, 0) else (torch.float16, True)
    assert device.resolve_precision("auto", CUDA) == expected
    assert device.resolve_precision("auto", "cuda:0") == device.precision_for("cuda", capability)


@pytest.mark.parametrize("precision", ["auto", "fp16", "fp32"])
def test_training_runs_in_the_chosen_autocast_dtype(tmp_path, digits, precision):
    """Convolutions run in the autocast dtype; master weights stay fp32 on the GPU; fp16 (a T4's choice,
    forced here on any card) trains through a GradScaler whose state lands in the checkpoint; no compile."""
    amp, use_scaler = device.resolve_precision(precision, CUDA)
    seen = []

    def watch(info):
        if info.step == 1:
            _first_conv(info.model).register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        return None

    config = recipes.tiny(steps=6, precision=precision, out_dir=str(tmp_path / precision), checkpoint_every=0)
    result = training.train(config, digits, device="cuda", callback=watch, progress=False)
    assert seen and set(seen) == {amp or torch.float32}
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in result.model.parameters())
    assert all(p.device.type == "cuda" for p in result.ema.parameters())
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert type(result.model) is UNet and not hasattr(result.model, "_orig_mod")  # torch.compile is off
    saved = load_checkpoint(result.checkpoint)
    assert bool(saved["scaler"]) == use_scaler
    assert saved["rng"]["cuda"] is not None


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_noise_and_samples_stay_on_the_gpu(sampler):
    model = UNet(recipes.tiny().unet).to(CUDA).eval()
    schedule = make_schedule("cosine", 1000)
    y = torch.arange(10, device=CUDA)

    def draw(seed):
        return samplers.sample(model, (10, 1, 28, 28), y, schedule, sampler=sampler, steps=3, eta=1.0, guidance=0.5,
                               clip=1.0, generator=torch.Generator(CUDA).manual_seed(seed))

    a, b, c = draw(0), draw(0), draw(1)
    assert a.device.type == "cuda" and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)  # the GPU generator seeds the noise
    with pytest.raises(LabkitValueError, match="generator is on cpu but y is on cuda"):
        samplers.sample(model, (10, 1, 28, 28), y, schedule, steps=2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(LabkitValueError, match="model is on cuda but y is on cpu"):
        samplers.sample(model, (10, 1, 28, 28), y.cpu(), schedule, steps=2)


def test_loss_noise_and_pictures_with_gpu_generators(tmp_path, digits):
    model = UNet(recipes.tiny().unet).to(CUDA)
    schedule = make_schedule("cosine", 1000)
    x0, y = digits.images[:8].to(CUDA), digits.labels[:8].to(CUDA)
    losses = [diffusion_loss(model, x0, y, schedule, generator=torch.Generator(CUDA).manual_seed(0)) for _ in range(2)]
    assert losses[0].device.type == "cuda" and torch.isfinite(losses[0])
    torch.testing.assert_close(losses[0], losses[1])  # same GPU generator seed, same t and noise
    fig = plotting.noise_grid(x0[:2], schedule, [0, 500], generator=torch.Generator(CUDA).manual_seed(0))
    assert fig is not None
    path = training.save_grid(model.eval(), schedule, recipes.tiny(), tmp_path / "grid.png", per_class=1)
    assert path.is_file()


def test_checkpoint_saved_on_gpu_loads_on_cpu_and_back(tmp_path, digits):
    gpu_cfg = recipes.tiny(steps=4, out_dir=str(tmp_path / "gpu"), checkpoint_every=2, precision="fp32")
    gpu_run = training.train(gpu_cfg, digits, device="cuda", progress=False)
    state = load_checkpoint(gpu_run.checkpoint)  # default map_location: the CPU
    assert all(v.device.type == "cpu" for v in state["model"].values())

    on_cpu, schedule, _ = load_model(gpu_run.checkpoint, device="cpu")
    on_gpu, _, _ = load_model(gpu_run.checkpoint, device="cuda")
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t, y = torch.tensor([10, 200, 500, 900]), torch.tensor([0, 3, 7, 10])
    with torch.no_grad():
        # the same weights on both (a wrong load differs by O(1)); cuDNN's TF32 convolutions round at ~1e-3
        torch.testing.assert_close(on_gpu(x.to(CUDA), t.to(CUDA), y.to(CUDA)).cpu(), on_cpu(x, t, y), atol=2e-2, rtol=2e-2)
    release = export_release(gpu_run.checkpoint, tmp_path / "release.pt")
    assert next(load_model(release, device="cpu")[0].parameters()).device.type == "cpu"

    # a GPU run resumed on the CPU, and a CPU run resumed on the GPU: both finish (with a warning: the batch
    # generator of the other device type cannot be restored, it is reseeded)
    with pytest.warns(UserWarning, match="another kind of device"):
        resumed = training.train(replace(gpu_cfg, total_steps=6), digits, device="cpu", progress=False)
    assert resumed.step == 6 and next(resumed.model.parameters()).device.type == "cpu"
    cpu_cfg = replace(gpu_cfg, out_dir=str(tmp_path / "cpu"))
    training.train(cpu_cfg, digits, device="cpu", progress=False)
    with pytest.warns(UserWarning, match="another kind of device"):
        back = training.train(replace(cpu_cfg, total_steps=6), digits, device="cuda", progress=False)
    assert back.step == 6 and next(back.model.parameters()).device.type == "cuda"


def test_clip_scorer_and_evaluation_follow_the_gpu(mnist_dir, tmp_path):
    from labkit.evaluation.clip import tiny_clip_scorer
    from labkit.evaluation.command import run_evaluate

    scorer = tiny_clip_scorer(device=device.pick_device())
    images = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(10).repeat(2)
    scores = scorer.score(images, labels)
    assert scorer.device.type == "cuda" and scores.probs.shape == (20, 10)
    torch.save({"images": images, "labels": labels}, tmp_path / "s.pt")
    table = run_evaluate(tmp_path / "s.pt", data_root=mnist_dir)  # default device: the GPU
    assert "FID" in table
