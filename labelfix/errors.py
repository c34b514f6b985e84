"""Typed errors. The library raises these; the CLI maps each to one line (cli/_common.py)."""


class LabelfixError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class UsageError(LabelfixError):
    """Bad arguments or settings (exit code 2)."""


class BankError(LabelfixError):
    """A model bank is missing, corrupt, or does not fit the data."""


class DataError(LabelfixError):
    """A dataset folder does not have a layout labelfix can read."""


class InputFileError(LabelfixError):
    """One input file cannot be used; the batch goes on without it."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
