"""Trunks: registry, shapes of the named activations, partial computation, cost, torchvision import."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlt.errors import InputError
from mlt.models import LAYERS, AlexNet, AlexNetSpec, create_model, list_models, register_model
from mlt.models.flops import count_params, model_cost
from mlt.models.torchvision_import import (
    load_torchvision_state_dict,
    to_torchvision_state_dict,
    torchvision_key_map,
)

VARIANTS = {"alexnet": 224, "alexnet-torchvision": 224, "alexnet-small": 64}


@pytest.fixture(scope="module")
def small() -> AlexNet:
    torch.manual_seed(0)
    return create_model("alexnet-small", num_classes=10).eval()


def test_registry_lists_and_creates():
    assert set(VARIANTS) <= set(list_models())
    model = create_model("alexnet-small", num_classes=5)
    assert isinstance(model, AlexNet) and model.num_classes == 5 and model.fc8.out_features == 5


def test_unknown_model_names_the_value_and_the_choices():
    with pytest.raises(InputError) as err:
        create_model("resnet50", num_classes=3)
    assert "resnet50" in str(err.value) and "alexnet-small" in str(err.value)


def test_unknown_option_and_bad_spec_are_input_errors():
    with pytest.raises(InputError, match="fc_widht"):
        create_model("alexnet-small", 3, fc_widht=12)
    with pytest.raises(InputError, match="channels"):
        AlexNetSpec(channels=(1, 2, 3))
    with pytest.raises(InputError, match="input_size"):
        create_model("alexnet", 3, input_size=32)
    with pytest.raises(InputError, match="num_classes"):
        create_model("alexnet-small", 0)


def test_register_model_refuses_a_second_factory_under_one_name():
    with pytest.raises(ValueError, match="already registered"):
        register_model("alexnet")(lambda num_classes=1000: None)


def test_overrides_reach_the_spec():
    # lists (as from YAML) become tuples
    model = create_model("alexnet-small", 4, fc_width=64, channels=[8, 16, 16, 16, 16])
    assert model.spec.channels == (8, 16, 16, 16, 16)
    assert model.feature_dims == {"c5": 16 * 4 * 4, "fc6": 64, "fc7": 64, "fc8": 4}
    with torch.device("meta"):  # the PRE-1512 network, shapes only
        big = create_model("alexnet", 1512, fc_width=6144)
    assert big.feature_dims == {"c5": 9216, "fc6": 6144, "fc7": 6144, "fc8": 1512}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_named_activation_shapes(name):
    size = VARIANTS[name]
    model = create_model(name, num_classes=7).eval()
    assert model.input_size == size
    assert model.mean == (0.485, 0.456, 0.406) and model.std == (0.229, 0.224, 0.225)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, size, size), LAYERS)
    assert list(feats) == list(LAYERS)
    for layer, tensor in feats.items():
        assert tensor.shape == (2, model.feature_dims[layer]), layer
    assert model.feature_dims["c5"] == (9216 if size == 224 else 256 * 4 * 4)
    assert (feats["fc6"] >= 0).all() and (feats["fc7"] >= 0).all()  # after ReLU


def test_forward_features_equals_conv_pool_head(small):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        direct = small.forward_features(x, ("fc8", "c5", "fc6"))
        fmap = small.conv_features(x)
        composed = small.head_from_pooled_c5(small.pool(fmap), ("fc8", "c5", "fc6"))
        logits = small(x)
    assert list(direct) == ["fc8", "c5", "fc6"]  # the caller's order
    assert fmap.shape == (2, 256, 4, 4)
    for layer in direct:
        torch.testing.assert_close(direct[layer], composed[layer])
    torch.testing.assert_close(logits, direct["fc8"])
    torch.testing.assert_close(direct["c5"], fmap.flatten(1))  # the 4x4 map pools to itself


def test_only_the_needed_layers_run(small):
    calls: list[str] = []
    handles = [
        getattr(small, n).register_forward_hook(lambda m, i, o, n=n: calls.append(n))
        for n in ("fc6", "fc7", "fc8")
    ]
    try:
        with torch.no_grad():
            small.forward_features(torch.randn(2, 3, 64, 64), ("c5",))
            assert calls == []
            small.forward_features(torch.randn(2, 3, 64, 64), ("fc7", "c5"))
            assert calls == ["fc6", "fc7"]
    finally:
        for h in handles:
            h.remove()
    with pytest.raises(InputError, match="layers"):
        small.forward_features(torch.randn(1, 3, 64, 64), ("fc9",))


def test_conv_features_take_any_input_size(small):
    with torch.no_grad():
        fmap = small.conv_features(torch.randn(1, 3, 96, 128))
    assert fmap.shape[-2:] == (small.spec.c5_map_size(96), small.spec.c5_map_size(128)) == (6, 8)


def test_channels_last_gives_the_same_output(small):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = small.forward_features(x, ("c5", "fc8"))
        small_cl = create_model("alexnet-small", num_classes=10).eval()
        small_cl.load_state_dict(small.state_dict())
        small_cl = small_cl.to(memory_format=torch.channels_last)
        got = small_cl.forward_features(x.to(memory_format=torch.channels_last), ("c5", "fc8"))
    for layer in expected:
        torch.testing.assert_close(got[layer], expected[layer], rtol=1e-4, atol=1e-5)


def test_initialisation_follows_the_docstring():
    model = create_model("alexnet-small", num_classes=10)
    assert model.c3.conv.bias.abs().sum() == 0 and model.fc8.bias.abs().sum() == 0
    assert abs(model.fc8.weight.std().item() - 0.01) < 1e-3
    fan_out, fan_in = 256 * 3 * 3, 4096
    assert model.c5.conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)
    assert model.fc6.linear.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
    assert model.fc6.linear.bias.abs().sum() == 0
    caffe = create_model("alexnet-small", num_classes=10, fc_init="gaussian")
    assert torch.all(caffe.fc7.linear.bias == 0.1)
    assert caffe.fc7.linear.weight.std().item() == pytest.approx(0.005, rel=0.1)
    with pytest.raises(InputError, match="fc_init"):
        create_model("alexnet-small", 10, fc_init="xavier")


def test_geometry_of_the_c5_map():
    assert create_model("alexnet-small", 2).stride_and_offset().stride == 16
    with torch.device("meta"):
        g = create_model("alexnet", 2).stride_and_offset()
    # Krizhevsky's AlexNet: C5 units 32 pixels apart, each seeing 195x195 pixels.
    assert (g.stride, g.offset, g.receptive_field) == (32, 31.5, 195)


def _conv_macs(cin, cout, k, out, groups=1):
    return out * out * cout * cin // groups * k * k


def test_cost_of_the_paper_network():
    with torch.device("meta"):
        cost = model_cost(create_model("alexnet", 1000), 224)
    # maps: C1 55, C2 27, C3..C5 13 (pools 27, 13, 6)
    macs = (_conv_macs(3, 96, 11, 55) + _conv_macs(96, 256, 5, 27) + _conv_macs(256, 384, 3, 13)
            + _conv_macs(384, 384, 3, 13) + _conv_macs(384, 256, 3, 13) + 9216 * 4096 + 4096 * 4096 + 4096 * 1000)  # fmt: skip
    assert cost.macs == macs == 1_135_256_096  # 1.14 GMACs single tower
    assert cost.params == 62_378_344  # "about 61M": 62.4M in one tower
    with torch.device("meta"):
        two_towers = model_cost(create_model("alexnet", 1000, groups=(1, 2, 1, 2, 2)), 224)
    # Krizhevsky's two-GPU net: the famous 60,965,224 parameters and 0.72 GMACs
    assert two_towers.params == 60_965_224 and two_towers.macs == 724_406_816


def test_cost_of_the_torchvision_network():
    with torch.device("meta"):
        cost = model_cost(create_model("alexnet-torchvision", 1000), 224)
    # torchvision's published figures: 61.1M parameters, 0.71 GMACs
    assert cost.params == 61_100_840 and cost.macs == 714_188_480


def test_cost_of_the_small_network():
    cost = model_cost(create_model("alexnet-small", 200), 64)
    # maps: C1 32 (pool 16), C2 8 (pool 4), C3..C5 4
    macs = (_conv_macs(3, 48, 5, 32) + _conv_macs(48, 192, 5, 8) + _conv_macs(192, 256, 3, 4)
            + 2 * _conv_macs(256, 256, 3, 4) + 4096 * 1024 + 1024 * 1024 + 1024 * 200)  # fmt: skip
    assert cost.macs == macs == 49_831_936
    assert cost.flops / 1e6 == pytest.approx(99.7, abs=0.1)  # <= 100 MFLOPs per 64x64 window
    assert cost.params == count_params(create_model("alexnet-small", 200)) == 7_306_952


# --- torchvision import -------------------------------------------------------------------------

TV_SHAPES = {
    "features.0": ((64, 3, 11, 11), 64), "features.3": ((192, 64, 5, 5), 192),
    "features.6": ((384, 192, 3, 3), 384), "features.8": ((256, 384, 3, 3), 256),
    "features.10": ((256, 256, 3, 3), 256), "classifier.1": ((4096, 9216), 4096),
    "classifier.4": ((4096, 4096), 4096), "classifier.6": ((1000, 4096), 1000),
}  # fmt: skip


@pytest.fixture(scope="module")
def tv_file(tmp_path_factory):
    """A state dict with torchvision AlexNet's names and shapes (1000 classes), saved to disk."""
    gen = torch.Generator().manual_seed(1)
    state = {}
    for key, (w, b) in TV_SHAPES.items():
        fan_in = torch.tensor(w[1:]).prod().item()
        state[f"{key}.weight"] = (torch.rand(*w, generator=gen) - 0.5) * (24 / fan_in) ** 0.5
        state[f"{key}.bias"] = torch.randn(b, generator=gen) * 0.01
    path = tmp_path_factory.mktemp("tv") / "alexnet-owt.pth"
    torch.save(state, path)
    return path, state


