"""The generic resource pool: warm-up, acquire/release, affinity, exhaustion's clear error."""

from __future__ import annotations

import itertools
import threading

import pytest

from voice.pools import PoolExhausted, ResourcePool, STTResourcePool


class Engine:
    made = itertools.count()

    def __init__(self) -> None:
        self.n = next(self.made)
        self.resets = 0


def test_warm_up_makes_every_resource_before_the_first_call() -> None:
    made: list[Engine] = []

    def make() -> Engine:
        made.append(Engine())
        return made[-1]

    pool = ResourcePool("tts", make, size=3, acquire_timeout_s=1)
    pool.warm_up()
    assert len(made) == 3
    first = pool.acquire()
    assert first in made and len(made) == 3
    pool.release(first)
    assert pool.stats().available == 3 and pool.stats().in_use == 0


def test_exhaustion_names_the_setting_and_a_release_lets_a_waiter_in() -> None:
    pool = STTResourcePool(Engine, size=1, acquire_timeout_s=0.2)
    held = pool.acquire("call-a")
    with pytest.raises(PoolExhausted, match=r"stt pool exhausted.*STT_POOL_SIZE"):
        pool.acquire("call-b")
    assert pool.stats().exhausted == 1

    got: list[Engine] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire("call-b", timeout=30)))
    waiter.start()
    pool.release(held, "call-a")
    waiter.join(30)
    assert got == [held]
    assert pool.stats().waits == 1
    pool.release(got[0], "call-b")


def test_a_session_gets_its_own_resource_back() -> None:
    pool = ResourcePool("stt", Engine, size=3, acquire_timeout_s=1)
    pool.warm_up()
    mine = pool.acquire("session-1")
    other = pool.acquire("session-2")
    pool.release(mine, "session-1")
    pool.release(other, "session-2")
    assert pool.acquire("session-1") is mine
    assert pool.stats().affinity_hits == 1


def test_reset_runs_on_release_and_a_failing_resource_is_replaced() -> None:
    def reset(engine: Engine) -> None:
        engine.resets += 1
        if engine.resets > 1:
            raise RuntimeError("broken")

    closed: list[Engine] = []
    pool = ResourcePool(
        "aoai", Engine, size=1, acquire_timeout_s=1, reset=reset, close=closed.append
    )
    engine = pool.acquire()
    pool.release(engine)
    assert pool.acquire() is engine
    pool.release(engine)  # the second reset fails: the engine is closed, a new one made next
    assert closed == [engine]
    replacement = pool.acquire()
    assert replacement is not engine
    pool.release(replacement)
    with pytest.raises(ValueError, match="did not lend"):
        pool.release(replacement)
    pool.close()
    assert closed == [engine, replacement]
