"""nftredir.runner's exit: sys.exit's meaning without the interpreter's tear-down.

Each case runs in a child process, since exit_now ends the process that calls it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _child(body: str) -> subprocess.CompletedProcess[bytes]:
    script = f"from nftredir.runner import exit_now, run\nimport sys\n{body}\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize(("code", "status"), [("None", 0), ("0", 0), ("3", 3), ("259", 3), ("True", 1)])
def test_exit_now_gives_the_status_sys_exit_would(code: str, status: int) -> None:
    assert _child(f"exit_now({code})").returncode == status
    assert _child(f"sys.exit({code})").returncode == status  # the rule exit_now copies


def test_exit_now_prints_anything_else_and_exits_1() -> None:
    proc = _child("exit_now('boom: the reason')")
    assert proc.returncode == 1
    assert proc.stderr == b"boom: the reason\n"


def test_what_is_still_buffered_arrives_complete() -> None:
    """A megabyte on stdout, far more than a pipe or the stream's buffer holds, and a line on
    stderr without its newline: all of it reaches the reader although no tear-down runs."""
    proc = _child("sys.stdout.write('x' * 1_000_000 + 'end')\nsys.stderr.write('partial')\nexit_now(0)")
    assert proc.returncode == 0
    assert proc.stdout == b"x" * 1_000_000 + b"end"
    assert proc.stderr == b"partial"


def test_run_exits_through_it_with_the_command_s_output() -> None:
    """run's exit keeps what the command printed, and its SystemExit code."""
    proc = _child("def command():\n    print('rendered ' * 50_000)\n    sys.exit(4)\nrun(command)")
    assert proc.returncode == 4
    assert proc.stdout == b"rendered " * 50_000 + b"\n"
    assert proc.stderr == b""


def test_a_closed_stdout_does_not_stop_the_exit() -> None:
    """With no stdout to flush (an init container started with it closed) the exit still gives
    the command's status, and no traceback."""
    proc = subprocess.run([sys.executable, "-c", "from nftredir.runner import exit_now\nexit_now(5)"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60, check=False,
                          preexec_fn=lambda: __import__("os").close(1))
    assert proc.returncode == 5
    assert proc.stderr == b""


def test_what_is_registered_at_exit_still_runs() -> None:
    """A library's atexit handler (logging's flush, say) runs, as at a normal exit, before the
    streams are flushed."""
    proc = _child("import atexit\natexit.register(lambda: print('handler ran'))\nexit_now(2)")
    assert proc.returncode == 2
    assert proc.stdout == b"handler ran\n"
