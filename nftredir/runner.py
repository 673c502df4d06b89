"""How every entry point runs: each failure one line on stderr and a documented exit code.

Shared by the typer CLI (nftredir.cli) and the iptables-restore fast path (nftredir.restore),
and free of typer, so the fast path does not import it.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import gc
import os
import sys
from typing import Any, Callable, NoReturn

from nftredir.errors import EXIT_BROKEN_PIPE, EXIT_INTERNAL, NftredirError, OutputError


class Output:
    """Standard output whose write failures (a full disk, a closed descriptor) become one-line
    errors instead of a traceback at exit."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _guard(self, call: Callable[[], Any]) -> Any:
        if self._stream is None:
            raise OutputError(errno.EBADF, "standard output is closed")
        try:
            return call()
        except OSError as exc:
            raise OutputError(exc.errno, exc.strerror or str(exc)) from None

    def write(self, text: str) -> int:
        return self._guard(lambda: self._stream.write(text))

    def flush(self) -> None:
        self._guard(lambda: self._stream.flush())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def kernel(verbose: bool, write: bool = True):  # -> nftredir.kernel.Kernel
    """The door to libnftables; with `verbose`, each batch sent is logged on stderr."""
    from nftredir.kernel import Kernel

    trace = (lambda message: print(f"nftredir: {message}", file=sys.stderr)) if verbose else None
    return Kernel(trace=trace, write=write)


def table_source(config: Any) -> str:
    """Where a Config's table name came from, for a refusal's message."""
    return str(config.sources.get("table", "the table name (default)"))


def run(command: Callable[[], Any]) -> None:
    """Run `command` and exit: 0, its SystemExit code, or the failure's documented code."""
    # A run is short and its data is freed by reference counting; the cycle collector would only
    # walk a 50,000-range list again and again while it is built (a third of the bulk path's time).
    gc.disable()
    stdout = sys.stdout
    sys.stdout = Output(stdout)  # type: ignore[assignment]
    try:
        try:
            command()
            code: Any = 0
        except SystemExit as exc:
            code = exc.code
        sys.stdout.flush()
    except OutputError as exc:
        if stdout is not None:  # what is still buffered goes nowhere, so exit cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        if exc.errno == errno.EPIPE:
            code = EXIT_BROKEN_PIPE  # the reader went away (`| head`): not worth a message
        else:
            print(f"nftredir: error: cannot write to standard output: {exc.strerror}", file=sys.stderr)
            code = exc.exit_code
    except NftredirError as exc:
        print(f"nftredir: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # a bug: still one line, and an exit code no script reads as "different"
        print(f"nftredir: internal error: {type(exc).__name__}: {exc} (please report this)", file=sys.stderr)
        code = EXIT_INTERNAL
    finally:
        sys.stdout = stdout
    exit_now(code)


def exit_now(code: Any) -> NoReturn:
    """Exit as sys.exit(code) does, without the interpreter's tear-down.

    A run ends here with nothing left to do: the kernel has committed or refused, and the files
    nftredir writes are closed by then. Freeing every module and object one by one (jinja2's and
    typer's above all) would cost a short run ~6 ms, a tenth of an init container's, for memory
    the exit frees anyway; so what is registered to run at exit runs (a library's or an
    embedder's atexit handlers), the streams are flushed and the process ends at once."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit's rule for anything else: printed, and exit status 1
        print(code, file=sys.stderr)
        status = 1
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()  # as the interpreter's own exit does; each handler's failure is printed by it
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status & 0xFF)
