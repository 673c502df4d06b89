"""lab/e2e.py's sidecar as a pod: podman runs Kubernetes YAML shaped like FSM's injector's.

The pod: an init container from nftredir's image running FSM's exact command (`/bin/sh -c
"iptables-restore --noflush <<EOF ... EOF"`, POD_IP set, UID 0 with NET_ADMIN only), Envoy as
UID 1500 with no capabilities, and the app as UID 1000 (lab/netlab.py's listener). `hostNetwork`
with podman started by `nsenter --net` into the lab's pod namespace: the pod's network namespace
is the lab's, with its veths to the world (`ip netns exec` would remount /sys, which breaks
runc's cgroups). Envoy's binary and config, and lab/, are hostPath volumes. The cases run their
client in the container of their UID (`podman exec`), or in the world.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from lab import e2e
from lab import netlab as nl

def kube_cases() -> list[e2e.Case]:
    """The defaults' cases, but for the ports the pod has no listener on (15010, 15901-15904)."""
    defaults = next(s for s in e2e.SCENARIOS if s.name == "defaults").cases
    return [case for case in defaults if case.answer != f"pod:{case.port}"]


def manifest(name: str, image: str, envoy: Path, workdir: Path, fsm_command: str) -> dict[str, Any]:
    """The pod, as FSM's injector shapes it (pkg/injector: init container, sidecar, app)."""
    spec = json.dumps([{"name": f"app:{p}", "port": p, "proto": "tcp", "transparent": False}
                       for p in (e2e.APP_PORT, e2e.OTHER_APP_PORT)])
    # The lab's server exits when its stdin ends: a pipe that never does.
    app = f"sleep infinity | exec python3 -I /lab/netlab.py serve {shlex.quote(spec)} 3600"
    mounts = [{"name": "lab", "mountPath": "/lab", "readOnly": True}]

    def user(uid: int) -> dict[str, Any]:
        return {"runAsUser": uid, "runAsGroup": uid, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}

    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "hostNetwork": True,
            "restartPolicy": "Never",
            "initContainers": [{
                "name": "fsm-init", "image": image, "imagePullPolicy": "Never",
                "command": ["/bin/sh"], "args": ["-c", fsm_command],
                "env": [{"name": "POD_IP", "value": nl.POD_ETH0}],
                "securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                                    "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}},
            }],
            "containers": [
                {"name": "sidecar", "image": image, "imagePullPolicy": "Never",
                 "command": ["/envoy/envoy", "-c", "/sidecar/envoy.json", *e2e.ENVOY_FLAGS],
                 "securityContext": user(nl.SIDECAR_UID),
                 "volumeMounts": [*mounts, {"name": "envoy", "mountPath": "/envoy", "readOnly": True},
                                  {"name": "sidecar", "mountPath": "/sidecar"}]},
                {"name": "app", "image": image, "imagePullPolicy": "Never",
                 "command": ["/bin/sh", "-c", app], "securityContext": user(e2e.APP_UID), "volumeMounts": mounts},
            ],
            "volumes": [
                {"name": "lab", "hostPath": {"path": str(Path(nl.REPO) / "lab"), "type": "Directory"}},
                {"name": "envoy", "hostPath": {"path": str(envoy.parent), "type": "Directory"}},
                {"name": "sidecar", "hostPath": {"path": str(workdir), "type": "Directory"}},
            ],
        },
    }


def podman(*argv: str, netns: nl.Netns | None = None, input: str | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["podman", *argv]
    if netns is not None:
        command = ["nsenter", f"--net=/run/netns/{netns.name}", *command]
    proc = subprocess.run(command, capture_output=True, text=True, input=input, timeout=300)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


@contextlib.contextmanager
def pod(lab: nl.PodWorld, spec: dict[str, Any], workdir: Path) -> Iterator[str]:
    """`podman kube play` in the lab's pod namespace; `podman kube down` on exit."""
    path = workdir / "pod.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    name = spec["metadata"]["name"]
    try:
        podman("kube", "play", str(path), netns=lab.pod)
        yield name
    finally:
        podman("kube", "down", str(path), check=False)
        podman("pod", "rm", "--force", "--ignore", name, check=False)


def container_problem(container: str) -> Callable[[], str | None]:
    def problem() -> str | None:
        state = podman("container", "inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
        if state == "running":
            return None
        logs = podman("logs", container, check=False)
        return f"container {container} is {state or 'gone'}: {(logs.stdout + logs.stderr)[-2000:]}"
    return problem


def exec_client(lab: nl.PodWorld, name: str) -> e2e.Client:
    """A pod-side case's connection from the container of its UID, the world's from the world."""
    containers = {e2e.APP_UID: f"{name}-app", nl.SIDECAR_UID: f"{name}-sidecar"}

    def client(case: e2e.Case, conn: dict[str, Any]) -> dict[str, str]:
        if case.side != "pod":
            return e2e.connect(lab.world, case.uid, [conn])[0]
        # Under nsenter too: a hostNetwork container has no network namespace of its own, so
        # `podman exec` would leave the process in the caller's, the machine's.
        got = podman("exec", "-i", "--user", f"{case.uid}:{case.uid}", containers[case.uid],
                     "python3", "-I", "/lab/e2e_client.py", str(e2e.CLIENT_TIMEOUT), input=json.dumps([conn]),
                     netns=lab.pod)
        out: list[dict[str, str]] = json.loads(got.stdout)
        return out[0]
    return client


def wait_app(lab: nl.PodWorld) -> None:
    """The app container answers on 8080 (root in the pod to localhost: never redirected)."""
    for _ in range(e2e.READY_ATTEMPTS):
        if "reply" in e2e.connect(lab.pod, 0, [{"dst": "127.0.0.1", "port": e2e.APP_PORT}])[0]:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the app container does not answer on {e2e.APP_PORT}")


def run(lab: nl.PodWorld, image: str, envoy: Path, workdir: Path, out: Callable[[str], None]) -> tuple[int, int]:
    """The kube cases, judged as lab/e2e.py judges each way; (held, total)."""
    from tests.fsm_command import fsm_command
    from tests.scenarios import config_of

    lab.reset()
    workdir.mkdir()
    e2e.write_config(workdir, "/sidecar/access.log")
    name = nl.unique_name("kube")
    spec = manifest(name, image, envoy, workdir, fsm_command(config_of()))
    with pod(lab, spec, workdir):
        tables = lab.pod.run(["nft", "list", "tables"]).stdout.split()
        if tables != ["table", "inet", "nftredir"]:
            raise RuntimeError(f"after the init container the pod has {' '.join(tables) or 'no tables'}")
        sidecar = e2e.Sidecar(lab, workdir / "access.log", container_problem(f"{name}-sidecar"))
        sidecar.wait_ready()
        e2e.check_unprivileged(int(podman("container", "inspect", "--format", "{{.State.Pid}}", f"{name}-sidecar").stdout))
        wait_app(lab)
        held = total = 0
        for case in kube_cases():
            problems = e2e.judge(case, e2e.run_case(exec_client(lab, name), sidecar, case))
            total += 1
            held += not problems
            out(e2e.line("kube", case, problems))
    return held, total
