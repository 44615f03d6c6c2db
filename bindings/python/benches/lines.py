"""Per-line cost of consuming a chatty child: devrig vs subprocess.

    python benches/lines.py [N [WIDTH]]

Each variant runs `seq 1 N` (or, with WIDTH, N lines of WIDTH characters
from `yes`) through /bin/sh and touches every
line in Python (adds up the lengths). Prints the best of 3 wall times and
ns/line; lower is better.
"""

import resource
import subprocess
import sys
import time

import devrig

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
WIDTH = int(sys.argv[2]) if len(sys.argv) > 2 else 0
NEVER = devrig.RestartPolicy(mode="never", startup_grace=0)
if WIDTH:
    # Lines of WIDTH characters, like a typical log line.
    LINE = ("2026-01-01T00:00:00Z INFO request served " + "x" * WIDTH)[:WIDTH]
    CMD = f"yes '{LINE}' | head -n {N}"
    EXPECTED = N * WIDTH
else:
    # seq's output: "1\n" .. "N\n"; the lengths without newlines.
    CMD = f"seq 1 {N}"
    EXPECTED = sum(len(str(i)) for i in range(1, N + 1))


def popen_bytes():
    total = 0
    with subprocess.Popen(["sh", "-c", CMD], stdout=subprocess.PIPE) as p:
        for line in p.stdout:
            total += len(line) - 1
    return total


def popen_text():
    total = 0
    with subprocess.Popen(["sh", "-c", CMD], stdout=subprocess.PIPE, text=True) as p:
        for line in p.stdout:
            total += len(line) - 1
    return total


def _run(**kw):
    devrig.Supervisor("bench", CMD, policy=NEVER, **kw).run()


def devrig_batch_texts():
    total = 0

    def on_batch(batch):
        nonlocal total
        for text in batch.texts():
            total += len(text)

    _run(on_log_batch=on_batch)
    return total


def devrig_batch_lines():
    total = 0

    def on_batch(batch):
        nonlocal total
        for line in batch:
            total += len(line.text)

    _run(on_log_batch=on_batch)
    return total


def devrig_per_line():
    total = 0

    def on_log(line):
        nonlocal total
        total += len(line.text)

    _run(on_log=on_log)
    return total


def devrig_queue_texts():
    total = 0
    sup = devrig.Supervisor("bench", CMD, policy=NEVER, queue_logs=True)
    sup.start()
    for batch in sup.log_batches():
        for text in batch.texts():
            total += len(text)
    sup.wait()
    return total


def devrig_queue_lines():
    total = 0
    sup = devrig.Supervisor("bench", CMD, policy=NEVER, queue_logs=True)
    sup.start()
    for line in sup.lines():
        total += len(line.text)
    sup.wait()
    return total


def main():
    variants = [
        ("subprocess: for line in proc.stdout (bytes)", popen_bytes),
        ("subprocess: for line in proc.stdout (text)", popen_text),
        ("devrig: queue_logs, log_batches() + texts()", devrig_queue_texts),
        ("devrig: queue_logs, for line in sup.lines()", devrig_queue_lines),
        ("devrig: on_log_batch, batch.texts()", devrig_batch_texts),
        ("devrig: on_log_batch, for line in batch", devrig_batch_lines),
        ("devrig: on_log, one call per line", devrig_per_line),
    ]
    print(f"{N} lines of {WIDTH or 'seq'} characters, best of 3")
    print(f"{'':46s} {'wall':>8s}     {'wall':>7s}          {'CPU (this process)':>18s}")
    for name, fn in variants:
        best = cpu_best = float("inf")
        for _ in range(3):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            got = fn()
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            best, cpu_best = min(best, wall), min(cpu_best, cpu)
            assert got == EXPECTED, (name, got, EXPECTED)
        print(f"{name:46s} {best * 1000:8.1f} ms  {best / N * 1e9:7.1f} ns/line"
              f"  {cpu_best / N * 1e9:7.1f} ns/line")


if __name__ == "__main__":
    main()
