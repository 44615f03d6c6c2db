/*
 * devrig.h: the C API of libdevrig, a process supervisor.
 *
 * GENERATED FILE: do not edit. It is produced by cbindgen from src/ffi.rs
 * (run `make header`); `make test` fails when it is stale.
 *
 * Conventions (see README.md, "API conventions"):
 * - Functions returning devrig_status set a message for devrig_last_error()
 *   on failure. Output parameters are written only on success.
 * - Every argument is checked: NULL, invalid UTF-8 and out-of-range values
 *   give DEVRIG_E_INVALID_ARGUMENT; no call crashes; panics become
 *   DEVRIG_E_PANIC.
 * - Callbacks run on libdevrig threads, never concurrently for one handle
 *   and never under an internal lock; data passed to a callback is valid
 *   only during the call. Those threads are shared by every handle: a
 *   callback must not block (a log callback that cannot keep up holds the
 *   logs instead: devrig_hold_logs).
 * - libdevrig installs no signal handler and changes no signal disposition
 *   of the host process.
 */

#ifndef DEVRIG_H
#define DEVRIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DEVRIG_VERSION_MAJOR 0
#define DEVRIG_VERSION_MINOR 1
#define DEVRIG_VERSION_PATCH 0
#define DEVRIG_VERSION_STRING "0.1.0"


/**
 * When a service is restarted after it exits on its own.
 */
typedef enum devrig_restart_mode {
  /**
   * Restart after a non-zero exit or a death by signal.
   */
  DEVRIG_RESTART_ON_FAILURE = 0,
  /**
   * Restart after any exit.
   */
  DEVRIG_RESTART_ALWAYS = 1,
  /**
   * Never restart.
   */
  DEVRIG_RESTART_NEVER = 2,
} devrig_restart_mode;

/**
 * Status codes. The numbers are part of the ABI and are never reused.
 */
typedef enum devrig_status {
  /**
   * Success.
   */
  DEVRIG_OK = 0,
  /**
   * An argument was NULL, not valid UTF-8, or out of range; see devrig_last_error().
   */
  DEVRIG_E_INVALID_ARGUMENT = 1,
  /**
   * The service could not be spawned (first spawn of a run).
   */
  DEVRIG_E_SPAWN = 2,
  /**
   * The call is not allowed in the handle's current state (already started,
   * not started, called from inside a callback where it would block,
   * devrig_hold_logs outside the handle's log callback, or a handle used
   * in a forked child).
   */
  DEVRIG_E_STATE = 3,
  /**
   * A file-system or system-call failure.
   */
  DEVRIG_E_IO = 4,
  /**
   * No such process, file or directory.
   */
  DEVRIG_E_NOT_FOUND = 5,
  /**
   * A bounded wait ran out.
   */
  DEVRIG_E_TIMEOUT = 6,
  /**
   * A bug in libdevrig: a Rust panic was caught at the boundary.
   */
  DEVRIG_E_PANIC = 7,
} devrig_status;

/**
 * Which pipe a line came from.
 */
typedef enum devrig_stream {
  DEVRIG_STDOUT = 1,
  DEVRIG_STDERR = 2,
} devrig_stream;

/**
 * The severity detected in a line.
 */
typedef enum devrig_level {
  DEVRIG_LEVEL_UNKNOWN = 0,
  DEVRIG_LEVEL_TRACE = 1,
  DEVRIG_LEVEL_DEBUG = 2,
  DEVRIG_LEVEL_INFO = 3,
  DEVRIG_LEVEL_WARN = 4,
  DEVRIG_LEVEL_ERROR = 5,
} devrig_level;

/**
 * Kinds of state change. Numbers are never reused.
 */
typedef enum devrig_event_kind {
  /**
   * A child was spawned (pid).
   */
  DEVRIG_EVENT_STARTED = 1,
  /**
   * The child is still alive startup_grace_ms after STARTED (at once when
   * startup_grace_ms is 0).
   */
  DEVRIG_EVENT_RUNNING = 2,
  /**
   * The child exited (exit_code, signal, runtime_ms); all its log lines
   * were delivered before this event.
   */
  DEVRIG_EVENT_EXITED = 3,
  /**
   * A restart will follow after delay_ms; restart_count is its number.
   */
  DEVRIG_EVENT_BACKOFF = 4,
  /**
   * A spawn failed (message).
   */
  DEVRIG_EVENT_SPAWN_FAILED = 5,
  /**
   * A stop was requested.
   */
  DEVRIG_EVENT_STOPPING = 6,
  /**
   * Terminal: the run ended (cancelled or completed).
   */
  DEVRIG_EVENT_STOPPED = 7,
  /**
   * Terminal: the supervisor gave up; the message says why ("startup",
   * "restart budget", "crash loop", the spawn error, or "run ended by a
   * panic: ...", a bug in libdevrig). Every run ends with exactly one
   * terminal event.
   */
  DEVRIG_EVENT_FAILED = 8,
  /**
   * Not terminal: something failed without stopping supervision, e.g.
   * the state record could not be written (message).
   */
  DEVRIG_EVENT_WARNING = 9,
} devrig_event_kind;

