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
