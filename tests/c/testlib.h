/*
 * testlib.h: the small harness shared by the C tests of libdevrig.
 *
 * - CHECK and ASSERT macros print file:line and the failed expression; CHECK
 *   records the failure and goes on, ASSERT also leaves the current test.
 * - A recorder (mutex + condvar) copies every event and log line it is
 *   given, so tests await events with a timeout instead of sleeping.
 * - /proc helpers tell whether a pid or a process group still has live
 *   members.
 *
 * Each program lists its tests with RUN(fn); main() ends with
 * `return test_summary();`, which prints "PASS name"/"FAIL name" lines and a
 * "RESULT passed=N failed=M" line that the Makefile adds up.
 */
#ifndef DEVRIG_TESTLIB_H
#define DEVRIG_TESTLIB_H

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "devrig.h"

/* ---- assertions --------------------------------------------------------- */

static int t_failures_in_test;
static int t_passed, t_failed;
static const char *t_current = "";

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__,    \
              t_current, #cond);                                              \
      t_failures_in_test++;                                                   \
    }                                                                         \
  } while (0)

#define CHECKF(cond, ...)                                                     \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: %s: check failed: %s: ", __FILE__, __LINE__,    \
              t_current, #cond);                                              \
      fprintf(stderr, __VA_ARGS__);                                           \
      fputc('\n', stderr);                                                    \
      t_failures_in_test++;                                                   \
    }                                                                         \
  } while (0)

#define CHECK_EQ(a, b)                                                        \
  do {                                                                        \
    long long t_a_ = (long long)(a), t_b_ = (long long)(b);                   \
    if (t_a_ != t_b_) {                                                       \
      fprintf(stderr, "%s:%d: %s: check failed: %s == %s (%lld != %lld)\n",   \
              __FILE__, __LINE__, t_current, #a, #b, t_a_, t_b_);             \
      t_failures_in_test++;                                                   \
    }                                                                         \
  } while (0)

/* Status check that also shows devrig_last_error(). */
#define CHECK_ST(call, want)                                                  \
  do {                                                                        \
    devrig_status t_s_ = (call);                                              \
    if (t_s_ != (want)) {                                                     \
      fprintf(stderr, "%s:%d: %s: %s returned %d, want %d (last_error: %s)\n", \
              __FILE__, __LINE__, t_current, #call, (int)t_s_, (int)(want),   \
              devrig_last_error());                                           \
      t_failures_in_test++;                                                   \
    }                                                                         \
  } while (0)

/* The call fails with `want` and devrig_last_error() contains `needle`. */
#define CHECK_ERR(call, want, needle)                                         \
  do {                                                                        \
    devrig_status t_s_ = (call);                                              \
    const char *t_e_ = devrig_last_error();                                   \
    if (t_s_ != (want) || t_e_ == NULL || strstr(t_e_, (needle)) == NULL) {   \
      fprintf(stderr,                                                         \
              "%s:%d: %s: %s returned %d (want %d), last_error \"%s\" "       \
              "(want it to contain \"%s\")\n",                                \
              __FILE__, __LINE__, t_current, #call, (int)t_s_, (int)(want),   \
              t_e_ ? t_e_ : "(null)", (needle));                              \
      t_failures_in_test++;                                                   \
    }                                                                         \
  } while (0)

#define ASSERT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: %s: assertion failed: %s\n", __FILE__,          \
              __LINE__, t_current, #cond);                                    \
      t_failures_in_test++;                                                   \
      return;                                                                 \
    }                                                                         \
  } while (0)

/* True if `name` is listed in $DEVRIG_TEST_SKIP (space-separated). */
static inline bool test_skipped(const char *name) {
  const char *skip = getenv("DEVRIG_TEST_SKIP");
  size_t n = strlen(name);
  for (const char *p = skip; p && (p = strstr(p, name)) != NULL; p += n)
    if ((p == skip || p[-1] == ' ') && (p[n] == 0 || p[n] == ' ')) return true;
  return false;
}

