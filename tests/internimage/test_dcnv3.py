"""DCNv3's sampling core: the fast implementation against the explicit double sum and the grid_sample
formula, forward and backward, and the module around it."""

from __future__ import annotations

import pytest
import torch

from alignsam.internimage import DCNv3, dcnv3_fast, dcnv3_reference
from alignsam.internimage.fast import sampling_plan
from tests.internimage.helpers import dcnv3_double_sum

CASES = [  # n, h, w, channels, group, offset_scale
    (2, 5, 7, 8, 1, 1.0),
    (1, 7, 4, 12, 3, 1.0),
    (1, 6, 5, 32, 2, 2.0),
    (1, 3, 9, 20, 5, 0.7),
]


def _inputs(n, h, w, c, g, *, ho=None, wo=None, spread=3.0, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = ho or h, wo or w
    value = torch.randn(n, h, w, c, generator=gen, dtype=dtype)
    # offsets of several pixels: many points land outside the map, some beyond the 2-pixel margin
    offset = (torch.randn(n, ho, wo, g * 18, generator=gen, dtype=dtype) * spread).to(dtype)
    logits = torch.randn(n, ho, wo, g, 9, generator=gen, dtype=dtype) * 2
    mask = logits.softmax(-1).view(n, ho, wo, g * 9)
    return value, offset, mask


def _outside_fraction(offset: torch.Tensor, h: int, w: int, s: float) -> float:
    n, ho, wo, _ = offset.shape
    o = offset.double().view(n, ho, wo, -1, 9, 2)
    steps = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    x = torch.arange(wo).view(1, 1, wo, 1, 1) + s * (steps.repeat_interleave(3) + o[..., 0])
    y = torch.arange(ho).view(1, ho, 1, 1, 1) + s * (steps.repeat(3) + o[..., 1])
    return float(((x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)).double().mean())


@pytest.mark.parametrize(("n", "h", "w", "c", "g", "s"), CASES)
def test_fast_equals_the_double_sum_in_float32(n, h, w, c, g, s) -> None:
    value, offset, mask = _inputs(n, h, w, c, g, spread=3.0 / s)
    assert 0.2 < _outside_fraction(offset, h, w, s) < 0.9  # the test does reach outside the map
    expected = dcnv3_double_sum(value, offset, mask, g, s)
    out = dcnv3_fast(value, offset, mask, group=g, offset_scale=s)
    assert out.dtype == torch.float32 and out.shape == (n, h, w, c)
    assert (out.double() - expected).abs().max() < 1e-5
    assert expected.abs().max() > 0.5  # not a comparison of zeros


@pytest.mark.parametrize(("stride", "pad", "dilation"), [(2, 1, 1), (1, 2, 2), (2, 0, 1), (1, 0, 1)])
def test_fast_follows_stride_pad_and_dilation_in_float64(stride, pad, dilation) -> None:
    h, w, g = 7, 6, 2
    ho = (h + 2 * pad - (dilation * 2 + 1)) // stride + 1
    wo = (w + 2 * pad - (dilation * 2 + 1)) // stride + 1
    value, offset, mask = _inputs(1, h, w, 8, g, ho=ho, wo=wo, dtype=torch.float64)
    kw = {"group": g, "stride": stride, "pad": pad, "dilation": dilation, "offset_scale": 1.5}
    out = dcnv3_fast(value, offset, mask, **kw)
    expected = dcnv3_double_sum(value, offset, mask, g, 1.5, stride=stride, pad=pad, dilation=dilation)
    assert (out - expected).abs().max() < 1e-12
    # and the official formula agrees to its float32 grid (it builds its grid in float32 whatever the input)
    assert (dcnv3_reference(value, offset, mask, **kw) - expected).abs().max() < 1e-5


@pytest.mark.parametrize(("n", "h", "w", "c", "g", "s"), CASES[:3])
def test_fast_gradients_equal_the_double_sum(n, h, w, c, g, s) -> None:
    value, offset, mask = _inputs(n, h, w, c, g)
    grad_out = torch.randn(n, h, w, c, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (
        lambda v, o, m: dcnv3_fast(v, o, m, group=g, offset_scale=s),
        lambda v, o, m: dcnv3_double_sum(v, o, m, g, s),
    ):
        leaves = [t.detach().clone().requires_grad_() for t in (value, offset, mask)]
        (fn(*leaves).double() * grad_out.double()).sum().backward()
        grads.append([t.grad.double() for t in leaves])
    for name, ours, ref in zip(("value", "offset", "mask"), *grads, strict=True):
        assert ref.abs().max() > 0.1, name
        assert (ours - ref).abs().max() < 1e-5 * max(1.0, ref.abs().max().item()), name


def test_fast_gradcheck_in_float64() -> None:
    value, offset, mask = _inputs(1, 3, 4, 4, 2, dtype=torch.float64, spread=2.0)
    # keep points away from integer coordinates, where the bilinear weights have kinks
    offset = offset.round() + 0.3
    leaves = [t.detach().clone().requires_grad_() for t in (value, offset, mask)]
    core = lambda v, o, m: dcnv3_fast(v, o, m, group=2, offset_scale=1.0)  # noqa: E731
    assert torch.autograd.gradcheck(core, leaves, fast_mode=True)


def test_fast_equals_the_grid_sample_formula_forward_and_backward() -> None:
    value, offset, mask = _inputs(2, 9, 11, 64, 4, spread=4.0)
    outs, grads = [], []
    for core in (dcnv3_fast, dcnv3_reference):
        leaves = [t.detach().clone().requires_grad_() for t in (value, offset, mask)]
        out = core(*leaves, group=4, offset_scale=1.0)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([t.grad for t in leaves])
    # the formula normalises positions by the padded size and back, a float32 rounding of ~W * 6e-8 pixel:
    # 2e-6 here, 2.4e-5 on a 56 x 56 map (where we stay within 1e-5 of the exact double sum)
    assert (outs[0] - outs[1]).abs().max() < 1e-5
    for ours, ref in zip(*grads, strict=True):
        assert (ours - ref).abs().max() < 1e-5 * max(1.0, ref.abs().max().item())


def test_bfloat16_runs_and_stays_close() -> None:
    value, offset, mask = _inputs(2, 8, 8, 32, 2)
    exact = dcnv3_fast(value, offset, mask, group=2)
    out = dcnv3_fast(value.bfloat16(), offset.bfloat16(), mask.bfloat16(), group=2)
    assert out.dtype == torch.bfloat16
    assert (out.float() - exact).abs().max() < 0.1 * exact.abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = dcnv3_fast(value.bfloat16(), offset, mask, group=2)
    assert mixed.dtype == torch.bfloat16 and torch.isfinite(mixed.float()).all()
    leaves = [t.bfloat16().requires_grad_() for t in (value, offset, mask)]
    dcnv3_fast(*leaves, group=2).float().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad.float()).all() for t in leaves)


