#!/usr/bin/env python3
"""CPU use of one process and of its busiest threads over a window, from /proc.

Usage: threads_cpu.py PID DELAY_S WINDOW_S [LABEL]
Waits DELAY_S, reads utime+stime of every thread of PID, waits WINDOW_S, reads again,
and prints two lines: the process's CPU in % of one core over the window, then the top
threads (name/tid: %) -- a thread near 100% is a serial bound; and the CPU of each kind
of thread (names without their trailing number: es-grpc, nexting_thread, ...; every
kind, idle ones too, with its thread count), so that a pool of many threads shows its
share. Threads that started or ended inside the window
are counted from what can be read.
"""
import os
import re
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def read(pid):
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1 : s.rindex(")")]
        fields = s[s.rindex(")") + 2 :].split()
        # fields[11], fields[12]: utime, stime (stat fields 14 and 15)
        out[tid] = (name, int(fields[11]) + int(fields[12]))
    return out


def main():
    pid, delay, window = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    label = sys.argv[4] if len(sys.argv) > 4 else str(pid)
    time.sleep(delay)
    a = read(pid)
    t0 = time.monotonic()
    time.sleep(window)
    b = read(pid)
    dt = time.monotonic() - t0
    rows = []
    for tid, (name, ticks) in b.items():
        used = ticks - a.get(tid, (name, 0))[1]
        rows.append((100.0 * used / TICK / dt, name, tid))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    top = ", ".join(f"{n}/{t} {p:.0f}" for p, n, t in rows[:10] if p >= 1)
    print(f"[cpu] {label}: {total:.0f}% over {dt:.1f} s, {len(b)} threads; top: {top}",
          flush=True)
    kinds = {}
    for p, name, _ in rows:
        kind = re.sub(r"[-_]?\d+$", "", name) or name
        share, count = kinds.get(kind, (0.0, 0))
        kinds[kind] = (share + p, count + 1)
    by_kind = ", ".join(f"{k} x{c} {p:.0f}" for k, (p, c) in
                        sorted(kinds.items(), key=lambda kv: (-kv[1][0], kv[0])))
    print(f"[cpu] {label} by kind of thread: {by_kind}", flush=True)


if __name__ == "__main__":
    main()
