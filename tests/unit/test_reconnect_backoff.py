"""The reconnect back-off in numbers: doubling, jitter bounds, and spread at the maximum."""

from __future__ import annotations

import itertools
import random
import statistics

from agent.ocpp.connection import reconnect_waits


def first(n: int, low: float, high: float, jitter) -> list[float]:
    return list(itertools.islice(reconnect_waits(low, high, jitter), n))


def test_without_jitter_the_wait_doubles_from_the_minimum():
    assert first(6, 1, 300, lambda: 0.0) == [1, 2, 4, 8, 16, 32]


def test_jitter_adds_up_to_the_base_and_never_passes_the_maximum():
    assert first(4, 1, 300, lambda: 0.5) == [1.5, 3, 6, 12]
    for jitter in (0.0, 0.5, 0.999999):
        waits = first(30, 1, 300, lambda j=jitter: j)
        assert all(1 <= w <= 300 for w in waits), waits


def test_at_the_maximum_the_waits_still_spread():
    """A CSMS outage makes every charger fail at once; capped waits must not stay in step."""
    chargers = [random.Random(seed) for seed in range(200)]
    tenth = [first(10, 1, 300, rng.random)[-1] for rng in chargers]  # base 300 by now
    assert min(tenth) >= 150 and max(tenth) <= 300
    assert statistics.pstdev(tenth) > 30  # uniform over [150, 300]: about 43


def test_equal_minimum_and_maximum_mean_a_fixed_wait():
    assert first(5, 5, 5, lambda: 0.9) == [5, 5, 5, 5, 5]
