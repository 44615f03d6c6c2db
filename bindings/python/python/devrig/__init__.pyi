"""Type stubs for devrig (the public package and its native module)."""

import datetime
import enum
import os
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, Union, final, overload

from ._enums import EventKind as EventKind
from ._enums import Level as Level
from ._enums import OutcomeKind as OutcomeKind
from ._enums import RestartMode as RestartMode
from ._enums import Stream as Stream

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

__version__: str
CORE_VERSION: str

_Seconds = Union[int, float, datetime.timedelta]
_Path = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]

class SpawnError(OSError):
    """The service could not be spawned (the first spawn of a run failed)."""

class StateError(RuntimeError):
    """The call is not allowed in the supervisor's current state."""

@final
class RestartPolicy:
    """When and how often a service is restarted. Durations in seconds.

    None (or leaving an argument out) means the default shown.
    """

    def __new__(
        cls,
        mode: Union[RestartMode, str, int, None] = ...,  # RestartMode.ON_FAILURE
        max_restarts: Optional[int] = 10,
        startup_max_restarts: Optional[int] = 3,
        startup_grace: Optional[_Seconds] = 2.0,
        initial_delay: Optional[_Seconds] = 0.5,
        max_delay: Optional[_Seconds] = 30.0,
        reset_after: Optional[_Seconds] = 60.0,
        crash_loop_limit: Optional[int] = 5,
        crash_loop_window: Optional[_Seconds] = 30.0,
    ) -> "RestartPolicy": ...
    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "RestartPolicy": ...
    def to_config(self) -> dict[str, Any]: ...
    def replace(self, **changes: Any) -> "RestartPolicy": ...
    @property
    def mode(self) -> RestartMode: ...
    @property
    def max_restarts(self) -> int: ...
    @property
    def startup_max_restarts(self) -> int: ...
    @property
    def startup_grace(self) -> float: ...
    @property
    def initial_delay(self) -> float: ...
    @property
    def max_delay(self) -> float: ...
    @property
    def reset_after(self) -> float: ...
    @property
    def crash_loop_limit(self) -> int: ...
    @property
    def crash_loop_window(self) -> float: ...
    @property
    def startup_grace_ms(self) -> int: ...
    @property
    def initial_delay_ms(self) -> int: ...
    @property
    def max_delay_ms(self) -> int: ...
    @property
    def reset_after_ms(self) -> int: ...
    @property
    def crash_loop_window_ms(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

DEFAULT_POLICY: RestartPolicy

@final
class LogLine:
    """One log line (or multiline entry). Immutable."""

    @property
    def service(self) -> str: ...
    @property
    def text(self) -> str:
        """The line decoded as UTF-8, invalid bytes replaced."""
    @property
    def data(self) -> bytes:
        """The raw bytes as the child wrote them (no newline)."""
    @property
    def len(self) -> int:
        """The length of the line in bytes as the child wrote them (the C field ``len``)."""
    @property
    def stream(self) -> Stream: ...
    @property
    def level(self) -> Level: ...
    @property
    def pid(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...

@final
class LogBatch(Sequence[LogLine]):
    """The lines of one read (what ``on_log_batch`` and ``log_batches()`` give)."""

    @property
    def service(self) -> str: ...
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int, /) -> LogLine: ...
    @overload
    def __getitem__(self, index: slice, /) -> List[LogLine]: ...
    def __iter__(self) -> Iterator[LogLine]: ...
    def lines(self) -> List[LogLine]: ...
    def texts(self) -> List[str]:
        """The text of every line: the fastest way to consume lines."""
    def data(self) -> List[bytes]: ...

@final
class LogBatchIterator(Iterator[LogBatch]):
    """What ``Supervisor.log_batches()`` returns."""

    def __iter__(self) -> "LogBatchIterator": ...
    def __next__(self) -> LogBatch: ...

@final
class Event:
    """One state change of a supervised service. Immutable."""

    @property
    def kind(self) -> EventKind: ...
    @property
    def service(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def exit_code(self) -> int: ...
    @property
    def signal(self) -> int: ...
    @property
    def restart_count(self) -> int: ...
    @property
    def delay_ms(self) -> int: ...
    @property
    def runtime_ms(self) -> int: ...
    @property
    def message(self) -> str: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def is_terminal(self) -> bool: ...

@final
class Outcome:
    """How a run ended (kind NONE while it has not)."""

    @property
    def kind(self) -> OutcomeKind: ...
    @property
    def last_exit_code(self) -> int: ...
    @property
    def last_signal(self) -> int: ...
    @property
    def restarts(self) -> int: ...
    @property
    def message(self) -> str: ...

class Supervisor:
    """Supervises one service; runs once."""

    def __init__(
        self,
        name: str,
        command: str,
        cwd: Optional[_Path] = None,
        env: Optional[Mapping[str, str]] = None,
        policy: Union[RestartPolicy, Mapping[str, Any], None] = None,
        state_dir: Optional[_Path] = None,
        stop_grace: _Seconds = 5.0,
        on_log: Optional[Callable[[LogLine], object]] = None,
        on_event: Optional[Callable[[Event], object]] = None,
        *,
        multiline: bool = True,
        max_line_bytes: int = 65536,
        on_log_batch: Optional[Callable[[LogBatch], object]] = None,
        queue_logs: bool = False,
    ) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def outcome(self) -> Outcome: ...
    @property
    def started(self) -> bool: ...
    @property
    def done(self) -> bool: ...
    @property
    def dropped_lines(self) -> int:
        """With ``queue_logs=True``: lines dropped because the queue stayed full during a stop."""
    def run(self) -> None: ...
    def start(self) -> None: ...
    def wait(self, timeout: Optional[_Seconds] = None) -> None: ...
    def cancel(self) -> None: ...
    def close(self) -> None: ...
    def log_batches(self) -> LogBatchIterator: ...
    def lines(self) -> Iterator[LogLine]: ...
    async def run_async(self) -> None: ...
    def __enter__(self) -> "Supervisor": ...
    def __exit__(self, exc_type: Any = None, exc: Any = None, tb: Any = None) -> bool: ...

def kill_tree(pid: int, grace: _Seconds = 5.0) -> None: ...
def proc_start_time_ms(pid: int) -> Optional[int]: ...
def same_process(pid: int, start_ms: int) -> bool: ...
@overload
def pid_file_path(state_dir: str) -> str: ...
@overload
def pid_file_path(state_dir: bytes) -> bytes: ...
@overload
def pid_file_path(state_dir: os.PathLike[Any]) -> Any: ...
def write_pid_file(state_dir: _Path) -> None: ...
def remove_pid_file(state_dir: _Path) -> None: ...
def reap_orphans(state_dir: _Path, grace: _Seconds = 5.0) -> int: ...
