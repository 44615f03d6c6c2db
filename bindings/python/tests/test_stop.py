"""Stopping: cancel latency, grace then SIGKILL, no survivors, cancel
before start / during backoff / from a callback, the context manager."""

import os
import threading
import time

import pytest

import devrig
from devrig import EventKind as K
from devrig import OutcomeKind

from conftest import alive, fast_policy, group_members, wait_gone


def test_cancel_is_quick_and_ends_cancelled(rec):
    sup = devrig.Supervisor("stop", "sleep 60", policy=fast_policy(),
                            on_event=rec.on_event)
    sup.start()
    started = rec.wait_kind(K.RUNNING)
    t0 = time.monotonic()
    sup.cancel()
    sup.wait(timeout=10)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, elapsed
    assert rec.kinds() == [K.STARTED, K.RUNNING, K.STOPPING, K.EXITED, K.STOPPED]
    exited = rec.events[3]
    assert exited.signal == 15 and exited.exit_code == -1
    o = sup.outcome
    assert o.kind is OutcomeKind.CANCELLED and o.restarts == 0
    assert not alive(started.pid)
    assert group_members(started.pid) == []


def test_child_ignoring_sigterm_is_killed_after_grace(rec):
    cmd = "trap '' TERM; echo ready; while :; do sleep 0.05; done"
    sup = devrig.Supervisor("stubborn", cmd, policy=fast_policy(), stop_grace=0.5,
                            on_event=rec.on_event, on_log=rec.on_log)
    sup.start()
    rec.wait_line(lambda l: l.text == "ready")
    pid = rec.events[0].pid
    t0 = time.monotonic()
    sup.cancel()
    sup.wait(timeout=20)
    elapsed = time.monotonic() - t0
    assert 0.45 <= elapsed < 4.0, elapsed
    exited = rec.wait_kind(K.EXITED)
    assert exited.signal == 9
    assert not alive(pid) and group_members(pid) == []


def test_no_survivors_children_and_escaped_grandchildren(rec):
    cmd = ("sleep 300 & echo bg=$!; "
           "setsid sleep 300 & echo escaped=$!; "
           "( sleep 300 & echo double=$! ) ; "
           "echo ready; wait")
    sup = devrig.Supervisor("tree", cmd, policy=fast_policy(), stop_grace=2.0,
                            on_event=rec.on_event, on_log=rec.on_log)
    with sup:
        rec.wait_line(lambda l: l.text == "ready")
        pids = {l.text.split("=")[0]: int(l.text.split("=")[1])
                for l in rec.lines if "=" in l.text}
        assert set(pids) == {"bg", "escaped", "double"}
        main = rec.events[0].pid
        assert all(alive(p) for p in pids.values())
    for name, p in pids.items():
        assert wait_gone(p, 5), f"{name} {p} survived the stop"
    assert not alive(main)
    assert group_members(main) == []


def test_leftovers_stopped_when_main_exits_on_its_own(rec):
    # The main process exits; what it left behind is stopped before the
    # run ends (and before any restart).
    cmd = "setsid sleep 300 & echo escaped=$!; sleep 300 & echo bg=$!; exit 0"
    sup = devrig.Supervisor("left", cmd, policy=fast_policy(mode="never"),
                            stop_grace=1.0, on_event=rec.on_event, on_log=rec.on_log)
    sup.run()
    pids = [int(l.text.split("=")[1]) for l in rec.lines if "=" in l.text]
    assert len(pids) == 2
    for p in pids:
        assert wait_gone(p, 5)
    assert sup.outcome.kind is OutcomeKind.COMPLETED


def test_cancel_before_start_ends_at_once(rec):
    sup = devrig.Supervisor("early", "sleep 60", on_event=rec.on_event)
    sup.cancel()
    t0 = time.monotonic()
    sup.run()
    assert time.monotonic() - t0 < 2
    kinds = rec.kinds()
    assert K.STARTED not in kinds
    assert kinds[-1] == K.STOPPED
    assert sup.outcome.kind is OutcomeKind.CANCELLED


def test_cancel_during_backoff_is_immediate(rec):
    pol = fast_policy(initial_delay=30.0, max_delay=30.0)
    sup = devrig.Supervisor("backoff", "exit 1", policy=pol, on_event=rec.on_event)
    sup.start()
    rec.wait_kind(K.BACKOFF)
    t0 = time.monotonic()
    sup.cancel()
    sup.wait(timeout=10)
    assert time.monotonic() - t0 < 2
    assert rec.kinds() == [K.STARTED, K.RUNNING, K.EXITED, K.BACKOFF, K.STOPPING, K.STOPPED]
    assert sup.outcome.kind is OutcomeKind.CANCELLED


