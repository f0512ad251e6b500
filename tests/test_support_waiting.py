"""The tests' one polling loop: what ends a wait, and what a failed wait says."""

from __future__ import annotations

import itertools

import pytest

from tests.support.waiting import wait_until


def test_the_wait_returns_the_first_true_value_of_the_check() -> None:
    tries = itertools.count(1)
    assert wait_until(lambda: max(next(tries) - 2, 0), 10, "a third try", interval=0) == 1


def test_a_wait_that_times_out_names_what_it_waited_for_and_the_details() -> None:
    with pytest.raises(TimeoutError, match=r"(?s)after 0.01 s waiting for the moon:\nlog tail"):
        wait_until(lambda: False, 0.01, "the moon", interval=0, details=lambda: "log tail")


def test_an_ignored_exception_means_not_yet_and_any_other_fails_at_once() -> None:
    tries = itertools.count(1)

    def starting() -> bool:
        if next(tries) < 3:
            raise ConnectionError("refused")
        return True

    assert wait_until(starting, 10, "the server", interval=0, ignore=(ConnectionError,))

    def broken() -> bool:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        wait_until(broken, 10, "a bug", interval=0, ignore=(ConnectionError,))


def test_abort_ends_the_wait_with_its_reason_before_the_check_runs_again() -> None:
    checks = []
    with pytest.raises(RuntimeError, match="worker exited \\(1\\) waiting for ready"):
        wait_until(
            lambda: checks.append(1),
            10,
            "ready",
            interval=0,
            abort=lambda: "worker exited (1)" if checks else None,
        )
    assert checks == [1]
