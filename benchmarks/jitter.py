"""How often this host stalls a process that only sleeps: the floor under every tail latency here.

A loop sleeps 0.5 ms at a time for a few seconds and records how much later than asked each
sleep returned. On an idle dedicated machine that is tens of microseconds. On a shared VM the
hypervisor takes the core away now and then: on session 6's host, every ~0.51 s, for 1 to 4 ms,
on both cores alike. A request in flight then waits as long, and the ones behind it queue, so
an open-loop p99 of "at most 2 ms" is measured against this, not against a quiet machine. The
harness runs it on each core before the load and prints it beside the results.

Run: ``python -m benchmarks.jitter SECONDS`` (pin it with taskset); prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

SLEEP_S = 0.0005
STALL_MS = 1.0  # a sleep returning this much later than asked counts as a stall


def probe(seconds: float) -> dict[str, float]:
    """Sleep ``SLEEP_S`` at a time for ``seconds``; the stalls per second and the worst, in ms."""
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, not {seconds}")
    late: list[float] = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        time.sleep(SLEEP_S)
        late.append((time.perf_counter() - start - SLEEP_S) * 1e3)
    late.sort()
    stalls = [x for x in late if x > STALL_MS]
    return {
        "seconds": seconds,
        "sleeps": len(late),
        "stalls_per_s": len(stalls) / seconds,
        "p99_late_ms": late[int(0.99 * (len(late) - 1))],
        "max_late_ms": late[-1],
    }


if __name__ == "__main__":
    print(json.dumps(probe(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)))
