"""Checkpointer: atomic saves, resume_or_load, DDP prefixes, weights_only loading, clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from mlt.checkpoint import LAST_CHECKPOINT, Checkpointer, load_model_state, read_checkpoint
from mlt.errors import InputError


def tiny_model(seed: int = 0, hidden: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def trained(seed: int = 0):
    """Returns a model, optimizer and scheduler after one SGD step (momentum buffers, scheduler count)."""
    model = tiny_model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_and_load_round_trip(tmp_path):
    model, optimizer, scheduler = trained()
    ckpt = Checkpointer(tmp_path / "ckpt", model, optimizer, scheduler)
    path = ckpt.save(
        "epoch_0003", epoch=3, metrics={"top1": np.float64(0.25)}, classes=["n01", "n02"]
    )
    assert path == tmp_path / "ckpt" / "epoch_0003.pth" and path.is_file()
    assert (tmp_path / "ckpt" / LAST_CHECKPOINT).read_text() == "epoch_0003.pth"

    model2, optimizer2, scheduler2 = trained(seed=1)
    extra = Checkpointer(tmp_path / "ckpt", model2, optimizer2, scheduler2).load(path)
    assert extra == {"epoch": 3, "metrics": {"top1": 0.25}, "classes": ["n01", "n02"]}
    assert same_weights(model, model2)
    assert (
        scheduler2.last_epoch == scheduler.last_epoch
        and scheduler2.get_last_lr() == scheduler.get_last_lr()
    )
    buf = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    buf2 = [optimizer2.state[p]["momentum_buffer"] for p in model2.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(buf, buf2, strict=True))


def test_extra_stateful_objects_are_saved(tmp_path):
    class Counter:
        def __init__(self):
            self.n = 0

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    counter = Counter()
    counter.n = 7
    Checkpointer(tmp_path, tiny_model(), counter=counter).save("a")
    restored = Counter()
    Checkpointer(tmp_path, tiny_model(), counter=restored).resume_or_load()
    assert restored.n == 7


def test_no_checkpoint_yet(tmp_path):
    ckpt = Checkpointer(tmp_path / "absent", tiny_model())
    assert not ckpt.has_checkpoint() and ckpt.get_checkpoint_file() is None
    assert ckpt.resume_or_load(None) == {}


def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer, _ = trained()
    ckpt = Checkpointer(tmp_path, model, optimizer)
    first = ckpt.save("first", epoch=0)
    before = first.read_bytes()
    saved = tiny_model()
    saved.load_state_dict(model.state_dict())

    def torn_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_write)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save("second", epoch=1)
    monkeypatch.undo()

    # no torn file, no temp file
    assert sorted(os.listdir(tmp_path)) == ["first.pth", LAST_CHECKPOINT]
    assert ckpt.get_checkpoint_file() == first and first.read_bytes() == before
    fresh = tiny_model(seed=5)
    assert Checkpointer(tmp_path, fresh).resume_or_load()["epoch"] == 0
    assert same_weights(fresh, saved)


def test_resaving_a_name_replaces_it(tmp_path):
    model = tiny_model()
    ckpt = Checkpointer(tmp_path, model)
    ckpt.save("latest", epoch=0)
    ckpt.save("latest", epoch=1)
    assert read_checkpoint(tmp_path / "latest.pth")["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "latest.pth"]


def test_keep_last_prunes_older_checkpoints(tmp_path):
    ckpt = Checkpointer(tmp_path, tiny_model(), keep_last=2)
    for epoch in range(4):
        ckpt.save(f"epoch_{epoch}", epoch=epoch)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_2.pth", "epoch_3.pth"]
    assert ckpt.get_checkpoint_file().name == "epoch_3.pth"
    again = Checkpointer(tmp_path, tiny_model(), keep_last=1)  # a restarted run keeps counting
    again.save("epoch_4", epoch=4)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_4.pth"]


def test_resume_or_load(tmp_path):
    init_model = tiny_model(seed=3)
    init = Checkpointer(tmp_path / "init", init_model).save("pretrained", source="imagenet")

    # nothing to resume: the model starts from `path`, the optimizer stays fresh
    model, optimizer, scheduler = trained()
    run = Checkpointer(tmp_path / "run", model, optimizer, scheduler)
    momentum = {k: v["momentum_buffer"].clone() for k, v in enumerate(optimizer.state.values())}
    assert run.resume_or_load(init) == {"source": "imagenet"}
    assert same_weights(model, init_model)
    assert all(
        torch.equal(momentum[k], v["momentum_buffer"])
        for k, v in enumerate(optimizer.state.values())
    )

    # after a save, resuming takes the run's own last checkpoint and ignores `path`
    with torch.no_grad():
        model[2].bias.fill_(4.0)
    run.save("epoch_0", epoch=0)
    model2, optimizer2, scheduler2 = trained(seed=9)
    extra = Checkpointer(tmp_path / "run", model2, optimizer2, scheduler2).resume_or_load(
        init, resume=True
    )
    assert extra == {"epoch": 0} and torch.all(model2[2].bias == 4.0)

    # resume=False loads `path` even though the run has a checkpoint
    model3 = tiny_model(seed=11)
    assert Checkpointer(tmp_path / "run", model3).resume_or_load(init, resume=False) == {
        "source": "imagenet"
    }
    assert same_weights(model3, init_model)


def test_module_prefix_from_ddp_is_stripped(tmp_path):
    model = tiny_model(seed=2)
    path = tmp_path / "ddp.pth"
    torch.save(
        {"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 1}, path
    )
    plain = tiny_model(seed=8)
    assert Checkpointer(tmp_path, plain).load(path) == {"epoch": 1}
    assert same_weights(plain, model)


def test_ddp_wrapped_model_saves_and_loads_without_prefix(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = tiny_model(seed=4)
        wrapped = nn.parallel.DistributedDataParallel(model)
        path = Checkpointer(tmp_path / "ck", wrapped).save("a")
        assert all(not k.startswith("module.") for k in read_checkpoint(path)["model"])
        other = nn.parallel.DistributedDataParallel(tiny_model(seed=6))
        Checkpointer(tmp_path / "ck", other).resume_or_load()
        assert same_weights(other.module, model)
    finally:
        dist.destroy_process_group()


class Payload:
    """An arbitrary class: pickling it into a checkpoint must not be loadable."""

    def __reduce__(self):
        return (print, ("this would run on load",))


def test_pickled_objects_are_refused_on_load(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": tiny_model().state_dict(), "payload": Payload()}, path)
    with pytest.raises(InputError, match="evil.pth.*unsafe checkpoint"):
        Checkpointer(tmp_path, tiny_model()).load(path)


def test_unloadable_values_are_refused_before_writing(tmp_path):
    ckpt = Checkpointer(tmp_path, tiny_model())
    with pytest.raises(TypeError, match=r"checkpoint.config.*Payload"):
        ckpt.save("a", config={"payload": Payload()})
    assert not any(tmp_path.iterdir())
    with pytest.raises(InputError, match="extra"):
        ckpt.save("b", model=1)
    with pytest.raises(InputError, match="name"):
        ckpt.save("../escape")


def test_checkpoint_of_another_model_names_file_key_and_shapes(tmp_path):
    path = Checkpointer(tmp_path, tiny_model(hidden=5)).save("wide")
    with pytest.raises(InputError) as err:
        Checkpointer(tmp_path, tiny_model(hidden=3)).load(path)
    message = str(err.value)
    assert (
        "wide.pth" in message
        and "model.0.weight" in message
        and "(5, 4)" in message
        and "(3, 4)" in message
    )
    with pytest.raises(InputError, match="missing.*'2.weight'"):
        load_model_state(
            tiny_model(), {"0.weight": torch.zeros(3, 4), "0.bias": torch.zeros(3)}, "partial.pth"
        )


def test_corrupt_and_missing_files_are_input_errors(tmp_path):
    good = Checkpointer(tmp_path, tiny_model()).save("good")
    torn = tmp_path / "torn.pth"
    torn.write_bytes(good.read_bytes()[:100])
    with pytest.raises(InputError, match="torn.pth.*corrupt checkpoint"):
        read_checkpoint(torn)
    with pytest.raises(InputError, match="missing checkpoint"):
        read_checkpoint(tmp_path / "nope.pth")
    (tmp_path / LAST_CHECKPOINT).write_text("gone.pth")
    assert Checkpointer(tmp_path, tiny_model()).get_checkpoint_file() is None
