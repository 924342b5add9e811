"""Storm throttling under a fake clock: windows, jitter, held-back counts, bounded memory."""

from __future__ import annotations

import threading

import pytest

from membrane_otel.membrane._throttle import Decision, Throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _throttle(clock: FakeClock, rand: float = 0.5, **kwargs: object) -> Throttle:
    """A throttle whose jitter draw is fixed (0.5 = no jitter)."""
    return Throttle(clock=clock, random=lambda: rand, **kwargs)


def test_first_record_passes() -> None:
    """Nothing has gone out yet: the first record is allowed with nothing held back."""
    assert _throttle(FakeClock()).admit("script_error", "fp1") == Decision(True, 0, 0, "ok")


def test_storm_of_one_error_lets_one_through_per_window() -> None:
    """1000 identical errors in 10 s: one goes out, the rest are counted."""
    clock = FakeClock()
    throttle = _throttle(clock)
    allowed = 0
    for _ in range(1000):
        if throttle.admit("script_error", "fp1").allowed:
            allowed += 1
        clock.advance(0.01)
    assert allowed == 1
    assert throttle.suppressed == 999


def test_next_envelope_carries_held_back_count() -> None:
    """The first record after the window reports how many were held back before it."""
    clock = FakeClock()
    throttle = _throttle(clock)
    throttle.admit("script_error", "fp1")
    for _ in range(7):
        assert throttle.admit("script_error", "fp1").reason == "fingerprint"
    clock.advance(15.0)
    decision = throttle.admit("script_error", "fp1")
    assert decision.allowed and decision.held_back == 7 and decision.held_back_type == 7
    clock.advance(15.0)
    assert throttle.admit("script_error", "fp1") == Decision(True, 0, 0, "ok")


def test_fingerprint_window_is_ten_seconds() -> None:
    """Per fingerprint: 1 per 10 s (type unthrottled here to isolate the fingerprint window)."""
    clock = FakeClock()
    throttle = _throttle(clock, type_interval=0.0)
    assert throttle.admit("script_error", "fp1").allowed
    clock.advance(9.99)
    assert not throttle.admit("script_error", "fp1").allowed
    clock.advance(0.01)
    assert throttle.admit("script_error", "fp1").allowed


def test_type_window_is_fifteen_seconds_across_fingerprints() -> None:
    """Per signal type: 1 per 15 s, whatever the fingerprint."""
    clock = FakeClock()
    throttle = _throttle(clock)
    assert throttle.admit("script_error", "fp1").allowed
    clock.advance(14.9)
    decision = throttle.admit("script_error", "fp2")
    assert not decision.allowed and decision.reason == "type"
    clock.advance(0.1)
    decision = throttle.admit("script_error", "fp3")
    assert decision.allowed and decision.held_back == 0 and decision.held_back_type == 1


def test_fingerprints_are_independent() -> None:
    """One fingerprint's storm does not hold back another's (type limit off)."""
    clock = FakeClock()
    throttle = _throttle(clock, type_interval=0.0)
    assert throttle.admit("script_error", "storm").allowed
    for _ in range(50):
        assert not throttle.admit("script_error", "storm").allowed
    assert throttle.admit("script_error", "other").allowed
    assert throttle.admit("script_error", "third").allowed


def test_signal_types_are_independent() -> None:
    """A storm of one signal type leaves other types alone."""
    clock = FakeClock()
    throttle = _throttle(clock)
    assert throttle.admit("script_error", "fp1").allowed
    assert not throttle.admit("script_error", "fp2").allowed
    assert throttle.admit("script_warning", "fp2").allowed


def test_type_intervals_override_per_type() -> None:
    """A type with interval 0 is limited only per fingerprint; another can have its own window."""
    clock = FakeClock()
    throttle = _throttle(clock, type_intervals={"stimulus": 0.0, "slow": 60.0})
    assert throttle.admit("stimulus", "a").allowed
    assert throttle.admit("stimulus", "b").allowed
    assert throttle.admit("slow", "a").allowed
    clock.advance(30.0)
    assert not throttle.admit("slow", "b").allowed


