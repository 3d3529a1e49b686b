"""Interactive sliders for the notebooks, with core ipywidgets only.

Colab ships ipywidgets 7.x and only renders core widgets without extra setup, so these use nothing but
``ipywidgets.IntSlider`` / ``interactive`` (works on 7.6+ and 8.x). Every slider has a static picture
beside it in the notebooks (``labkit.plotting``), since widgets do not render in exported HTML, in
nbgrader feedback, or when the kernel is gone. Without ipywidgets these fall back to a static figure.
"""

from __future__ import annotations

import torch

from labkit import plotting


def _ipywidgets():
    try:
        import ipywidgets

        return ipywidgets
    except ImportError:
        return None


def noise_slider(
    x0: torch.Tensor, schedule, *, generator: torch.Generator | None = None, step: int = 10, size: float = 1.6
):
    """A slider over t showing x_t ~ q(x_t | x_0) for a few digits x0 [N, 1, H, W] (same noise for every t).

    Returns the widget (display it as the cell's last expression).
    """
    from labkit import diffusion

    x0 = x0.detach().float().cpu()
    where = generator.device if generator is not None else "cpu"  # a CUDA generator draws on the GPU
    noise = torch.randn(x0.shape, generator=generator, device=where).cpu()

    def picture(t: int):
        tt = torch.full((x0.shape[0],), int(t), dtype=torch.long)
        xt = diffusion.q_sample(x0, tt, noise, schedule)
        ab = float(schedule.alpha_bars[int(t)])
        title = f"t = {t}:  \u221a\u0101 = {ab**0.5:.3f} (signal),  \u221a(1-\u0101) = {(1 - ab) ** 0.5:.3f} (noise)"
        return plotting.image_grid(xt, ncols=x0.shape[0], title=title, size=size)

    return _slider(picture, schedule.T - 1, step, "t")


def _slider(picture, maximum: int, step: int, name: str):
    w = _ipywidgets()
    import matplotlib.pyplot as plt  # imported here: slow to import

    def draw(value):
        picture(value)
        plt.show()  # inside interactive's output area; closes the figure so it is not shown twice

    if w is None:
        print("ipywidgets is not installed: showing a static picture instead (pip install 'ipywidgets>=7.6').")
        return picture(0)
    slider = w.IntSlider(
        value=0, min=0, max=maximum, step=step, description=name, continuous_update=False, layout=w.Layout(width="60%")
    )
    return w.interactive(draw, **{"value": slider})
