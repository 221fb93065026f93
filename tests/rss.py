"""Resident-set sampling for the soak tests: a background sampler of one process's RSS, and the
flatness rule they share (the largest RSS of the last third of the measured window may exceed
that of the first third by at most a bound)."""

import threading
import time
from typing import List, Tuple

MiB = 1 << 20


def vm_rss(pid: int) -> int:
    """Resident set size in bytes, from /proc/<pid>/status (VmRSS is in kB)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


class Sampler(threading.Thread):
    """Reads a process's RSS every `interval` seconds into (t, bytes) pairs."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: List[Tuple[float, int]] = []
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            self.samples.append((time.time(), vm_rss(self.pid)))
            self.stop_event.wait(self.interval)

    def stop(self):
        self.stop_event.set()
        self.join(10)


def judge(samples, start: float, warmup: float, bound: int, what: str, load: str):
    """Applies the flatness rule to the samples taken after `start + warmup`; returns the
    summary line, or raises AssertionError with it."""
    measured = [rss for t, rss in samples if t >= start + warmup]
    assert len(measured) >= 6, "too few RSS samples: %s" % samples
    third = len(measured) // 3
    first, last = measured[:third], measured[-third:]
    warm = [rss for t, rss in samples if t < start + warmup]
    summary = ("%s: %s, RSS MiB: warm-up max %.1f, first third max %.1f, last third max %.1f, "
               "overall max %.1f, growth %+.1f (bound %.0f)" % (
                   what, load, max(warm or [0]) / MiB, max(first) / MiB, max(last) / MiB,
                   max(measured) / MiB, (max(last) - max(first)) / MiB, bound / MiB))
    print(summary)
    assert max(last) <= max(first) + bound, "RSS grew: " + summary
    return summary


def run_soak(pid: int, worker, n_threads: int, warmup: float, seconds: float,
             interval: float, stop_at: list):
    """Runs `worker(i)` on n_threads threads while sampling pid's RSS; the workers run until
    time.time() passes stop_at[0] (set to start + warmup + seconds here, and to 0 when the
    wait gives up). Returns (samples, start, elapsed)."""
    sampler = Sampler(pid, interval)
    start = time.time()
    stop_at[0] = start + warmup + seconds
    sampler.start()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n_threads)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(warmup + seconds + 60)
    finally:
        stop_at[0] = 0
        sampler.stop()
    assert not any(t.is_alive() for t in threads), "client threads did not stop"
    return sampler.samples, start, time.time() - start


def load_summary(elapsed: float, warmup: float, requests: int) -> str:
    return "soak %.0fs (+%.0fs warm-up), %d requests (%.1f/s)" % (
        elapsed - warmup, warmup, requests, requests / elapsed)
