"""The one exception a command raises for a problem the user can fix (bad data, bad option,
corrupt checkpoint). The command line prints its message on one line and exits with status 2."""


class UsageError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
