"""Flow matching: learn a velocity field that carries noise to data along straight lines, then follow it.

The convention (the "rectified flow" form, as in Esser et al. 2024 / Stable Diffusion 3): continuous time
t in [0, 1], data at t = 0 and noise at t = 1, like diffusion (noise at large t), joined by a straight line

    x_t = (1 - t) x_0 + t eps,        eps ~ N(0, I)                                  (linear interpolant)

Its time derivative is the same at every t, the *velocity*

    u_t = d x_t / dt = eps - x_0                                                   (the regression target)

Lipman et al. 2023 ("Flow Matching for Generative Modeling", eq. 23 with sigma_min = 0) and Liu et al. 2023
("Flow Straight and Fast", eq. 1) write the same line with time reversed, t' = 1 - t (noise at t' = 0):
x_t' = t' x_1 + (1 - t') x_0 and target x_1 - x_0 (data minus noise). Here t = 1 - t', so the velocity
changes sign: eps - x_0. The conditional flow-matching loss (Lipman et al. 2023, eq. 9 / Liu et al. 2023,
eq. 1) regresses a network v_theta(x_t, t, y) on that target:

    L = E_{t ~ U[0, 1], x_0, eps} || v_theta(x_t, t, y) - (eps - x_0) ||^2

Its minimiser is the marginal velocity v*(x, t) = E[eps - x_0 | x_t = x], and the ODE dx/dt = v*(x, t),
integrated from t = 1 (noise) down to t = 0, carries N(0, I) to the data (Lipman et al. 2023, Theorem 1).
Sampling is an ODE solve over a descending time grid 1 = t_0 > t_1 > ... > t_S = 0:

    euler_step / euler_loop    x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, t_k)           1 evaluation per step
    heun_loop                  Euler predictor, then the trapezoid rule (Heun's method; Karras et al. 2022,
                               Algorithm 1, without churn)                               2 evaluations per step

The grid need not be uniform: ``shifted_time_grid`` moves the steps towards the noise or the data (Esser et al.
2024, eq. 23). **Reflow** (Liu et al. 2023, Algorithm 1) straightens a trained flow: ``reflow_pairs`` couples each
noise with the sample the flow takes it to, ``reflow_train`` fits a new flow on those pairs with the same loss, and
``straightness`` measures how far a flow's paths are from straight lines (0: one Euler step is exact).

**The network's time input.** A model here is ``model(x, t, y)`` with *continuous* t in [0, 1] (float [B]),
the same contract as the diffusion models with a float t. labkit's U-Net embeds its time input with
sinusoids whose frequencies were chosen for integer steps 0..999 (``embeddings.sinusoidal_embedding``), so
``TimeScaled(net)`` feeds the network t * ``TIME_SCALE`` (t * 999): t = 1 is "step 999", t = 0 "step 0". The
U-Net itself is unchanged; only what its t means changes (a velocity, not a noise, comes out).

**Guidance.** At fixed (x_t, t) the velocity is an affine function of the noise prediction,
v = (eps_hat - x_t) / (1 - t), so classifier-free guidance (Ho & Salimans 2022, eq. 6) combines velocities
with the same formula as noises: ``cfg_velocity``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labkit.diffusion import Model
from labkit.errors import LabkitValueError
from labkit.guidance import cfg_eps, check_weight

TIME_SCALE = 999.0  # the network sees t * 999: the range of the integer steps labkit's U-Net was built for
SOLVERS = ("euler", "heun")


class TimeScaled(nn.Module):
    """A velocity model on continuous t: ``TimeScaled(net)(x, t, y) = net(x, t * TIME_SCALE, y)``.

    x: [B, C, H, W]; t: float [B] in [0, 1]; y: int64 [B] -> v_hat [B, C, H, W]. ``net`` is any
    ``model(x, t, y)`` network (labkit's U-Net, or yours from lab 03); its weights are this module's."""

    def __init__(self, net: nn.Module, scale: float = TIME_SCALE):
        super().__init__()
        self.net, self.scale = net, float(scale)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, t.to(x.dtype) * self.scale, y)


def _per_image(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] (or a 0-d tensor) -> [B, 1, 1, 1] in x's dtype on x's device."""
    return torch.as_tensor(v).to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The linear interpolant x_t = (1 - t) x_0 + t eps.   x0, noise: [B, C, H, W]; t: [B] in [0, 1]"""
    tb = _per_image(t, x0)  # [B, 1, 1, 1]
    return (1 - tb) * x0 + tb * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """u = d x_t / dt = eps - x_0, the same at every t (Liu et al. 2023, eq. 1, with t -> 1 - t)."""
    return noise - x0


def flow_matching_loss(
    model: Model, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """The conditional flow-matching loss for given t and noise (Lipman et al. 2023, eq. 9):   (lab 10)

        L = mean over batch and pixels of (model((1 - t) x0 + t noise, t, y) - (noise - x0))^2

    x0, noise: [B, C, H, W]; y: int64 [B]; t: float [B] in [0, 1] -> a 0-d tensor that can be
    back-propagated, in float32 at least.
    """
    x_t = interpolate(x0, noise, t)  # [B, C, H, W]
    v_hat = model(x_t, t, y)
    dtype = torch.promote_types(v_hat.dtype, torch.float32)
    return F.mse_loss(v_hat.to(dtype), velocity_target(x0, noise).to(dtype))


def flow_loss(
    model: Model, x0: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``flow_matching_loss`` with t ~ U[0, 1] and eps ~ N(0, I) drawn from ``generator`` (on x0's device)."""
    t = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)  # [B]
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return flow_matching_loss(model, x0, y, t, noise)


