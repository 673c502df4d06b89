"""The command line as a user meets it: help, exit codes, one-line errors, lean imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lab.netlab import REPO, run_nftredir


def nftredir(*argv: str, prelude: str = "", user: int | None = None, netns=None) -> subprocess.CompletedProcess[str]:
    return run_nftredir(*argv, prelude=prelude, user=user, netns=netns)


def loaded_modules_after(*argv: str, netns=None, input: str | None = None) -> set[str]:
    """Which modules a command imported: the init container pays for each one at every pod start.
    Any warning is an error in that run, so a run that warns does not exit 0."""
    prelude = ("import atexit, json, warnings\nwarnings.simplefilter('error')\n"
               "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))")
    result = run_nftredir(*argv, prelude=prelude, netns=netns, input=input)
    assert result.returncode == 0, result.stderr
    *before, last = result.stderr.strip().splitlines()
    assert before == [], f"{argv} wrote to stderr: {before}"
    return set(json.loads(last))


def test_help_lists_every_command_and_the_exit_codes():
    result = nftredir("--help")
    assert result.returncode == 0
    for command in ("render", "apply", "remove"):
        assert f"  {command} " in result.stdout
    assert "Exit codes: 0 success; 2 invalid input" in result.stdout


def test_apply_help_shows_every_option_name_in_full():
    result = nftredir("apply", "--help")
    for option in ("--outbound-ip-range-exclusion-list", "--network-interface-exclusion-list", "--dry-run", "--pod-ip"):
        assert option in result.stdout


def test_help_imports_neither_jinja2_nor_libnftables():
    modules = loaded_modules_after("--help")
    assert "jinja2" not in modules and "nftables" not in modules


def test_render_does_not_import_libnftables():
    modules = loaded_modules_after("render")
    assert "jinja2" in modules and "nftables" not in modules


# What typer 0.29 (pydantic), typer with rich help, click 8.2+ beside typer's own copy, and the
# test and benchmark extras would add to every pod start.
HEAVY = ("rich", "pydantic", "pydantic_core", "click", "pygments", "markdown_it", "yaml", "hypothesis", "matplotlib", "numpy")


@pytest.mark.parametrize("argv", [["--help"], ["render"], ["apply"], ["iptables-restore", "--noflush"]], ids=" ".join)
def test_a_run_imports_nothing_heavy_and_warns_nothing(argv, netns):
    script = nftredir("render", "--format", "iptables").stdout if argv[0] == "iptables-restore" else None
    modules = loaded_modules_after(*argv, netns=netns, input=script)
    assert not {m.split(".")[0] for m in modules} & set(HEAVY)
    assert "socket" not in modules  # the ownership check speaks netlink through _socket (~1.5 ms)


def test_render_needs_no_root():
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    result = nftredir("render", "--format", "json", user=65534)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nftables"][1] == {"add": {"table": {"family": "inet", "name": "nftredir"}}}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["render", "--outbound-ip-range-exclusion-list", "foobar"], "--outbound-ip-range-exclusion-list: 'foobar': not an IPv4 CIDR"),
        (["render", "--inbound-port-exclusion-list", "0"], "--inbound-port-exclusion-list: '0': not a port"),
        (["render", "--network-interface-exclusion-list", "a" * 16], "interface names are at most 15 bytes"),
        (["render", "--local-proxy-mode", "podip"], "podip mode needs the pod's IPv4 address"),
        (["render", "--outbound-ip-range-exclusion-list", "fd00::/8"], "only with --ip-family dual"),
        (["apply", "--proxy-uid", "-5"], "--proxy-uid: '-5': not a UID"),
        (["remove", "--table", "x;y"], "--table: 'x;y': table names are"),
    ],
)
def test_invalid_input_is_one_line_and_exit_2(argv, message, netns):
    result = nftredir(*argv, prelude="import os; os.environ.pop('POD_IP', None)", netns=netns)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("nftredir: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_pod_ip_comes_from_the_environment_and_errors_name_it():
    ok = nftredir("render", "--local-proxy-mode", "podip", prelude="import os; os.environ['POD_IP'] = '10.1.2.3'")
    assert ok.returncode == 0 and "dnat ip to 10.1.2.3" in ok.stdout
    bad = nftredir("render", "--local-proxy-mode", "podip", prelude="import os; os.environ['POD_IP'] = '10.1.2'")
    assert bad.returncode == 2 and bad.stderr.startswith("nftredir: error: POD_IP: '10.1.2': not an IPv4 address")


def test_usage_errors_exit_2():
    assert nftredir("render", "--format", "yaml").returncode == 2
    assert nftredir("no-such-command").returncode == 2


def test_missing_binding_names_the_package_to_install(netns):
    result = nftredir("apply", prelude="sys.modules['nftables'] = None  # as if python3-nftables were absent", netns=netns)
    assert result.returncode == 3
    assert "apt-get install python3-nftables" in result.stderr and "--system-site-packages" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_missing_library_is_one_line_without_the_bindings_traceback(netns):
    # The binding's constructor opens the library; if that fails, its __del__ used to print
    # "Exception ignored ... AttributeError" on stderr as the process exited.
    prelude = "import nftredir.binding; nftredir.binding.SONAME = 'libnftables-absent.so.1'"
    apply = nftredir("apply", prelude=prelude, netns=netns)
    assert apply.returncode == 3 and apply.stderr.count("\n") == 1
    assert "libnftables could not be loaded" in apply.stderr and "apt-get install libnftables1" in apply.stderr
    doctor = nftredir("doctor", prelude=prelude, netns=netns)
    assert doctor.returncode == 1 and "libnftables could not be loaded" in doctor.stdout
    assert doctor.stderr == ""


def test_version():
    result = nftredir("--version")
    assert result.returncode == 0 and result.stdout.startswith("nftredir ")


def test_the_installed_package_renders_outside_the_source_tree():
    """What pip installed (scripts/setup does a regular install) holds every module and template."""
    result = subprocess.run(
        [sys.executable, "-P", "-c", "import nftredir.cli, sys; sys.argv = ['nftredir', 'render']; nftredir.cli.main()"],
        capture_output=True, text=True, cwd="/", timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "table inet nftredir {" in result.stdout


def fast_restore(*argv: str, netns, input: str | None = None, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """The image's iptables-restore (nftredir-iptables-restore), as FSM's command runs it."""
    code = f"import sys\n{prelude}\nsys.argv = ['nftredir-iptables-restore', *{list(argv)!r}]\nfrom nftredir.restore import main\nmain()\n"
    return subprocess.run(netns.argv([sys.executable, "-c", code]), capture_output=True, text=True, input=input,
                          cwd=REPO, timeout=120)


def test_the_image_iptables_restore_applies_fsm_script_without_typer(netns):
    prelude = ("import atexit, json, warnings\nwarnings.simplefilter('error')\n"
               "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))")
    script = nftredir("render", "--format", "iptables", "--outbound-port-exclusion-list", "6379").stdout
    result = fast_restore("--noflush", netns=netns, input=script, prelude=prelude)
    assert result.returncode == 0, result.stderr
    modules = {m.split(".")[0] for m in json.loads(result.stderr.strip().splitlines()[-1])}
    assert "typer" not in modules and not modules & set(HEAVY)
    fast = netns.list_table()
    assert "6379" in fast
    assert run_nftredir("iptables-restore", "--noflush", netns=netns, input=script).returncode == 0
    assert netns.list_table() == fast  # the typer command leaves the very same table


def test_the_image_iptables_restore_hands_any_other_argument_to_the_cli(netns):
    usage = fast_restore("--help", netns=netns)
    assert usage.returncode == 0 and "Apply a mesh's `iptables-restore` redirection script" in usage.stdout
    for argv in (["--bogus"], ["-nt"], ["a", "b"]):
        result = fast_restore(*argv, netns=netns, input="")
        assert result.returncode == 2 and "Traceback" not in result.stderr, (argv, result.stderr)
    bad = fast_restore("--noflush", netns=netns, input="*filter\nCOMMIT\n")
    assert bad.returncode == 2 and bad.stderr.startswith("nftredir: error: <stdin>:1: '*filter'") and bad.stderr.count("\n") == 1
