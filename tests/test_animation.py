"""Pictures of the 2D toy and the animations (labkit.plotting): they draw, the animation decodes with the
frame count asked for, stays small, and survives into the feedback HTML (labkit.course.inert) as claimed:
an image/png output (the animated PNG) is kept whole, a GIF as image/gif or as a text/html <img> is not.
"""

import base64
import io

import nbformat
import pytest
import torch
from PIL import Image
from traitlets.config import Config

from labkit import plotting, samplers, toy2d
from labkit.schedules import make_schedule

MIX = toy2d.three_blobs()
COSINE = make_schedule("cosine", 1000)


@pytest.fixture(scope="module")
def run():
    """A recorded DDIM run of the exact toy model: 30 points, 12 steps."""
    n, traj = 30, samplers.Trajectory()
    x = samplers.sample(toy2d.exact_model(MIX, COSINE), (n, 2), torch.full((n,), MIX.K), COSINE, sampler="ddim",
                        steps=12, null_class=MIX.K, generator=torch.Generator().manual_seed(0), callback=traj)
    return traj, x


def test_toy_panels_and_trajectories_draw(run):
    import matplotlib.pyplot as plt

    traj, x = run
    fig = plotting.toy_panels(MIX, COSINE, [0, 500, 999], n=100, generator=torch.Generator().manual_seed(1))
    assert len(fig.axes) == 3 and all(ax.collections for ax in fig.axes)  # points and arrows in each panel
    fig2 = plotting.toy_trajectories(MIX, torch.cat([traj.x_t, x[None]]))
    assert len(fig2.axes[0].lines) == 30  # one path per point
    plt.close("all")


def test_toy_animation_decodes_with_one_frame_per_step_and_closes_its_figures(run):
    import matplotlib.pyplot as plt

    plt.close("all")
    traj, _ = run
    anim = plotting.toy_animation(MIX, traj, COSINE, frames=8)
    assert plt.get_fignums() == []  # frames are not also shown at the end of the cell
    for data in (anim.png(), anim.gif()):
        im = Image.open(io.BytesIO(data))
        assert im.is_animated and im.n_frames == 8 == anim.n_frames
        assert len(data) < 1_000_000
    # every frame of the APNG is the frame that went in (one shared palette, no dithering)
    im = Image.open(io.BytesIO(anim.png()))
    for i in (0, 4, 7):
        im.seek(i)
        assert im.convert("RGB").tobytes() == anim.frames[i].convert("RGB").tobytes()


def test_denoising_animation_and_its_static_strip():
    S, B = 10, 3
    x_t = torch.rand(S, B, 1, 28, 28) * 2 - 1
    x0 = torch.rand(S, B, 1, 28, 28) * 2 - 1
    ts = list(range(900, -1, -100))
    anim = plotting.denoising_animation(x_t, x0, ts, frames=5)
    assert anim.n_frames == 5 and Image.open(io.BytesIO(anim.png())).n_frames == 5
    strip = plotting.denoising_strip(x_t, x0, ts, columns=4)
    assert strip.get_axes()  # the fallback: one picture, x_t over x0_hat at 4 steps
    import matplotlib.pyplot as plt

    plt.close("all")


def _feedback_like_page(outputs) -> str:
    """A one-cell notebook with these outputs, rendered as labkit renders a student's notebook for people."""
    from nbconvert import HTMLExporter

    from labkit.course.nbgrader_setup import configure_nbgrader

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("anim")
    cell.outputs = [nbformat.v4.new_output("display_data", data=d) for d in outputs]
    nb.cells = [cell]
    html, _ = HTMLExporter(config=configure_nbgrader(Config())).from_notebook_node(nb)
    return html


def test_the_animation_survives_into_the_feedback_html_and_a_gif_would_not(run):
    from IPython.core.formatters import DisplayFormatter

    traj, _ = run
    anim = plotting.toy_animation(MIX, traj, COSINE, frames=4)
    bundle, _ = DisplayFormatter().format(anim)
    assert set(bundle) == {"image/png", "text/plain"}  # no text/html: the sanitizer would escape it
    bundle["image/png"] = base64.b64encode(bundle["image/png"]).decode()  # as the kernel sends it
    gif = base64.b64encode(anim.gif()).decode()
    page = _feedback_like_page([bundle, {"image/gif": gif, "text/plain": "gif"},
                                {"text/html": f'<img src="data:image/gif;base64,{gif}">', "text/plain": "html"}])
    kept = bundle["image/png"]
    assert f"data:image/png;base64,{kept}" in page  # the animated PNG, whole
    assert Image.open(io.BytesIO(base64.b64decode(kept))).n_frames == 4
    assert gif not in page  # neither GIF route: image/gif is dropped, the <img>'s data: address is removed
