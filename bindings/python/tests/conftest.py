"""Shared helpers: an event/line recorder that waits on conditions (never
sleep-and-hope), fast policies, and /proc checks for survivors."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, List

import pytest

import devrig
from devrig import EventKind


def fast_policy(**kw) -> devrig.RestartPolicy:
    """Short delays, no startup grace (RUNNING at once), crash guard off."""
    base = dict(
        startup_grace=0.0,
        initial_delay=0.01,
        max_delay=0.02,
        crash_loop_limit=0,
    )
    base.update(kw)
    return devrig.RestartPolicy(**base)


class Recorder:
    """Collects events and lines from the library threads."""

    def __init__(self) -> None:
        self.events: List[devrig.Event] = []
        self.lines: List[devrig.LogLine] = []
        # Events and lines in arrival order, for ordering checks.
        self.timeline: list = []
        self.cond = threading.Condition()

    def on_event(self, ev: devrig.Event) -> None:
        with self.cond:
            self.events.append(ev)
            self.timeline.append(ev)
            self.cond.notify_all()

    def on_log(self, line: devrig.LogLine) -> None:
        with self.cond:
            self.lines.append(line)
            self.timeline.append(line)
            self.cond.notify_all()

    def on_log_batch(self, lines: List[devrig.LogLine]) -> None:
        with self.cond:
            self.lines.extend(lines)
            self.timeline.extend(lines)
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[], bool], timeout: float = 20.0) -> None:
        with self.cond:
            assert self.cond.wait_for(pred, timeout), (
                f"condition not met in {timeout}s; events: {self.events}"
            )

    def wait_kind(self, kind: EventKind, timeout: float = 20.0) -> devrig.Event:
        self.wait_for(lambda: any(e.kind == kind for e in self.events), timeout)
        with self.cond:
            return next(e for e in self.events if e.kind == kind)

    def wait_line(self, pred: Callable[[devrig.LogLine], bool], timeout: float = 20.0):
        self.wait_for(lambda: any(pred(l) for l in self.lines), timeout)
        with self.cond:
            return next(l for l in self.lines if pred(l))

    def kinds(self) -> List[EventKind]:
        with self.cond:
            return [e.kind for e in self.events if e.kind != EventKind.WARNING]

    def texts(self) -> List[str]:
        with self.cond:
            return [l.text for l in self.lines]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def proc_state(pid: int):
    """The state letter of pid from /proc, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3].decode()


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (a zombie has stopped running)."""
    st = proc_state(pid)
    return st is not None and st != "Z"


def group_members(pgid: int) -> List[int]:
    """Live processes whose process group is pgid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(b")") + 2 :].split()
        state, pgrp = rest[0].decode(), int(rest[2])
        if pgrp == pgid and state != "Z":
            out.append(int(name))
    return out


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Polls /proc until pid has stopped running (used only after a stop has
    already completed, to absorb init's reaping of reparented zombies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.01)
    return False