/**
 * How a run ended.
 */
typedef enum devrig_outcome_kind {
  /**
   * The run has not ended (or not started).
   */
  DEVRIG_OUTCOME_NONE = 0,
  /**
   * The service exited and the policy did not restart it.
   */
  DEVRIG_OUTCOME_COMPLETED = 1,
  /**
   * A stop request (devrig_cancel or devrig_free) ended the run.
   */
  DEVRIG_OUTCOME_CANCELLED = 2,
  /**
   * The supervisor gave up, or the first spawn failed.
   */
  DEVRIG_OUTCOME_FAILED = 3,
} devrig_outcome_kind;

/**
 * An opaque supervisor handle.
 */
typedef struct devrig_supervisor devrig_supervisor;

/**
 * The restart policy; see devrig_default_policy() for the defaults and
 * README.md for the decision rules.
 */
typedef struct devrig_restart_policy {
  /**
   * [DEVRIG_RESTART_ON_FAILURE]
   */
  enum devrig_restart_mode mode;
  /**
   * Restarts allowed before giving up; 0: never restart. [10]
   */
  uint32_t max_restarts;
  /**
   * Consecutive startup failures allowed before giving up. [3]
   */
  uint32_t startup_max_restarts;
  /**
   * A run shorter than this is a startup failure; RUNNING is reported
   * when a child lives this long. [2000]
   */
  uint64_t startup_grace_ms;
  /**
   * First backoff delay. [500]
   */
  uint64_t initial_delay_ms;
  /**
   * Backoff cap; must be >= initial_delay_ms. [30000]
   */
  uint64_t max_delay_ms;
  /**
   * A run at least this long resets both restart counters. [60000]
   * 0 forgives every run: max_restarts and startup_max_restarts then
   * never end the run (only crash_loop_limit or a cancel does).
   */
  uint64_t reset_after_ms;
  /**
   * Give up after this many restartable exits inside the window; 0: off. [5]
   */
  uint32_t crash_loop_limit;
  /**
   * [30000]
   */
  uint64_t crash_loop_window_ms;
} devrig_restart_policy;

/**
 * One log entry (a line, a multiline group, or a piece of an overlong
 * line). Lent to the callback: every pointer is valid only during the call.
 */
typedef struct devrig_log_line {
  /**
   * The service name (NUL-terminated).
   */
  const char *service;
  /**
   * The bytes as the child wrote them, without the newline; `len` bytes,
   * followed by a NUL byte (the text itself may contain NUL bytes).
   */
  const char *text;
  size_t len;
  enum devrig_stream stream;
  enum devrig_level level;
  /**
   * The pid of the service's child that wrote it.
   */
  uint32_t pid;
  /**
   * Wall-clock time the line was read, ms since the Unix epoch.
   */
  int64_t timestamp_ms;
} devrig_log_line;

/**
 * Called for every log line, in order within each stream, on a library
 * thread, never concurrently for one handle.
 *
 * The thread is one of libdevrig's few worker threads, shared by every
 * handle: while a callback runs, that worker serves no other service, so a
 * callback must not block for long (a few milliseconds at most). A
 * callback that cannot take more lines now (its consumer is full) applies
 * backpressure without blocking: it keeps the line, calls
 * devrig_hold_logs and returns; whoever drains its consumer calls
 * devrig_release_logs. The service's child then blocks on a full pipe,
 * and no worker waits.
 */
typedef void (*devrig_log_fn)(void *user_data, const struct devrig_log_line *line);

/**
 * Called with all lines of one read at once (`count` >= 1), same rules as
 * devrig_log_fn (do not block: hold the logs instead). Cheaper than one
 * call per line for bindings whose calls are expensive to cross (Go).
 */
typedef void (*devrig_log_batch_fn)(void *user_data,
                                    const struct devrig_log_line *lines,
                                    size_t count);

/**
 * One state change. Lent to the callback: valid only during the call.
 */