#define RUN(fn)                                                               \
  do {                                                                        \
    if (test_skipped(#fn)) {                                                  \
      printf("SKIP %s\n", #fn);                                              \
      break;                                                                  \
    }                                                                         \
    t_current = #fn;                                                          \
    t_failures_in_test = 0;                                                   \
    int64_t t_start_ = mono_ms();                                             \
    fn();                                                                     \
    int64_t t_took_ = mono_ms() - t_start_;                                   \
    if (t_failures_in_test == 0) {                                            \
      t_passed++;                                                             \
      printf("PASS %s (%lld ms)\n", #fn, (long long)t_took_);                 \
    } else {                                                                  \
      t_failed++;                                                             \
      printf("FAIL %s (%lld ms)\n", #fn, (long long)t_took_);                 \
    }                                                                         \
    fflush(stdout);                                                           \
  } while (0)

static inline int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Timing bounds are multiplied by this under valgrind (which sets
 * DEVRIG_TEST_VALGRIND=1 through the Makefile). */
static inline int64_t slow(int64_t ms) {
  static int factor = 0;
  if (!factor) factor = getenv("DEVRIG_TEST_VALGRIND") ? 10 : 1;
  return ms * factor;
}

static inline int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(int64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}

static inline int test_summary(void) {
  printf("RESULT passed=%d failed=%d\n", t_passed, t_failed);
  fflush(stdout);
  return t_failed ? 1 : 0;
}

/* A policy that restarts quickly, for tests. */
static inline devrig_restart_policy fast_policy(devrig_restart_mode mode) {
  devrig_restart_policy p = devrig_default_policy();
  p.mode = mode;
  p.startup_grace_ms = 0;
  p.initial_delay_ms = 10;
  p.max_delay_ms = 40;
  p.crash_loop_limit = 0;
  return p;
}

/* ---- the recorder ------------------------------------------------------- */

typedef struct {
  devrig_event_kind kind;
  uint32_t pid;
  int32_t exit_code, signal;
  uint32_t restart_count;
  uint64_t delay_ms, runtime_ms;
  char *message;
  int64_t timestamp_ms;
  int64_t mono_ms; /* when the callback ran */
  char service[64];
} rec_event;

typedef struct {
  char *text;
  size_t len;
  devrig_stream stream;
  devrig_level level;
  uint32_t pid;
  int64_t timestamp_ms;
  size_t events_before; /* events recorded when this line arrived */
  char service[64];
} rec_line;

typedef struct recorder {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  rec_event *ev;
  size_t nev, cap_ev;
  rec_line *ln;
  size_t nln, cap_ln;
  int after_terminal; /* events that arrived after a terminal one */
  int terminals;
  int concurrent;     /* callbacks seen running at once (must stay 0) */
  int in_callback;
  bool keep_lines;
  /* Optional hook run (outside the recorder's lock) for each event. */
  void (*on_event_hook)(struct recorder *, const devrig_event *);
  void *hook_data;
} recorder;

static inline void rec_init(recorder *r) {
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  r->keep_lines = true;
}

static inline void rec_destroy(recorder *r) {
  for (size_t i = 0; i < r->nev; i++) free(r->ev[i].message);
  for (size_t i = 0; i < r->nln; i++) free(r->ln[i].text);
  free(r->ev);
  free(r->ln);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
}

static inline bool is_terminal(devrig_event_kind k) {
  return k == DEVRIG_EVENT_STOPPED || k == DEVRIG_EVENT_FAILED;
}

static inline void rec_event_cb(void *ud, const devrig_event *e) {
  recorder *r = (recorder *)ud;
  if (r->on_event_hook) r->on_event_hook(r, e);
  pthread_mutex_lock(&r->mu);
  if (r->in_callback) r->concurrent++;
  if (r->nev == r->cap_ev) {
    r->cap_ev = r->cap_ev ? r->cap_ev * 2 : 32;
    r->ev = (rec_event *)realloc(r->ev, r->cap_ev * sizeof *r->ev);
  }
  rec_event *d = &r->ev[r->nev++];
  memset(d, 0, sizeof *d);
  d->kind = e->kind;
  d->pid = e->pid;
  d->exit_code = e->exit_code;
  d->signal = e->signal;
  d->restart_count = e->restart_count;
  d->delay_ms = e->delay_ms;
  d->runtime_ms = e->runtime_ms;
  d->message = strdup(e->message ? e->message : "(NULL message)");
  d->timestamp_ms = e->timestamp_ms;
  d->mono_ms = mono_ms();
  snprintf(d->service, sizeof d->service, "%s", e->service ? e->service : "(NULL)");
  if (r->terminals > 0) r->after_terminal++;
  if (is_terminal(e->kind)) r->terminals++;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

static inline void rec_log_cb(void *ud, const devrig_log_line *l) {
  recorder *r = (recorder *)ud;
  pthread_mutex_lock(&r->mu);
  if (r->keep_lines) {
    if (r->nln == r->cap_ln) {
      r->cap_ln = r->cap_ln ? r->cap_ln * 2 : 64;
      r->ln = (rec_line *)realloc(r->ln, r->cap_ln * sizeof *r->ln);
    }
    rec_line *d = &r->ln[r->nln++];
    memset(d, 0, sizeof *d);
    d->text = (char *)malloc(l->len + 1);
    memcpy(d->text, l->text, l->len);
    d->text[l->len] = 0;
    d->len = l->len;
    d->stream = l->stream;
    d->level = l->level;
    d->pid = l->pid;
    d->timestamp_ms = l->timestamp_ms;
    d->events_before = r->nev;
    snprintf(d->service, sizeof d->service, "%s", l->service ? l->service : "(NULL)");
  }
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

/* Installs both callbacks on `s`. */
static inline void rec_attach(recorder *r, devrig_supervisor *s) {
  devrig_on_event(s, rec_event_cb, r);
  devrig_on_log(s, rec_log_cb, r);
}

/* Index of the n-th (0-based) event of `kind` once it has arrived, or -1
 * after timeout_ms. */

/* pthread_cond_timedwait for at most `left_ms` milliseconds. */
static inline void cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t left_ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t ns = ts.tv_nsec + (left_ms % 1000) * 1000000;
  ts.tv_sec += left_ms / 1000 + ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  pthread_cond_timedwait(cv, mu, &ts);
}

/* Index of the nth event of `kind` (kind 0: the nth terminal event), or -1.
 * Called with r->mu held. */
static inline int rec_find_locked(recorder *r, int kind, int nth) {
  int seen = 0;
  for (size_t i = 0; i < r->nev; i++) {
    int match = kind ? (int)r->ev[i].kind == kind : is_terminal(r->ev[i].kind);
    if (match && seen++ == nth) return (int)i;
  }
  return -1;
}

/* Waits for an event that rec_find_locked finds; returns its index or -1. */
static inline int rec_wait_event(recorder *r, int kind, int nth, int64_t timeout_ms) {
  int64_t deadline = mono_ms() + timeout_ms;
  pthread_mutex_lock(&r->mu);
  int found = rec_find_locked(r, kind, nth);
  while (found < 0) {
    int64_t left = deadline - mono_ms();
    if (left <= 0) break;
    cond_wait_ms(&r->cv, &r->mu, left);
    found = rec_find_locked(r, kind, nth);
  }
  pthread_mutex_unlock(&r->mu);
  return found;
}

static inline int rec_wait_kind(recorder *r, devrig_event_kind kind, int nth,
                                int64_t timeout_ms) {
  return rec_wait_event(r, (int)kind, nth, timeout_ms);
}

/* Waits for the terminal event; returns its index or -1. */
static inline int rec_wait_terminal(recorder *r, int64_t timeout_ms) {
  return rec_wait_event(r, 0, 0, timeout_ms);
}

/* Waits until a line containing `needle` arrived; returns its index or -1. */
static inline int rec_wait_line(recorder *r, const char *needle, int64_t timeout_ms) {
  int64_t deadline = mono_ms() + timeout_ms;
  int found = -1;
  pthread_mutex_lock(&r->mu);
  for (;;) {
    for (size_t i = 0; i < r->nln; i++)
      if (strstr(r->ln[i].text, needle)) {
        found = (int)i;
        break;
      }
    if (found >= 0) break;
    int64_t left = deadline - mono_ms();
    if (left <= 0) break;
    cond_wait_ms(&r->cv, &r->mu, left);
  }
  pthread_mutex_unlock(&r->mu);
  return found;
}

static inline const char *kind_name(devrig_event_kind k) {
  switch (k) {
    case DEVRIG_EVENT_STARTED: return "STARTED";
    case DEVRIG_EVENT_RUNNING: return "RUNNING";
    case DEVRIG_EVENT_EXITED: return "EXITED";
    case DEVRIG_EVENT_BACKOFF: return "BACKOFF";
    case DEVRIG_EVENT_SPAWN_FAILED: return "SPAWN_FAILED";
    case DEVRIG_EVENT_STOPPING: return "STOPPING";
    case DEVRIG_EVENT_STOPPED: return "STOPPED";
    case DEVRIG_EVENT_FAILED: return "FAILED";
    case DEVRIG_EVENT_WARNING: return "WARNING";
  }
  return "?";
}

/* The recorded kinds as "STARTED RUNNING EXITED ..." (WARNING excluded). */
static inline void rec_kinds(recorder *r, char *buf, size_t cap) {
  pthread_mutex_lock(&r->mu);
  buf[0] = 0;
  size_t off = 0;
  for (size_t i = 0; i < r->nev && off < cap; i++) {
    if (r->ev[i].kind == DEVRIG_EVENT_WARNING) continue;
    off += (size_t)snprintf(buf + off, cap - off, "%s%s", off ? " " : "",
                            kind_name(r->ev[i].kind));
  }
  pthread_mutex_unlock(&r->mu);
}

#define CHECK_KINDS(r, want)                                                  \
  do {                                                                        \
    char t_k_[4096];                                                          \
    rec_kinds((r), t_k_, sizeof t_k_);                                        \
    if (strcmp(t_k_, (want)) != 0) {                                          \
      fprintf(stderr, "%s:%d: %s: events\n   got: %s\n  want: %s\n",          \
              __FILE__, __LINE__, t_current, t_k_, (want));                   \
      t_failures_in_test++;                                                   \
    }                                                                         \
  } while (0)

/* Exactly one terminal event, and it is the last one. */
#define CHECK_ONE_TERMINAL(r)                                                 \
  do {                                                                        \
    pthread_mutex_lock(&(r)->mu);                                             \
    int t_nt_ = (r)->terminals, t_na_ = (r)->after_terminal;                    \
    pthread_mutex_unlock(&(r)->mu);                                           \
    CHECK_EQ(t_nt_, 1);                                                       \
    CHECK_EQ(t_na_, 0);                                                       \
  } while (0)

/* Pids of all STARTED events (up to cap). */
static inline size_t rec_started_pids(recorder *r, uint32_t *out, size_t cap) {
  size_t n = 0;
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < r->nev && n < cap; i++)
    if (r->ev[i].kind == DEVRIG_EVENT_STARTED) out[n++] = r->ev[i].pid;
  pthread_mutex_unlock(&r->mu);
  return n;
}

/* ---- /proc helpers ------------------------------------------------------ */

typedef struct {
  char state;
  int ppid, pgrp, sid;
  unsigned long long start_ticks;
} proc_stat;

/* Reads /proc/PID/stat; false if the process does not exist. */
static inline bool read_proc_stat(int pid, proc_stat *out) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return false;
  p += 2; /* state */
  out->state = *p;
  /* fields after state: ppid pgrp session tty_nr tpgid flags minflt cminflt
   * majflt cmajflt utime stime cutime cstime priority nice num_threads
   * itrealvalue starttime */
  unsigned long long f[19];
  int got = sscanf(p + 2,
                   "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu "
                   "%llu %llu %llu %llu %llu %llu %llu",
                   &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &f[8],
                   &f[9], &f[10], &f[11], &f[12], &f[13], &f[14], &f[15], &f[16],
                   &f[17], &f[18]);
  if (got < 19) {
    /* nice/priority may be negative: fall back to a tolerant parse */
    long long g[19];
    got = sscanf(p + 2,
                 "%lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld "
                 "%lld %lld %lld %lld %lld %lld %lld",
                 &g[0], &g[1], &g[2], &g[3], &g[4], &g[5], &g[6], &g[7], &g[8],
                 &g[9], &g[10], &g[11], &g[12], &g[13], &g[14], &g[15], &g[16],
                 &g[17], &g[18]);
    if (got < 19) return false;
    for (int i = 0; i < 19; i++) f[i] = (unsigned long long)g[i];
  }
  out->ppid = (int)f[0];
  out->pgrp = (int)f[1];
  out->sid = (int)f[2];
  out->start_ticks = f[18];
  return true;
}

/* Alive: exists and is not a zombie (or dead). */
static inline bool pid_alive(int pid) {
  proc_stat st;
  if (pid <= 0 || !read_proc_stat(pid, &st)) return false;
  return st.state != 'Z' && st.state != 'X' && st.state != 'x';
}

/* Number of live (non-zombie) processes whose process group is `pgid`. */
static inline int pgrp_live_members(int pgid) {
  DIR *d = opendir("/proc");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    proc_stat st;
    if (read_proc_stat((int)pid, &st) && st.pgrp == pgid && st.state != 'Z' &&
        st.state != 'X')
      n++;
  }
  closedir(d);
  return n;
}

/* Waits up to timeout_ms for `pid` to be gone (or a zombie). */
static inline bool wait_pid_gone(int pid, int64_t timeout_ms) {
  int64_t deadline = mono_ms() + timeout_ms;
  while (pid_alive(pid)) {
    if (mono_ms() > deadline) return false;
    sleep_ms(10);
  }
  return true;
}

/* Checks that no STARTED pid of `r` and no member of their process groups
 * is alive. */
#define CHECK_NO_SURVIVORS(r)                                                 \
  do {                                                                        \
    uint32_t t_p_[256];                                                       \
    size_t t_n_ = rec_started_pids((r), t_p_, 256);                           \
    for (size_t t_i_ = 0; t_i_ < t_n_; t_i_++) {                              \
      CHECKF(!pid_alive((int)t_p_[t_i_]), "pid %u still alive", t_p_[t_i_]);  \
      int t_m_ = pgrp_live_members((int)t_p_[t_i_]);                          \
      CHECKF(t_m_ == 0, "process group %u has %d live members", t_p_[t_i_],   \
             t_m_);                                                           \
    }                                                                         \
  } while (0)

/* Threads of this process, from /proc/self/status. */
static inline int self_threads(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  int n = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "Threads: %d", &n) == 1) break;
  fclose(f);
  return n;
}

