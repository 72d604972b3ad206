"""Log ids made in the process, so one can go out in a header before its row is written."""

from __future__ import annotations

import os
import time


def new_log_id() -> str:
    """A 32-hex-digit id that sorts by creation time (ms), then randomly."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
