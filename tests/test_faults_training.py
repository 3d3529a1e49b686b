"""Training and checkpoint files under faults (issue 8): real SIGKILLs, kills mid-write, bad files, NaN/inf.

The kill tests run the trainer in child processes (tiny recipe, synthetic digits, one torch thread) and
SIGKILL them: at seeded random steps, right after a checkpoint, just before one, and in the middle of
writing one. Each time a new process resumes from ``last.pt``; the run must end bit-identical (model,
EMA, optimiser state, data RNG) to an uninterrupted run with the same seed. docs/_training_faults.md
tabulates what these tests measured.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from labkit import checkpoint, recipes, training
from labkit.checkpoint import load_checkpoint, save_checkpoint
from labkit.data import synthetic_digits
from labkit.diffusion import diffusion_loss
from labkit.errors import LabkitError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

STEPS, EVERY = 24, 4  # checkpoints at 4, 8, ..., 24

CHILD = textwrap.dedent(
    """
    import io, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from labkit import recipes, training
    from labkit.data import synthetic_digits

    out, steps, every, mode, kill_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    config = recipes.tiny(steps=steps, out_dir=out, checkpoint_every=every, log_every=every)
    data = synthetic_digits(48, generator=torch.Generator().manual_seed(0))

    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if mode == "write":  # die half way through writing the checkpoint of step kill_at
        real_save = torch.save

        def half_save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("step") == kill_at:
                buf = io.BytesIO()
                real_save(obj, buf, *args, **kwargs)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
                print("dying mid-write", kill_at, flush=True)
                die()
            return real_save(obj, f, *args, **kwargs)

        torch.save = half_save

    def callback(info):
        print("step", info.step, flush=True)
        if mode == "step" and info.step == kill_at:
            die()

    result = training.train(config, data, device="cpu", progress=False, callback=callback)
    print("done", result.step, flush=True)
    """
)


def child(tmp_path: Path, out: Path, mode: str = "run", kill_at: int = -1) -> subprocess.Popen:
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, str(script), str(out), str(STEPS), str(EVERY), mode, str(kill_at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def kill_points(seed: int = 8) -> list[tuple[str, int]]:
    """Four kills drawn from a seeded RNG: right after a checkpoint, just before one, anywhere, mid-write."""
    rng = random.Random(seed)
    while True:
        after = EVERY * rng.randint(1, STEPS // EVERY - 1)  # the callback runs after that step's checkpoint
        before = EVERY * rng.randint(1, STEPS // EVERY - 1) - 1
        anywhere = rng.randint(1, STEPS - 1)
        write = EVERY * rng.randint(1, STEPS // EVERY - 1)
        steps = [after, before, anywhere, write]
        if len(set(steps)) == 4:
            return sorted([("after", after), ("before", before), ("random", anywhere), ("write", write)],
                          key=lambda p: p[1])


def assert_same_training_state(a: dict, b: dict):
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    oa, ob = a["optimizer"], b["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k in oa["state"][i]:
            assert torch.equal(oa["state"][i][k], ob["state"][i][k]), f"optimizer.state[{i}].{k}"
    # the generator that draws batches, label dropout, t and noise. (The global torch RNG state is saved
    # and restored too, but nothing in training draws from it, and it starts randomly in each process.)
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    assert a["step"] == b["step"]


def test_sigkill_at_random_steps_and_mid_write_then_resume_is_exact(tmp_path):
    t0 = time.perf_counter()
    straight = child(tmp_path, tmp_path / "straight")  # runs alongside the killed chain
    run = tmp_path / "killed"
    log = []
    for kind, k in kill_points():
        rc, out, err = finish(child(tmp_path, run, "write" if kind == "write" else "step", k))
        assert rc == -signal.SIGKILL, (kind, k, rc, err[-2000:])
        steps_seen = [int(line.split()[1]) for line in out.splitlines() if line.startswith("step ")]
        # the step the dead process reached: k for a kill in the callback; k - 1 finished steps before
        # the checkpoint write of step k (its callback never ran)
        assert steps_seen[-1] == (k if kind != "write" else k - 1), (kind, k, out)
        state = load_checkpoint(run / "last.pt")  # the previous good checkpoint always loads
        expected = (k // EVERY) * EVERY if kind != "write" else k - EVERY
        assert state["step"] == expected, (kind, k, state["step"])
        strays = sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))
        log.append((kind, k, state["step"], len(strays)))
    rc, out, err = finish(child(tmp_path, run))
    assert rc == 0 and f"done {STEPS}" in out, err[-2000:]
    rc, out, err = finish(straight)
    assert rc == 0 and f"done {STEPS}" in out, err[-2000:]
    assert_same_training_state(load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(run / "last.pt"))
    # a kill mid-write leaves its half-written temp file (the kernel gives Python no chance to remove it)
    assert log[[kind for kind, *_ in log].index("write")][3] == 1
    print(f"\nkills (kind, step, resumed from, stray .tmp files): {log}; {time.perf_counter() - t0:.1f} s")


# --- in-process faults (fast) -------------------------------------------------------------------



@pytest.fixture(scope="module")
def digits():
    return synthetic_digits(48, generator=torch.Generator().manual_seed(0))


def tiny(tmp_path, name, steps=12, **kw):
    return recipes.tiny(steps=steps, out_dir=str(tmp_path / name), checkpoint_every=EVERY, log_every=EVERY, **kw)


KW = dict(device="cpu", progress=False)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text, text
    return text


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "zeros"])
def test_damaged_last_pt_on_resume_is_one_clear_line(tmp_path, digits, damage):
    config = tiny(tmp_path, "run", steps=8)
    training.train(config, digits, **KW)
    path = tmp_path / "run" / "last.pt"
    good = path.read_bytes()
    raw = bytearray(good)
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "bitflip":  # one flipped bit in the tensor data: torch.load alone would load it silently
        raw[middle_of_largest_record(path)] ^= 0x10
    else:
        raw = bytes(len(raw))
    path.write_bytes(bytes(raw))
    with pytest.raises(LabkitError) as info:
        training.train(tiny(tmp_path, "run", steps=12), digits, **KW)
    text = one_line(info.value)
    assert "cannot resume" in text and "truncated or corrupt" in text and "--no-resume" in text, text
    assert path.read_bytes() == bytes(raw)  # the failed resume wrote nothing over it


def middle_of_largest_record(path) -> int:
    """The byte offset of the middle of the largest tensor record in a torch zip file."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2


