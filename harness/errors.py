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


class StoreError(HarnessError):
    """The operating system refused a write or read (a full, read-only or too small disk):
    one line naming the path and the cause, exit 1 (bad input, such as a file where a
    directory should be, is a UsageError instead)."""

    exit_code = 1


# errno -> (the cause in plain words, what to do)
_CAUSES = {
    errno.ENOSPC: ("disk full", "free space, then rerun (runs resume from their checkpoints)"),
    errno.EDQUOT: ("disk quota exceeded", "free space or raise the quota, then rerun"),
    errno.EFBIG: ("over the file-size limit (ulimit -f) or the file system's largest file",
                  "raise the limit or use another file system, then rerun"),
    errno.EROFS: ("read-only file system", "choose a writable directory"),
    errno.EACCES: ("permission denied", "choose a writable directory"),
    errno.EPERM: ("operation not permitted", "choose a writable directory"),
    errno.ENOTDIR: ("a file stands where a directory is needed", "give a directory path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
}

# causes that are the user's input rather than the machine's state (exit 2)
INPUT_ERRNOS = (errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a timeout, preemption, docker stop): the command stops as after
    Ctrl-C, and exits 143 instead of 130."""


def raise_terminated(signum, frame):
    """The CLI's SIGTERM handler outside runs and batches (they install their own)."""
    raise Terminated("SIGTERM")


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error a user can cause or fix (a read-only or
    full disk, a file where a directory should be), naming the path and the cause."""
    what = exc.strerror or str(exc)
    cause, hint = _CAUSES.get(exc.errno, (None, None))
    if cause and cause.lower() != what.lower():
        what = f"{what} ({cause})"
    where = f": {exc.filename}" if exc.filename else ""
    return f"{what}{where}" + (f"; {hint}" if hint else "")


def os_failure(prefix: str, exc: OSError) -> HarnessError:
    """`prefix (one line of exc)` as the error to raise: UsageError (exit 2) when the path
    given is wrong in itself, StoreError (exit 1) when the disk refuses."""
    cls = UsageError if exc.errno in INPUT_ERRNOS else StoreError
    return cls(f"{prefix} ({os_error_line(exc)})")
