"""ROI pooling of a convolutional feature map, in plain torch, for fully convolutional evaluation.

The paper evaluates ~500 windows per image one by one and names convolving the whole image once
as the cheaper alternative. :func:`roi_pool` cuts each window's part of a C5 map computed on the
whole image and pools it to the trunk's ``g x g`` grid, so the FC layers run per window while the
convolutions run once per image.

:func:`roi_pool` with ``sampling="max"`` follows ``torchvision.ops.roi_pool`` exactly (Fast R-CNN's
quantised bins): a roi ``(x0, y0, x1, y1)`` is scaled by ``spatial_scale`` and rounded half away
from zero; its ends are inclusive (width ``= max(x1 - x0 + 1, 1)``); bin ``p`` of ``g`` covers
``[floor(p * w / g), ceil((p + 1) * w / g))`` cells from the roi start, clipped to the map; an
empty bin gives 0. ``sampling="avg"`` averages over the same bins.

:class:`MapGeometry` maps window boxes in image pixels to map cells (see :meth:`MapGeometry.cells`);
:func:`window_rois` builds the ``(K, 5)`` roi tensor from boxes with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mlt.errors import InputError

SAMPLINGS = ("max", "avg")


@dataclass(frozen=True)
class MapGeometry:
    """Where the units of a feature map sit in the input image.

    Pixel ``j`` spans ``[j, j + 1)`` (boxes are half-open float pixels). Unit ``i`` of the map
    (along x or y) sees a receptive field of ``receptive_field`` pixels centred at
    ``offset + i * stride``. For a chain of layers with kernel ``k``, stride ``s`` and padding
    ``p`` (convolutions and pools alike), starting from ``stride = 1``, ``offset = 0.5``,
    ``receptive_field = 1`` (one pixel)::

        offset          += ((k - 1) / 2 - p) * stride
        receptive_field += (k - 1) * stride
        stride          *= s
    """

    stride: int
    offset: float
    receptive_field: int

    def then(self, kernel: int, stride: int, padding: int) -> MapGeometry:
        """Returns the geometry after one more layer with this kernel, stride and padding."""
        return MapGeometry(
            stride=self.stride * stride,
            offset=self.offset + ((kernel - 1) / 2 - padding) * self.stride,
            receptive_field=self.receptive_field + (kernel - 1) * self.stride,
        )

    def cells(self, boxes: torch.Tensor, map_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Returns the inclusive map-cell ranges ``(K, 4)`` ``[i0, j0, i1, j1]`` of pixel boxes.

        A box ``[x0, x1)`` covers unit ``i`` when the unit's centre lies in it:
        ``i0 = ceil((x0 - offset) / stride)``, ``i1 = ceil((x1 - offset) / stride) - 1``.
        A box narrower than the stride that contains no centre gets the single nearest unit.
        With ``map_size`` ``(height, width)`` the ranges are clipped to the map (the conv
        arithmetic's floors can leave a border unit out of the map although its centre is in
        the image); otherwise :func:`roi_pool` clips the bins.
        """
        boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
        u = (boxes - self.offset) / self.stride
        first = torch.ceil(u[:, :2])
        last = torch.ceil(u[:, 2:]) - 1
        nearest = torch.round((u[:, :2] + u[:, 2:]) / 2)
        empty = last < first
        first = torch.where(empty, nearest, first)
        last = torch.where(empty, nearest, last)
        if map_size is not None:
            top = torch.tensor([map_size[1] - 1, map_size[0] - 1], dtype=torch.float64)
            first = torch.minimum(first.clamp(min=0), top)
            last = torch.minimum(last.clamp(min=0), top)
        return torch.cat([first, last], dim=1)


