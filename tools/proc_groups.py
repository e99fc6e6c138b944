"""CPU seconds and resident memory per process group, read from /proc (Linux), for the benchmarks.

A stage process and its decoder workers, or a stack service and its children, share a process
group (the launcher starts each in its own session), so a group's figures are a stage's figures.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["group_cpu_s", "group_processes"]

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def group_processes() -> dict[int, list[tuple[int, float, int]]]:
    """Process group -> ``[(pid, CPU seconds incl. reaped children, RSS bytes)]`` of every live process.

    From ``/proc/<pid>/stat`` (proc(5)): fields after ``pid (comm)``: 3 pgrp, 12-15 utime,
    stime, cutime, cstime (clock ticks), 22 rss (pages). Processes that end while read are skipped.
    """
    groups: dict[int, list[tuple[int, float, int]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) ": comm may hold spaces
        pgrp = int(fields[2])
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        rss = int(fields[21]) * PAGE_SIZE
        groups.setdefault(pgrp, []).append((int(entry), (utime + stime + cutime + cstime) / CLK_TCK, rss))
    return groups


def group_cpu_s(pgids: list[int]) -> float:
    """User + system CPU seconds (reaped children included) of every live process in ``pgids``."""
    procs = group_processes()
    return sum(cpu for g in pgids for _, cpu, _ in procs.get(g, []))
