"""Every optimizer in the registry has its memory-traffic bound written down
(`benchmarks/bounds.py`), so `benchmarks/step_time.py` can measure it against its own bound."""

from benchmarks.bounds import PASSES
from optimkit import registry


def test_every_registry_optimizer_has_a_bound():
  missing = sorted(set(registry.names()) - set(PASSES))
  assert not missing, (f"no entry in benchmarks/bounds.py PASSES for {missing}: write down the "
                       f"extra passes its reduction dependencies force (ELEMENTWISE if none)")


def test_no_bound_for_an_optimizer_that_is_not_registered():
  assert not sorted(set(PASSES) - set(registry.names()))


def test_own_bound_is_at_least_the_streaming_bound():
  for name, passes in PASSES.items():
    assert passes.why, name
    assert passes.own_bytes(4, 4, 8) >= passes.streaming_bytes(4, 4, 8), name
