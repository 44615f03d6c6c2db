"""Log lines: integrity, partial lines, multiline, streams, levels, bytes."""

import gc
import sys
import threading
import time

import pytest

import devrig
from devrig import EventKind as K
from devrig import Level, Stream

from conftest import fast_policy, proc_state

NEVER = fast_policy(mode="never")


def run_logs(rec, cmd, batch=False, **kw):
    kw.setdefault("policy", NEVER)
    if batch:
        kw["on_log_batch"] = rec.on_log_batch
    else:
        kw["on_log"] = rec.on_log
    sup = devrig.Supervisor("logs", cmd, on_event=rec.on_event, **kw)
    sup.run()
    return sup


@pytest.mark.parametrize("batch", [False, True], ids=["on_log", "on_log_batch"])
def test_100k_numbered_lines_in_order(rec, batch):
    n = 100_000
    run_logs(rec, f"seq 1 {n}", batch=batch)
    texts = rec.texts()
    assert len(texts) == n
    assert texts == [str(i) for i in range(1, n + 1)]
    assert all(l.stream is Stream.STDOUT for l in rec.lines[:100])


def test_both_streams_in_order_each(rec):
    run_logs(rec, "for i in $(seq 1 2000); do echo out$i; echo err$i >&2; done")
    out = [l.text for l in rec.lines if l.stream is Stream.STDOUT]
    err = [l.text for l in rec.lines if l.stream is Stream.STDERR]
    assert out == [f"out{i}" for i in range(1, 2001)]
    assert err == [f"err{i}" for i in range(1, 2001)]


def test_line_fields(rec):
    run_logs(rec, "echo hello; echo 'ERROR broke' >&2")
    started = rec.events[0]
    (out,) = [l for l in rec.lines if l.stream is Stream.STDOUT]
    (err,) = [l for l in rec.lines if l.stream is Stream.STDERR]
    assert out.text == "hello" and out.data == b"hello" and out.len == 5
    assert out.stream is Stream.STDOUT and err.stream is Stream.STDERR
    assert out.service == "logs"
    assert out.pid == started.pid
    assert abs(out.timestamp_ms - time.time() * 1000) < 60_000
    assert err.level is Level.ERROR
    assert str(out) == "hello"
    r = repr(err)
    assert r.startswith("LogLine(") and "Stream.STDERR" in r and "'ERROR broke'" in r


@pytest.mark.parametrize(
    "word,level",
    [("ERROR", Level.ERROR), ("WARN", Level.WARN), ("INFO", Level.INFO),
     ("DEBUG", Level.DEBUG), ("TRACE", Level.TRACE), ("plain", Level.UNKNOWN)],
)
def test_levels(rec, word, level):
    run_logs(rec, f"echo '{word} something'")
    assert rec.lines[0].level is level


def test_partial_last_line_at_end_of_stream(rec):
    run_logs(rec, "printf 'one\\ntwo'")
    assert rec.texts() == ["one", "two"]


def test_partial_line_flushed_after_idle(rec):
    # The child stays alive; the partial line must arrive after ~250 ms.
    sup = devrig.Supervisor("logs", "printf 'prompt> '; sleep 30", policy=NEVER,
                            on_log=rec.on_log, on_event=rec.on_event)
    with sup:
        t0 = time.monotonic()
        line = rec.wait_line(lambda l: True, timeout=10)
        assert line.text == "prompt> "
        assert time.monotonic() - t0 < 5
        assert K.EXITED not in rec.kinds()


def test_crlf_trailing_cr_dropped(rec):
    run_logs(rec, "printf 'a\\r\\nb\\r\\n'")
    assert rec.texts() == ["a", "b"]


def test_multiline_grouping(rec):
    run_logs(rec, "printf 'Traceback:\\n  frame 1\\n\\tframe 2\\nnext\\n'")
    assert rec.texts() == ["Traceback:\n  frame 1\n\tframe 2", "next"]


def test_multiline_off(rec):
    run_logs(rec, "printf 'Traceback:\\n  frame 1\\nnext\\n'", multiline=False)
    assert rec.texts() == ["Traceback:", "  frame 1", "next"]


def test_long_line_split_at_max_line_bytes(rec):
    run_logs(rec, "head -c 10000 /dev/zero | tr '\\0' a; echo; echo after",
             max_line_bytes=4096)
    lens = [len(t) for t in rec.texts()]
    assert lens == [4096, 4096, 1808, 5]
    assert "".join(rec.texts()[:3]) == "a" * 10000