typedef struct devrig_event {
  enum devrig_event_kind kind;
  const char *service;
  /**
   * The child concerned, 0 when there is none.
   */
  uint32_t pid;
  /**
   * EXITED (and STOPPED/FAILED, for the last exit): exit code, or -1
   * when killed by a signal.
   */
  int32_t exit_code;
  /**
   * EXITED (and STOPPED/FAILED): terminating signal, 0 if none.
   */
  int32_t signal;
  /**
   * Restarts performed so far; BACKOFF: the number of the coming restart.
   */
  uint32_t restart_count;
  /**
   * BACKOFF: the delay before the restart.
   */
  uint64_t delay_ms;
  /**
   * EXITED: how long the child lived.
   */
  uint64_t runtime_ms;
  /**
   * Never NULL; "" when there is nothing to add.
   */
  const char *message;
  /**
   * Wall-clock ms since the Unix epoch.
   */
  int64_t timestamp_ms;
} devrig_event;

/**
 * Called for every event, on a library thread, never concurrently for one
 * handle and never under an internal lock.
 */
typedef void (*devrig_event_fn)(void *user_data, const struct devrig_event *event);

/**
 * The result of a run.
 */
typedef struct devrig_outcome {
  enum devrig_outcome_kind kind;
  /**
   * The last exit code, -1 after a signal, 0 when no child exited.
   */
  int32_t last_exit_code;
  int32_t last_signal;
  /**
   * Restarts performed.
   */
  uint32_t restarts;
  /**
   * Never NULL; owned by the handle, valid until devrig_free.
   */
  const char *message;
} devrig_outcome;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The message of this thread's last failed call, or "" if none failed.
 * Valid until the next failing libdevrig call on the same thread; never NULL.
 * Successful calls leave it unchanged.
 */
const char *devrig_last_error(void);

/**
 * The library version, e.g. "0.1.0" (static string). Equals
 * DEVRIG_VERSION_STRING of the header it was built with.
 */
const char *devrig_version(void);

/**
 * The default restart policy (values in brackets in devrig_restart_policy).
 */
struct devrig_restart_policy devrig_default_policy(void);

/**
 * Parses "on-failure", "always" or "never" into `*out` (written only on
 * success). Anything else, or NULL, is DEVRIG_E_INVALID_ARGUMENT.
 */
enum devrig_status devrig_restart_mode_parse(const char *s, enum devrig_restart_mode *out);

/**
 * Creates a handle for service `name` running `/bin/sh -c command`.
 *
 * `name` must be 1-128 characters of A-Z a-z 0-9 . _ - @ + not starting with
 * '.', so it is safe as a file name; `command` must not be empty. Returns
 * NULL (and sets devrig_last_error) on bad input. The handle must
 * eventually be passed to devrig_free.
 */
struct devrig_supervisor *devrig_new(const char *name, const char *command);

/**
 * Sets the working directory of the service. Not checked here: a missing
 * directory makes the spawn fail. Before the run only (else DEVRIG_E_STATE).
 */
enum devrig_status devrig_set_working_dir(struct devrig_supervisor *sup, const char *dir);

/**
 * Adds `key=value` to the service's environment (on top of the inherited
 * one; a second call with the same key replaces the value). The key must be
 * non-empty without '='. Before the run only. Sizes are not checked here,
 * but the kernel refuses an environment string ("key=value") over 128 KiB
 * or arguments plus environment over its ARG_MAX: the spawn then fails
 * with "Argument list too long" (DEVRIG_E_SPAWN from devrig_run/start).
 */
enum devrig_status devrig_set_env(struct devrig_supervisor *sup,
                                  const char *key,
                                  const char *value);

/**
 * Sets the restart policy (copied). A policy that makes no sense
 * (max_delay_ms < initial_delay_ms, a mode out of range) is refused with
 * DEVRIG_E_INVALID_ARGUMENT and the handle keeps its previous policy.
 * Before the run only.
 */
enum devrig_status devrig_set_policy(struct devrig_supervisor *sup,
                                     const struct devrig_restart_policy *policy);

/**
 * Sets the state directory where the service's record is kept; creates it
 * (DEVRIG_E_IO naming it if that fails). Before the run only.
 */
enum devrig_status devrig_set_state_dir(struct devrig_supervisor *sup, const char *dir);

/**
 * Time between SIGTERM and SIGKILL when stopping. [5000] Before the run only.
 */
enum devrig_status devrig_set_stop_grace_ms(struct devrig_supervisor *sup, uint64_t ms);

/**
 * Multiline grouping of indented lines. [on] Before the run only.
 */
enum devrig_status devrig_set_multiline(struct devrig_supervisor *sup, bool on);

