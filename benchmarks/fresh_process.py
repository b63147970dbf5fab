"""Run one measurement in a fresh Python process (the benchmarks time what a user waits for in a new session)."""

import multiprocessing
import queue as queue_module


def run(target, *args):
    """``target(*args, queue)`` in a fresh spawned process; returns what it put on ``queue``. Raises if the
    process ends without a result (an exception or a crash in it), rather than waiting forever."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=target, args=(*args, results))
    worker.start()
    while True:  # the result before join: a large one may not fit the queue's pipe
        try:
            result = results.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not worker.is_alive():
                try:  # (it may have put its result just before it ended)
                    result = results.get(timeout=1.0)
                    break
                except queue_module.Empty:
                    raise RuntimeError(f"{getattr(target, '__name__', target)}{args}: the worker process ended "
                                       f"without a result (exit code {worker.exitcode})") from None
    worker.join()
    return result
