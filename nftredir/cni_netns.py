"""Entering the pod's network namespace (CNI_NETNS) before libnftables opens a netlink socket.

setns(2) moves only the calling thread; the plugin is one thread and exits after one command,
and libnftables and nftredir.netlink_table open their sockets after this, so every request of
the run goes to the pod's namespace. Python 3.11 has no os.setns: libc's, through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import os

CLONE_NEWNET = 0x40000000


class NetnsGone(Exception):
    """CNI_NETNS names nothing (the sandbox is gone): DEL succeeds, ADD and CHECK fail."""


def enter(path: str) -> None:
    """Switch this process's thread into the network namespace at `path`.

    Raises NetnsGone when the path does not exist, OSError when it is not a network namespace
    or the kernel refuses (no CAP_SYS_ADMIN)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsGone(path) from None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            reason = "not a network namespace" if code == errno.EINVAL else os.strerror(code)
            raise OSError(code, reason)
    finally:
        os.close(fd)
