"""snapws.interrupts.deferred_signals: signals held back over a block,
acted on after it; handlers restored; nested and non-main-thread blocks run
as they are."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from snapws.interrupts import DeferredInterrupt, deferred_signals


def test_a_signal_inside_waits_for_the_end_of_the_block() -> None:
    before = signal.getsignal(signal.SIGINT)
    done = []
    finished = "the thing was finished first"
    with pytest.raises(DeferredInterrupt) as raised, deferred_signals(finished):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C: the same
        done.append("rest of the block")
    assert done == ["rest of the block"]
    assert raised.value.signum == signal.SIGINT
    assert raised.value.finished == "the thing was finished first"
    assert isinstance(raised.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_are_held_too(signum: int) -> None:
    before = signal.getsignal(signum)
    with pytest.raises(DeferredInterrupt) as raised, deferred_signals("x"):
        os.kill(os.getpid(), signum)
    assert raised.value.signum == signum
    assert signal.getsignal(signum) is before


def test_no_signal_no_interrupt_and_an_error_passes_through() -> None:
    with deferred_signals("x"):
        pass
    with pytest.raises(ValueError), deferred_signals("x"):
        os.kill(os.getpid(), signal.SIGINT)
        raise ValueError("the block's own error wins")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with deferred_signals("x"):
            os.kill(os.getpid(), signal.SIGHUP)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_nested_blocks_act_once_at_the_outer_end() -> None:
    after_inner = []
    with pytest.raises(DeferredInterrupt) as raised, deferred_signals("outer"):
        with deferred_signals("inner"):
            os.kill(os.getpid(), signal.SIGINT)
        after_inner.append(True)  # the inner block did not raise
    assert after_inner == [True]
    assert raised.value.finished == "outer"


def test_outside_the_main_thread_the_block_runs_as_it_is() -> None:
    seen: list[object] = []

    def run() -> None:
        with deferred_signals("x"):
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [signal.default_int_handler]
