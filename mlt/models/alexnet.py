"""The AlexNet family of trunks: five convolutions C1..C5, then FC6, FC7 and FC8.

One :class:`AlexNet` class, shaped by a frozen :class:`AlexNetSpec`. Registered variants:

- ``alexnet``: the paper's source network (Krizhevsky's conv geometry in one tower, 224x224
  input, C5 256x6x6 = 9216, FC6 = FC7 = 4096; ``fc_width=6144`` gives the PRE-1512 network).
- ``alexnet-torchvision``: torchvision's AlexNet geometry (64, 192, 384, 256, 256 channels), so
  published torchvision ImageNet weights load into it (:mod:`mlt.models.torchvision_import`).
- ``alexnet-small``: the same structure for 64x64 inputs (Tiny-ImageNet) on a small CPU.

Like torchvision's and most modern reimplementations, there is no local response normalisation
(it adds little and costs time) and no BatchNorm. Inputs are 0..1 RGB pixels normalised by the
spec's ``mean``/``std`` *before* the model (the data loaders do it); the model carries the
figures so that later stages (extraction, predict) normalise the same way.

Initialisation: convolutions Kaiming normal (fan out, ReLU gain), zero bias; FC8 N(0, 0.01),
zero bias; FC6 and FC7 by ``spec.fc_init``: ``"kaiming"`` (default; Kaiming normal, fan in,
zero bias) or ``"gaussian"`` (Caffe's AlexNet recipe: N(0, 0.005), bias 0.1, Krizhevsky's
positive bias scaled down). With SGD at lr 0.01 the Gaussian start sits on a plateau for the
first ~100 steps on alexnet-small, where the Kaiming start is learning after ~30.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from mlt.errors import InputError
from mlt.models.registry import register_model
from mlt.models.roi_pool import MapGeometry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Layers ``forward_features`` can return, shallow to deep.
LAYERS = ("c5", "fc6", "fc7", "fc8")

FC_INITS = ("kaiming", "gaussian")

_CONV_FIELDS = ("channels", "kernels", "strides", "paddings", "groups")


@dataclass(frozen=True)
class AlexNetSpec:
    """The geometry of an AlexNet-family trunk (defaults: the paper's network at 224x224).

    Per-convolution tuples (five entries, C1..C5): ``channels``, ``kernels``, ``strides``,
    ``paddings``, ``groups`` (2 on C2, C4, C5 gives Krizhevsky's two-tower connectivity).
    ``pool_after`` lists the convolutions (1-based) followed by a max-pool of ``pool_kernel``
    / ``pool_stride`` / ``pool_padding``. The C5 map is then average-pooled to ``grid x grid``
    (adaptive, like torchvision; the identity when the map already has that size).
    ``fc_width`` is FC6's and FC7's width; ``dropout`` is applied before FC6 and FC7;
    ``fc_init`` (``"kaiming"`` or ``"gaussian"``) is how FC6/FC7 start (module docstring).
    ``mean``/``std`` normalise 0..1 RGB pixels.
    """

    channels: tuple[int, ...] = (96, 256, 384, 384, 256)
    kernels: tuple[int, ...] = (11, 5, 3, 3, 3)
    strides: tuple[int, ...] = (4, 1, 1, 1, 1)
    paddings: tuple[int, ...] = (2, 2, 1, 1, 1)
    groups: tuple[int, ...] = (1, 1, 1, 1, 1)
    pool_after: tuple[int, ...] = (1, 2, 5)
    pool_kernel: int = 3
    pool_stride: int = 2
    pool_padding: int = 0
    input_size: int = 224
    grid: int = 6
    fc_width: int = 4096
    dropout: float = 0.5
    fc_init: str = "kaiming"
    in_channels: int = 3
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        for name in (*_CONV_FIELDS, "pool_after", "mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, Iterable) or isinstance(value, str):
                raise InputError(None, name, value, "a sequence")
            object.__setattr__(self, name, tuple(value))
        for name in _CONV_FIELDS:
            value = getattr(self, name)
            if len(value) != 5 or not all(
                isinstance(v, int) and v >= (0 if name == "paddings" else 1) for v in value
            ):
                raise InputError(None, name, value, "five integers, one per convolution C1..C5")
        if not set(self.pool_after) <= {1, 2, 3, 4, 5}:
            raise InputError(None, "pool_after", self.pool_after, "convolution numbers among 1..5")
        ins = (self.in_channels, *self.channels[:-1])
        for i, (cin, cout, g) in enumerate(zip(ins, self.channels, self.groups, strict=True)):
            if cin % g or cout % g:
                raise InputError(
                    None,
                    "groups",
                    self.groups,
                    f"C{i + 1} groups dividing {cin} in and {cout} out channels",
                )
        for name in ("pool_kernel", "pool_stride", "input_size", "grid", "fc_width", "in_channels"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(None, name, getattr(self, name), "a positive integer")
        if self.fc_init not in FC_INITS:
            raise InputError(None, "fc_init", self.fc_init, f"one of {FC_INITS}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(None, "dropout", self.dropout, "a probability in [0, 1)")
        if (
            len(self.mean) != self.in_channels
            or len(self.std) != self.in_channels
            or min(self.std) <= 0
        ):
            raise InputError(
                None, "mean/std", (self.mean, self.std), f"{self.in_channels} values each, std > 0"
            )
        if self.c5_map_size(self.input_size) < 1:
            raise InputError(
                None,
                "input_size",
                self.input_size,
                "an input large enough for five convolutions and the pools",
            )

    def layers(self) -> list[tuple[str, int, int, int]]:
        """Returns the spatial layers in order as ``(kind, kernel, stride, padding)``, kind conv/pool."""
        out = []
        for i in range(5):
            out.append(("conv", self.kernels[i], self.strides[i], self.paddings[i]))
            if i + 1 in self.pool_after:
                out.append(("pool", self.pool_kernel, self.pool_stride, self.pool_padding))
        return out

    def c5_map_size(self, input_size: int) -> int:
        """Returns the side of the C5 map (before the adaptive pool) for a square input of this side."""
        n = input_size
        for _, k, s, p in self.layers():
            n = (n + 2 * p - k) // s + 1
        return n

    @property
    def c5_dim(self) -> int:
        """Returns the length of the flattened, pooled C5 feature (channels x grid x grid)."""
        return self.channels[-1] * self.grid * self.grid


def _conv_block(spec: AlexNetSpec, i: int) -> nn.Sequential:
    cin = spec.in_channels if i == 0 else spec.channels[i - 1]
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    parts["conv"] = nn.Conv2d(
        cin,
        spec.channels[i],
        spec.kernels[i],
        stride=spec.strides[i],
        padding=spec.paddings[i],
        groups=spec.groups[i],
    )
    parts["relu"] = nn.ReLU(inplace=True)
    if i + 1 in spec.pool_after:
        parts["pool"] = nn.MaxPool2d(spec.pool_kernel, spec.pool_stride, spec.pool_padding)
    return nn.Sequential(parts)


def _fc_block(cin: int, cout: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            drop=nn.Dropout(dropout), linear=nn.Linear(cin, cout), relu=nn.ReLU(inplace=True)
        )
    )


class AlexNet(nn.Module):
    """An AlexNet-family trunk: ``c1..c5`` (conv, ReLU, max-pool where the spec says), ``pool``
    (adaptive average to grid x grid), ``fc6``/``fc7`` (dropout, linear, ReLU), ``fc8`` (linear).
    """

    def __init__(self, spec: AlexNetSpec | None = None, num_classes: int = 1000) -> None:
        super().__init__()
        spec = spec or AlexNetSpec()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise InputError(None, "num_classes", num_classes, "a positive integer")
        self.spec = spec
        self.num_classes = num_classes
        self.input_size = spec.input_size
        self.mean = spec.mean
        self.std = spec.std
        self.feature_dims = {
            "c5": spec.c5_dim,
            "fc6": spec.fc_width,
            "fc7": spec.fc_width,
            "fc8": num_classes,
        }
        self.c1, self.c2, self.c3, self.c4, self.c5 = (_conv_block(spec, i) for i in range(5))
        self.pool = nn.AdaptiveAvgPool2d(spec.grid)
        self.fc6 = _fc_block(spec.c5_dim, spec.fc_width, spec.dropout)
        self.fc7 = _fc_block(spec.fc_width, spec.fc_width, spec.dropout)
        self.fc8 = nn.Linear(spec.fc_width, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialises the weights as the module docstring says (returns None)."""
        for block in (self.c1, self.c2, self.c3, self.c4, self.c5):
            nn.init.kaiming_normal_(block.conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(block.conv.bias)
        for block in (self.fc6, self.fc7):
            if self.spec.fc_init == "kaiming":
                nn.init.kaiming_normal_(block.linear.weight, nonlinearity="relu")
                nn.init.zeros_(block.linear.bias)
            else:
                nn.init.normal_(block.linear.weight, 0.0, 0.005)
                nn.init.constant_(block.linear.bias, 0.1)
        nn.init.normal_(self.fc8.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc8.bias)

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the C5 map ``(N, C, h, w)`` (after C5's max-pool, before the adaptive pool).

        Any input size works, which is what fully convolutional evaluation needs: pool
        windows of the map with :func:`mlt.models.roi_pool.roi_pool` to ``grid x grid`` and
        finish with :meth:`head_from_pooled_c5`.
        """
        return self.c5(self.c4(self.c3(self.c2(self.c1(x)))))

    def head_from_pooled_c5(
        self, pooled: torch.Tensor, layers: Iterable[str] = ("fc7",)
    ) -> dict[str, torch.Tensor]:
        """Returns ``{layer: activation}`` for ``layers`` computed from a pooled ``(N, C, g, g)`` C5.

        ``c5`` is the flattened pooled map, ``fc6``/``fc7`` are after their ReLU, ``fc8`` the
        logits. Only the layers up to the deepest one requested run.
        """
        wanted = _check_layers(layers)
        x = torch.flatten(pooled, 1)
        found = {"c5": x}
        for name in LAYERS[1 : max(LAYERS.index(n) for n in wanted) + 1]:
            x = getattr(self, name)(x)
            found[name] = x
        return {name: found[name] for name in wanted}

    def forward_features(
        self, x: torch.Tensor, layers: Iterable[str] = ("fc7",)
    ) -> dict[str, torch.Tensor]:
        """Returns ``{layer: activation}`` for ``layers`` (of ``LAYERS``) of images ``x``."""
        return self.head_from_pooled_c5(self.pool(self.conv_features(x)), layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the FC8 logits ``(N, num_classes)``."""
        return self.forward_features(x, ("fc8",))["fc8"]

    def stride_and_offset(self) -> MapGeometry:
        """Returns where the C5 map's units sit in the input (stride, centre offset, receptive field).

        Unit ``i`` of :meth:`conv_features` is centred at pixel coordinate ``offset + i *
        stride`` (pixel ``j`` spans ``[j, j + 1)``); :class:`MapGeometry` has the formula and
        maps window boxes to map cells.
        """
        geometry = MapGeometry(stride=1, offset=0.5, receptive_field=1)
        for _, k, s, p in self.spec.layers():
            geometry = geometry.then(k, s, p)
        return geometry


def _check_layers(layers: Iterable[str]) -> tuple[str, ...]:
    wanted = (layers,) if isinstance(layers, str) else tuple(layers)
    bad = [n for n in wanted if n not in LAYERS]
    if not wanted or bad:
        raise InputError(None, "layers", bad or wanted, f"one or more of {LAYERS}")
    return wanted


def build_alexnet(spec: AlexNetSpec, num_classes: int, overrides: dict) -> AlexNet:
    """Returns an :class:`AlexNet` of ``spec`` with the given spec fields overridden."""
    known = {f.name for f in dataclasses.fields(AlexNetSpec)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(None, "model option", unknown, f"fields of AlexNetSpec: {sorted(known)}")
    return AlexNet(dataclasses.replace(spec, **overrides), num_classes)


#: The paper's network in one tower: 62.4M parameters, 1.14 GMACs at 224x224 with 1000 classes
#: (``groups=(1, 2, 1, 2, 2)`` gives Krizhevsky's two-GPU net: 61.0M, 0.72 GMACs).
ALEXNET = AlexNetSpec()

#: torchvision's AlexNet (models.alexnet), for its published ImageNet weights: 61.1M, 0.71 GMACs.
ALEXNET_TORCHVISION = AlexNetSpec(channels=(64, 192, 384, 256, 256))

#: 64x64 inputs. Maps: C1 48x32x32 (pool 16), C2 192x8x8 (pool 4), C3..C5 256x4x4; no pool after
#: C5, so the C5 map is 256x4x4 = 4096 (grid 4). C2's stride 2 (instead of 1 at 16x16) is what
#: keeps the cost at 50 MMACs: AlexNet's spatial plan (C2 at stride 8, C3..C5 at stride 16).
ALEXNET_SMALL = AlexNetSpec(
    channels=(48, 192, 256, 256, 256),
    kernels=(5, 5, 3, 3, 3),
    strides=(2, 2, 1, 1, 1),
    paddings=(2, 2, 1, 1, 1),
    pool_after=(1, 2),
    pool_padding=1,
    input_size=64,
    grid=4,
    fc_width=1024,
)


@register_model("alexnet")
def alexnet(num_classes: int = 1000, **overrides) -> AlexNet:
    """Returns the paper's AlexNet (224x224; ``fc_width=6144`` for the PRE-1512 network)."""
    return build_alexnet(ALEXNET, num_classes, overrides)


@register_model("alexnet-torchvision")
def alexnet_torchvision(num_classes: int = 1000, **overrides) -> AlexNet:
    """Returns an AlexNet with torchvision's geometry (loads torchvision's ImageNet weights)."""
    return build_alexnet(ALEXNET_TORCHVISION, num_classes, overrides)


@register_model("alexnet-small")
def alexnet_small(num_classes: int = 1000, **overrides) -> AlexNet:
    """Returns the 64x64 AlexNet for Tiny-ImageNet on a small CPU.

    With 200 classes: 7.31M parameters; 49.8M multiply-adds = 99.7 MFLOPs (2 x MACs) per 64x64
    image (convolutions 44.4M, FC 5.4M; pools and ReLUs not counted).
    """
    return build_alexnet(ALEXNET_SMALL, num_classes, overrides)
