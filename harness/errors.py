"""Errors the CLI turns into one clear line and a fixed exit code."""

import errno


class HarnessError(Exception):
    """Base class: message is shown as one line, exit_code is returned."""

    exit_code = 1
    prefix = "error: "


class UsageError(HarnessError):
    """Bad input from the user: unknown name, bad --set, incompatible pair."""

    exit_code = 2


class PreflightError(HarnessError):
    """The planned run cannot fit on the target device."""

    exit_code = 3


class NothingToDo(HarnessError):
    """The request is already satisfied (e.g. --resume of a finished run): said, exit 0."""

    exit_code = 0
    prefix = ""


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error a user can cause or fix (a read-only or
    full disk, a file where a directory should be), naming the path."""
    what = exc.strerror or str(exc)
    where = f": {exc.filename}" if exc.filename else ""
    hint = {errno.ENOSPC: "; free space, then rerun (runs resume from their checkpoints)",
            errno.EACCES: "; choose a writable directory", errno.EROFS: "; choose a writable directory",
            errno.ENOTDIR: "; a file stands where a directory is needed"}.get(exc.errno, "")
    return f"{what}{where}{hint}"