def test_invalid_utf8_decoded_leniently_raw_bytes_kept(rec):
    run_logs(rec, "printf 'caf\\303\\251 \\377x\\n'")
    (line,) = rec.lines
    assert line.data == b"caf\xc3\xa9 \xffx"
    assert line.text == "café \ufffdx"
    # len is the C field: bytes as the child wrote them, before decoding.
    assert line.len == 8 == len(line.data)
    assert len(line.text) == 7


def test_all_lines_arrive_before_exited(rec):
    run_logs(rec, "seq 1 5000; echo last >&2; exit 2", policy=fast_policy(max_restarts=0))
    idx_exited = next(i for i, x in enumerate(rec.timeline)
                      if isinstance(x, devrig.Event) and x.kind == K.EXITED)
    n_lines_before = sum(1 for x in rec.timeline[:idx_exited] if isinstance(x, devrig.LogLine))
    assert n_lines_before == 5001


def test_env_overlay_and_cwd(rec, tmp_path):
    run_logs(rec, 'echo "$DEVRIG_T1 $DEVRIG_T2"; pwd; echo "${HOME:+home-inherited}"',
             env={"DEVRIG_T1": "a b", "DEVRIG_T2": "2"}, cwd=str(tmp_path))
    assert rec.texts() == ["a b 2", str(tmp_path), "home-inherited"] or \
        rec.texts()[:2] == ["a b 2", str(tmp_path)]


def test_cwd_accepts_pathlike(rec, tmp_path):
    run_logs(rec, "pwd", cwd=tmp_path)
    assert rec.texts() == [str(tmp_path)]


def test_stdin_is_dev_null(rec):
    run_logs(rec, "cat; echo eof")
    assert rec.texts() == ["eof"]


def test_slow_consumer_loses_nothing(rec):
    # A consumer slower than the child: backpressure, nothing lost.
    got = []

    def slow(batch):
        got.extend(l.text for l in batch)
        time.sleep(0.002)

    sup = devrig.Supervisor("logs", "seq 1 50000", policy=NEVER, on_log_batch=slow)
    sup.run()
    assert got == [str(i) for i in range(1, 50001)]


def test_log_batch_sequence_api(rec):
    batches = []
    sup = devrig.Supervisor("batch", "seq 1 10", policy=NEVER, on_log_batch=batches.append)
    sup.run()
    assert all(isinstance(b, devrig.LogBatch) for b in batches)
    texts = [t for b in batches for t in b.texts()]
    assert texts == [str(i) for i in range(1, 11)]
    b = max(batches, key=len)
    assert len(b) == len(b.texts()) == len(b.data()) == len(b.lines())
    assert b[0].text == b.texts()[0] and b[-1].text == b.texts()[-1]
    assert [l.text for l in b[1:3]] == b.texts()[1:3]
    assert [l.text for l in b] == b.texts()
    assert b.data()[0] == b.texts()[0].encode()
    assert b.service == "batch"
    with pytest.raises(IndexError):
        b[len(b)]
    assert repr(b).startswith("<LogBatch of ")


@pytest.mark.parametrize("mode", ["batches", "lines"])
def test_queue_logs_iterators_receive_everything_in_order(mode):
    n = 50_000
    sup = devrig.Supervisor("q", f"seq 1 {n}; echo tail >&2", policy=NEVER, queue_logs=True)
    sup.start()
    if mode == "batches":
        got = [t for b in sup.log_batches() for t in b.texts()]
    else:
        got = [l.text for l in sup.lines()]
    sup.wait(10)
    assert [t for t in got if t != "tail"] == [str(i) for i in range(1, n + 1)]
    assert "tail" in got
    assert sup.outcome.kind is devrig.OutcomeKind.COMPLETED


def test_queue_logs_backpressure_and_cancel_without_consumer():
    # Nobody reads: the bounded queue fills, the child blocks on its pipe;
    # a stop must still complete promptly.
    sup = devrig.Supervisor("q2", "while :; do echo spam; done", policy=NEVER,
                            queue_logs=True, stop_grace=1.0)
    sup.start()
    wait_held(sup)  # the queue is full: the reader holds the run's logs
    t0 = time.monotonic()
    sup.close()
    assert time.monotonic() - t0 < 5
    assert sup.outcome.kind is devrig.OutcomeKind.CANCELLED
    # The iterator drains what was queued, then ends.
    assert sum(len(b) for b in sup.log_batches()) > 0


