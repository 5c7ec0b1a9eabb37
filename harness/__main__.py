"""Entry point for ``python -m harness``."""

from harness.cli import main

# Guarded: spawned worker processes import this module as ``__mp_main__``.
if __name__ == "__main__":
    raise SystemExit(main())
