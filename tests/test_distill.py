"""labkit.distill: the target (golden values, and a DDIM step that lands where it should), the v-parameterisation,
the teacher's trajectories on a Gaussian whose probability-flow ODE is known exactly, the training loop (it learns
the exact map, and not with a wrong target), resuming, and the fast model through the samplers."""

import math

import pytest
import torch
from torch import nn

from labkit import distill as D
from labkit import samplers as SM
from labkit.diffusion import gather, predict_x0_from_eps, q_sample, v_from_eps
from labkit.schedules import make_schedule

SCH = make_schedule("cosine", 1000)
MU = torch.tensor([[-0.3, 0.2], [0.3, -0.1]], dtype=torch.float64)  # per-class means of 2-D Gaussian data
SD = 0.15  # 4 SD stay inside [-1, 1], where the teacher clips


def _ab(t, x):
    return gather(SCH.alpha_bars, t, x).double()


def exact_eps(x, t, y):
    """E[eps | x_t] for x_0 ~ N(MU[y], SD^2 I): the exact noise prediction (the teacher, without guidance)."""
    ab = _ab(t, x)
    return ((1 - ab).sqrt() * (x.double() - ab.sqrt() * MU[y]) / (ab * SD**2 + 1 - ab)).to(x.dtype)


def exact_end(x_t, t, y):
    """The end of the probability-flow ODE through x_t: for Gaussian data it is affine,
    x_0 = MU + SD (x_t - alpha MU) / sqrt(alpha^2 SD^2 + sigma^2) (x_t standardised, then rescaled)."""
    ab = _ab(t, x_t)
    return MU[y] + SD * (x_t.double() - ab.sqrt() * MU[y]) / (ab * SD**2 + 1 - ab).sqrt()


# --- the equations ------------------------------------------------------------------------------------


def test_ddim_target_golden_value():
    """x_t = 1, x_next = 0.5, alpha_bar 0.25 -> 0.64: (0.5 - (0.6 / sqrt(0.75)) 1) / (0.8 - (0.6 / sqrt(0.75)) 0.5)."""
    got = D.ddim_target(torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64),
                        torch.tensor(0.25, dtype=torch.float64), torch.tensor(0.64, dtype=torch.float64))
    assert float(got) == pytest.approx(-0.42509842, abs=1e-8)


def _lands(target_fn, seed=0):
    """How far a DDIM step (eta = 0) that predicts target_fn's x0 lands from x_next (0 for the right target)."""
    g = torch.Generator().manual_seed(seed)
    x_t, x_next = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    ab_t = torch.rand(4, 1, generator=g, dtype=torch.float64) * 0.5 + 0.01
    ab_next = ab_t + torch.rand(4, 1, generator=g, dtype=torch.float64) * (0.99 - ab_t)  # less noise than at t
    x0 = target_fn(x_t, x_next, ab_t, ab_next)
    eps = (x_t - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
    landed = SM.ddim_step(x_t, eps, ab_t, ab_next, 0.0, torch.zeros_like(x_t))
    return float((landed - x_next).abs().max())


def test_ddim_target_makes_the_ddim_step_land_on_the_teachers_point():
    assert _lands(D.ddim_target) < 1e-10
    # plausible wrong targets land elsewhere: the test tells them apart
    wrong = {
        "x_next itself": lambda x, xn, a, an: xn,
        "x_next / alpha_next": lambda x, xn, a, an: xn / an.sqrt(),
        "sigma ratio inverted": lambda x, xn, a, an: (xn - ((1 - a) / (1 - an)).sqrt() * x)
        / (an.sqrt() - ((1 - a) / (1 - an)).sqrt() * a.sqrt()),
    }
    for name, fn in wrong.items():
        assert _lands(fn) > 0.05, name


def test_ddim_target_to_clean_data_is_the_end_point_exactly():
    x_t, x_end = torch.randn(2, 3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    ab_t = torch.full((3, 1, 1, 1), 4.5e-5)
    assert torch.equal(D.ddim_target(x_t, x_end, ab_t, torch.ones_like(ab_t)), x_end)


def test_v_parameterisation_round_trips():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 6, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 2, 382, 769, 982, 994])
    x_t = q_sample(x0, t, eps, SCH)
    v = v_from_eps(x0, t, eps, SCH)
    ab = gather(SCH.alpha_bars, t, x_t)
    torch.testing.assert_close(D.x0_from_v(x_t, v, ab), x0)
    torch.testing.assert_close(D.eps_from_v(x_t, v, ab), eps)
    # the samplers' x0_hat of VStudent's noise prediction is its own x0 (float32: within 1e-4 at alpha ~ 0.007)
    student = D.VStudent(lambda x, t, y: v.float(), SCH)
    x32 = x_t.float()
    torch.testing.assert_close(predict_x0_from_eps(x32, t, student(x32, t, None), SCH), student.x0(x32, t, None),
                               atol=2e-4, rtol=0)  # fmt: skip


