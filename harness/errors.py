"""Errors the CLI turns into one clear line and a fixed exit code."""


class HarnessError(Exception):
    """Base class: message is shown as one line, exit_code is returned."""

    exit_code = 1


class UsageError(HarnessError):
    """Bad input from the user: unknown name, bad --set, incompatible pair."""

    exit_code = 2


class PreflightError(HarnessError):
    """The planned run cannot fit on the target device."""

    exit_code = 3
