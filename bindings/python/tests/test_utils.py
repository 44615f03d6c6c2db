"""Process utilities, PID file and state: kill_tree, proc_start_time_ms,
same_process, pid_file_path, write/remove_pid_file, reap_orphans."""

import errno
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest

import devrig

from conftest import alive, wait_gone


def spawn_tree():
    """A shell with two children, in its own session; returns (proc, pids)."""
    p = subprocess.Popen(
        ["sh", "-c", "sleep 300 & echo $!; sleep 300 & echo $!; wait"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    kids = [int(p.stdout.readline()), int(p.stdout.readline())]
    return p, kids


def test_kill_tree_kills_the_whole_tree():
    p, kids = spawn_tree()
    t0 = time.monotonic()
    devrig.kill_tree(p.pid, grace=2.0)
    assert time.monotonic() - t0 < 3
    p.wait(5)
    for k in kids:
        assert wait_gone(k, 5)


def test_kill_tree_escalates_to_sigkill_after_grace():
    p = subprocess.Popen(["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert p.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    devrig.kill_tree(p.pid, 0.3)
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 5
    assert p.wait(5) == -9


def test_kill_tree_argument_checks():
    for bad in (0, -1, 2**31, 2**40):
        with pytest.raises(ValueError, match="pid"):
            devrig.kill_tree(bad)
    with pytest.raises(TypeError, match="pid"):
        devrig.kill_tree("123")
    with pytest.raises(ValueError, match="grace"):
        devrig.kill_tree(os.getpid(), grace=-1)
    # A pid that does not exist is not an error: nothing left to stop.
    devrig.kill_tree(2**31 - 1, grace=0.1)


def test_proc_start_time_and_same_process():
    me = devrig.proc_start_time_ms(os.getpid())
    assert isinstance(me, int)
    now = time.time() * 1000
    assert now - 24 * 3600 * 1000 < me <= now + 1000
    assert devrig.same_process(os.getpid(), me)
    assert devrig.same_process(os.getpid(), 0)
    assert not devrig.same_process(os.getpid(), me + 5000)
    assert devrig.proc_start_time_ms(2**31 - 1) is None
    assert not devrig.same_process(2**31 - 1, 0)
    assert not devrig.same_process(0, 0)
    assert not devrig.same_process(-5, 0)
    with pytest.raises(ValueError):
        devrig.proc_start_time_ms(0)
    with pytest.raises(TypeError):
        devrig.same_process("1", 0)
    # A child's start time is not before ours.
    p = subprocess.Popen(["sleep", "30"])
    try:
        t = devrig.proc_start_time_ms(p.pid)
        assert t >= me
        assert devrig.same_process(p.pid, t)
    finally:
        p.kill()
        p.wait()
    assert not devrig.same_process(p.pid, t)


def test_pid_file(tmp_path):
    d = tmp_path / "state" / "nested"
    assert devrig.pid_file_path(str(d)) == os.path.join(str(d), "devrig.pid")
    assert devrig.pid_file_path(d) == d / "devrig.pid"
    assert isinstance(devrig.pid_file_path(d), pathlib.Path)
    devrig.write_pid_file(d)
    assert (d / "devrig.pid").read_text() == str(os.getpid())  # as devrig wrote it
    devrig.remove_pid_file(str(d))
    assert not (d / "devrig.pid").exists()
    devrig.remove_pid_file(d)  # absent: fine
    with pytest.raises(TypeError):
        devrig.write_pid_file(42)
    f = tmp_path / "afile"
    f.write_text("")
    with pytest.raises(NotADirectoryError) as e:
        devrig.write_pid_file(f / "sub")
    assert e.value.errno == errno.ENOTDIR
    assert e.value.filename == f / "sub"  # the argument, as passed


def test_state_record_and_reap_orphans_after_a_host_crash(tmp_path):
    state = tmp_path / "state"
    # A host that starts a service with a state dir, then dies without
    # stopping it (os._exit: no atexit, no cleanup).
    host = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, threading, devrig
            ready = threading.Event()
            pid = []
            def on_event(ev):
                if ev.kind == devrig.EventKind.RUNNING:
                    pid.append(ev.pid); ready.set()
            sup = devrig.Supervisor("orphan", "sleep 300 & wait",
                                    state_dir={str(state)!r},
                                    policy=devrig.RestartPolicy(startup_grace=0),
                                    on_event=on_event)
            sup.start()
            ready.wait(10)
            print(pid[0], flush=True)
            os._exit(0)
        """)], capture_output=True, text=True, timeout=60)
    assert host.returncode == 0, host.stderr
    pid = int(host.stdout.strip())
    assert alive(pid)
    assert (state / "services").is_dir()
    assert devrig.reap_orphans(state, grace=2.0) == 1
    assert wait_gone(pid, 5)
    # Nothing left to reap the second time.
    assert devrig.reap_orphans(str(state), 1.0) == 0


def test_reap_orphans_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        devrig.reap_orphans(str(tmp_path / "missing"))
    assert e.value.errno == errno.ENOENT
    assert e.value.filename == str(tmp_path / "missing")
    f = tmp_path / "afile"
    f.write_text("")
    with pytest.raises(NotADirectoryError, match="not a directory") as e:
        devrig.reap_orphans(f)
    assert e.value.errno == errno.ENOTDIR
    assert e.value.filename == f
    # A path that reads like the core's errno suffix is not taken for one.
    odd = tmp_path / "x (os error 13)"
    with pytest.raises(FileNotFoundError) as e:
        devrig.reap_orphans(odd)
    assert e.value.errno == errno.ENOENT
    assert devrig.reap_orphans(tmp_path) == 0
    with pytest.raises(ValueError, match="grace"):
        devrig.reap_orphans(tmp_path, grace=-2)


def test_state_dir_written_by_a_live_supervisor(tmp_path):
    with devrig.Supervisor("recorded", "sleep 60", state_dir=tmp_path) as sup:
        deadline = time.monotonic() + 10
        files = []
        while not files and time.monotonic() < deadline:
            files = list((tmp_path / "services").glob("*.state"))
            time.sleep(0.01)
        assert files and "recorded" in files[0].name