def test_cancel_from_inside_a_callback(rec):
    holder = {}

    def on_event(ev):
        rec.on_event(ev)
        if ev.kind == K.RUNNING:
            holder["sup"].cancel()

    sup = devrig.Supervisor("self", "sleep 60", policy=fast_policy(), on_event=on_event)
    holder["sup"] = sup
    sup.run()
    assert sup.outcome.kind is OutcomeKind.CANCELLED


def test_cancel_is_idempotent_and_allowed_after_the_run(rec):
    sup = devrig.Supervisor("idem", "true", policy=fast_policy())
    sup.run()
    sup.cancel()
    sup.cancel()
    assert sup.outcome.kind is OutcomeKind.COMPLETED


def test_cancel_from_another_thread_while_run_blocks(rec):
    sup = devrig.Supervisor("thr", "sleep 60", policy=fast_policy(), on_event=rec.on_event)

    def stopper():
        rec.wait_kind(K.RUNNING)
        sup.cancel()

    t = threading.Thread(target=stopper)
    t.start()
    sup.run()
    t.join()
    assert sup.outcome.kind is OutcomeKind.CANCELLED


def test_context_manager_starts_stops_and_reaps(rec):
    with devrig.Supervisor("ctx", "sleep 60", policy=fast_policy(),
                           on_event=rec.on_event) as sup:
        assert sup.started
        pid = rec.wait_kind(K.STARTED).pid
        assert alive(pid)
    assert sup.done
    assert not alive(pid)
    assert sup.outcome.kind is OutcomeKind.CANCELLED


def test_context_manager_with_explicit_start_and_run(rec):
    with devrig.Supervisor("ctx2", "echo hi", policy=fast_policy(mode="never"),
                           on_log=rec.on_log) as sup:
        sup.run()  # the start done by __enter__ is accepted once
        assert sup.outcome.kind is OutcomeKind.COMPLETED
    assert rec.texts() == ["hi"]
    with devrig.Supervisor("ctx3", "sleep 60") as sup2:
        sup2.start()
        with pytest.raises(devrig.StateError):
            sup2.start()


def test_close_is_idempotent_and_stops(rec):
    sup = devrig.Supervisor("close", "sleep 60", policy=fast_policy(), on_event=rec.on_event)
    sup.start()
    pid = rec.wait_kind(K.STARTED).pid
    sup.close()
    sup.close()
    assert not alive(pid)
    assert sup.outcome.kind is OutcomeKind.CANCELLED
    never = devrig.Supervisor("never-started", "true")
    never.close()  # nothing to stop


def test_wait_timeout_raises_timeout_error():
    sup = devrig.Supervisor("to", "sleep 60", policy=fast_policy())
    sup.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            sup.wait(timeout=0.2)
        assert 0.15 <= time.monotonic() - t0 < 2
        with pytest.raises(TimeoutError):
            sup.wait(0)
    finally:
        sup.close()


def test_state_errors():
    sup = devrig.Supervisor("st", "true", policy=fast_policy())
    with pytest.raises(devrig.StateError, match="not been started"):
        sup.wait()
    sup.run()
    with pytest.raises(devrig.StateError):
        sup.start()
    with pytest.raises(devrig.StateError):
        sup.run()
    assert issubclass(devrig.StateError, RuntimeError)


def test_wait_inside_a_callback_is_a_state_error(rec):
    seen = {}

    def on_event(ev):
        if ev.kind == K.RUNNING:
            try:
                holder.wait()
            except devrig.StateError as e:
                seen["err"] = e
            holder.cancel()

    holder = devrig.Supervisor("cb", "sleep 60", policy=fast_policy(), on_event=on_event)
    holder.run()
    assert "callback" in str(seen["err"])


def test_dropping_a_running_supervisor_stops_it(rec):
    import gc

    sup = devrig.Supervisor("drop", "sleep 60", policy=fast_policy(), on_event=rec.on_event)
    sup.start()
    pid = rec.wait_kind(K.STARTED).pid
    del sup
    gc.collect()
    assert wait_gone(pid, 10)


def test_many_supervisors_share_few_threads():
    before = threading.active_count()
    sups = [devrig.Supervisor(f"m{i}", "sleep 60", policy=fast_policy()) for i in range(20)]
    for s in sups:
        s.start()
    tids = os.listdir("/proc/self/task")
    for s in sups:
        s.cancel()
    for s in sups:
        s.wait(10)
    assert len(tids) < 20 + before + 10
    assert all(s.outcome.kind is OutcomeKind.CANCELLED for s in sups)