/**
 * Upper bound of one delivered entry, 1 to 2^30. [65536] Before the run only.
 */
enum devrig_status devrig_set_max_line_bytes(struct devrig_supervisor *sup, size_t n);

/**
 * Sets (or, with NULL, clears) the log callback; replaces a batch callback
 * set with devrig_on_log_batch. `user_data` is passed back untouched and
 * must be usable from library threads. Before the run only.
 */
enum devrig_status devrig_on_log(struct devrig_supervisor *sup,
                                 devrig_log_fn callback,
                                 void *user_data);

/**
 * Sets (or, with NULL, clears) a callback that receives the lines of one
 * read at once; replaces a callback set with devrig_on_log. Same rules as
 * devrig_on_log.
 */
enum devrig_status devrig_on_log_batch(struct devrig_supervisor *sup,
                                       devrig_log_batch_fn callback,
                                       void *user_data);

/**
 * Sets (or, with NULL, clears) the event callback. `user_data` is passed
 * back untouched and must be usable from library threads. Before the run
 * only.
 */
enum devrig_status devrig_on_event(struct devrig_supervisor *sup,
                                   devrig_event_fn callback,
                                   void *user_data);

/**
 * Holds the logs of the handle's run: log backpressure that blocks no
 * thread. Call it from inside this handle's log callback (devrig_on_log or
 * devrig_on_log_batch) when the lines cannot be taken now; keep what you
 * were given (it is lent: copy it) and return. Once the callback returns,
 * the run stops reading the service's pipes and delivering lines (a
 * partial line waiting for its 250 ms flush included) until
 * devrig_release_logs: the child blocks on a full pipe. With devrig_on_log
 * no further line of the current read is delivered either; they follow the
 * release, in order.
 *
 * Everything else goes on while the logs are held: the child's exit is
 * noticed, a stop request sends SIGTERM and, after the stop grace,
 * SIGKILL, and the RUNNING timer fires. All lines a child wrote come
 * before its EXITED event, so after a child exits (or is stopped) the run
 * waits for the release before it reads the rest of its output and
 * reports EXITED; the run cannot end while its logs are held.
 * devrig_cancel does not release a hold; devrig_free does (and a free
 * from a callback, which detaches the callbacks, makes the hold moot).
 *
 * A second hold before the release is the same hold: one release ends it.
 * DEVRIG_E_STATE when not called from inside this handle's own log
 * callback (another thread, an event callback, another handle's log
 * callback), once devrig_free has begun, or in a forked child.
 */
enum devrig_status devrig_hold_logs(struct devrig_supervisor *sup);

/**
 * Releases the logs held with devrig_hold_logs: the run resumes reading
 * the service's output. Callable from any thread (not from a signal
 * handler), before, during or after the run, and also before the callback
 * that took the hold has returned (the hold then never takes effect). When
 * the logs are not held it does nothing and returns DEVRIG_OK; in a forked
 * child, where the handle is inert, it returns DEVRIG_E_STATE. It must not
 * be called once devrig_free has been called on the handle (which
 * releases the hold itself).
 */
enum devrig_status devrig_release_logs(struct devrig_supervisor *sup);

/**
 * Supervises the service until the run ends; blocks the calling thread.
 * DEVRIG_OK when the run ended (see devrig_outcome_get for how),
 * DEVRIG_E_SPAWN if the very first spawn failed, DEVRIG_E_STATE if the
 * handle was already started or if called from a libdevrig callback.
 */
enum devrig_status devrig_run(struct devrig_supervisor *sup);

/**
 * Starts the run in the background and returns once the first spawn has
 * been attempted: DEVRIG_E_SPAWN if it failed (the run has then ended).
 * A second devrig_run/devrig_start is DEVRIG_E_STATE. It may be called
 * from a libdevrig callback too; a failed first spawn then ends the run on
 * that thread, so its SPAWN_FAILED and FAILED callbacks run (nested) before
 * the return, as the run's end does.
 */
enum devrig_status devrig_start(struct devrig_supervisor *sup);

/**
 * Waits for a started run to end: `timeout_ms` -1 waits forever, 0 polls.
 * Returns the run's status (DEVRIG_OK or DEVRIG_E_SPAWN), DEVRIG_E_TIMEOUT,
 * or DEVRIG_E_STATE if the handle was never started or the call comes from
 * a libdevrig callback. Any number of threads may wait at once.
 */
enum devrig_status devrig_wait(struct devrig_supervisor *sup, int64_t timeout_ms);

