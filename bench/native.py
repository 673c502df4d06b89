"""The two C helpers (spawn.c, conn.c), compiled on first use into the work directory."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELPERS = ("spawn", "conn")


class BenchError(Exception):
    """A measurement could not be made; the message says which and why."""


def build_helpers(workdir: Path) -> dict[str, Path]:
    """Compile each helper (once per source version); returns name -> executable."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("needs a C compiler for its two small helpers: apt-get install gcc")
    built = {}
    for name in HELPERS:
        src = HERE / f"{name}.c"
        exe = workdir / f"{name}-{hashlib.sha256(src.read_bytes()).hexdigest()[:12]}"
        if not exe.exists():
            tmp = exe.with_suffix(".tmp")
            proc = subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(src)], capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise BenchError(f"compiling {src.name} failed:\n{proc.stderr}")
            tmp.rename(exe)
        built[name] = exe
    return built