def test_queue_logs_stays_bounded_during_a_stop_when_nobody_reads():
    # The child ignores SIGTERM and floods its pipe through the whole grace
    # period; nobody reads. The queue keeps its bound (16 reads) during the
    # stop, the stop ends (SIGKILL after stop_grace), and what is left to
    # read is every line up to some point, in order; the rest is counted.
    sup = devrig.Supervisor("q5", "trap '' TERM; exec seq 1 1000000000", policy=NEVER,
                            queue_logs=True, stop_grace=0.5)
    sup.start()
    it = sup.log_batches()
    batches = [next(it)]  # seq runs: SIGTERM is ignored from now on
    sup.cancel()
    sup.wait(30)
    assert sup.outcome.kind is devrig.OutcomeKind.CANCELLED
    assert sup.outcome.last_signal == 9  # it took SIGKILL to end it
    batches += list(it)
    assert len(batches) <= 1 + 16
    texts = [t for b in batches for t in b.texts()]
    assert texts == [str(i) for i in range(1, len(texts) + 1)]
    assert sup.dropped_lines > 0


def test_queue_logs_reader_gets_every_line_written_around_a_stop():
    # The stop is requested while the child is still writing and nobody
    # reads, so the queue fills up; the child ignores SIGTERM, writes on
    # and exits by itself within stop_grace. A reader that starts after the
    # stop request gets every line: during a stop the queue waits for it.
    n = 1_000_000
    sup = devrig.Supervisor("q6", f"trap '' TERM; seq 1 {n}; echo end", policy=NEVER,
                            queue_logs=True, stop_grace=60)
    sup.start()
    it = sup.log_batches()
    got = next(it).texts()  # seq runs: SIGTERM is ignored from now on
    sup.cancel()
    got += [t for b in it for t in b.texts()]
    sup.wait(30)
    assert got == [str(i) for i in range(1, n + 1)] + ["end"]
    assert sup.dropped_lines == 0
    assert sup.outcome.kind is devrig.OutcomeKind.CANCELLED


QUEUE_BOUND = 16  # batches; the queue_logs queue never holds more


def wait_held(sup, timeout=20.0):
    """Waits until the queue of sup is full and holds the run's logs."""
    deadline = time.monotonic() + timeout
    while True:
        st = sup._log_queue_stats()
        if st["held"]:
            return st
        assert time.monotonic() < deadline, f"the queue was never held: {st}"
        time.sleep(0.01)


def test_queue_logs_reader_gone_drops_sticky_while_the_run_ends():
    # As above, but the reader comes back as soon as the stop's patience
    # has run out, while the run still drains the killed child's pipe: once
    # a batch was dropped, every later one is too (no gap for a reader that
    # has found room again).
    sup = devrig.Supervisor("q8", "trap '' TERM; exec seq 1 1000000000", policy=NEVER,
                            queue_logs=True, stop_grace=0.5)
    sup.start()
    it = sup.log_batches()
    batches = [next(it)]  # seq runs: SIGTERM is ignored from now on
    wait_held(sup)
    sup.cancel()
    deadline = time.monotonic() + 20
    while not sup._log_queue_stats()["dropping"]:
        assert time.monotonic() < deadline, "the patience never ran out"
        time.sleep(0.01)
    batches += list(it)
    sup.wait(30)
    assert sup.outcome.last_signal == 9
    assert len(batches) <= 1 + QUEUE_BOUND
    texts = [t for b in batches for t in b.texts()]
    assert texts == [str(i) for i in range(1, len(texts) + 1)]
    assert sup.dropped_lines > 0
    st = sup._log_queue_stats()
    assert st["high_water"] <= QUEUE_BOUND and not st["held"]


def test_unread_queue_logs_floods_do_not_stall_other_supervisors(rec):
    # Four floods nobody reads (as many as the core has workers, at most):
    # their queues fill up and hold their runs' logs. No worker waits for a
    # reader, so another supervisor still runs, logs and stops at once. (A
    # push that waited for room took a worker for good: with 4 such floods
    # every supervisor of the process stalled.)
    floods = [devrig.Supervisor(f"flood{i}", "exec yes flood", policy=NEVER,
                                queue_logs=True, stop_grace=0.5) for i in range(4)]
    try:
        for f in floods:
            f.start()
        for f in floods:
            wait_held(f)
        other = devrig.Supervisor("other", "echo ready; exec sleep 30", policy=NEVER,
                                  on_log=rec.on_log, on_event=rec.on_event)
        other.start()
        rec.wait_line(lambda l: l.text == "ready")
        rec.wait_kind(K.RUNNING)
        t0 = time.monotonic()
        other.cancel()
        other.wait(20)
        assert time.monotonic() - t0 < 10  # SIGTERM ends sleep at once
        assert other.outcome.kind is devrig.OutcomeKind.CANCELLED
        assert rec.kinds()[-1] is K.STOPPED
        for f in floods:
            st = f._log_queue_stats()
            assert st["held"] and st["queued"] == QUEUE_BOUND
            assert st["high_water"] == QUEUE_BOUND
            assert not f.done and f.dropped_lines == 0
    finally:
        # Nobody reads: each stop ends once its patience has run out
        # (stop_grace), the lines left in the pipes dropped.
        for f in floods:
            f.cancel()
        for f in floods:
            f.wait(30)
    for f in floods:
        assert f.outcome.kind is devrig.OutcomeKind.CANCELLED
        assert f.dropped_lines > 0
        assert all(set(b.texts()) == {"flood"} for b in f.log_batches())


