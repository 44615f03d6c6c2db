"""Python-specific rules: Ctrl-C, a host ignoring SIGCHLD, exception
re-raise, asyncio, the GIL, fork, interpreter shutdown, garbage collection,
argument errors, reprs."""

import asyncio
import errno
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

import devrig
from devrig import EventKind as K
from devrig import OutcomeKind

from conftest import alive, fast_policy, group_members, wait_gone


def python_child(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# ------------------------------------------------------------------ Ctrl-C

def test_ctrl_c_stops_the_service_then_raises_keyboard_interrupt():
    child = python_child("""
        import signal, sys, devrig
        # As in an interactive program, even if our runner ignores SIGINT
        # (e.g. a background job of a non-interactive shell).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        def on_event(ev):
            if ev.kind == devrig.EventKind.RUNNING:
                print(ev.pid, flush=True)
        sup = devrig.Supervisor("svc", "trap 'exit 0' TERM; sleep 300 & wait",
                                policy=devrig.RestartPolicy(startup_grace=0),
                                on_event=on_event)
        try:
            sup.run()
        except KeyboardInterrupt:
            print("outcome", sup.outcome.kind.name, flush=True)
            raise
    """)
    try:
        pid = int(child.stdout.readline())
        assert alive(pid)
        t0 = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert time.monotonic() - t0 < 10
    assert "KeyboardInterrupt" in err, err
    assert child.returncode != 0
    assert "outcome CANCELLED" in out
    assert wait_gone(pid, 5)
    assert group_members(pid) == []


# --------------------------------------------------- host ignoring SIGCHLD

def test_host_ignoring_sigchld_runs_and_restarts_children_reaped_at_once():
    # signal.SIG_IGN for SIGCHLD has the kernel reap every child the moment
    # it exits: an 'exit 3' is often gone before libdevrig opens its pidfd.
    # That is still a run (exit status unknown), not a failed spawn, and the
    # restarts go on until the budget is spent. In a child interpreter: the
    # disposition is process-wide.
    child = python_child("""
        import signal
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        import devrig
        K = devrig.EventKind
        RESTARTS = 20
        seen = []
        sup = devrig.Supervisor(
            "ignchld", "exit 3",
            policy=devrig.RestartPolicy(mode="always", max_restarts=RESTARTS,
                                        startup_grace=0, initial_delay=0.001,
                                        max_delay=0.001, crash_loop_limit=0),
            on_event=seen.append)
        try:
            sup.run()  # the budget runs out: a failed run, but no exception
        except devrig.SpawnError as e:
            print("run raised", repr(e), flush=True)
        def count(kind):
            return sum(1 for e in seen if e.kind == kind)
        assert count(K.SPAWN_FAILED) == 0, seen
        assert count(K.STARTED) == RESTARTS + 1, seen
        assert count(K.EXITED) == RESTARTS + 1, seen
        for e in seen:
            if e.kind == K.EXITED:
                assert "exit status unknown" in e.message, e
        assert seen[-1].kind == K.FAILED, seen
        assert "restart budget" in seen[-1].message, seen[-1]
        o = sup.outcome
        assert o.kind == devrig.OutcomeKind.FAILED, o
        assert o.restarts == RESTARTS, o
        print("ok", RESTARTS + 1, "spawns", flush=True)
    """)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, out + err
    assert "ok 21 spawns" in out, out + err


# ------------------------------------------------- exceptions in callbacks

class Boom(Exception):
    pass


def test_exception_in_on_log_is_reraised_from_run_after_the_stop(rec):
    def on_log(line):
        raise Boom(line.text)

    sup = devrig.Supervisor("boom", "echo first; exec sleep 60", policy=fast_policy(),
                            on_log=on_log, on_event=rec.on_event)
    t0 = time.monotonic()
    with pytest.raises(Boom, match="first"):
        sup.run()
    assert time.monotonic() - t0 < 10
    assert sup.done
    assert sup.outcome.kind is OutcomeKind.CANCELLED
    pid = rec.events[0].pid
    assert not alive(pid)
    assert rec.kinds()[-1] == K.STOPPED
    # Raised once: a later wait() returns normally.
    sup.wait()


def test_exception_in_on_event_is_reraised_from_wait(rec):
    def on_event(ev):
        rec.on_event(ev)
        if ev.kind == K.RUNNING:
            raise Boom("event")

    sup = devrig.Supervisor("boom2", "sleep 60", policy=fast_policy(), on_event=on_event)
    sup.start()
    with pytest.raises(Boom, match="event"):
        sup.wait(timeout=10)
    assert sup.outcome.kind is OutcomeKind.CANCELLED
    assert not alive(rec.events[0].pid)


def test_exception_in_on_log_batch_is_reraised_from_close():
    def on_log_batch(lines):
        raise Boom("batch")

    sup = devrig.Supervisor("boom3", "echo x; sleep 60", policy=fast_policy(),
                            on_log_batch=on_log_batch)
    sup.start()
    with pytest.raises(Boom):
        # close() stops, reaps, then raises the pending exception.
        deadline = time.monotonic() + 10
        while not sup.done and time.monotonic() < deadline:
            time.sleep(0.01)
        sup.close()


def test_exception_in_callback_inside_with_block():
    def on_log(line):
        raise Boom("ctx")

    with pytest.raises(Boom):
        with devrig.Supervisor("boom4", "echo x; sleep 60", on_log=on_log) as sup:
            sup.wait(timeout=10)


def test_run_inside_a_callback_raises_state_error_without_starting():
    # run() from a callback would deadlock: StateError, and the other
    # supervisor is left as it was (not started), so it can still run.
    other = devrig.Supervisor("other", "echo hi", policy=fast_policy(mode="never"))
    seen = {}

    def on_event(ev):
        if ev.kind == K.RUNNING and not seen:
            try:
                other.run()
                seen["error"] = None
            except devrig.StateError as e:
                seen["error"] = e
            seen["started"] = other.started
            holder.cancel()

    holder = devrig.Supervisor("holder", "sleep 60", policy=fast_policy(),
                               on_event=on_event)
    holder.run()
    assert isinstance(seen["error"], devrig.StateError)
    assert "callback" in str(seen["error"])
    assert seen["started"] is False
    assert not other.started
    other.run()
    assert other.outcome.kind is OutcomeKind.COMPLETED


# ---------------------------------------------------------------- asyncio

def test_run_async_completes_and_returns():
    lines = []

    async def main():
        sup = devrig.Supervisor("aio", "echo hi; exit 0", policy=fast_policy(),
                                on_log=lines.append)
        await sup.run_async()
        return sup

    sup = asyncio.run(main())
    assert sup.outcome.kind is OutcomeKind.COMPLETED
    assert [l.text for l in lines] == ["hi"]


def test_run_async_cancellation_stops_and_reaps(rec):
    async def main():
        sup = devrig.Supervisor("aio2", "sleep 60", policy=fast_policy(),
                                on_event=rec.on_event)
        task = asyncio.create_task(sup.run_async())
        # The event loop keeps running while the service runs.
        ticks = 0
        while not any(e.kind == K.RUNNING for e in list(rec.events)):
            await asyncio.sleep(0.01)
            ticks += 1
            assert ticks < 2000
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sup

    sup = asyncio.run(main())
    assert sup.done
    assert sup.outcome.kind is OutcomeKind.CANCELLED
    assert not alive(rec.events[0].pid)
    assert rec.kinds()[-1] == K.STOPPED


def test_run_async_raises_callback_exceptions_and_spawn_errors(tmp_path):
    def on_log(line):
        raise Boom("aio")

    async def main():
        sup = devrig.Supervisor("aio3", "echo x; sleep 60", on_log=on_log)
        with pytest.raises(Boom):
            await sup.run_async()
        bad = devrig.Supervisor("aio4", "true", cwd=tmp_path / "nope")
        with pytest.raises(devrig.SpawnError):
            await bad.run_async()

    asyncio.run(main())


def test_many_concurrent_run_async():
    async def main():
        sups = [devrig.Supervisor(f"c{i}", f"exit 0", policy=fast_policy()) for i in range(10)]
        await asyncio.gather(*(s.run_async() for s in sups))
        return sups

    assert all(s.outcome.kind is OutcomeKind.COMPLETED for s in asyncio.run(main()))


def test_concurrent_run_async_start_no_thread():
    # API.md: the thread count is fixed whatever the number of handles.
    # run_async waits without a thread of its own: the library thread that
    # ends the run wakes the event loop.
    def threads():
        return len(os.listdir("/proc/self/task"))

    n = 50

    async def main():
        loop = asyncio.get_running_loop()
        devrig.Supervisor("warm", "exit 0", policy=fast_policy()).run()
        base = threads()  # the library's threads exist now
        running = [0]
        all_running = asyncio.Event()

        def count():
            running[0] += 1
            if running[0] == n:
                all_running.set()

        def on_event(ev):
            if ev.kind == K.RUNNING:
                loop.call_soon_threadsafe(count)

        sups = [devrig.Supervisor(f"t{i}", "exec sleep 60", policy=fast_policy(),
                                  on_event=on_event) for i in range(n)]
        tasks = [asyncio.create_task(s.run_async()) for s in sups]
        await all_running.wait()
        during = threads()
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        return base, during, sups

    base, during, sups = asyncio.run(main())
    assert during == base
    assert all(s.outcome.kind is OutcomeKind.CANCELLED for s in sups)


def test_run_async_second_cancellation_still_waits_for_the_reap(rec):
    # A TaskGroup or gather tearing down, or a second Ctrl-C, cancels the
    # task again while it waits for the stop: CancelledError still comes
    # only once the service has been reaped.
    async def main():
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def on_log(line):
            if line.text == "ready":
                loop.call_soon_threadsafe(ready.set)

        sup = devrig.Supervisor("aio5", "trap '' TERM; echo ready; exec sleep 60",
                                policy=fast_policy(), stop_grace=1.0,
                                on_log=on_log, on_event=rec.on_event)
        task = asyncio.create_task(sup.run_async())
        await ready.wait()  # SIGTERM is ignored from now on
        task.cancel()
        await asyncio.sleep(0)  # the task takes the first cancellation
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sup.done
        return sup

    sup = asyncio.run(main())
    assert sup.outcome.kind is OutcomeKind.CANCELLED
    assert sup.outcome.last_signal == signal.SIGKILL
    assert not alive(rec.events[0].pid)


def test_run_async_after_the_run_has_ended_returns_at_once():
    async def main():
        with devrig.Supervisor("aio6", "exit 0", policy=fast_policy()) as sup:
            sup.wait(10)
            await sup.run_async()  # the start of the with block counts
        return sup

    assert asyncio.run(main()).outcome.kind is OutcomeKind.COMPLETED


# -------------------------------------------------------------------- GIL

def test_gil_released_while_run_blocks(tmp_path):
    flag = tmp_path / "flag"
    counter = [0]

    def worker():
        # Pure-Python work: it only progresses if run() released the GIL.
        while counter[0] < 200_000:
            counter[0] += 1
        flag.touch()

    # The service ends only once the other Python thread made progress.
    sup = devrig.Supervisor("gil", f"while [ ! -e {flag} ]; do sleep 0.01; done",
                            policy=fast_policy(mode="never"))
    t = threading.Thread(target=worker)
    t.start()
    sup.run()
    t.join()
    assert counter[0] == 200_000


def test_gil_released_while_wait_blocks():
    sup = devrig.Supervisor("gil2", "sleep 60", policy=fast_policy())
    sup.start()
    stop = threading.Event()
    count = [0]

    def spin():
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    with pytest.raises(TimeoutError):
        sup.wait(timeout=0.3)
    stop.set()
    t.join()
    sup.close()
    assert count[0] > 1000


# ------------------------------------------------------------------- fork

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_gets_state_error_and_never_touches_parent_service(rec):
    sup = devrig.Supervisor("forked", "sleep 60", policy=fast_policy(), on_event=rec.on_event)
    sup.start()
    pid = rec.wait_kind(K.RUNNING).pid
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        results = []
        for call in (sup.cancel, sup.wait, sup.run, sup.start, sup.close,
                     lambda: sup.outcome, lambda: sup.started, lambda: sup.done,
                     lambda: sup.dropped_lines, sup.log_batches, sup.__enter__):
            try:
                call()
                results.append("no error")
            except devrig.StateError as e:
                results.append("StateError" if "fork" in str(e) else "other:" + str(e))
            except BaseException as e:  # noqa: BLE001
                results.append(type(e).__name__)
        # The name still answers; repr says what the handle is.
        results.append(sup.name)
        results.append(repr(sup))
        del sup  # dropping in the child must not stop the parent's service
        gc.collect()
        os.write(w, "\n".join(results).encode())
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(child, 0)
    data = os.read(r, 4096).decode()
    os.close(r)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert data.split("\n") == ["StateError"] * 11 + [
        "forked", "<devrig.Supervisor 'forked' (forked copy, unusable)>"], data
    # The parent's service is untouched.
    assert alive(pid)
    assert not sup.done
    assert K.STOPPING not in rec.kinds()
    sup.close()
    assert not alive(pid)


def test_multiprocessing_fork_child_raises_state_error():
    import multiprocessing as mp

    try:
        ctx = mp.get_context("fork")
    except ValueError:
        pytest.skip("no fork start method")
    sup = devrig.Supervisor("mp", "sleep 60", policy=fast_policy())
    sup.start()
    q = ctx.Queue()

    def use(q):
        try:
            sup.cancel()
            q.put("no error")
        except devrig.StateError as e:
            q.put("StateError: " + str(e))

    p = ctx.Process(target=use, args=(q,))
    p.start()
    msg = q.get(timeout=30)
    p.join(30)
    assert msg.startswith("StateError") and "fork" in msg
    assert not sup.done
    sup.close()


# ------------------------------------------- interpreter shutdown, atexit

def test_interpreter_exit_with_running_chatty_service_stops_it():
    child = python_child("""
        import devrig
        def on_log(line):
            pass
        sup = devrig.Supervisor("chatty", "echo pid=$$; while :; do echo spam; done",
                                on_log=on_log)
        sup.start()
        import time; time.sleep(0.3)
        with open("/proc/self/stat") as f:
            pass
        print("exiting", flush=True)
        # No close(): the atexit hook stops and reaps the service.
    """)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "exiting" in out
    assert "Fatal" not in err and "panicked" not in err


def test_interpreter_finalizing_while_library_threads_deliver_lines():
    # Bypass the atexit stop so that library threads try to attach while the
    # interpreter finalizes: Python::try_attach must make them back off.
    for _ in range(3):
        child = python_child("""
            import devrig, time
            n = [0]
            def on_log(line):
                n[0] += 1
            sup = devrig.Supervisor("busy", "while :; do echo x; done", on_log=on_log)
            devrig._live.discard(sup)
            sup.start()
            while n[0] < 1000:
                time.sleep(0.001)
            print("bye", flush=True)
        """)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert "bye" in out
        assert "Fatal" not in err and "panicked" not in err


def test_exit_waits_for_callbacks_still_running():
    # A callback that is inside Python (here: asleep, without the GIL) when
    # the interpreter finalizes is ended by pthread_exit when it wants the
    # GIL back (CPython < 3.14), which aborts the process: the atexit gate
    # lets no callback start and waits for those running. Made certain by
    # an object whose destruction, during finalization, outlasts the sleep.
    child = python_child("""
        import devrig, time
        class SlowFinalization:
            def __init__(self):
                self.sleep = time.sleep
            def __del__(self):
                self.sleep(0.3)
        slow = SlowFinalization()
        # Not a function of this module: its globals (holding slow) must
        # not be kept alive by the supervisor.
        cb = {"time": time, "n": [0]}
        exec("def on_log(line):\\n    n[0] += 1\\n    time.sleep(0.05)\\n", cb)
        sup = devrig.Supervisor("slow", "while :; do echo x; done", on_log=cb["on_log"])
        devrig._live.discard(sup)
        sup.start()
        while cb["n"][0] < 3:
            time.sleep(0.001)
        print("bye", flush=True)
    """)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "bye" in out


def test_exit_does_not_wait_long_for_a_blocked_callback():
    child = python_child("""
        import devrig, threading, time
        started = threading.Event()
        def on_log(line):
            started.set()
            threading.Event().wait()  # never returns
        sup = devrig.Supervisor("stuck", "while :; do echo x; sleep 0.1; done",
                                on_log=on_log)
        devrig._live.discard(sup)
        sup.start()
        started.wait()
        print("bye", flush=True)
    """)
    t0 = time.monotonic()
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "bye" in out
    assert time.monotonic() - t0 < 10


# ----------------------------------------------------- garbage collection

def test_reference_cycle_through_a_callback_is_collected():
    class Holder:
        pass

    h = Holder()

    def on_event(ev):
        h.sup.cancel()

    h.sup = devrig.Supervisor("cycle", "true", on_event=on_event)
    ref = weakref.ref(h.sup)
    del h, on_event
    gc.collect()
    assert ref() is None


def test_callbacks_released_after_the_run():
    class CB:
        def __call__(self, ev):
            pass

    cb = CB()
    ref = weakref.ref(cb)
    sup = devrig.Supervisor("rel", "true", policy=fast_policy(), on_event=cb)
    del cb
    sup.run()
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("kind", ["on_log", "on_log_batch"])
def test_a_log_callback_without_on_event_is_released_after_the_run(kind):
    # Without on_event the core's thread drops the callback at the terminal
    # event without the GIL (pyo3 defers the decref): it must still be gone
    # once run() has returned.
    seen = []

    class CB:
        def __call__(self, x):
            seen.append(x)

    cb = CB()
    ref = weakref.ref(cb)
    sup = devrig.Supervisor("rel", "echo hi", policy=fast_policy(), **{kind: cb})
    del cb
    sup.run()
    gc.collect()
    assert ref() is None
    assert len(seen) == 1


# ------------------------------------------------------- argument errors

@pytest.mark.parametrize(
    "kwargs,exc,needle",
    [
        (dict(name="a/b"), ValueError, "a/b"),
        (dict(name=""), ValueError, "name"),
        (dict(name=".."), ValueError, ".."),
        (dict(name=5), TypeError, "name"),
        (dict(command=""), ValueError, "command"),
        (dict(command="   "), ValueError, "command"),
        (dict(command="a\0b"), ValueError, "NUL"),
        (dict(command=b"true"), TypeError, "command"),
        (dict(env={"A=B": "x"}), ValueError, "A=B"),
        (dict(env={"A": 1}), TypeError, "'A'"),
        (dict(env={1: "x"}), TypeError, "env key"),
        (dict(env=["A"]), TypeError, "env"),
        (dict(cwd=5), TypeError, "cwd"),
        (dict(cwd=""), ValueError, "cwd"),
        (dict(state_dir=3.5), TypeError, "state_dir"),
        (dict(stop_grace=-1), ValueError, "stop_grace"),
        (dict(stop_grace="5"), TypeError, "stop_grace"),
        (dict(stop_grace=float("inf")), ValueError, "stop_grace"),
        (dict(policy="always"), TypeError, "policy"),
        (dict(on_log=42), TypeError, "on_log"),
        (dict(on_event="x"), TypeError, "on_event"),
        (dict(max_line_bytes=0), ValueError, "max_line_bytes"),
        (dict(max_line_bytes=-5), ValueError, "max_line_bytes"),
        (dict(max_line_bytes=2**31), ValueError, "max_line_bytes"),
        (dict(on_log=print, on_log_batch=print), ValueError, "on_log_batch"),
        # A lone surrogate (e.g. from surrogateescape) cannot be UTF-8.
        (dict(name="a\udcff"), ValueError, "name"),
        (dict(command="echo \udcff"), ValueError, "command"),
        (dict(env={"K\udcff": "v"}), ValueError, "env key"),
        (dict(env={"K": "v\udcff"}), ValueError, "env value of 'K'"),
        (dict(policy={"policy": "\udcff"}), ValueError, "policy"),
        (dict(multiline="yes"), TypeError, "multiline"),
        (dict(multiline=None), TypeError, "multiline"),
        (dict(multiline=1), TypeError, "multiline"),
        (dict(queue_logs="yes"), TypeError, "queue_logs"),
        (dict(queue_logs=None), TypeError, "queue_logs"),
    ],
)
def test_bad_arguments(kwargs, exc, needle):
    args = dict(name="ok", command="true")
    args.update(kwargs)
    with pytest.raises(exc) as e:
        devrig.Supervisor(**args)
    assert needle in str(e.value)
    assert type(e.value) is exc  # not a subclass such as UnicodeEncodeError


def test_unusable_state_dir_is_reported_at_construction(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OSError) as e:
        devrig.Supervisor("sd", "true", state_dir=f)
    assert e.value.errno in (errno.EEXIST, errno.ENOTDIR)
    assert e.value.filename == f


def test_policy_as_config_dict_and_timedelta_durations():
    import datetime

    sup = devrig.Supervisor("cfg", "exit 1", policy={"policy": "never"},
                            stop_grace=datetime.timedelta(seconds=1))
    sup.run()
    assert sup.outcome.kind is OutcomeKind.COMPLETED


def test_wait_timeout_argument_errors():
    sup = devrig.Supervisor("w", "true")
    sup.run()
    with pytest.raises(ValueError, match="timeout"):
        sup.wait(timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        sup.wait(timeout="1")


# ------------------------------------------------------- reprs and types

def test_reprs_and_enums(rec):
    sup = devrig.Supervisor("r", "exit 0", policy=fast_policy(), on_event=rec.on_event)
    assert repr(sup) == "<devrig.Supervisor 'r' (not started)>"
    assert sup.outcome.kind is OutcomeKind.NONE
    assert sup.name == "r"
    sup.run()
    assert repr(sup) == "<devrig.Supervisor 'r' (done: completed)>"
    assert repr(sup.outcome).startswith("Outcome(OutcomeKind.COMPLETED, last_exit_code=0")
    ev = rec.events[0]
    assert repr(ev).startswith("Event(EventKind.STARTED, service='r', pid=")
    assert ev.kind is K.STARTED and ev.kind == 1 and isinstance(ev.kind, int)
    assert [k.value for k in K][:8] == list(range(1, 9))
    assert [k.name for k in devrig.Stream] == ["STDOUT", "STDERR"]
    assert [int(k) for k in devrig.Level] == list(range(6))
    assert [k.name for k in OutcomeKind] == ["NONE", "COMPLETED", "CANCELLED", "FAILED"]
    assert rec.events[-1].is_terminal
    for attr in ("kind", "service", "pid", "exit_code", "signal", "restart_count",
                 "delay_ms", "runtime_ms", "message", "timestamp_ms"):
        getattr(ev, attr)
    with pytest.raises(AttributeError):
        ev.pid = 3


def test_package_metadata():
    assert isinstance(devrig.__version__, str) and devrig.__version__
    assert issubclass(devrig.SpawnError, OSError)
    assert issubclass(devrig.StateError, RuntimeError)
    import pathlib
    pkg = pathlib.Path(devrig.__file__).parent
    assert (pkg / "py.typed").exists()
    assert (pkg / "__init__.pyi").exists()
    for name in devrig.__all__:
        assert hasattr(devrig, name), name


def test_stub_matches_the_package():
    # The stub's __all__ and top-level names are the package's.
    import ast
    import pathlib
    tree = ast.parse((pathlib.Path(devrig.__file__).parent / "__init__.pyi").read_text())
    stub_all = None
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "__all__":
            stub_all = ast.literal_eval(node.value)
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
    assert sorted(stub_all) == sorted(devrig.__all__)
    for name in names - {"_Seconds", "_Path"}:
        assert hasattr(devrig, name), name
    assert devrig.LogBatchIterator is type(devrig.Supervisor("it", "true", queue_logs=True)
                                           .log_batches())


def test_stubtest_finds_no_mismatch(tmp_path):
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "devrig"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(sys.version_info < (3, 10),
                    reason="abi3 classes carry no text signature before Python 3.10")
def test_signatures_show_the_contract_defaults():
    import inspect
    p = inspect.signature(devrig.RestartPolicy).parameters
    assert {k: v.default for k, v in p.items()} == dict(
        mode=devrig.RestartMode.ON_FAILURE, max_restarts=10, startup_max_restarts=3,
        startup_grace=2.0, initial_delay=0.5, max_delay=30.0, reset_after=60.0,
        crash_loop_limit=5, crash_loop_window=30.0)
    assert inspect.signature(devrig.kill_tree).parameters["grace"].default == 5.0
    assert inspect.signature(devrig.reap_orphans).parameters["grace"].default == 5.0
    s = inspect.signature(devrig.Supervisor).parameters
    assert s["stop_grace"].default == 5.0 and s["multiline"].default is True
    # None still means the default.
    assert devrig.RestartPolicy(max_restarts=None, mode=None) == devrig.DEFAULT_POLICY
