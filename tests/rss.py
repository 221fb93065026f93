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
