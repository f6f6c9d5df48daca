"""What the user is told: the one exception type a user should see (a mistake in their
command or files), and notes on choices made for them.

Scripts catch UserError in `utils.cli.run_main`, print its one-line message and exit with
status 2, without a traceback.  Anything else is a bug and keeps its traceback.
"""

import sys


def note(message: str) -> None:
    """A one-line note on stderr about a choice made for the user (it does not stop the run)."""
    print(f"note: {message}", file=sys.stderr)


class UserError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""
