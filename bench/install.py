"""Which nftredir is measured: by default a regular (non-editable) install of this working
tree into its own venv, as a container image would have it.

An editable install (`pip install -e`, as .venv has) puts an import hook on every start, so it
is not the fair measure of startup; `--nftredir PATH` measures any other install as it is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from bench.native import BenchError

REPO = Path(__file__).resolve().parent.parent
_SOURCES = ("pyproject.toml", "README.md", "nftredir", "templates")


def _source_files() -> list[Path]:
    files: list[Path] = []
    for name in _SOURCES:
        path = REPO / name
        files.extend(sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) if path.is_dir() else [path])
    return files


def source_digest() -> str:
    h = hashlib.sha256()
    for path in _source_files():
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def build_venv(workdir: Path, log) -> Path:
    """`/usr/bin/python3 -m venv --system-site-packages` + `pip install` of a copy of the
    working tree (so no build/ or egg-info lands in the repository). Rebuilt only when the
    sources change. Returns the venv's nftredir."""
    venv = workdir / "venv"
    stamp = venv / "nftredir-source.sha256"
    digest = source_digest()
    exe = venv / "bin" / "nftredir"
    if exe.exists() and stamp.exists() and stamp.read_text() == digest:
        return exe
    log(f"installing this working tree (non-editable) into {venv} ...")
    shutil.rmtree(venv, ignore_errors=True)
    src = workdir / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for path in _source_files():
        dest = src / path.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    for argv in (
        ["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--no-build-isolation", str(src)],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}")
    shutil.rmtree(src, ignore_errors=True)
    # Store the compiled templates, as the image build does (an init container never compiles).
    warm_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for format in ("nft", "json", "iptables"):
        subprocess.run([str(exe), "render", "--format", format], env=warm_env, capture_output=True, check=True, timeout=120)
    stamp.write_text(digest)
    return exe


_DESCRIBE = """
import importlib.metadata as m, nftredir
print(nftredir.__file__)
found = []
for name in ("typer", "typer-slim", "click", "jinja2", "pyyaml"):
    try:
        found.append(f"{name} {m.version(name)}")
    except m.PackageNotFoundError:
        pass
print(", ".join(found) or "none")
"""


def describe(nftredir: Path) -> dict[str, str]:
    """Where the measured nftredir's package lives, and whether that is an editable install."""
    python = nftredir.read_text(errors="replace").splitlines()[0].removeprefix("#!").strip()
    proc = subprocess.run(
        [python, "-c", _DESCRIBE],
        capture_output=True, text=True, timeout=60, cwd="/",
    )
    lines = proc.stdout.splitlines()
    package = lines[0] if lines else "?"
    editable = package.startswith(str(REPO / "nftredir"))
    return {
        "path": str(nftredir),
        "python": python,
        "package": package,
        "install": "editable (adds import-hook overhead)" if editable else "regular (non-editable)",
        "dependencies": lines[1] if len(lines) > 1 else "?",
    }
