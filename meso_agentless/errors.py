"""Exceptions that the CLI turns into one-line messages and exit codes."""


class MesoError(Exception):
    """An error a user can act on; its message is printed as one line, without a traceback."""

    exit_code = 1


class UsageError(MesoError):
    """Bad input: a job file, an inventory, a flag. Nothing was changed."""

    exit_code = 2
