"""Start-up of a batch worker process: end with the batch process, then share the cores.

Spawned workers run this before anything else, so it lives in a module that imports nothing heavy:
unpickling the initializer imports its module, and a worker still importing torch (several
seconds) when its parent is killed would otherwise write on until its imports finish.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PARENT_POLL_S = 0.2


def die_with_parent(parent: int) -> None:
    """A worker whose batch process is gone (even by kill -9) exits at once instead of writing on.

    Linux kills it with the parent (PR_SET_PDEATHSIG); elsewhere, and as a backstop, a thread watches
    for the worker being re-parented. Its unfinished study has no done.json and is redone by a rerun.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def init_worker(threads: int, parent: int) -> None:
    """Worker initialiser: end with the batch process ``parent``, and use ``threads`` torch threads.

    Ctrl-C reaches the whole process group: the batch process says so in one line, and a worker ends at once, without
    a traceback of its own (its unfinished study has no done.json and is redone by a rerun).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent(parent)
    import torch  # only now: the worker must be bound to its parent before this slow import
    from tqdm import tqdm

    torch.set_num_threads(threads)
    # tqdm's default lock is a multiprocessing semaphore, which a worker ended by Ctrl-C or a kill leaves registered:
    # the resource tracker then printed "leaked semaphore objects" after the batch's one line. A worker's bars are its
    # own (the batch's bar is drawn by the batch process), so a thread lock is all they need.
    tqdm.set_lock(threading.RLock())
