"""The init container as a pod start pays for it: `podman run` of an image with FSM's command.

FSM's injector runs `/bin/sh -c "iptables-restore --noflush <<EOF ... EOF"` in the init
container with NET_ADMIN only. This phase times that whole `podman run` (container set-up, the
shell, the restore, tear-down) from the host, in a fresh network namespace per run, for
nftredir's image (its iptables-restore is nftredir's) and for a reference image running the
real iptables-restore (nf_tables backend). FSM's reference image is Alpine with iptables;
Alpine cannot be pulled here, so the reference is its nearest Debian equivalent: the minbase
bookworm base scripts/test-image makes, plus Debian's iptables.

podman is pointed at scripts/test-image's private containers.conf (runc, cgroupfs, a file events
log, ulimits below the host's hard limits), so the user's configuration is untouched.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.apply import check_iptables, check_nftredir
from bench.native import BenchError
from bench.workload import interleaved
from lab import netlab

SIZES = (0, 10_000)
BASE_IMAGE = "localhost/bookworm-minbase"  # made by scripts/test-image
REFERENCE = "localhost/nftredir-bench-reference:iptables"
# One argv string may be at most MAX_ARG_STRLEN (32 pages) long: execve refuses a longer one
# with E2BIG, in podman as in a kubelet. FSM's command at 10,000 CIDRs (~0.5 MB) cannot be
# passed inline, so there the same command text is a mounted file that the shell runs.
MAX_ARG_STRLEN = 32 * resource.getpagesize()
_REFERENCE_FILE = f"""FROM {BASE_IMAGE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* && iptables-restore --version | grep -q nf_tables
"""


def environment() -> dict[str, str]:
    """The environment every podman call gets: scripts/test-image's private containers.conf,
    the one its images were built with (NFTREDIR_IMAGE_WORKDIR, as test-image takes it)."""
    conf = Path(os.environ.get("NFTREDIR_IMAGE_WORKDIR", "/var/tmp/nftredir-image")) / "containers.conf"
    if not conf.is_file():
        raise BenchError(f"no {conf}: run `sudo ./scripts/test-image` first (it writes it and builds the images)")
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def _podman(env: dict[str, str], *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *argv], env=env, capture_output=True, text=True, timeout=timeout)


def _exists(env: dict[str, str], image: str) -> bool:
    return _podman(env, "image", "exists", image, timeout=60).returncode == 0


def prepare_images(env: dict[str, str], image: str, workdir: Path, log: Callable[[str], None]) -> dict[str, str]:
    """{"nftredir": image, "iptables-restore": the reference}; builds the reference when missing."""
    if shutil.which("podman") is None:
        raise BenchError("podman is not installed (scripts/test-image installs it)")
    for needed in (image, BASE_IMAGE):
        if not _exists(env, needed):
            raise BenchError(f"no image {needed}: run `sudo ./scripts/test-image` first (it builds both)")
    if not _exists(env, REFERENCE):
        log(f"podman: building the reference image {REFERENCE} ({BASE_IMAGE} + Debian's iptables)")
        (workdir / "Containerfile.reference").write_text(_REFERENCE_FILE)
        proc = _podman(env, "build", "--runtime", "runc", "--network", "host", "--pull=never",
                       "-f", str(workdir / "Containerfile.reference"), "-t", REFERENCE, str(workdir), timeout=1200)
        if proc.returncode != 0:
            raise BenchError(f"podman build of {REFERENCE} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return {"nftredir": image, "iptables-restore": REFERENCE}


def fsm_command(rules: Path) -> str:
    """FSM's init-container script for these rules (pkg/injector/iptables.go)."""
    return f"iptables-restore --noflush <<EOF\n# FSM sidecar interception rules\n{rules.read_text()}EOF\n"


# The floors inside nftredir's image, beside its run: what the container costs with nothing in
# it, and bench/floor.py sending the same batch with the image's Python, alone and after
# importing jinja2 (the hot path's stack: nftredir-iptables-restore does not import typer).
FLOORS = {"container start": None, "Python floor": (), "jinja2 floor": ("jinja2",)}
_FLOOR = Path(__file__).resolve().parent / "floor.py"
# Every run's podman command up to its own mounts and entrypoint: FSM's init container's privileges.
_RUN = ["podman", "run", "--rm", "--pull", "never", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--user", "0"]


def measure(env: dict[str, str], images: dict[str, str], rules: dict[int, Path], batches: dict[int, Path], reps: int,
            workdir: Path, log: Callable[[str], None]) -> dict[tuple[int, str], list[float]]:
    """Wall seconds of each `podman run`, per (N, image kind or floor); interleaved, the first
    run of each checked, one untimed warm-up run of each first."""
    runs = [(n, kind) for n in sorted(rules) for kind in (*images, *FLOORS)]
    argv: dict[tuple[int, str], list[str]] = {}
    for n, batch in batches.items():
        for kind, modules in FLOORS.items():
            run = ["/bin/true"] if modules is None else [
                "/opt/nftredir/bin/python", "/bench/floor.py", "/bench/batch.json", *modules]
            argv[(n, kind)] = [*_RUN, "-v", f"{_FLOOR}:/bench/floor.py:ro", "-v", f"{batch}:/bench/batch.json:ro",
                               "--entrypoint", run[0], images["nftredir"], *run[1:]]
    for n, path in rules.items():
        command = fsm_command(path)
        mounts: list[str] = []
        if len(command.encode()) >= MAX_ARG_STRLEN:
            script = workdir / f"fsm-command-{n}.sh"
            script.write_text(command)
            mounts, command = ["-v", f"{script}:/fsm-command.sh:ro"], ". /fsm-command.sh"
        for kind, image in images.items():
            argv[(n, kind)] = [*_RUN, "-e", "POD_IP=10.244.1.23", *mounts, "--entrypoint", "/bin/sh", image, "-c", command]
    # A floor that sends the batch leaves nftredir's table; /bin/true leaves nothing to check.
    checks = {"nftredir": check_nftredir, "iptables-restore": check_iptables,
              **{kind: check_nftredir for kind, modules in FLOORS.items() if modules is not None}}
    samples: dict[tuple[int, str], list[float]] = {run: [] for run in runs}

    def once(run: tuple[int, str], check: bool) -> float:
        n, kind = run
        with netlab.netns(netlab.unique_name("podman", prefix=netlab.BENCH_PREFIX)) as ns:
            cmd = [*argv[run][:3], "--network", f"ns:/run/netns/{ns.name}", *argv[run][3:]]
            start = time.monotonic()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            wall = time.monotonic() - start
            if proc.returncode != 0:
                raise BenchError(f"podman run of {images.get(kind, kind)} (N={n}) exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
            if check and kind in checks:
                checks[kind](n)(ns)
        time.sleep(0.05 + n * 4e-6)  # the deleted namespace's clean-up, as in the apply phase
        return wall

    log(f"podman: warm-up, one run of each of {len(runs)} (N, image), checked")
    for run in runs:
        once(run, check=True)
    log(f"podman: {reps} reps x {len(runs)} (N, image), interleaved")
    for _rep, run in interleaved(runs, reps):
        samples[run].append(once(run, check=False))
    return samples