/* Reads a whole small file into a malloc'ed, NUL-terminated buffer. */
static inline char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = (char *)malloc(cap);
  size_t got;
  while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (cap - n - 1 == 0) {
      cap *= 2;
      buf = (char *)realloc(buf, cap);
    }
  }
  buf[n] = 0;
  fclose(f);
  return buf;
}

/* A fresh temporary directory (mkdtemp); the caller frees the string. */
static inline char *temp_dir(const char *prefix) {
  char *p = (char *)malloc(256);
  const char *base = getenv("TMPDIR");
  snprintf(p, 256, "%s/%s.XXXXXX", base && *base ? base : "/tmp", prefix);
  if (!mkdtemp(p)) {
    perror("mkdtemp");
    exit(2);
  }
  return p;
}

static inline void rm_rf(const char *path) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  if (system(cmd) != 0) fprintf(stderr, "rm -rf %s failed\n", path);
}

/* A supervisor with a recorder attached (the event tests' fixture). The
 * policy is set as given and the stop grace is 2 s. */
typedef struct {
  recorder rec;
  devrig_supervisor *sup;
} fixture;

static inline devrig_supervisor *fixture_make(fixture *f, const char *name, const char *cmd,
                                              devrig_restart_policy p) {
  rec_init(&f->rec);
  f->sup = devrig_new(name, cmd);
  if (!f->sup) {
    fprintf(stderr, "devrig_new(%s): %s\n", name, devrig_last_error());
    return NULL;
  }
  if (devrig_set_policy(f->sup, &p) != DEVRIG_OK)
    fprintf(stderr, "devrig_set_policy(%s): %s\n", name, devrig_last_error());
  devrig_set_stop_grace_ms(f->sup, 2000);
  rec_attach(&f->rec, f->sup);
  return f->sup;
}

static inline void fixture_done(fixture *f) {
  devrig_free(f->sup);
  rec_destroy(&f->rec);
}

static inline devrig_outcome outcome_of(devrig_supervisor *s) {
  devrig_outcome o;
  memset(&o, 0, sizeof o);
  CHECK_ST(devrig_outcome_get(s, &o), DEVRIG_OK);
  return o;
}

#endif /* DEVRIG_TESTLIB_H */