def test_damaged_copy_leaves_the_good_checkpoint_intact(tmp_path, digits):
    training.train(tiny(tmp_path, "run", steps=8), digits, **KW)
    good = tmp_path / "run" / "last.pt"
    before = good.read_bytes()
    copy = tmp_path / "copy.pt"
    copy.write_bytes(before[:-100])  # e.g. an interrupted scp
    with pytest.raises(LabkitError, match="truncated or corrupt") as info:
        load_checkpoint(copy)
    one_line(info.value)
    assert good.read_bytes() == before and load_checkpoint(good)["step"] == 8


def test_disk_full_during_checkpoint_keeps_previous_and_resumes_exactly(tmp_path, digits, monkeypatch):
    straight = training.train(tiny(tmp_path, "straight"), digits, **KW)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 8:
            f.write(b"PK\x03\x04 some bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(LabkitError) as info:
        training.train(tiny(tmp_path, "full"), digits, **KW)
    assert "No space left on device" in one_line(info.value) and "previous one is kept" in str(info.value)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert load_checkpoint(tmp_path / "full" / "last.pt")["step"] == 4
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["last.pt"]  # temp file removed
    resumed = training.train(tiny(tmp_path, "full"), digits, **KW)
    for a, b in ((straight.model, resumed.model), (straight.ema, resumed.ema)):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), k


def test_out_dir_that_is_a_file(tmp_path, digits):
    (tmp_path / "f").write_text("not a folder")
    with pytest.raises(LabkitError, match="is a file, not a folder"):
        training.train(recipes.tiny(steps=2, out_dir=str(tmp_path / "f")), digits, **KW)


@pytest.mark.parametrize("change, field", [
    (dict(unet=recipes.tiny().unet.__class__(base_channels=16, channel_mults=(1, 2), blocks_per_level=1, groups=4,
                                              attention=False, patch=2)), r"train\.unet\.base_channels=8 .* 16"),
    (dict(schedule="linear"), r"train\.schedule='cosine' .* 'linear'"),
    (dict(T=500), r"train\.T=1000 .* 500"),
    (dict(seed=1), r"train\.seed=0 .* 1"),
])
def test_checkpoint_from_another_config_names_the_field(tmp_path, digits, change, field):
    training.train(tiny(tmp_path, "run", steps=4), digits, **KW)
    with pytest.raises(LabkitError, match=field) as info:
        training.train(tiny(tmp_path, "run", steps=8, **change), digits, **KW)
    assert "cannot resume" in one_line(info.value) and "--no-resume" in str(info.value)


def test_loading_another_architecture_into_load_model(tmp_path, digits):
    training.train(tiny(tmp_path, "run", steps=2), digits, **KW)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    state["unet"] = {**state["unet"], "base_channels": 16}  # the weights no longer fit the config
    save_checkpoint(tmp_path / "other.pt", {k: v for k, v in state.items() if k != "labkit"})
    with pytest.raises(LabkitError, match="does not hold a usable model") as info:
        checkpoint.load_model(tmp_path / "other.pt", device="cpu")
    one_line(info.value)


def poison_at(k, value):
    def callback(info):
        if info.step == k:
            with torch.no_grad():
                info.model.out.bias.fill_(value)  # the next forward pass predicts value everywhere

    return callback


@pytest.mark.parametrize("value, k", [(float("nan"), 6), (1e30, 9), (float("inf"), 4)])
def test_nan_or_inf_mid_run_is_reported_with_its_step(tmp_path, digits, value, k):
    config = tiny(tmp_path, "bad", steps=20)
    with pytest.raises(LabkitError) as info:
        training.train(config, digits, callback=poison_at(k, value), **KW)
    assert f"loss became NaN/inf at step {k + 1}" in one_line(info.value)
    state = load_checkpoint(tmp_path / "bad" / "last.pt")  # the last good checkpoint, never the bad state
    assert state["step"] == (k // EVERY) * EVERY
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_poisoned_bias_1e30_really_gives_an_inf_loss():
    """The 1e30 case above is an inf loss, not a NaN one: (1e30)^2 overflows float32."""
    model = training.UNet(recipes.tiny().unet)
    with torch.no_grad():
        model.out.bias.fill_(1e30)
    loss = diffusion_loss(model, torch.zeros(2, 1, 28, 28), torch.tensor([1, 2]), training.make_schedule("cosine", 1000),
                          generator=torch.Generator().manual_seed(0))
    assert torch.isinf(loss)


def test_nan_in_the_data_is_refused_before_training(tmp_path, digits):
    images = digits.images.clone()
    images[3, 0, 5, 5] = float("nan")
    bad = type(digits)(images, digits.labels)
    with pytest.raises(LabkitError, match="NaN or inf") as info:
        training.train(tiny(tmp_path, "d"), bad, **KW)
    one_line(info.value)
    assert not (tmp_path / "d").exists()
