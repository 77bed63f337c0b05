"""ROI pooling against a slow reference of torchvision's roi_pool, and the box-to-map geometry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mlt.errors import InputError
from mlt.models import create_model
from mlt.models.roi_pool import MapGeometry, roi_pool, window_rois


def c_round(x: float) -> int:
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def reference_roi_pool(fmap, rois, g, spatial_scale, sampling):
    """torchvision's CPU roi_pool kernel, loop for loop (plus the mean over the same bins)."""
    n, c, h, w = fmap.shape
    out = torch.zeros(len(rois), c, g, g, dtype=torch.float64)
    for k, (b, *box) in enumerate(rois.tolist()):
        x0, y0, x1, y1 = (c_round(v * spatial_scale) for v in box)
        roi_w, roi_h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        bin_h, bin_w = roi_h / g, roi_w / g
        for ph in range(g):
            for pw in range(g):
                hs = min(max(math.floor(ph * bin_h) + y0, 0), h)
                he = min(max(math.ceil((ph + 1) * bin_h) + y0, 0), h)
                ws = min(max(math.floor(pw * bin_w) + x0, 0), w)
                we = min(max(math.ceil((pw + 1) * bin_w) + x0, 0), w)
                if he <= hs or we <= ws:
                    continue
                cells = fmap[int(b), :, hs:he, ws:we].double().reshape(c, -1)
                out[k, :, ph, pw] = cells.amax(1) if sampling == "max" else cells.mean(1)
    return out


def random_rois(gen, k, n, extent):
    xy = torch.rand(k, 2, 2, generator=gen) * (extent * 1.4) - extent * 0.2
    lo, hi = xy.min(dim=1).values, xy.max(dim=1).values
    index = torch.randint(0, n, (k, 1), generator=gen).double()
    return torch.cat([index, lo.double(), hi.double()], dim=1)


@pytest.mark.parametrize("sampling", ["max", "avg"])
@pytest.mark.parametrize(
    "shape,g,scale",
    [
        ((2, 3, 7, 9), 2, 1.0),
        ((1, 4, 13, 13), 6, 1 / 16),
        ((3, 2, 5, 11), 3, 0.5),
        ((2, 5, 16, 8), 4, 0.25),
        ((1, 1, 1, 1), 2, 1.0),
    ],
)
def test_matches_reference_on_random_maps(shape, g, scale, sampling):
    gen = torch.Generator().manual_seed(hash((shape, g)) % 2**31)
    fmap = torch.randn(*shape, generator=gen)
    n, _, h, w = shape
    rois = random_rois(gen, 40, n, max(h, w) / scale)
    got = roi_pool(fmap, rois, g, spatial_scale=scale, sampling=sampling)
    expected = reference_roi_pool(fmap, rois, g, scale, sampling)
    assert got.shape == (40, shape[1], g, g)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_hand_worked_max_and_avg():
    fmap = torch.arange(16.0).reshape(1, 1, 4, 4)  # row r, column c holds 4r + c
    whole = torch.tensor([[0, 0, 0, 3, 3]], dtype=torch.float64)
    assert roi_pool(fmap, whole, 2).flatten().tolist() == [5, 7, 13, 15]
    assert roi_pool(fmap, whole, 2, sampling="avg").flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    # x0=1, x1=2 (inclusive): width 2 in one bin of 1 -> max over columns 1..2 of rows 0..3.
    assert roi_pool(fmap, torch.tensor([[0, 1, 0, 2, 3]]), 1).item() == 14
    # scaled by 0.5: (1.3, 0.2, 2.6, 0.5) rounds to (1, 0, 3, 1): columns 1..3 of rows 0..1.
    assert roi_pool(fmap, torch.tensor([[0, 2.6, 0.4, 5.2, 1.0]]), 1, spatial_scale=0.5).item() == 7
    # a roi wholly outside the map gives zeros, as torchvision's empty bins do
    assert roi_pool(fmap, torch.tensor([[0, 10, 10, 12, 12]]), 2).abs().sum() == 0
    # half rounds away from zero (torch.round would give 2 for 2.5 and pick column 2)
    assert roi_pool(fmap, torch.tensor([[0, 2.5, 0, 2.5, 0]]), 1).item() == 3


def test_full_map_roi_equals_adaptive_pooling():
    fmap = torch.randn(2, 3, 7, 10)
    rois = torch.tensor([[0, 0, 0, 9, 6], [1, 0, 0, 9, 6]], dtype=torch.float64)
    for g in (1, 3, 4, 6):
        torch.testing.assert_close(roi_pool(fmap, rois, g), F.adaptive_max_pool2d(fmap, g))
        torch.testing.assert_close(
            roi_pool(fmap, rois, g, sampling="avg"), F.adaptive_avg_pool2d(fmap, g)
        )


