"""devrig: supervise a service from Python.

One :class:`Supervisor` runs one service (``/bin/sh -c COMMAND`` in its own
process group), captures its stdout and stderr line by line, restarts it
according to a :class:`RestartPolicy`, reports every state change as an
:class:`Event`, and stops it leaving nothing behind. The work is done by
libdevrig's Rust core on a small, fixed set of library threads.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import pathlib
import weakref
from typing import Any, Iterator, Union

from . import _devrig
from ._devrig import (
    CORE_VERSION,
    Event,
    LogBatch,
    LogBatchIterator,
    LogLine,
    Outcome,
    RestartPolicy,
    SpawnError,
    StateError,
    __version__,
    kill_tree,
    proc_start_time_ms,
    reap_orphans,
    remove_pid_file,
    same_process,
    write_pid_file,
)
from ._enums import EventKind, Level, OutcomeKind, RestartMode, Stream

__all__ = [
    "CORE_VERSION",
    "DEFAULT_POLICY",
    "Event",
    "EventKind",
    "Level",
    "LogBatch",
    "LogBatchIterator",
    "LogLine",
    "Outcome",
    "OutcomeKind",
    "RestartMode",
    "RestartPolicy",
    "SpawnError",
    "StateError",
    "Stream",
    "Supervisor",
    "__version__",
    "kill_tree",
    "pid_file_path",
    "proc_start_time_ms",
    "reap_orphans",
    "remove_pid_file",
    "same_process",
    "write_pid_file",
]

#: The default restart policy (on-failure, 10 restarts, 3 startup failures,
#: 2 s startup grace, 0.5 s .. 30 s backoff, reset after 60 s, crash loop:
#: 5 exits in 30 s).
DEFAULT_POLICY = RestartPolicy()

# Supervisors that may still own a running service; stopped at exit.
_live: "weakref.WeakSet[Supervisor]" = weakref.WeakSet()


class Supervisor(_devrig.Supervisor):
    """Supervises one service. See the README for the full description.

    ``Supervisor(name, command, cwd=None, env=None, policy=None,
    state_dir=None, stop_grace=5.0, on_log=None, on_event=None, *,
    multiline=True, max_line_bytes=65536, on_log_batch=None)``

    - ``name``: a safe file-name component (letters, digits, ``.-_``).
    - ``command``: run as ``/bin/sh -c command`` in a new process group.
    - ``cwd``: working directory (str or os.PathLike); ``env``: a mapping of
      str to str added to (or replacing in) the inherited environment.
    - ``policy``: a :class:`RestartPolicy` (or a config dict, see
      :meth:`RestartPolicy.from_config`); default :data:`DEFAULT_POLICY`.
    - ``state_dir``: where the service's record is kept for
      :func:`reap_orphans`.
    - ``stop_grace``: seconds between SIGTERM and SIGKILL on stop.
    - ``on_log(line)``: called for each :class:`LogLine`;
      ``on_log_batch(batch)``: called with a :class:`LogBatch` per read (the
      fastest callback for a chatty service). ``on_event(event)``: called
      for each :class:`Event`. Callbacks run on a library thread; an
      exception they raise stops the service and is raised again by
      :meth:`run` / :meth:`wait` / :meth:`close`.
    - ``queue_logs=True``: no log callback; read the lines from your own
      thread with :meth:`log_batches` or :meth:`lines` (fastest). The queue
      is bounded, during a stop too: see :meth:`log_batches` and
      :attr:`dropped_lines`.

    Entering a ``with`` block starts the service (an explicit ``start()`` or
    ``run()`` inside the block is then accepted once); leaving it stops the
    service and waits until it is reaped.
    """

    def __init__(
        self,
        name: str,
        command: str,
        cwd: Any = None,
        env: Any = None,
        policy: Any = None,
        state_dir: Any = None,
        stop_grace: Any = 5.0,
        on_log: Any = None,
        on_event: Any = None,
        *,
        multiline: bool = True,
        max_line_bytes: int = 65536,
        on_log_batch: Any = None,
        queue_logs: bool = False,
    ) -> None:
        # The arguments were checked and used by the native __new__; this
        # signature is for help() and inspect.
        _live.add(self)

    def lines(self) -> Iterator[LogLine]:
        """With ``queue_logs=True``: every :class:`LogLine` of the run, in order.

        Ends once the run has ended. Convenient; ``log_batches()`` with
        ``batch.texts()`` is faster when every nanosecond counts.
        """
        for batch in self.log_batches():
            yield from batch

    async def run_async(self) -> None:
        """Runs the service until the run ends, without blocking the event loop.

        No thread is started for it: the library thread that ends the run
        wakes the event loop (``loop.call_soon_threadsafe``), so any number
        of concurrent ``run_async`` calls cost no thread.

        Cancelling the awaiting task stops the service (SIGTERM, then SIGKILL
        after ``stop_grace``), waits until it has been reaped, then lets
        ``CancelledError`` propagate. Further cancellations while it waits
        (a ``TaskGroup`` or ``gather`` tearing down, a second Ctrl-C) do not
        cut that wait short. Raises like :meth:`run`.
        """
        loop = asyncio.get_running_loop()
        # Returns once the first spawn was attempted (a few ms).
        self.start()
        done: asyncio.Future[None] = loop.create_future()

        def _set() -> None:
            if not done.done():
                done.set_result(None)

        def _wake() -> None:
            # On a library thread, at the run's terminal event.
            try:
                loop.call_soon_threadsafe(_set)
            except RuntimeError:  # the loop is closed
                pass

        if not self._on_run_end(_wake):
            _set()  # the run has ended already
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            self.cancel()
            while not done.done():
                try:
                    await asyncio.shield(done)
                except asyncio.CancelledError:
                    # Only once the service has been reaped: the first
                    # cancellation is raised below.
                    pass
            # The terminal event has been emitted; the run's thread is
            # finishing (microseconds). An exception of a callback stays
            # for wait() / close().
            self._wait_done()
            raise
        # As above; then returns, or raises the run's error.
        self.wait()


_PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def pid_file_path(state_dir: _PathArg) -> Any:
    """``state_dir/devrig.pid``: a str for a str, bytes for bytes, else a pathlib.Path."""
    p = _devrig._pid_file_path(state_dir)
    if isinstance(state_dir, str):
        return os.fspath(p)
    if isinstance(state_dir, bytes):
        return os.fsencode(p)
    return pathlib.Path(p)


# Registered first, so run last (atexit is LIFO): after _stop_all, before
# the interpreter finalizes, no library thread may be left inside a
# callback (CPython < 3.14 would end it with pthread_exit, which aborts
# the process).
atexit.register(_devrig._close_exit_gate)


@atexit.register
def _stop_all() -> None:
    # A library must not leave children behind when its host exits.
    for sup in list(_live):
        try:
            if sup._is_forked_copy():
                continue
            sup.close()
        except BaseException:  # noqa: BLE001 - nothing to report to at exit
            pass