def time_grid(steps: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The uniform descending grid [steps + 1]: 1, 1 - 1/steps, ..., 0 (steps Euler steps, noise to data)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise LabkitValueError(f"steps must be a positive integer, got {steps!r}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=dtype)


def shifted_time_grid(steps: int, shift: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The descending grid [steps + 1] with its spacing shifted (Esser et al. 2024, "Scaling Rectified Flow   (lab 10)
    Transformers", eq. 23, the timestep shift for resolution):

        t = shift u / (1 + (shift - 1) u),        u = 1, 1 - 1/steps, ..., 0   (``time_grid(steps)``)

    The ends stay 1 and 0; shift > 1 crowds the steps towards t = 1 (the noise), shift < 1 towards t = 0 (the
    data), shift = 1 is the uniform grid. Shifts s and 1/s are inverse maps of each other."""
    if not shift > 0:
        raise LabkitValueError(f"shift must be > 0, got {shift!r}")
    u = time_grid(steps, dtype)  # [steps + 1], uniform from 1 to 0
    return shift * u / (1 + (shift - 1) * u)


def euler_step(x_t: torch.Tensor, v_hat: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """One Euler step of dx/dt = v from t to t_next < t (a step *down* in time, towards the data):   (lab 10)

        x_{t_next} = x_t + (t_next - t) v_hat

    x_t, v_hat: [B, C, H, W]; t, t_next: [B] -> [B, C, H, W] in x_t's dtype. t_next - t < 0: the step
    moves against the velocity eps - x_0, i.e. away from the noise and towards x_0.
    """
    dt = _per_image(t_next, x_t) - _per_image(t, x_t)  # [B, 1, 1, 1], negative
    return (x_t + dt * v_hat).to(x_t.dtype)


@torch.no_grad()
def euler_loop(model: Model, x_1: torch.Tensor, y: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Euler's method down a descending grid times = [t_0 = 1, t_1, ..., t_S = 0]:   (lab 10)

        x = x_1
        for k = 0, ..., S-1:
            x = euler_step(x, model(x, t_k, y), t_k, t_{k+1})
        return x

    x_1: [B, C, H, W] (noise); y: int64 [B]; times: [S + 1] descending -> x_0 [B, C, H, W]. S evaluations.
    """
    x, B = x_1, x_1.shape[0]
    for k in range(len(times) - 1):
        t = times[k].to(x.device, x.dtype).expand(B)  # [B]
        t_next = times[k + 1].to(x.device, x.dtype).expand(B)
        x = euler_step(x, model(x, t, y), t, t_next)
    return x


@torch.no_grad()
def heun_loop(model: Model, x_1: torch.Tensor, y: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Heun's method (explicit trapezoid rule) down times = [1, ..., 0] (Karras et al. 2022, Algorithm 1,   (lab 10)
    no churn), with the correction on every step, the last included (the velocity at t = 0 is finite):

        for k = 0, ..., S-1:
            d      = model(x, t_k, y)                               slope at the start
            x_pred = x + (t_{k+1} - t_k) d                          an Euler step (euler_step)
            d_next = model(x_pred, t_{k+1}, y)                      slope at the end, where Euler landed
            x      = x + (t_{k+1} - t_k) (d + d_next) / 2           the step with the average slope

    x_1: [B, C, H, W]; y: int64 [B]; times: [S + 1] descending -> x_0 [B, C, H, W]. 2 S evaluations.
    Second order: the error per unit time shrinks like h^2 instead of Euler's h.
    """
    x, B = x_1, x_1.shape[0]
    for k in range(len(times) - 1):
        t = times[k].to(x.device, x.dtype).expand(B)  # [B]
        t_next = times[k + 1].to(x.device, x.dtype).expand(B)
        d = model(x, t, y)
        x_pred = euler_step(x, d, t, t_next)
        d_next = model(x_pred, t_next, y)
        x = euler_step(x, (d + d_next) / 2, t, t_next)
    return x


def cfg_velocity(
    model: Model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, w: float, null_class: int
) -> torch.Tensor:
    """The guided velocity (Ho & Salimans 2022, eq. 6, on velocities):   (lab 10)

        v_guided = (1 + w) model(x, t, y) - w model(x, t, null),   null = null_class for every image

    The same combination as for noises: at fixed (x_t, t), v = (eps_hat - x_t) / (1 - t) is affine in the
    noise prediction with coefficients that sum to 1 over the two terms, so guiding v equals guiding eps.
    x: [B, C, H, W]; t: float [B]; y: int64 [B] -> [B, C, H, W]; one forward pass on a doubled batch.
    """
    return cfg_eps(model, x, t, y, w, null_class)


class GuidedVelocity:
    """model(x, t, y) -> ``cfg_velocity`` with weight w; w = 0 is the model itself."""

    def __init__(self, model: Model, w: float, null_class: int):
        self.model, self.w, self.null_class = model, check_weight(w), int(null_class)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.w == 0:
            return self.model(x, t, y)
        return cfg_velocity(self.model, x, t, y, self.w, self.null_class)


def evaluations(solver: str, steps: int, guidance: float = 0.0) -> int:
    """Network evaluations per image of ``sample``: steps (Euler) or 2 steps (Heun), doubled with guidance
    (the conditional and unconditional predictions: a batch twice as large)."""
    if solver not in SOLVERS:
        raise LabkitValueError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    per_step = 1 if solver == "euler" else 2
    return per_step * steps * (2 if check_weight(guidance) > 0 else 1)


@torch.no_grad()
def sample(
    model: Model,
    shape: tuple,
    y: torch.Tensor,
    *,
    steps: int,
    solver: str = "euler",
    guidance: float = 0.0,
    null_class: int = 10,
    generator: torch.Generator | None = None,
    x_1: torch.Tensor | None = None,
) -> torch.Tensor:
    """Digits (or points) from a velocity model: x_1 ~ N(0, I) on y's device (from ``generator``), then
    ``euler_loop`` or ``heun_loop`` over ``time_grid(steps)``, guided with weight ``guidance``.

    shape: (B, ...); y: int64 [B] -> x_0 [B, ...] in float32 (x_1's dtype when given)."""
    if solver not in SOLVERS:
        raise LabkitValueError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    if x_1 is None:
        x_1 = torch.randn(tuple(shape), generator=generator, device=y.device)
    guided = GuidedVelocity(model, guidance, null_class)
    loop = euler_loop if solver == "euler" else heun_loop
    return loop(guided, x_1, y, time_grid(steps).to(x_1.device))


# --- reflow: straightening the paths (Liu et al. 2023, "Flow Straight and Fast", section 2.2 and Algorithm 1) ---
#
# A trained flow maps each noise x_1 to one sample x_0 = ODE[v](x_1): a deterministic *coupling* (x_0, x_1).
# Training a new flow with the same loss on those pairs instead of on independent (data, noise) pairs is
# "reflow": the straight lines between coupled pairs cross far less than between independent ones, so the new
# flow's paths are straighter and a few Euler steps (even one) follow them well.


@torch.no_grad()
def reflow_pairs(
    model: Model,
    y: torch.Tensor,
    times: torch.Tensor,
    shape: tuple,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The coupling of a trained flow (Liu et al. 2023, Algorithm 1, "reflow": (Z_0, Z_1) = (X_0, ODE[v](X_0)),   (lab 10)
    in this lab's time direction):

        x_1 ~ N(0, I)                                  all N noises at once, [N, *shape], from ``generator``
        x_0 = euler_loop(model, x_1, y, times)         batch_size images at a time
        return (x_0, x_1)                              pair i: the noise x_1[i] and where the flow takes it

    y: int64 [N] (one label per pair); times: [S + 1] descending from 1 to 0; shape: one image, e.g. (1, 28, 28)
    -> (x_0 [N, *shape], x_1 [N, *shape]) on y's device. S evaluations per pair.
    """
    x_1 = torch.randn((len(y), *shape), generator=generator, device=y.device)  # [N, *shape]
    ends = [
        euler_loop(model, x_1[i : i + batch_size], y[i : i + batch_size], times) for i in range(0, len(y), batch_size)
    ]
    return torch.cat(ends), x_1


def reflow_train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x_0: torch.Tensor,
    x_1: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> list[float]:
    """``steps`` steps of flow matching on *coupled* pairs (Liu et al. 2023, Algorithm 1, the training step with   (lab 10)
    the reflowed coupling): per step,

        idx ~ U{0, ..., N-1}^B          torch.randint(0, N, (B,)): the same indices for x_0, x_1 and y (pairs!)
        t   ~ U[0, 1]^B                 torch.rand(B): one time per image
        gradient step on flow_matching_loss(model, x_0[idx], y[idx], t, x_1[idx])

    The straight line from x_0[i] to *its own* noise x_1[i] is the target; independent noise would be ordinary
    flow matching again. x_0, x_1: [N, C, H, W]; y: int64 [N] -> the list of the ``steps`` losses (floats).
    Every random number comes from ``generator``, indices then t, so the same generator state gives the same weights.
    """
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(x_0), (batch_size,), generator=generator, device=x_0.device)  # [B]
        t = torch.rand(batch_size, generator=generator, device=x_0.device)  # [B]
        optimizer.zero_grad()
        loss = flow_matching_loss(model, x_0[idx], y[idx], t.to(x_0.dtype), x_1[idx])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def straightness(model: Model, x_1: torch.Tensor, y: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """How far a flow's paths are from straight lines (Liu et al. 2023, the straightness S(Z), section 2.2):   (lab 10)

        S = integral over t in [0, 1] of E || (x_1 - x_0) - v(x_t, t) ||^2 dt

    along the Euler path x_1 -> x_0 of ``euler_loop`` over ``times``: the velocity v(x_{t_k}, t_k) of every step
    against the chord x_1 - x_0 (the velocity of the straight line from the end to the start: in this lab's time
    direction, dx/dt integrates to x_1 - x_0), the integral a sum with weights t_k - t_{k+1}, the norm squared
    summed over the pixels, E the mean over the images. 0 exactly when every path is a straight line walked at
    constant speed. (Along an Euler path the chord is the weighted mean of the velocities, so S is their
    weighted variance: with one step, S = 0 always; measure with many.)

    x_1: [B, C, H, W]; y: int64 [B]; times: [S + 1] descending -> a 0-d tensor in x_1's dtype.
    """
    x, B = x_1, x_1.shape[0]
    velocities = []
    for k in range(len(times) - 1):
        t = times[k].to(x.device, x.dtype).expand(B)  # [B]
        t_next = times[k + 1].to(x.device, x.dtype).expand(B)
        v = model(x, t, y)
        velocities.append(v)
        x = euler_step(x, v, t, t_next)
    chord = x_1 - x  # [B, C, H, W]: noise minus end point
    widths = (times[:-1] - times[1:]).to(x.device, x.dtype)  # [S]: t_k - t_{k+1} > 0
    per_image = sum(w * ((chord - v) ** 2).flatten(1).sum(1) for w, v in zip(widths, velocities))  # [B]
    return per_image.mean()
