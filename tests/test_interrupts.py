"""A signal never cuts a tracking write in half: it is raised when the write ends."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from harness.cli import install_signal_handlers
from harness.errors import RunInterrupted, clear_interrupts, interrupts_deferred
from harness.tracking import UninterruptedClient


@pytest.fixture
def harness_signal_handlers() -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    clear_interrupts()
    install_signal_handlers()
    yield
    clear_interrupts()
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    # The handler runs at the next bytecode boundary of the main thread; give it some.
    for _ in range(1000):
        pass


def test_without_deferral_the_signal_raises_at_once(harness_signal_handlers: None) -> None:
    steps = []
    with pytest.raises(RunInterrupted):
        _signal_self(signal.SIGTERM)
        steps.append("after the signal")
    assert steps == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_deferred_block_finishes_then_the_signal_is_raised(harness_signal_handlers: None, signum: int) -> None:
    steps = []
    with pytest.raises(RunInterrupted) as caught:
        with interrupts_deferred():
            _signal_self(signum)
            steps.append("write finished")
        steps.append("after the block")
    assert steps == ["write finished"]
    assert caught.value.signum == signum


def test_nested_blocks_raise_once_when_the_outer_one_ends(harness_signal_handlers: None) -> None:
    steps = []
    with pytest.raises(RunInterrupted):
        with interrupts_deferred():
            with interrupts_deferred():
                _signal_self(signal.SIGTERM)
            steps.append("outer block goes on")
    assert steps == ["outer block goes on"]
    with interrupts_deferred():  # the signal was consumed: a later block does not raise it again
        steps.append("cleanup write")
    assert steps[-1] == "cleanup write"


def test_an_error_inside_the_block_is_not_replaced(harness_signal_handlers: None) -> None:
    with pytest.raises(ValueError):
        with interrupts_deferred():
            _signal_self(signal.SIGTERM)
            raise ValueError("the write failed")


class _StoreThatIsSignalledMidWrite:
    """Stands in for MlflowClient: a signal arrives between a write's two halves."""

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.tracking_uri = "sqlite:///fake.db"

    def log_batch(self, run_id: str) -> None:
        self.rows.append(f"{run_id}: begin")
        _signal_self(signal.SIGTERM)
        self.rows.append(f"{run_id}: commit")


def test_the_client_proxy_completes_each_call_before_the_interrupt(harness_signal_handlers: None) -> None:
    store = _StoreThatIsSignalledMidWrite()
    client = UninterruptedClient(store)
    assert client.tracking_uri == "sqlite:///fake.db"  # attributes pass through
    with pytest.raises(RunInterrupted):
        client.log_batch("run-1")
    assert store.rows == ["run-1: begin", "run-1: commit"]
