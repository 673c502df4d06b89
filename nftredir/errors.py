"""The failures nftredir expects, each with the exit code the CLI documents."""

from __future__ import annotations

EXIT_OK = 0
EXIT_INVALID = 2  # bad input or usage: nothing was sent to the kernel
EXIT_SYSTEM = 3  # the system refused: permissions, missing library, kernel rejected the batch
EXIT_INTERNAL = 4  # a bug in nftredir: reported in one line all the same
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a tool its pipe's reader left


def describe(text: str, limit: int = 60) -> str:
    """Quote a user's value for a one-line message: escaped, and cut when long."""
    shown = text if len(text) <= limit else text[:limit]
    quoted = repr(shown)
    if len(text) > limit:
        quoted += f"… ({len(text.encode('utf-8', 'surrogateescape'))} bytes)"
    return quoted


class NftredirError(Exception):
    """An expected failure: the CLI prints it as one line and exits with `exit_code`."""

    exit_code = EXIT_SYSTEM


class ConfigError(NftredirError):
    """A value from some source is invalid; `source` names the flag, variable or file position."""

    exit_code = EXIT_INVALID

    def __init__(self, source: object, value: str, reason: str) -> None:
        # A source may be a lazy description of a file position (sources.documents.Where).
        self.source, self.value, self.reason = str(source), value, reason
        super().__init__(f"{self.source}: {describe(value)}: {reason}")


class SystemRefused(NftredirError):
    """The host could not do what was asked: no privilege, no libnftables, or the kernel said no."""

    exit_code = EXIT_SYSTEM


class OutputError(NftredirError):
    """Standard output could not be written (full, closed, or its reader gone)."""

    exit_code = EXIT_SYSTEM

    def __init__(self, errno: int | None, strerror: str) -> None:
        self.errno, self.strerror = errno, strerror
        super().__init__(strerror)
