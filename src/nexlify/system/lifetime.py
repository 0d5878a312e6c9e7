"""Worker processes that do not outlive the process that started them."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time


def die_with_parent() -> None:
    """In a worker process: exit when the parent dies, even by SIGKILL.

    A pipeline killed hard must not leave orphaned workers writing into its output folder while
    a resumed pipeline works there. Linux gets PR_SET_PDEATHSIG; elsewhere a daemon thread
    watches the parent's pid.
    """
    if multiprocessing.parent_process() is None:
        return
    bind_to_parent()


def bind_to_parent() -> None:
    """Exit when this process's OS parent dies: the pipeline for a spawned worker, the fork
    server for a forked one (the fork server itself is bound to the pipeline when it starts:
    ``nexlify.pipeline.worker_preload``)."""
    parent = os.getppid()  # read first: if the parent is already gone, this is 1
    if parent == 1:
        os._exit(1)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="nexlify-parent-watch", daemon=True).start()
