"""Learning-rate schedules of pretraining: a resumed cosine run stretched to more epochs."""

from __future__ import annotations

import pytest
import torch

from mlt.config import PretrainConfig
from mlt.train.loop import build_scheduler, extend_cosine, step_scheduler


def _opt(lr: float = 0.02) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def _lrs(opt, sched, n: int) -> list[float]:
    out = []
    for _ in range(n):
        opt.step()
        step_scheduler(sched, 1.0)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_stretched_cosine_continues_as_a_schedule_over_the_new_epochs() -> None:
    short = PretrainConfig(epochs=12, schedule="cosine", lr=0.02)
    opt = _opt()
    sched = build_scheduler(opt, short)
    _lrs(opt, sched, 12)  # a finished 12-epoch run: lr has annealed to ~0
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    state = sched.state_dict()

    opt2 = _opt()
    resumed = build_scheduler(opt2, short.model_copy(update={"epochs": 30}))
    resumed.load_state_dict(state)  # what resuming does: the saved T_max=12 comes back
    assert extend_cosine(resumed, opt2, 30)
    ref_opt = _opt()
    ref = build_scheduler(ref_opt, short.model_copy(update={"epochs": 30}))
    expected = _lrs(ref_opt, ref, 30)
    assert opt2.param_groups[0]["lr"] == pytest.approx(expected[11], rel=1e-9)
    assert _lrs(opt2, resumed, 18) == pytest.approx(expected[12:], rel=1e-9, abs=1e-15)
    assert not extend_cosine(resumed, opt2, 30)  # already stretched: nothing to do


def test_plateau_schedule_is_left_alone() -> None:
    opt = _opt()
    sched = build_scheduler(opt, PretrainConfig(schedule="plateau"))
    assert not extend_cosine(sched, opt, 50)
