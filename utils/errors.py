"""The one exception type a user should see: a mistake in their command or files.

Scripts catch it in `utils.cli.run_main`, print its one-line message and exit with
status 2, without a traceback.  Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""
