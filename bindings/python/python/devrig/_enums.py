"""The enums of devrig. Values are those of the C API (include/devrig.h)."""

from __future__ import annotations

import enum

__all__ = ["RestartMode", "Stream", "Level", "EventKind", "OutcomeKind"]


class RestartMode(enum.IntEnum):
    """When a service is restarted after it exits on its own."""

    #: After a non-zero exit or a death by signal.
    ON_FAILURE = 0
    #: After any exit.
    ALWAYS = 1
    #: Never.
    NEVER = 2

    def __str__(self) -> str:
        return f"RestartMode.{self.name}"


class Stream(enum.IntEnum):
    """Which pipe a log line came from."""

    STDOUT = 1
    STDERR = 2

    def __str__(self) -> str:
        return f"Stream.{self.name}"


class Level(enum.IntEnum):
    """The severity detected in a log line (from words such as ERROR, WARN, INFO)."""

    UNKNOWN = 0
    TRACE = 1
    DEBUG = 2
    INFO = 3
    WARN = 4
    ERROR = 5

    def __str__(self) -> str:
        return f"Level.{self.name}"


class EventKind(enum.IntEnum):
    """The kinds of state change reported to ``on_event``."""

    STARTED = 1
    RUNNING = 2
    EXITED = 3
    BACKOFF = 4
    SPAWN_FAILED = 5
    STOPPING = 6
    STOPPED = 7
    FAILED = 8
    #: Something went wrong that did not stop supervision (never terminal).
    WARNING = 9

    def __str__(self) -> str:
        return f"EventKind.{self.name}"


class OutcomeKind(enum.IntEnum):
    """How a run ended."""

    #: The run has not ended yet.
    NONE = 0
    #: The service exited and the policy did not restart it.
    COMPLETED = 1
    #: A stop request ended the run.
    CANCELLED = 2
    #: The supervisor gave up (or the first spawn failed).
    FAILED = 3

    def __str__(self) -> str:
        return f"OutcomeKind.{self.name}"
