"""Batch worker start-up: a worker ended by Ctrl-C or a kill leaves nothing for the batch process to report."""

from __future__ import annotations

import subprocess
import sys
import textwrap

KILLED_WORKER = textwrap.dedent("""
    import multiprocessing, os, signal

    def worker():
        from pipeline.worker import init_worker
        from tqdm import tqdm

        init_worker(1, os.getppid())
        tqdm(total=3, disable=True).close()  # as a study's progress bar
        os.kill(os.getpid(), signal.SIGKILL)  # as Ctrl-C ends a worker: no clean-up of its own

    if __name__ == "__main__":
        process = multiprocessing.get_context("spawn").Process(target=worker)
        process.start()
        process.join()
        print(process.exitcode)
""")


def test_a_killed_worker_leaves_no_semaphore_for_the_resource_tracker_to_report(tmp_path):
    """tqdm's default lock, a multiprocessing semaphore, had the tracker print 'leaked semaphore objects' after the
    batch's one-line 'interrupted'."""
    script = tmp_path / "batch.py"
    script.write_text(KILLED_WORKER)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.stdout.strip() == "-9" and "leaked" not in run.stderr, run.stderr