def test_queue_logs_slow_reader_gets_every_line_with_the_queue_bounded():
    # The reader is slower than the child: the queue fills, holds the run's
    # logs, and each batch taken lets one more in. Nothing is lost, and the
    # queue never holds more than its bound. (A read is at most 64 KiB: the
    # 3.4 MB of these lines take more than 16 of them.)
    n = 500_000
    sup = devrig.Supervisor("slow", f"seq 1 {n}", policy=NEVER, queue_logs=True)
    sup.start()
    wait_held(sup)  # full before the first read
    got = []
    for b in sup.log_batches():
        assert sup._log_queue_stats()["queued"] <= QUEUE_BOUND
        got.extend(b.texts())
        time.sleep(0.002)
    sup.wait(30)
    assert got == [str(i) for i in range(1, n + 1)]
    st = sup._log_queue_stats()
    assert st["high_water"] == QUEUE_BOUND
    assert st["holds"] >= 1 and not st["held"] and not st["dropping"]
    assert sup.dropped_lines == 0
    assert sup.outcome.kind is devrig.OutcomeKind.COMPLETED


def test_queue_logs_hold_is_released_by_another_thread_reading():
    # The queue is held while nobody reads; a reader on another thread
    # starts later and gets everything. (A read is at most 64 KiB: the
    # 6.9 MB of these lines take more than 16 of them.)
    n = 1_000_000
    sup = devrig.Supervisor("late", f"seq 1 {n}", policy=NEVER, queue_logs=True)
    sup.start()
    wait_held(sup)
    got = []
    t = threading.Thread(target=lambda: got.extend(x for b in sup.log_batches()
                                                   for x in b.texts()))
    t.start()
    sup.wait(30)
    t.join(30)
    assert got == [str(i) for i in range(1, n + 1)]
    assert sup._log_queue_stats()["high_water"] == QUEUE_BOUND


def test_closing_a_supervisor_whose_queue_is_held():
    # Nobody reads and the child ignores SIGTERM: close() ends within about
    # stop_grace (SIGKILL, the hold ended by the stop's patience).
    sup = devrig.Supervisor("held-close", "trap '' TERM; exec seq 1 1000000000",
                            policy=NEVER, queue_logs=True, stop_grace=0.5)
    sup.start()
    wait_held(sup)
    t0 = time.monotonic()
    sup.close()
    assert time.monotonic() - t0 < 15
    assert sup.outcome.kind is devrig.OutcomeKind.CANCELLED
    assert sup.outcome.last_signal == 9
    assert sup.dropped_lines > 0
    texts = [t for b in sup.log_batches() for t in b.texts()]
    assert texts == [str(i) for i in range(1, len(texts) + 1)]


def test_dropping_a_supervisor_whose_queue_is_held():
    # The last reference goes while the queue holds the run's logs: nothing
    # waits for it, the child is stopped and reaped all the same. A long
    # stop_grace: the hold must not wait for it either (only SIGKILL does).
    sup = devrig.Supervisor("held-drop", "exec yes dropped", policy=NEVER,
                            queue_logs=True, stop_grace=60)
    sup.start()
    it = sup.log_batches()
    pid = next(it)[0].pid
    del it  # the iterator keeps the supervisor alive
    wait_held(sup)
    t0 = time.monotonic()
    del sup
    gc.collect()
    assert time.monotonic() - t0 < 5
    deadline = time.monotonic() + 20
    while proc_state(pid) is not None:  # reaped, not even a zombie
        assert time.monotonic() < deadline, f"{pid} still {proc_state(pid)}"
        time.sleep(0.01)


def test_dropped_lines_is_zero_without_a_queue():
    sup = devrig.Supervisor("q7", "echo x", policy=NEVER)
    sup.run()
    assert sup.dropped_lines == 0
    assert sup._log_queue_stats() is None


def test_queue_logs_argument_rules():
    with pytest.raises(ValueError, match="queue_logs"):
        devrig.Supervisor("q3", "true", queue_logs=True, on_log=print)
    with pytest.raises(devrig.StateError, match="queue_logs"):
        devrig.Supervisor("q4", "true").log_batches()