def torchvision_alexnet_reference(state, x):
    """torchvision.models.AlexNet.forward in eval mode, written with torch.nn.functional."""

    def conv(i, x, stride=1, padding=0):
        return F.relu(
            F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], stride, padding)
        )

    x = F.max_pool2d(conv(0, x, 4, 2), 3, 2)
    x = F.max_pool2d(conv(3, x, 1, 2), 3, 2)
    x = F.max_pool2d(conv(10, conv(8, conv(6, x, 1, 1), 1, 1), 1, 1), 3, 2)
    x = torch.flatten(F.adaptive_avg_pool2d(x, (6, 6)), 1)
    x = F.relu(F.linear(x, state["classifier.1.weight"], state["classifier.1.bias"]))
    x = F.relu(F.linear(x, state["classifier.4.weight"], state["classifier.4.bias"]))
    return F.linear(x, state["classifier.6.weight"], state["classifier.6.bias"])


def test_key_map_follows_torchvision_indices():
    mapping = torchvision_key_map(AlexNetSpec(channels=(64, 192, 384, 256, 256)))
    convs = {k: v for k, v in mapping.items() if k.endswith(".weight")}
    assert convs == {
        "c1.conv.weight": "features.0.weight", "c2.conv.weight": "features.3.weight",
        "c3.conv.weight": "features.6.weight", "c4.conv.weight": "features.8.weight",
        "c5.conv.weight": "features.10.weight", "fc6.linear.weight": "classifier.1.weight",
        "fc7.linear.weight": "classifier.4.weight", "fc8.weight": "classifier.6.weight",
    }  # fmt: skip
    assert len(mapping) == 16


