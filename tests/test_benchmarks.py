"""The benchmark scripts still run (smallest settings; no timing is asserted)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_sample_prints_one_row_per_run_and_seed(capsys):
    load("bench_sample").main(["--no-eval", "--runs", "ddpm:2:0.4", "dpmpp_2m:2:1", "--seeds", "0", "1",
                               "--per-class", "1", "--threads", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().startswith(("ddpm", "dpmpp_2m"))]
    assert len(rows) == 4, out
    assert rows[0].split()[:4] == ["ddpm", "2", "0.4", "0"] and rows[3].split()[:4] == ["dpmpp_2m", "2", "1", "1"]


def test_bench_train_flops_and_overrides(capsys):
    bench = load("bench_train")
    bench.main(["--flops", "--recipe", "cpu", "--threads", "1", "--device", "cpu", "--set", "min_snr_gamma=None"])
    out = capsys.readouterr().out
    assert "0.76M parameters" in out and "85.0 MFLOP" in out and "min_snr_gamma=None" in out
    assert bench._literal("0.999") == 0.999 and bench._literal("None") is None and bench._literal("ddpm") == "ddpm"
    with pytest.raises(TypeError):
        bench.main(["--flops", "--set", "no_such_field=1"])


def test_bench_fast_counts_the_network_evaluations(capsys, tmp_path):
    """Rows of the default model and of a fast checkpoint (made here from a tiny teacher), NFE counted."""
    import torch

    from labkit import distill
    from labkit.checkpoint import load_model
    from labkit.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4, patch=2)).eval().requires_grad_(False)
    schedule = load_model(None, device="cpu")[1]
    teacher = (net, schedule, {"unet": net.config.to_dict(), "schedule": "cosine", "T": 1000, "step": 0})
    config = distill.DistillConfig(trajectories=10, chunk=10, batch_size=4, checkpoint_every=1, teacher_steps=4,
                                   keep_every=1)
    distill.run(tmp_path / "run", minutes=None, steps=1, config=config, teacher=teacher, log=lambda *a: None)
    rows = load("bench_fast").main(["--no-eval", "--per-class", "1", "--threads", "1", "--device", "cpu",
                                    "--fast", str(tmp_path / "run" / "last.pt"),
                                    "--runs", "default:ddim:1:0.5", "fast:consistency:1:0", "fast:consistency:4:0"])
    assert [r["nfe"] for r in rows] == [2, 1, 4]
    out = capsys.readouterr().out
    assert "NFE" in out and "load average" in out
