"""Errors the CLI turns into one clear message instead of a traceback."""

from collections.abc import Iterator
from contextlib import contextmanager


class HarnessError(Exception):
    """A problem the user can fix (bad input, bad option); printed without a traceback."""


class NoUsableDataError(HarnessError):
    """Raised when, after skipping every bad file, nothing usable is left."""


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT: unwinds like Ctrl-C, so every ``finally`` and cleanup runs.

    A KeyboardInterrupt, not an Exception, so no ``except Exception`` on the way up can
    swallow it and keep the run going.
    """

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class LeakySplitError(HarnessError):
    """Raised when a split that claims to be patient-level puts a patient on both sides."""


#: Signals received and not yet acted on (see :func:`raise_if_interrupted`).
_PENDING_SIGNALS: list[int] = []
#: Nesting depth of :func:`interrupts_deferred` blocks, and the signals they held back.
_DEFER_DEPTH = 0
_DEFERRED_SIGNALS: list[int] = []


def note_interrupt(signum: int) -> None:
    """Remember a signal before :class:`RunInterrupted` is raised for it."""
    _PENDING_SIGNALS.append(int(signum))


def clear_interrupts() -> None:
    _PENDING_SIGNALS.clear()
    _DEFERRED_SIGNALS.clear()


def raise_if_interrupted() -> None:
    """Raise :class:`RunInterrupted` again for a signal whose first raise was swallowed.

    Why: a KeyboardInterrupt that lands in a library's ``except BaseException`` cleanup
    (a database connection pool, a ``__del__``) is logged and dropped there, and the run
    would go on to the end. The driver calls this between fold jobs.
    """
    if _PENDING_SIGNALS:
        raise RunInterrupted(_PENDING_SIGNALS[0])



def interrupts_are_deferred() -> bool:
    """True inside :func:`interrupts_deferred`: the signal handler then records, not raises."""
    return _DEFER_DEPTH > 0


def defer_interrupt(signum: int) -> None:
    """Hold a signal until the current :func:`interrupts_deferred` block ends."""
    _DEFERRED_SIGNALS.append(int(signum))


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """A block a signal must not cut in half: the signal is raised when the block ends.

    Why: a :class:`RunInterrupted` raised inside an MLflow write lands in SQLAlchemy's
    session or pool code, whose cleanup does not expect it. The abandoned transaction can
    keep the SQLite write lock, and the cleanup's own write ("mark this run KILLED") then
    waits for its own process and fails with "database is locked". Tracking writes take
    milliseconds, so a run still stops within a second of the signal.
    """
    global _DEFER_DEPTH
    _DEFER_DEPTH += 1
    try:
        yield
    finally:
        _DEFER_DEPTH -= 1
    if _DEFER_DEPTH == 0 and _DEFERRED_SIGNALS:
        signum = _DEFERRED_SIGNALS[0]
        _DEFERRED_SIGNALS.clear()
        raise RunInterrupted(signum)
