"""Loading Debian's libnftables binding, for every module that talks to the kernel.

Checked in two steps, so that each failure names its own remedy and no half-made binding object
is ever left behind: the binding's Nftables() opens the library inside its constructor and its
__del__ then fails on the context it never got, which Python reports as a traceback on stderr.
"""

from __future__ import annotations

import ctypes
from typing import Any

from nftredir.errors import SystemRefused

SONAME = "libnftables.so.1"  # the binding's own default


class BindingMissing(SystemRefused):
    """The binding or its library cannot be loaded; `problem` and `remedy` are shown apart."""

    def __init__(self, problem: str, remedy: str) -> None:
        self.problem, self.remedy = problem, remedy
        super().__init__(f"{problem}: {remedy}")


def open_nftables() -> Any:
    """A new nftables.Nftables context, or BindingMissing."""
    try:
        import nftables
    except ImportError:
        raise BindingMissing(
            "the libnftables Python binding is missing",
            "apt-get install python3-nftables (dnf install python3-nftables), and create the venv "
            "with /usr/bin/python3 -m venv --system-site-packages",
        ) from None
    try:
        ctypes.CDLL(SONAME)  # before the constructor, which would leave a broken object behind
    except OSError as exc:
        raise BindingMissing(
            f"libnftables could not be loaded ({exc})", "apt-get install libnftables1 (dnf install nftables)"
        ) from None
    return nftables.Nftables(sofile=SONAME)