def window_rois(
    boxes: torch.Tensor | Sequence[torch.Tensor],
    geometry: MapGeometry,
    scale: float = 1.0,
    map_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Returns ``(K, 5)`` rois ``[batch_index, i0, j0, i1, j1]`` in map cells for ``roi_pool``.

    ``boxes`` is one ``(K, 4)`` tensor of pixel boxes (all for image 0) or a sequence with one
    such tensor per image of the batch. ``scale`` is the factor the images were resized by
    before the convolutional pass (boxes are given in the original image's pixels);
    ``map_size`` ``(height, width)`` of the map clips the cells (see :meth:`MapGeometry.cells`).
    Pool the result with ``roi_pool(..., spatial_scale=1.0)``.
    """
    per_image = [boxes] if isinstance(boxes, torch.Tensor) else list(boxes)
    rows = []
    for index, b in enumerate(per_image):
        b = torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4)
        cells = geometry.cells(b * scale, map_size)
        rows.append(
            torch.cat([torch.full((len(b), 1), float(index), dtype=torch.float64), cells], 1)
        )
    if not rows:
        return torch.zeros(0, 5)
    return torch.cat(rows).float()


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    # C's round(), as torchvision uses; torch.round rounds half to even.
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _bins(
    start: torch.Tensor, end: torch.Tensor, g: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the clipped ``[lo, hi)`` cell ranges ``(K, g)`` of the g bins of each roi."""
    length = torch.clamp(end - start + 1, min=1).double()
    p = torch.arange(g, dtype=torch.float64)
    bin_size = length[:, None] / g
    lo = torch.floor(p * bin_size).long() + start[:, None]
    hi = torch.ceil((p + 1) * bin_size).long() + start[:, None]
    return lo.clamp(0, size), hi.clamp(0, size)


def _range_max_tables(x: torch.Tensor) -> torch.Tensor:
    """Returns ``(L, *x.shape)``: table ``j`` holds the max over ``[w, w + 2**j)`` along the last dim."""
    tables = [x]
    span = 1
    while 2 * span <= x.shape[-1]:
        prev = tables[-1]
        nxt = prev.clone()
        nxt[..., : x.shape[-1] - span] = torch.maximum(prev[..., :-span], prev[..., span:])
        tables.append(nxt)
        span *= 2
    return torch.stack(tables)


def roi_pool(
    feature_map: torch.Tensor,
    rois: torch.Tensor,
    output_size: int,
    spatial_scale: float = 1.0,
    sampling: str = "max",
) -> torch.Tensor:
    """Returns ``(K, C, g, g)``: each roi's part of ``feature_map`` pooled to a ``g x g`` grid.

    ``feature_map`` is ``(N, C, H, W)``; ``rois`` is ``(K, 5)`` rows ``[batch_index, x0, y0, x1,
    y1]`` in input coordinates, multiplied by ``spatial_scale`` to reach map cells (ends
    inclusive, as in torchvision). ``sampling`` is ``"max"`` (torchvision's ``roi_pool``) or
    ``"avg"`` (the mean over the same bins). Vectorised over rois; loops over the g bins.
    """
    if sampling not in SAMPLINGS:
        raise InputError(None, "sampling", sampling, f"one of {SAMPLINGS}")
    if feature_map.dim() != 4:
        raise InputError(None, "feature_map", tuple(feature_map.shape), "a (N, C, H, W) tensor")
    rois = torch.as_tensor(rois)
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise InputError(
            None, "rois", tuple(rois.shape), "a (K, 5) tensor [batch_index, x0, y0, x1, y1]"
        )
    g = int(output_size)
    n, c, h, w = feature_map.shape
    k = rois.shape[0]
    if k == 0:
        return feature_map.new_zeros(0, c, g, g)
    rois = rois.detach().to("cpu", torch.float64)
    index = rois[:, 0].long()
    if index.min() < 0 or index.max() >= n:
        raise InputError(None, "rois[:, 0]", index.tolist()[:8], f"batch indices in [0, {n})")
    x0, y0, x1, y1 = (_round_half_away(rois[:, i] * spatial_scale).long() for i in range(1, 5))
    ylo, yhi = _bins(y0, y1, g, h)
    xlo, xhi = _bins(x0, x1, g, w)
    device = feature_map.device
    ylo, yhi, xlo, xhi, index = (t.to(device) for t in (ylo, yhi, xlo, xhi, index))
    empty = (yhi[:, :, None] <= ylo[:, :, None]) | (xhi[:, None, :] <= xlo[:, None, :])  # (K, g, g)
    if bool(((yhi - ylo) == 1).all() and ((xhi - xlo) == 1).all()):
        # Every bin is one cell (a window as large as the trunk's input, in conv mode): max and
        # mean are that cell, so pooling is one gather.
        cells = feature_map[
            index[:, None, None], :, ylo[:, :, None], xlo[:, None, :]
        ]  # (K, g, g, C)
        return cells.permute(0, 3, 1, 2).contiguous()
    rows = torch.arange(h, device=device)
    out = feature_map.new_zeros(k, c, g, g)
    if sampling == "max":
        tables = _range_max_tables(feature_map)  # (L, N, C, H, W)
        for px in range(g):
            lo, hi = xlo[:, px], xhi[:, px]
            width = (hi - lo).clamp(min=1)
            level = torch.floor(torch.log2(width.double())).long()
            lo = lo.clamp(max=w - 1)
            right = (hi - (1 << level)).clamp(min=0, max=w - 1)
            # (K, C, H): max over [lo, hi) of every row, as the max of two overlapping spans.
            row_max = torch.maximum(
                tables[level, index, :, :, lo], tables[level, index, :, :, right]
            )
            for py in range(g):
                inside = (rows[None, :] >= ylo[:, py, None]) & (rows[None, :] < yhi[:, py, None])
                masked = row_max.masked_fill(~inside[:, None, :], float("-inf"))
                out[:, :, py, px] = masked.amax(dim=2)
    else:
        # Summed-area table, channels last so each lookup gathers contiguous (C,) rows; all
        # g x g bins of all rois in four gathers.
        integral = torch.nn.functional.pad(feature_map.double().cumsum(2).cumsum(3), (1, 0, 1, 0))
        integral = integral.permute(0, 2, 3, 1).contiguous()  # (N, H+1, W+1, C)
        top, bottom = ylo[:, :, None], yhi[:, :, None]  # (K, g, 1)
        left, right = xlo[:, None, :], xhi[:, None, :]  # (K, 1, g)
        b = index[:, None, None]
        total = (
            integral[b, bottom, right]
            - integral[b, top, right]
            - integral[b, bottom, left]
            + integral[b, top, left]
        )  # (K, g, g, C)
        area = ((bottom - top) * (right - left)).clamp(min=1)
        out = (total / area[..., None]).permute(0, 3, 1, 2).to(out.dtype)
    return out.masked_fill(empty[:, None, :, :], 0.0)