def test_student_grid_and_step_weights():
    grid = torch.tensor([994, 982, 936, 769, 382, 107, 23, 2])
    assert D.student_grid(grid, 1).tolist() == [994]
    assert D.student_grid(grid, 2).tolist() == [994, 382]
    assert D.student_grid(grid, 4).tolist() == [994, 936, 382, 23]
    assert torch.equal(D.student_grid(grid, 8), grid)
    with pytest.raises(ValueError):
        D.student_grid(grid, 3)
    torch.testing.assert_close(D.step_weights(8), torch.tensor([4.0, 1, 2, 1, 3, 1, 2, 1]) / 15)


# --- the teacher on the Gaussian toy: its trajectories follow the exact ODE -------------------------------


def toy_trajectories(n=512, seed=0):
    y = torch.arange(2).repeat_interleave(n // 2)
    return D.teacher_trajectories(exact_eps, y, SCH, guidance=0.0, null_class=2, shape=(2,),
                                  generator=torch.Generator().manual_seed(seed))  # fmt: skip


def test_teacher_trajectories_end_where_the_exact_ode_ends():
    data = toy_trajectories()
    assert data["states"].shape == (512, 8, 2) and data["x0"].shape == (512, 2)
    assert data["times"].tolist() == SM.timestep_grid(SCH, 16)[::2].tolist()
    for i, t in enumerate(data["times"]):  # from every kept state, the exact end point is the teacher's x_0
        end = exact_end(data["states"][:, i], t.expand(512), data["y"])
        assert float((end - data["x0"]).abs().max()) < 0.03, i
        assert float((end - data["x0"]).abs().mean()) < 0.01, i
    assert float(data["x0"][data["y"] == 1].std(0).min()) == pytest.approx(SD, abs=0.02)  # not collapsed


# --- the loop learns the exact map ----------------------------------------------------------------------


class AffineV(nn.Module):
    """v_hat = a[t] x + b[t, y]: the exact v of Gaussian data is of this form, so the loop can reach it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(1000))
        self.b = nn.Parameter(torch.zeros(1000, 2, 2))

    def forward(self, x, t, y):
        return self.a[t][:, None] * x + self.b[t, y]


def train_toy(steps=600, seed=0):
    data = toy_trajectories()
    student = D.VStudent(AffineV(), SCH)
    config = D.DistillConfig(batch_size=128, lr=0.05, warmup_steps=1, ema_decay=0.9)
    _, ema, losses = D.train_student(student, data, SCH.alpha_bars, config=config, steps=steps,
                                     generator=torch.Generator().manual_seed(seed))  # fmt: skip
    return data, student, ema, losses


def _worst(student, data):
    with torch.no_grad():
        return max(float((student.x0(data["states"][:, i], t.expand(512), data["y"]).double()
                          - exact_end(data["states"][:, i], t.expand(512), data["y"])).abs().max())
                   for i, t in enumerate(data["times"]))  # fmt: skip


def test_training_loop_learns_the_exact_end_point_map():
    data, student, ema, losses = train_toy()
    assert losses[-1] < 0.01 * losses[0]
    assert _worst(student, data) < 0.03
    assert _worst(ema, data) < 0.03
    # then one step of the fast sampler draws the Gaussian's samples: mean MU[y], spread SD
    y = torch.ones(4000, dtype=torch.long)
    x = SM.sample(student, (4000, 2), y, SCH, sampler="consistency", grid=D.student_grid(data["times"], 1),
                  generator=torch.Generator().manual_seed(5))  # fmt: skip
    torch.testing.assert_close(x.mean(0).double(), MU[1], atol=0.02, rtol=0)
    assert float(x.std(0).max()) == pytest.approx(SD, abs=0.02)


def test_a_wrong_target_is_caught(monkeypatch):
    """The loop builds its target with ddim_target: spoil it (the DDIM step's x_next instead of the solved x~ of a
    step that is not the last) and the learned map is no longer the exact one."""
    monkeypatch.setattr(D, "ddim_target", lambda x, xn, a, an: 0.5 * (x + xn))
    data, student, _, _ = train_toy(steps=300)
    assert _worst(student, data) > 0.2


def test_two_consistency_steps_keep_the_gaussians_spread():
    """With the exact end-point map, re-noising between jumps keeps the marginal (std SD); a deterministic DDIM
    step from the end point does not (here it widens the spread)."""
    exact = D.VStudent(lambda x, t, y: ((_ab(t, x).sqrt() * x - exact_end(x, t, y)) / (1 - _ab(t, x)).sqrt()).float(),
                       SCH)  # fmt: skip
    grid = D.student_grid(SM.timestep_grid(SCH, 16)[::2], 2)
    y = torch.zeros(4000, dtype=torch.long)
    spread = {s: float(SM.sample(exact, (4000, 2), y, SCH, sampler=s, grid=grid,
                                 generator=torch.Generator().manual_seed(0)).std(0).mean()) for s in ("consistency", "ddim")}  # fmt: skip
    assert spread["consistency"] == pytest.approx(SD, abs=0.01)
    assert spread["ddim"] > SD + 0.02


# --- files: teacher chunks, resume ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_teacher():
    from labkit.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4, patch=2)).eval().requires_grad_(False)
    meta = {"unet": net.config.to_dict() if hasattr(net.config, "to_dict") else vars(net.config),
            "schedule": "cosine", "T": 1000, "step": 0}  # fmt: skip
    return net, SCH, meta


def _run(tmp, steps, teacher):
    config = D.DistillConfig(trajectories=20, chunk=10, batch_size=4, checkpoint_every=2, teacher_steps=4)
    return D.run(tmp, minutes=None, steps=steps, config=config, teacher=teacher, log=lambda *a: None)


def test_run_resumes_to_the_same_weights(tmp_path, tiny_teacher):
    torch.set_num_threads(1)
    whole = D.load_checkpoint(_run(tmp_path / "a", 4, tiny_teacher))
    _run(tmp_path / "b", 2, tiny_teacher)
    assert sorted(p.name for p in (tmp_path / "b" / "teacher").iterdir()) == ["chunk_00000.pt", "chunk_00001.pt"]
    resumed = D.load_checkpoint(_run(tmp_path / "b", 4, tiny_teacher))
    assert whole["step"] == resumed["step"] == 4
    for k, v in whole["ema"].items():
        assert torch.equal(v, resumed["ema"][k]), k
    fast = D.export_fast(tmp_path / "b" / "last.pt", tmp_path / "fast.pt")
    state = D.load_checkpoint(fast)
    assert state["fast"]["grid"] == SM.timestep_grid(SCH, 4)[::2].tolist() and state["train"]["sampler"] == "consistency"
    assert all(v.dtype == torch.float16 for v in state["ema"].values() if v.is_floating_point())


def test_counted_counts_every_image_the_network_sees():
    calls = []
    model = SM.Counted(lambda x, t, y: calls.append(len(x)) or 0.1 * x)
    y = torch.zeros(3, dtype=torch.long)
    SM.sample(model, (3, 2), y, SCH, sampler="dpmpp_2m", steps=4, guidance=0.5, generator=torch.Generator())
    assert model.rows / 3 == 8 == sum(calls) / 3  # 4 steps, guided: a doubled batch each
    model = SM.Counted(lambda x, t, y: 0.1 * x)
    SM.sample(model, (3, 2), y, SCH, sampler="consistency", grid=torch.tensor([994, 382]), generator=torch.Generator())
    assert model.rows / 3 == 2 and model.calls == 2
    assert not math.isnan(model.rows)
