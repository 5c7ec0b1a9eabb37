"""Errors the CLI turns into one clear message instead of a traceback."""


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


def note_interrupt(signum: int) -> None:
    """Remember a signal before :class:`RunInterrupted` is raised for it."""
    _PENDING_SIGNALS.append(int(signum))


def clear_interrupts() -> None:
    _PENDING_SIGNALS.clear()


def raise_if_interrupted() -> None:
    """Raise :class:`RunInterrupted` again for a signal whose first raise was swallowed.

    Why: a KeyboardInterrupt that lands in a library's ``except BaseException`` cleanup
    (a database connection pool, a ``__del__``) is logged and dropped there, and the run
    would go on to the end. The driver calls this between fold jobs.
    """
    if _PENDING_SIGNALS:
        raise RunInterrupted(_PENDING_SIGNALS[0])

