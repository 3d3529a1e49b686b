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