def test_sampling_plan_reads_the_four_neighbours_of_each_point() -> None:
    # one point exactly at a known position: offsets that move the centre point to (x, y) = (1.25, 2.5)
    n, h, w, g = 1, 4, 4, 1
    offset = torch.zeros(n, 1, 1, g * 18)
    offset[..., 4 * 2] = 1.25  # point 4 is the centre (i = j = 1); output pixel (0, 0)
    offset[..., 4 * 2 + 1] = 2.5
    mask = torch.zeros(n, 1, 1, 9)
    mask[..., 4] = 1.0
    index, weight = sampling_plan(offset, mask, height=h, width=w, group=g, stride=1, pad=0, dilation=1)
    # pad 0, kernel 3: output (0, 0) has its centre at (1, 1) -> sampled at (2.25, 3.5)
    wp = w + 4
    rows = index.view(4, 9)[:, 4]
    assert rows.tolist() == [(3 + 2) * wp + 2 + 2, (3 + 2) * wp + 3 + 2, (4 + 2) * wp + 2 + 2, (4 + 2) * wp + 3 + 2]
    assert weight.view(4, 9)[:, 4].tolist() == pytest.approx([0.75 * 0.5, 0.25 * 0.5, 0.75 * 0.5, 0.25 * 0.5])
    assert weight.view(4, 9)[:, [0, 1, 2, 3, 5, 6, 7, 8]].abs().max() == 0


def test_the_traced_path_equals_the_eager_path() -> None:
    value, offset, mask = _inputs(1, 6, 5, 16, 2, spread=4.0)
    traced = torch.jit.trace(lambda v, o, m: dcnv3_fast(v, o, m, group=2), (value, offset, mask), check_trace=False)
    assert torch.allclose(traced(value, offset, mask), dcnv3_fast(value, offset, mask, group=2), atol=1e-6)


def test_module_uses_a_pluggable_core_and_starts_on_the_plain_grid() -> None:
    torch.manual_seed(0)
    module = DCNv3(32, group=2).eval()
    x = torch.randn(2, 6, 7, 32)
    assert module.offset.weight.abs().max() == 0 and module.mask.bias.abs().max() == 0
    with torch.no_grad():
        fast = module(x)
        module.core = dcnv3_reference
        reference = module(x)
    assert torch.allclose(fast, reference, atol=1e-5)
    # zero offsets and uniform weights: the core is a 3x3 box filter (zero padded) of input_proj(x)
    value = module.input_proj(x).detach()
    box = torch.nn.functional.avg_pool2d(value.permute(0, 3, 1, 2), 3, 1, 1, count_include_pad=True)
    with torch.no_grad():
        core_out = dcnv3_fast(value, torch.zeros(2, 6, 7, 36), torch.full((2, 6, 7, 18), 1 / 9), group=2)
    assert torch.allclose(core_out, box.permute(0, 2, 3, 1), atol=1e-6)


def test_mismatched_inputs_are_named() -> None:
    value, offset, mask = _inputs(1, 4, 4, 8, 2)
    with pytest.raises(ValueError, match="needs 36 offsets and 18 weights a pixel; got 36 and 9"):
        dcnv3_fast(value, offset, mask[..., :9], group=2)
    with pytest.raises(ValueError, match="not divisible by 3 groups"):
        dcnv3_fast(value, offset, mask, group=3)
    with pytest.raises(ValueError, match="disagree in batch or output size"):
        dcnv3_fast(value, offset[:, :3], mask, group=2)
    # non-contiguous offsets and weights are read as they are
    t_offset = offset.transpose(1, 2).contiguous().transpose(1, 2)
    assert torch.equal(dcnv3_fast(value, t_offset, mask, group=2), dcnv3_fast(value, offset, mask, group=2))
