"""Exceptions that the CLI turns into one-line messages and exit codes."""


class MesoError(Exception):
    """An error a user can act on; its message is printed as one line, without a traceback."""

    exit_code = 1


class UsageError(MesoError):
    """Bad input: a job file, an inventory, a flag. Nothing was changed."""

    exit_code = 2


class Unplaceable(MesoError):
    """Some task of a job can never be placed on this cluster (larger than every host, blocked
    by its constraints everywhere, or by its framework's quota). Nothing was stored."""

    exit_code = 3

    def __init__(self, message: str, unplaced: list[dict]) -> None:
        super().__init__(message)
        self.unplaced = unplaced
