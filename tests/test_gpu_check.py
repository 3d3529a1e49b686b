"""benchmarks/gpu_check.py, the one-run GPU check, exercised on a CPU: its --smoke mode runs every step with
canned results through the real subprocess, log, parsing and table code; the benchmark scripts' --json
output is read by the same functions that read it on the GPU machine."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gc():
    return load("gpu_check")


def table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| check")]


def test_smoke_run_prints_one_table(gc, tmp_path, capsys):
    rc = gc.main(["--smoke", "--only", "tests", "train", "sample", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = table_rows(out)
    assert len(rows) == 1 + 4 + 4, out  # tests; train: images/s, 2 quality levels, at 30 s; 2 checkpoints x 2 samplers
    assert rows[0][:2] == ["cuda tests (tests/test_cuda.py)", "5 passed, 1 skipped"]
    assert rows[2][1] == "at 20 s (99.2%, 2.10x)" and rows[3][1] == "at 30 s (99.6%, 1.40x)"
    assert rows[1][3] == "2,048" and "20,480 images/s" in rows[1][1]
    assert [r[0] for r in rows[5:7]] == ["sample gpu run (default: dpmpp_2m:15:1.0)", "sample gpu run (fastest: dpmpp_2m:8:1)"]
    assert rows[5][1] == "1000 digits in 0.210 s, 99.6% / 1.45x"
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(saved["rows"]) == 9 and (tmp_path / "gpu_check.md").read_text().count("\n| ") == 10
    assert (tmp_path / "logs" / "train.log").read_text().startswith("$ ")


@pytest.mark.slow
def test_smoke_notebooks_time_each_and_name_the_error(gc, tmp_path, capsys):
    rc = gc.main(["--smoke", "--only", "notebooks", "--out", str(tmp_path)])
    rows = table_rows(capsys.readouterr().out)
    assert rc == 1  # one of the two smoke notebooks fails on purpose
    assert rows[0][:2] == ["notebook smoke_ok (normal mode)", "ran top to bottom"] and float(rows[0][2]) > 0
    assert rows[1][1] == "**FAIL** rc 1: ValueError: smoke: this cell fails"
    assert (tmp_path / "notebooks" / "smoke_ok.ipynb").is_file()


def test_out_of_budget_steps_are_reported_not_dropped(gc, tmp_path, capsys):
    rc = gc.main(["--smoke", "--only", "tests", "train", "--budget", "1", "--out", str(tmp_path)])
    rows = table_rows(capsys.readouterr().out)
    assert rc == 1 and [r[1] for r in rows] == ["**FAIL** skipped: out of time (rerun with --only)"] * 2


def test_parsers(gc):
    assert gc.parse_pytest("....\n4 passed, 2 skipped in 3.1s") == {"passed": 4, "skipped": 2}
    assert gc.parse_pytest("F.\n== 1 failed, 1 passed, 1 error in 2s ==") == {"failed": 1, "passed": 1, "errors": 1}
    assert gc.parse_pytest("no tests ran") == {}
    assert gc.last_error("x\nTraceback\n\x1b[31mKeyError\x1b[39m: 'a'\nmore") == "KeyError: 'a'"
    assert gc.last_error("") == "no output"
    rows = [{"train_s": 10, "accuracy": 0.98, "fid_ratio": 3.0, "images_per_s": 9000.0, "sample_s": 0.3},
            {"train_s": 20, "accuracy": 0.993, "fid_ratio": 2.0, "images_per_s": 9500.0, "sample_s": 0.3}]
    assert gc.first_reaching(rows, 0.99, 2.5)["train_s"] == 20 and gc.first_reaching(rows, 0.995, 1.5) is None
    out = gc.train_rows({"rows": rows, "precision": "torch.float16", "batch_size": 512, "params": 3e6, "peak_mb": 10})
    assert out[2]["result"] == "not within 20 s (best 99.3%, 2.00x)" and out[2]["ok"] is False
    assert out[3]["result"].startswith("99.3% / 2.00x at 20 s")
    assert "**FAIL** not within" in gc.format_table(out, "t")


def test_bench_sample_json_with_the_checkpoints_default_run(gc, tmp_path, capsys):
    path = tmp_path / "s.json"
    load("bench_sample").main(["--no-eval", "--runs", "default", "dpmpp_2m:2:1", "--per-class", "1", "--threads", "1",
                               "--device", "cpu", "--json", str(path)])
    capsys.readouterr()
    result = json.loads(path.read_text())
    assert [r["default"] for r in result["rows"]] == [True, False]
    from labkit.checkpoint import load_model

    recipe = load_model(None, device="cpu")[2]["train"]  # the shipped checkpoint's own sampler settings
    default = f"{recipe['sampler']}:{recipe['sample_steps']}:{recipe['guidance']}"
    first = result["rows"][0]
    assert first["run"] == default and first["n"] == 10 and first["accuracy"] is None
    rows = gc.sample_rows(result, "shipped")
    assert rows[0]["check"] == f"sample shipped (default: {default})" and rows[0]["result"].startswith("10 digits in ")


def test_bench_train_time_to_quality_feeds_the_table(gc, capsys, monkeypatch):
    """bench_train's time_to_quality (what --json writes) read by gpu_check; the scorer is stubbed (the real
    one needs MNIST and ~20 s here) and the data are synthetic: this checks the plumbing, not the numbers."""
    import torch

    from labkit import recipes
    from labkit.data import synthetic_digits
    from labkit.evaluation import report

    scores = iter([(0.95, 4.0), (0.992, 2.2), (0.996, 1.4), (0.996, 1.4), (0.996, 1.4)])

    def fake_evaluate(images, labels, **kwargs):
        assert images.shape == (20, 1, 28, 28) and 0 <= float(images.min()) and float(images.max()) <= 1
        accuracy, ratio = next(scores)
        return {"overall": {"accuracy": accuracy, "fid_ratio": ratio}}

    monkeypatch.setattr(report, "evaluate_samples", fake_evaluate)
    bench = load("bench_train")
    digits = synthetic_digits(64, generator=torch.Generator().manual_seed(0))
    result = bench.time_to_quality(recipes.tiny(), digits, torch.device("cpu"), minutes=0.02, eval_every=0.3,
                                   data_root=None, per_class=2)
    capsys.readouterr()
    assert 2 <= len(result["rows"]) <= 5 and result["peak_mb"] > 0
    assert {"train_s", "step", "images_per_s", "accuracy", "fid_ratio", "sample_s"} <= set(result["rows"][0])
    assert result["reached_s"] == result["rows"][1]["train_s"]
    rows = gc.train_rows({**result, "precision": "fp32", "batch_size": 16, "params": 3e4})
    assert len(rows) == 4 and "images/s over" in rows[0]["result"]
    assert rows[1]["result"].startswith(f"at {result['rows'][1]['train_s']:.0f} s (99.2%, 2.20x)")
