"""Loopback port helpers shared by tests that bind real sockets."""

from __future__ import annotations

import socket


def free_range(size: int) -> tuple[int, int]:
    """A range of ``size`` UDP ports on 127.0.0.1 that starts at a port the OS just had free."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        low = probe.getsockname()[1]
    low = max(1024, min(low, 65000 - size))
    return low, low + size - 1