def test_bad_arguments_and_empty_rois():
    fmap = torch.zeros(1, 2, 4, 4)
    assert roi_pool(fmap, torch.zeros(0, 5), 3).shape == (0, 2, 3, 3)
    with pytest.raises(InputError, match="sampling"):
        roi_pool(fmap, torch.zeros(1, 5), 2, sampling="median")
    with pytest.raises(InputError, match="rois"):
        roi_pool(fmap, torch.zeros(1, 4), 2)
    with pytest.raises(InputError, match="batch indices"):
        roi_pool(fmap, torch.tensor([[1.0, 0, 0, 1, 1]]), 2)


def test_gradient_flows_to_the_max():
    fmap = torch.arange(16.0).reshape(1, 1, 4, 4).requires_grad_()
    roi_pool(fmap, torch.tensor([[0, 0, 0, 3, 3]]), 2).sum().backward()
    assert fmap.grad.flatten().nonzero().flatten().tolist() == [5, 7, 13, 15]


def test_geometry_formula():
    g = MapGeometry(1, 0.5, 1).then(3, 1, 1)
    assert g == MapGeometry(1, 0.5, 3)
    # a 3/2 pool without padding: its first output is centred on unit 1 of its input
    g = g.then(3, 2, 0)
    assert g == MapGeometry(2, 1.5, 5)
    cells = g.cells(
        torch.tensor([[0.0, 0.0, 8.0, 4.0], [2.0, 2.0, 2.5, 2.5], [-9.0, -9.0, 100.0, 100.0]])
    )
    # centres 1.5, 3.5, 5.5, 7.5 lie in [0, 8); 1.5, 3.5 in [0, 4); the thin box gets its nearest unit
    assert cells[:2].tolist() == [[0, 0, 3, 1], [0, 0, 0, 0]]
    assert g.cells(torch.tensor([[-9.0, -9.0, 100.0, 100.0]]), map_size=(3, 5)).tolist() == [
        [0, 0, 4, 2]
    ]


def test_window_rois_batches_and_scales():
    g = MapGeometry(stride=4, offset=2.0, receptive_field=8)
    rois = window_rois(
        [torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 2)],
        g,
        scale=2.0,
    )
    assert rois.tolist() == [[0, 0, 0, 3, 3], [1, 0, 0, 1, 1], [1, 0, 0, 1, 1]]


def test_receptive_field_geometry_of_the_trunk():
    """The gradient support of an interior C5 unit is its receptive field, centred where the formula says."""
    model = create_model("alexnet-small", 10).eval()
    for block in (model.c1, model.c2, model.c3, model.c4, model.c5):
        torch.nn.init.constant_(block.conv.weight, 0.01)
        torch.nn.init.constant_(block.conv.bias, 0.1)
        # average pooling makes the gradient dense, with the same geometry
        if hasattr(block, "pool"):
            p = block.pool
            block.pool = torch.nn.AvgPool2d(p.kernel_size, p.stride, p.padding)
    geometry = model.stride_and_offset()
    x = torch.ones(1, 3, 320, 320, requires_grad=True)
    fmap = model.conv_features(x)
    i = fmap.shape[-1] // 2
    fmap[0, :, i, i].sum().backward()
    cols = x.grad[0].abs().sum(dim=(0, 1)).nonzero().flatten()
    lo, hi = cols.min().item(), cols.max().item() + 1  # support [lo, hi) in pixels
    assert hi - lo == geometry.receptive_field
    assert (lo + hi) / 2 == geometry.offset + i * geometry.stride


def test_fully_convolutional_window_equals_the_window_pass():
    """A window covering the whole 64x64 input pools to exactly the model's own C5 grid."""
    model = create_model("alexnet-small", 7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = model.conv_features(x)
        boxes = [torch.tensor([[0.0, 0.0, 64.0, 64.0]])] * 2
        rois = window_rois(boxes, model.stride_and_offset(), map_size=fmap.shape[-2:])
        pooled = roi_pool(fmap, rois, model.spec.grid, sampling="avg")
        direct = model.forward_features(x, ("c5", "fc7"))
        via_rois = model.head_from_pooled_c5(pooled, ("c5", "fc7"))
    for name in direct:
        torch.testing.assert_close(via_rois[name], direct[name])


@pytest.mark.parametrize("sampling", ["max", "avg"])
def test_one_cell_bins_take_the_gather_path_and_agree_with_the_general_one(sampling: str) -> None:
    torch.manual_seed(3)
    fmap = torch.randn(2, 5, 9, 11)
    # rois spanning exactly 4 cells (ends inclusive) → 4x4 one-cell bins
    rois = torch.tensor([[0, 0, 0, 3, 3], [1, 2, 5, 5, 8], [0, 7, 4, 10, 7]], dtype=torch.float32)
    fast = roi_pool(fmap, rois, 4, sampling=sampling)
    for r, (b, x0, y0, x1, y1) in enumerate(rois.long().tolist()):
        torch.testing.assert_close(fast[r], fmap[b, :, y0 : y1 + 1, x0 : x1 + 1])
    # a 5-cell roi next to them sends the whole call down the general path: same answers
    general = roi_pool(
        fmap, torch.cat([rois, torch.tensor([[0, 0, 0, 4, 4.0]])]), 4, sampling=sampling
    )
    torch.testing.assert_close(general[:3], fast)
