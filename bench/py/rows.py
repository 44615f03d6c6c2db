"""Python rows of the libdevrig benchmarks (baselines, and the binding's rows
when it is available). One row per invocation; prints one JSON line.

    rows.py w1-popen WRITER N        for line in Popen(...).stdout
    rows.py w3-asyncio N             asyncio, pidfd child watcher
    rows.py w4-subprocess STOPS      Popen + terminate + wait
    rows.py w5-psutil TREES          psutil children(recursive) + terminate + wait_procs
    rows.py w1-devrig WRITER N       the binding: queue_logs, log_batches(), texts()
    rows.py w3-devrig N
"""
import asyncio
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time

now = time.monotonic


def status_field(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def cpu_secs():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def out(**kw):
    print(json.dumps(kw), flush=True)


def w1_popen(writer, n):
    t0 = now()
    p = subprocess.Popen(["/bin/sh", "-c", f"exec {writer} {n}"], stdout=subprocess.PIPE)
    count = bad = 0
    secs = 0.0
    for line in p.stdout:
        if len(line) != 64:
            bad += 1
        count += 1
        if count == n:
            secs = now() - t0
    p.wait()
    out(lines=count, lost=n - count, bad=bad, secs=secs, rate=count / secs)


def idle_cpu():
    c0, t0 = cpu_secs(), now()
    time.sleep(3)
    return (cpu_secs() - c0) / (now() - t0)


def w3_asyncio(n):
    raise_nofile()

    async def main():
        loop = asyncio.get_running_loop()
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)
        asyncio.set_child_watcher(watcher)
        rss0 = status_field("VmRSS")
        t0 = now()
        procs = []
        for _ in range(n):
            procs.append(await asyncio.create_subprocess_shell(
                "exec sleep 3600", stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            if len(procs) == 1:
                rss_first = status_field("VmRSS")
        start_all = now() - t0
        await asyncio.sleep(0.5)
        threads, rss1 = status_field("Threads"), status_field("VmRSS")
        c0, i0 = cpu_secs(), now()
        await asyncio.sleep(3)
        idle = (cpu_secs() - c0) / (now() - i0)
        t2 = now()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        await asyncio.gather(*(p.wait() for p in procs))
        stop_all = now() - t2
        out(n=n, threads=threads, start_all=start_all, stop_all=stop_all,
            rss_per_kib=(rss1 - rss_first) / (n - 1), rss_first_kib=rss_first - rss0,
            idle_cpu=idle)

    asyncio.run(main())


def w4_subprocess(stops):
    v = []
    for _ in range(stops):
        p = subprocess.Popen(["/bin/sh", "-c", "exec sleep 3600"], process_group=0)
        time.sleep(0.01)
        t0 = now()
        p.terminate()
        p.wait()
        v.append((now() - t0) * 1e3)
    out(ms=v)


TREE = ("for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do "
        "sh -c 'for j in 1 2 3 4 5 6 7 8 9; do sleep 3600 & done; wait' & done; wait")


def reap_all():
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            pass


def w5_psutil(trees):
    import psutil
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    v = []
    for _ in range(trees):
        p = subprocess.Popen(["/bin/sh", "-c", TREE], process_group=0)
        root = psutil.Process(p.pid)
        t0 = now()
        while len(root.children(recursive=True)) != 200:
            if now() - t0 > 20:
                raise SystemExit("tree did not reach 201 processes")
            time.sleep(0.02)
        time.sleep(0.05)
        t0 = now()
        procs = [root] + root.children(recursive=True)
        for q in procs:
            try:
                q.terminate()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=5)
        v.append((now() - t0) * 1e3)
        reap_all()
    out(ms=v)


def w1_devrig(writer, n):
    """The fastest documented way (bindings/python/README.md, "Consuming a
    chatty service fast"): queue_logs=True, log_batches(), batch.texts()."""
    import devrig
    t0 = now()
    sup = devrig.Supervisor("w1", f"exec {writer} {n}", queue_logs=True,
                            policy=devrig.RestartPolicy(mode="never", startup_grace=0))
    sup.start()
    count = bad = 0
    secs = 0.0
    for batch in sup.log_batches():
        texts = batch.texts()
        for t in texts:
            if len(t) != 63:
                bad += 1
        count += len(texts)
        if count >= n and not secs:
            secs = now() - t0
    sup.wait()
    out(lines=count, lost=n - count, bad=bad, secs=secs, rate=count / secs)


def w3_devrig(n):
    import devrig
    raise_nofile()
    lines = [0]

    def on_batch(batch):
        lines[0] += len(batch)

    rss0 = status_field("VmRSS")
    t0 = now()
    sups = []
    for i in range(n):
        s = devrig.Supervisor(f"svc-{i}", "exec sleep 3600", on_log_batch=on_batch,
                              policy=devrig.RestartPolicy(mode="never", startup_grace=0))
        s.start()
        sups.append(s)
        if i == 0:
            rss_first = status_field("VmRSS")
    start_all = now() - t0
    time.sleep(0.5)
    threads, rss1 = status_field("Threads"), status_field("VmRSS")
    idle = idle_cpu()
    t2 = now()
    for s in sups:
        s.cancel()
    for s in sups:
        s.wait()
    stop_all = now() - t2
    out(n=n, threads=threads, start_all=start_all, stop_all=stop_all,
        rss_per_kib=(rss1 - rss_first) / (n - 1), rss_first_kib=rss_first - rss0,
        idle_cpu=idle)


def main():
    row, args = sys.argv[1], sys.argv[2:]
    if row == "w1-popen":
        w1_popen(args[0], int(args[1]))
    elif row == "w3-asyncio":
        w3_asyncio(int(args[0]))
    elif row == "w4-subprocess":
        w4_subprocess(int(args[0]))
    elif row == "w5-psutil":
        w5_psutil(int(args[0]))
    elif row == "w1-devrig":
        w1_devrig(args[0], int(args[1]))
    elif row == "w3-devrig":
        w3_devrig(int(args[0]))
    else:
        raise SystemExit(f"unknown row {row}")


if __name__ == "__main__":
    main()