def test_no_fingerprint_means_type_limit_only() -> None:
    """An empty or missing fingerprint is throttled by its type alone."""
    clock = FakeClock()
    throttle = _throttle(clock)
    assert throttle.admit("script_error", "").allowed
    assert not throttle.admit("script_error", None).allowed
    clock.advance(15.0)
    assert throttle.admit("script_error", None) == Decision(True, 0, 1, "ok")
    assert len(throttle) == 0


@pytest.mark.parametrize(("draw", "window"), [(0.0, 9.0), (0.5, 10.0), (0.999999, 10.99999)])
def test_jitter_scales_the_window_within_ten_percent(draw: float, window: float) -> None:
    """The window is interval × (1 ± 10 %), from the injected random draw."""
    clock = FakeClock()
    throttle = _throttle(clock, rand=draw, type_interval=0.0)
    throttle.admit("script_error", "fp")
    clock.advance(window - 0.001)
    assert not throttle.admit("script_error", "fp").allowed
    clock.advance(0.002)
    assert throttle.admit("script_error", "fp").allowed


def test_jitter_bounds_with_real_randomness() -> None:
    """With the default random source every window lies within [9 s, 11 s)."""
    clock = FakeClock()
    throttle = Throttle(clock=clock, type_interval=0.0)
    for i in range(200):
        fp = f"fp{i}"
        throttle.admit("script_error", fp)
        clock.advance(8.999)
        assert not throttle.admit("script_error", fp).allowed
        # to 11.001 s: a window just under 11 s (random() near 1) must have closed; 10.999 s
        # would fail about once in a hundred runs of 200 draws.
        clock.advance(2.002)
        assert throttle.admit("script_error", fp).allowed
        clock.advance(11.0)


def test_suppressed_records_are_all_reported_per_type() -> None:
    """Summed held_back_type of allowed records plus pending equals everything suppressed."""
    clock = FakeClock()
    throttle = _throttle(clock)
    reported = 0
    for i in range(3000):
        decision = throttle.admit("script_error", f"fp{i % 7}")
        reported += decision.held_back_type
        clock.advance(0.1)
    assert reported + throttle.pending() == throttle.suppressed
    assert throttle.suppressed > 2900


def test_memory_is_bounded_by_max_keys() -> None:
    """Endless distinct fingerprints never keep more than max_keys windows."""
    clock = FakeClock()
    throttle = _throttle(clock, max_keys=100, type_interval=0.0)
    for i in range(5000):
        throttle.admit("script_error", f"fp{i}")
        assert len(throttle) <= 100


def test_evicted_counts_are_accounted_as_forgotten() -> None:
    """A held-back count dropped by eviction is counted, not lost silently."""
    clock = FakeClock()
    throttle = _throttle(clock, max_keys=2)
    throttle.admit("script_error", "a")  # allowed; closes the type window
    for fp in ("b", "c", "d"):  # held back by the type window, each remembered with held=1
        assert not throttle.admit("script_error", fp).allowed
    assert len(throttle) == 2
    # "a" (nothing held) and then "b" (one held) were evicted: b's one is the forgotten one.
    assert throttle.forgotten == 1
    assert throttle.suppressed == 3


def test_idle_windows_expire() -> None:
    """Windows that reopened with nothing held are dropped as traffic goes on."""
    clock = FakeClock()
    throttle = _throttle(clock, type_interval=0.0)
    for i in range(50):
        throttle.admit("script_error", f"old{i}")
    clock.advance(60.0)
    for i in range(50):
        throttle.admit("script_error", f"new{i}")
    assert len(throttle) == 50


def test_bad_settings_are_refused() -> None:
    """Out-of-range jitter, key bounds or intervals fail at construction."""
    with pytest.raises(ValueError, match="jitter"):
        Throttle(jitter=1.5)
    with pytest.raises(ValueError, match="max_keys"):
        Throttle(max_keys=0)
    with pytest.raises(ValueError, match="negative"):
        Throttle(type_interval=-1.0)


def test_concurrent_admits_count_every_record() -> None:
    """Under 8 threads, allowed + suppressed equals the records offered."""
    clock = FakeClock()
    throttle = _throttle(clock)
    allowed = [0] * 8

    def worker(n: int) -> None:
        for i in range(2000):
            if throttle.admit("script_error", f"fp{i % 13}").allowed:
                allowed[n] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(allowed) == 1  # the clock never moved
    assert sum(allowed) + throttle.suppressed == 8 * 2000
