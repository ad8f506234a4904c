"""Schedules against torch.optim.lr_scheduler where they overlap, at every step including the
boundaries (step 0, end of warmup, last step) and past the end; bad arguments; jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from optimkit import schedules

BASE = 0.1


def _torch_lrs(make_scheduler, steps, base=BASE):
  optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
  scheduler = make_scheduler(optimizer)
  values = []
  for _ in range(steps):
    values.append(optimizer.param_groups[0]["lr"])
    optimizer.step()
    scheduler.step()
  return np.asarray(values)


def _ours(schedule, steps):
  return np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(steps)))


S = torch.optim.lr_scheduler
CASES = {
    "linear": (schedules.linear(BASE * 0.1, BASE * 1.0, 20),
               lambda o: S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=20), 40),
    "cosine": (schedules.cosine(BASE, 50, end_value=0.002),
               lambda o: S.CosineAnnealingLR(o, T_max=50, eta_min=0.002), 51),
    "onecycle_cos": (schedules.onecycle(BASE, 100),
                     lambda o: S.OneCycleLR(o, max_lr=BASE, total_steps=100), 100),
    "onecycle_linear": (schedules.onecycle(BASE, 100, pct_start=0.25, anneal_strategy="linear",
                                           div_factor=10, final_div_factor=100),
                        lambda o: S.OneCycleLR(o, max_lr=BASE, total_steps=100, pct_start=0.25,
                                               anneal_strategy="linear", div_factor=10,
                                               final_div_factor=100), 100),
    "onecycle_three_phase": (schedules.onecycle(BASE, 90, three_phase=True),
                             lambda o: S.OneCycleLR(o, max_lr=BASE, total_steps=90,
                                                    three_phase=True), 90),
    "step": (schedules.step_decay(BASE, gamma=0.5, step_size=7),
             lambda o: S.StepLR(o, step_size=7, gamma=0.5), 40),
    "multistep": (schedules.step_decay(BASE, gamma=0.3, milestones=[5, 12, 30]),
                  lambda o: S.MultiStepLR(o, milestones=[5, 12, 30], gamma=0.3), 40),
    "exponential": (schedules.exponential(BASE, 0.95),
                    lambda o: S.ExponentialLR(o, gamma=0.95), 60),
    "polynomial": (schedules.polynomial(BASE, 0.0, 2.0, 30),
                   lambda o: S.PolynomialLR(o, total_iters=30, power=2.0), 45),
    "restarts": (schedules.cosine_restarts(BASE, 10, end_value=0.001),
                 lambda o: S.CosineAnnealingWarmRestarts(o, T_0=10, eta_min=0.001), 45),
    "restarts_mult": (schedules.cosine_restarts(BASE, 5, period_mult=2),
                      lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2), 80),
    "sequential": (schedules.join([schedules.linear(BASE * 0.01, BASE, 10),
                                   schedules.cosine(BASE, 30, end_value=0.0)], [10]),
                   lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.01, 1.0, 10),
                                                S.CosineAnnealingLR(o, T_max=30)],
                                            milestones=[10]), 40),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch_lr_scheduler(name):
  schedule, make, steps = CASES[name]
  np.testing.assert_allclose(_ours(schedule, steps), _torch_lrs(make, steps), rtol=1e-6,
                             atol=1e-12)


def test_warmup_cosine_boundaries_and_past_the_end():
  s = schedules.warmup_cosine(0.0, 1.0, warmup_steps=10, total_steps=110, end_value=0.1)
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)  # end of warmup: the peak
  assert float(s(60)) == pytest.approx(0.55)  # half way through the cosine
  assert float(s(110)) == pytest.approx(0.1)  # last step
  assert float(s(10_000)) == pytest.approx(0.1)  # past the end: held


@pytest.mark.parametrize("shape,middle", [("linear", 0.5), ("cosine", 0.5),
                                          ("1-sqrt", 1 - np.sqrt(0.5))])
def test_wsd_phases(shape, middle):
  s = schedules.wsd(1.0, total_steps=100, warmup_steps=10, decay_steps=20, decay_shape=shape)
  assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == 1.0 and float(s(79)) == 1.0  # stable
  assert float(s(90)) == pytest.approx(middle)
  assert float(s(100)) == pytest.approx(0.0) and float(s(500)) == pytest.approx(0.0)
  by_fraction = schedules.wsd(1.0, total_steps=100, warmup_steps=10, decay_fraction=0.2,
                              decay_shape=shape)
  np.testing.assert_allclose(_ours(by_fraction, 120), _ours(s, 120))


def test_inverse_sqrt():
  s = schedules.inverse_sqrt(1.0, warmup_steps=100)
  assert float(s(50)) == pytest.approx(0.5)
  assert float(s(100)) == pytest.approx(1.0)
  assert float(s(400)) == pytest.approx(0.5)


def test_onecycle_holds_its_minimum_past_the_end():
  s = schedules.onecycle(0.1, 100)
  assert float(s(500)) == pytest.approx(float(s(99)))


BAD = [
    (lambda: schedules.warmup_cosine(0, 1, warmup_steps=10, total_steps=10), "total_steps must be > warmup_steps"),
    (lambda: schedules.cosine(-1.0, 10), "init_value must be"),
    (lambda: schedules.linear(1.0, 0.0, 0), "transition_steps must be an integer >= 1"),
    (lambda: schedules.wsd(1.0, 100, warmup_steps=50, decay_steps=60), "warmup_steps \\+ decay_steps"),
    (lambda: schedules.wsd(1.0, 100, decay_shape="exp"), "decay_shape must be one of"),
    (lambda: schedules.onecycle(0.1, 100, pct_start=1.5), "pct_start must be in"),
    (lambda: schedules.step_decay(0.1, step_size=3, milestones=[2]), "exactly one of"),
    (lambda: schedules.step_decay(0.1, milestones=[5, 2]), "milestones must be increasing"),
    (lambda: schedules.exponential(0.1, gamma=0.0), "gamma must be"),
    (lambda: schedules.join([schedules.constant(1.0)], [3]), "one more schedule than boundaries"),
    (lambda: schedules.cosine_restarts(0.1, 0), "first_period must be"),
]


@pytest.mark.parametrize("make,message", BAD)
def test_invalid_arguments_raise(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_plot_schedule_writes_a_png(tmp_path):
  path = schedules.plot_schedule(schedules.warmup_cosine(0, 1, 10, 100), 100,
                                 str(tmp_path / "s.png"))
  assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert path.endswith("s.png")