/**
 * Requests a stop: SIGTERM to the service's process group and escaped
 * descendants, SIGKILL after the stop grace, then the run ends (outcome
 * CANCELLED). During backoff the run ends at once; before the run, the run
 * ends as soon as it starts, without spawning.
 *
 * Thread-safe, idempotent, callable before, during or after the run and
 * from inside a callback, and async-signal-safe (for a valid handle in the
 * process that created it; a handle copied into a forked child returns
 * DEVRIG_E_STATE and does nothing).
 */
enum devrig_status devrig_cancel(struct devrig_supervisor *sup);

/**
 * Frees a handle. A running handle is stopped first (as devrig_cancel) and
 * this call waits for the run to end, with every child reaped. From inside
 * a callback (any libdevrig thread) it does not wait: it stops the run,
 * no further callback of this handle is called, and the run ends in the
 * background. Held logs are released (nobody could release them later)
 * and cannot be held again: the log callbacks made while this call waits
 * get DEVRIG_E_STATE from devrig_hold_logs. In a forked child it only
 * releases memory. NULL is ignored. The handle must not be used after
 * this call.
 */
void devrig_free(struct devrig_supervisor *sup);

/**
 * Fills `*out` with the outcome: kind DEVRIG_OUTCOME_NONE until the run has
 * ended, which it has when its terminal event (STOPPED or FAILED) is
 * emitted: that event's callback, and any thread it wakes, already finds
 * the outcome. `out->message` is owned by the handle and valid until
 * devrig_free.
 */
enum devrig_status devrig_outcome_get(const struct devrig_supervisor *sup,
                                      struct devrig_outcome *out);

/**
 * Terminates `pid` and all its descendants: collects the tree first, sends
 * SIGTERM to each, waits up to `grace_ms`, SIGKILLs the survivors, and
 * returns as soon as all are gone. A process that no longer exists is not
 * an error. `pid` 0 or above INT32_MAX is DEVRIG_E_INVALID_ARGUMENT (it
 * would signal a process group). Blocks; safe from any thread.
 */
enum devrig_status devrig_kill_tree(uint32_t pid, uint64_t grace_ms);

/**
 * Writes the creation time of `pid` (ms since the Unix epoch) to `*out`;
 * DEVRIG_E_NOT_FOUND if there is no such process. The time is derived from
 * /proc/PID/stat and the boot time, which is read once per process. Like
 * ps, psutil and gopsutil (which devrig used), it takes the boot time in
 * whole seconds from /proc/stat, so it matches what they report and can be
 * up to a second before the true creation time; it is stable, which is
 * what devrig_same_process needs.
 */
enum devrig_status devrig_proc_start_time_ms(uint32_t pid, int64_t *out);

/**
 * True if `pid` is alive (not a zombie) and started at `want_start_ms`;
 * `want_start_ms` 0 means unknown: liveness alone decides. Invalid pids are
 * false.
 */
bool devrig_same_process(uint32_t pid, int64_t want_start_ms);

/**
 * Writes `state_dir/devrig.pid` into `buf` like snprintf: at most `cap`
 * bytes including the NUL, and returns the full length (without NUL), so a
 * return value >= cap means truncation. `buf` may be NULL when `cap` is 0.
 * Returns 0 (and sets devrig_last_error) on bad input. As in every
 * state-directory function, an empty `state_dir` is bad input (it would
 * mean the current directory).
 */
size_t devrig_pid_file_path(const char *state_dir, char *buf, size_t cap);

/**
 * Creates `state_dir` if needed and writes the calling process's pid to
 * `state_dir/devrig.pid` (atomically): the decimal pid without a newline,
 * as devrig wrote it. DEVRIG_E_IO if the directory cannot be created.
 */
enum devrig_status devrig_write_pid_file(const char *state_dir);

/**
 * Removes `state_dir/devrig.pid`; succeeds if it is absent.
 */
enum devrig_status devrig_remove_pid_file(const char *state_dir);

/**
 * After a crash of a previous host: for every service recorded in
 * `state_dir` whose process is still the same process (pid and start time
 * in clock ticks, same boot), kills its whole tree (as devrig_kill_tree)
 * and every process carrying its spawn tag, and removes the record.
 * Writes the number of services reaped to `*reaped` (which may be NULL).
 * A recorded pid now used by another process is never touched. Call it
 * before starting supervisors on that directory. A missing `state_dir`
 * (or a path that is not a directory) is DEVRIG_E_NOT_FOUND.
 */
enum devrig_status devrig_reap_orphans(const char *state_dir, uint64_t grace_ms, uint32_t *reaped);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* DEVRIG_H */
