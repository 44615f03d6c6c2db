"""Exact event sequences for each restart path (API.md section 1)."""

import errno

import pytest

import devrig
from devrig import EventKind as K
from devrig import OutcomeKind

from conftest import fast_policy


def run(rec, cmd, policy, **kw):
    sup = devrig.Supervisor("svc", cmd, policy=policy, on_event=rec.on_event,
                            on_log=rec.on_log, **kw)
    sup.run()
    return sup


def test_completed_on_exit_zero(rec):
    sup = run(rec, "echo done", fast_policy())
    assert rec.kinds() == [K.STARTED, K.RUNNING, K.EXITED, K.STOPPED]
    o = sup.outcome
    assert o.kind is OutcomeKind.COMPLETED
    assert (o.last_exit_code, o.last_signal, o.restarts) == (0, 0, 0)
    assert rec.texts() == ["done"]
    started, exited, stopped = rec.events[0], rec.events[2], rec.events[3]
    assert started.pid > 0 and exited.pid == started.pid
    assert exited.exit_code == 0 and exited.signal == 0
    assert stopped.message.startswith("completed")


def test_never_mode_ends_after_a_failure(rec):
    sup = run(rec, "exit 3", fast_policy(mode="never"))
    assert rec.kinds() == [K.STARTED, K.RUNNING, K.EXITED, K.STOPPED]
    assert sup.outcome.kind is OutcomeKind.COMPLETED
    assert sup.outcome.last_exit_code == 3


def test_restart_budget(rec):
    sup = run(rec, "exit 1", fast_policy(max_restarts=2))
    per_spawn = [K.STARTED, K.RUNNING, K.EXITED]
    assert rec.kinds() == per_spawn + [K.BACKOFF] + per_spawn + [K.BACKOFF] + per_spawn + [K.FAILED]
    o = sup.outcome
    assert o.kind is OutcomeKind.FAILED
    assert o.restarts == 2 and o.last_exit_code == 1
    assert "restart budget" in o.message
    backoffs = [e for e in rec.events if e.kind == K.BACKOFF]
    assert [b.restart_count for b in backoffs] == [1, 2]
    # Backoff n=0: capped 10 ms, delay in [5, 10]; n=1: capped 20 ms.
    assert 5 <= backoffs[0].delay_ms <= 10
    assert 10 <= backoffs[1].delay_ms <= 20
    assert rec.events[-1].message == o.message
    assert len({e.pid for e in rec.events if e.kind == K.STARTED}) == 3


def test_max_restarts_zero_never_restarts(rec):
    sup = run(rec, "exit 1", fast_policy(max_restarts=0))
    assert rec.kinds() == [K.STARTED, K.RUNNING, K.EXITED, K.FAILED]
    assert sup.outcome.restarts == 0


def test_startup_failures(rec):
    # Runs shorter than startup_grace are startup failures: no RUNNING.
    sup = run(rec, "exit 1", fast_policy(startup_grace=10.0, startup_max_restarts=2))
    per_spawn = [K.STARTED, K.EXITED]
    assert rec.kinds() == per_spawn + [K.BACKOFF] + per_spawn + [K.BACKOFF] + per_spawn + [K.FAILED]
    assert sup.outcome.kind is OutcomeKind.FAILED
    assert sup.outcome.restarts == 2
    assert "startup" in sup.outcome.message


def test_crash_loop_guard(rec):
    sup = run(rec, "exit 1",
              fast_policy(max_restarts=10, crash_loop_limit=3, crash_loop_window=30.0))
    per_spawn = [K.STARTED, K.RUNNING, K.EXITED]
    assert rec.kinds() == per_spawn + [K.BACKOFF] + per_spawn + [K.BACKOFF] + per_spawn + [K.FAILED]
    assert sup.outcome.kind is OutcomeKind.FAILED
    assert "crash loop" in sup.outcome.message
    assert sup.outcome.restarts == 2


def test_always_restarts_after_success(rec):
    sup = run(rec, "exit 0", fast_policy(mode="always", max_restarts=1))
    per_spawn = [K.STARTED, K.RUNNING, K.EXITED]
    assert rec.kinds() == per_spawn + [K.BACKOFF] + per_spawn + [K.FAILED]
    assert sup.outcome.restarts == 1
    assert sup.outcome.last_exit_code == 0


def test_death_by_signal_is_a_failure(rec):
    sup = run(rec, "kill -9 $$", fast_policy(max_restarts=0))
    exited = rec.wait_kind(K.EXITED)
    assert exited.exit_code == -1 and exited.signal == 9
    assert sup.outcome.kind is OutcomeKind.FAILED
    assert sup.outcome.last_signal == 9 and sup.outcome.last_exit_code == -1


def test_running_after_startup_grace(rec):
    sup = devrig.Supervisor("svc", "sleep 30", policy=fast_policy(startup_grace=0.2),
                            on_event=rec.on_event)
    with sup:
        rec.wait_kind(K.RUNNING)
        started, running = rec.events[0], rec.events[1]
        assert running.pid == started.pid
        assert running.timestamp_ms - started.timestamp_ms >= 150
    assert rec.kinds() == [K.STARTED, K.RUNNING, K.STOPPING, K.EXITED, K.STOPPED]
    assert sup.outcome.kind is OutcomeKind.CANCELLED


def test_respawn_failure_counts_as_startup_failure(rec, tmp_path):
    # The first spawn works; the service then removes its own working dir,
    # so every respawn fails.
    d = tmp_path / "work"
    d.mkdir()
    sup = run(rec, f"rmdir {d}; exit 1",
              fast_policy(startup_max_restarts=1, startup_grace=10.0), cwd=d)
    kinds = rec.kinds()
    assert kinds[:3] == [K.STARTED, K.EXITED, K.BACKOFF]
    assert K.SPAWN_FAILED in kinds
    assert kinds[-1] == K.FAILED
    assert sup.outcome.kind is OutcomeKind.FAILED
    assert "startup" in sup.outcome.message


def test_first_spawn_failure_raises_spawn_error(rec, tmp_path):
    sup = devrig.Supervisor("svc", "true", cwd=tmp_path / "missing",
                            on_event=rec.on_event)
    with pytest.raises(devrig.SpawnError) as e:
        sup.run()
    assert isinstance(e.value, OSError)
    assert "missing" in str(e.value)
    # Like Python's own OSErrors: errno, and the path that failed.
    assert e.value.errno == errno.ENOENT
    assert e.value.filename == str(tmp_path / "missing")
    assert rec.kinds() == [K.SPAWN_FAILED, K.FAILED]
    assert sup.outcome.kind is OutcomeKind.FAILED
    with pytest.raises(devrig.SpawnError) as e:
        sup.wait()
    assert e.value.errno == errno.ENOENT


def test_exactly_one_terminal_event_and_nothing_after(rec):
    run(rec, "exit 1", fast_policy(max_restarts=3))
    terminal = [e for e in rec.events if e.kind in (K.STOPPED, K.FAILED)]
    assert len(terminal) == 1 and rec.events[-1] is terminal[0]
