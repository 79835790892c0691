#!/usr/bin/env python3
"""fdatasync latency of this disk: strict durability's floor.

Usage: fsync.py [DIR] [N]   (default: a temp dir under /tmp, 2,000 rounds)

Appends a 300-byte record (about one statement event in the spool) to a
file and fdatasyncs it, N times, as the spool's syncer does for a strict
push at 1 client: the median is what strict must add to async's latency at
least. Prints median, p10 and p90 in microseconds. Standard library only.
"""

import os
import sys
import tempfile
import time

directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
with tempfile.NamedTemporaryFile(dir=directory, prefix="fsync-floor.") as f:
    record = b"x" * 300
    took = []
    for _ in range(rounds):
        os.write(f.fileno(), record)
        start = time.perf_counter_ns()
        os.fdatasync(f.fileno())
        took.append((time.perf_counter_ns() - start) / 1000)
took.sort()
at = lambda q: took[min(len(took) - 1, int(q * len(took)))]
print(f"fdatasync of a 300-byte append, {rounds} rounds in {directory}: "
      f"median {at(0.5):.0f} µs, p10 {at(0.1):.0f} µs, p90 {at(0.9):.0f} µs")
