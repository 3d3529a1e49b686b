"""Time and class embeddings."""

import math

import numpy as np
import pytest
import torch

from labkit.embeddings import ClassEmbedding, TimeEmbedding, sinusoidal_embedding



def _vaswani(t_values, dim, max_period=10000.0):
    """PE(t, 2i) = sin(t / max_period^(2i/dim)), PE(t, 2i+1) = cos(...) (Vaswani et al. 2017, section 3.5),
    computed element by element in float64; an odd dim's last column is zero."""
    out = np.zeros((len(t_values), dim))
    for row, t in enumerate(t_values):
        for i in range(dim // 2):
            angle = t / max_period ** (2 * i / dim)
            out[row, 2 * i] = math.sin(angle)
            out[row, 2 * i + 1] = math.cos(angle)
    return out


@pytest.mark.parametrize("dim", [2, 8, 32, 64, 7, 33])
def test_sinusoidal_matches_vaswani_formula(dim):
    t_values = [0, 1, 2, 17, 250, 999]
    emb = sinusoidal_embedding(torch.tensor(t_values), dim)
    assert emb.shape == (len(t_values), dim)
    # float32 angles t * freq carry a relative error ~6e-8, i.e. up to ~6e-5 absolute at t = 999
    np.testing.assert_allclose(emb.numpy(), _vaswani(t_values, dim), atol=2e-4, rtol=0)


def test_sinusoidal_even_sin_odd_cos_at_t0():
    emb = sinusoidal_embedding(torch.tensor([0]), 16)
    assert torch.equal(emb[0, 0::2], torch.zeros(8)), "sin(0) = 0 at even positions"
    assert torch.equal(emb[0, 1::2], torch.ones(8)), "cos(0) = 1 at odd positions"


def test_sinusoidal_odd_dim_has_zero_last_column():
    emb = sinusoidal_embedding(torch.arange(1, 50), 9)
    assert emb.shape == (49, 9)
    assert torch.equal(emb[:, -1], torch.zeros(49))
    assert float(emb[:, :8].abs().sum()) > 0


def test_sinusoidal_max_period_changes_frequencies():
    t = torch.tensor([5, 600])
    a = sinusoidal_embedding(t, 16, max_period=100.0)
    np.testing.assert_allclose(a.numpy(), _vaswani([5, 600], 16, max_period=100.0), atol=2e-4, rtol=0)
    assert not torch.allclose(a, sinusoidal_embedding(t, 16))


def test_sinusoidal_distinct_times_give_distinct_rows():
    emb = sinusoidal_embedding(torch.arange(1000), 64).double()
    dist = torch.cdist(emb, emb)
    dist.fill_diagonal_(float("inf"))
    assert float(dist.min()) > 1e-2
    # and nearby steps are nearer than far ones (smooth in t)
    assert float((emb[500] - emb[501]).norm()) < float((emb[500] - emb[900]).norm())


def test_sinusoidal_dtype_and_device():
    inputs = (
        torch.tensor([1, 2, 3]),
        torch.tensor([1.0, 2.5, 3.0], dtype=torch.float64),
        torch.tensor([4], dtype=torch.int32),
    )
    for t in inputs:
        out = sinusoidal_embedding(t, 10)
        assert out.dtype == torch.float32 and out.device == t.device
    # the output lives on t's device, whatever it is (meta: shapes only, no data)
    meta = sinusoidal_embedding(torch.zeros(3, device="meta", dtype=torch.long), 12)
    assert meta.device.type == "meta" and meta.shape == (3, 12)
    # fractional times are embedded as they are (not rounded)
    assert not torch.equal(sinusoidal_embedding(torch.tensor([2.5]), 8), sinusoidal_embedding(torch.tensor([2.0]), 8))


def test_sinusoidal_bad_dim():
    with pytest.raises(ValueError):
        sinusoidal_embedding(torch.tensor([1]), 0)


def test_time_embedding_shape_and_uses_sinusoid():
    torch.manual_seed(0)
    te = TimeEmbedding(16, 64)
    t = torch.tensor([0, 10, 999])
    out = te(t)
    assert out.shape == (3, 64)
    expected = te.mlp(sinusoidal_embedding(t, 16))
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out[0], out[1])


def test_class_embedding_rows_and_null_class():
    ce = ClassEmbedding(10, 24)
    assert ce.table.num_embeddings == 11, "num_classes + 1 rows: the last is the 'no class' vector"
    assert ce.null_class == 10
    y = torch.tensor([0, 3, 9, ce.null_class])
    out = ce(y)
    assert out.shape == (4, 24)
    torch.testing.assert_close(out, ce.table.weight[y])
    assert not torch.allclose(out[3], out[2]), "the null class has its own vector"
    with pytest.raises(IndexError):
        ce(torch.tensor([11]))
    assert ClassEmbedding(3, 4).null_class == 3