def test_torchvision_weights_load_and_round_trip(tv_file):
    path, state = tv_file
    model = load_torchvision_state_dict(create_model("alexnet-torchvision", 1000).eval(), path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x), torchvision_alexnet_reference(state, x), rtol=1e-4, atol=1e-5
        )
    back = to_torchvision_state_dict(model)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_torchvision_weights_without_fc8(tv_file):
    path, state = tv_file
    model = create_model("alexnet-torchvision", 20)
    fc8 = model.fc8.weight.detach().clone()
    load_torchvision_state_dict(model, path, drop_fc8=True)
    assert torch.equal(model.fc8.weight, fc8)
    assert torch.equal(model.fc7.linear.weight, state["classifier.4.weight"])


def test_torchvision_weights_of_another_geometry_are_refused(tv_file, tmp_path):
    path, state = tv_file
    with torch.device("meta"):
        paper_net = create_model("alexnet", 1000)
    # torchvision's 64-channel C1 into the paper's 96-channel net
    with pytest.raises(InputError) as err:
        load_torchvision_state_dict(paper_net, path)
    message = str(err.value)
    assert str(path) in message and "features.0.weight" in message
    assert "(64, 3, 11, 11)" in message and "(96, 3, 11, 11)" in message
    resnet = tmp_path / "resnet18.pth"
    torch.save(
        {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, resnet
    )
    with pytest.raises(InputError, match="resnet18.pth.*missing.*features.0.weight"):
        load_torchvision_state_dict(create_model("alexnet-torchvision", 1000), resnet)
