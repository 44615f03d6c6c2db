/* test_misuse.c: misuse through the C ABI (issue 6), each with a defined,
 * documented result and no crash: repeated and concurrent cancel, concurrent
 * run, start then run, free from another thread while started, every API
 * function from inside a callback, NULL callbacks, bad names, a huge
 * environment, extreme and invalid policies, bad wait timeouts and line
 * limits. */
#include "testlib.h"

#define LONG_WAIT 20000

static int count_kind(recorder *r, devrig_event_kind k) {
  int n = 0;
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < r->nev; i++)
    if (r->ev[i].kind == k) n++;
  pthread_mutex_unlock(&r->mu);
  return n;
}

/* ---- cancel, repeated and concurrent ------------------------------------ */

static void test_cancel_twice(void) {
  fixture f;
  ASSERT(fixture_make(&f, "cancel2", "sleep 60", fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  ASSERT(rec_wait_kind(&f.rec, DEVRIG_EVENT_RUNNING, 0, LONG_WAIT) >= 0);
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(f.sup, LONG_WAIT), DEVRIG_OK);
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK); /* after the run: still OK */
  CHECK_KINDS(&f.rec, "STARTED RUNNING STOPPING EXITED STOPPED");
  CHECK_ONE_TERMINAL(&f.rec);
  CHECK_EQ(outcome_of(f.sup).kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

#define CANCEL_THREADS 8
#define CANCELS_PER_THREAD 200

typedef struct {
  devrig_supervisor *sup;
  pthread_barrier_t *barrier;
  int not_ok;
} cancel_arg;

static void *cancel_thread(void *p) {
  cancel_arg *a = (cancel_arg *)p;
  pthread_barrier_wait(a->barrier);
  for (int i = 0; i < CANCELS_PER_THREAD; i++)
    if (devrig_cancel(a->sup) != DEVRIG_OK) a->not_ok++;
  return NULL;
}

static void test_cancel_many_threads(void) {
  fixture f;
  ASSERT(fixture_make(&f, "cancelN", "sleep 60", fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  ASSERT(rec_wait_kind(&f.rec, DEVRIG_EVENT_RUNNING, 0, LONG_WAIT) >= 0);
  pthread_barrier_t b;
  pthread_barrier_init(&b, NULL, CANCEL_THREADS);
  pthread_t th[CANCEL_THREADS];
  cancel_arg args[CANCEL_THREADS];
  for (int i = 0; i < CANCEL_THREADS; i++) {
    args[i] = (cancel_arg){f.sup, &b, 0};
    pthread_create(&th[i], NULL, cancel_thread, &args[i]);
  }
  for (int i = 0; i < CANCEL_THREADS; i++) {
    pthread_join(th[i], NULL);
    CHECK_EQ(args[i].not_ok, 0);
  }
  pthread_barrier_destroy(&b);
  CHECK_ST(devrig_wait(f.sup, LONG_WAIT), DEVRIG_OK);
  CHECK_KINDS(&f.rec, "STARTED RUNNING STOPPING EXITED STOPPED");
  CHECK_EQ(count_kind(&f.rec, DEVRIG_EVENT_STOPPING), 1);
  CHECK_ONE_TERMINAL(&f.rec);
  CHECK_EQ(outcome_of(f.sup).kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

/* ---- run twice at once; start then run ---------------------------------- */

typedef struct {
  devrig_supervisor *sup;
  pthread_mutex_t *mu;
  pthread_cond_t *cv;
  int *finished;
  devrig_status st;
  bool done;
} run_arg;

static void *run_thread(void *p) {
  run_arg *a = (run_arg *)p;
  devrig_status st = devrig_run(a->sup);
  pthread_mutex_lock(a->mu);
  a->st = st;
  a->done = true;
  (*a->finished)++;
  pthread_cond_broadcast(a->cv);
  pthread_mutex_unlock(a->mu);
  return NULL;
}

static void test_run_twice_concurrently(void) {
  fixture f;
  ASSERT(fixture_make(&f, "run2", "sleep 60", fast_policy(DEVRIG_RESTART_ALWAYS)));
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
  int finished = 0;
  run_arg a[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    a[i] = (run_arg){f.sup, &mu, &cv, &finished, DEVRIG_OK, false};
    pthread_create(&th[i], NULL, run_thread, &a[i]);
  }
  /* One of them returns at once, with DEVRIG_E_STATE, while the other runs. */
  int64_t deadline = mono_ms() + LONG_WAIT;
  pthread_mutex_lock(&mu);
  while (finished == 0 && mono_ms() < deadline) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&cv, &mu, &ts);
  }
  int first = a[0].done ? 0 : a[1].done ? 1 : -1;
  int n_finished = finished;
  devrig_status first_st = first >= 0 ? a[first].st : DEVRIG_OK;
  pthread_mutex_unlock(&mu);
  CHECK_EQ(n_finished, 1);
  CHECK(first >= 0);
  CHECK_EQ(first_st, DEVRIG_E_STATE);
  CHECK(rec_wait_kind(&f.rec, DEVRIG_EVENT_RUNNING, 0, LONG_WAIT) >= 0);
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  if (first >= 0) CHECK_EQ(a[1 - first].st, DEVRIG_OK);
  CHECK_EQ(count_kind(&f.rec, DEVRIG_EVENT_STARTED), 1);
  CHECK_ONE_TERMINAL(&f.rec);
  CHECK_EQ(outcome_of(f.sup).kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

static void test_start_then_run(void) {
  fixture f;
  ASSERT(fixture_make(&f, "startrun", "sleep 60", fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  int64_t t0 = mono_ms();
  CHECK_ERR(devrig_run(f.sup), DEVRIG_E_STATE, "already been started");
  CHECK_ERR(devrig_start(f.sup), DEVRIG_E_STATE, "already been started");
  CHECK(mono_ms() - t0 < 5000);
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(f.sup, LONG_WAIT), DEVRIG_OK);
  CHECK_EQ(count_kind(&f.rec, DEVRIG_EVENT_STARTED), 1);
  CHECK_ONE_TERMINAL(&f.rec);
  CHECK_EQ(outcome_of(f.sup).kind, DEVRIG_OUTCOME_CANCELLED);
  /* and after the run ended, too */
  CHECK_ERR(devrig_run(f.sup), DEVRIG_E_STATE, "already been started");
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

/* ---- devrig_free from another thread while started ---------------------- */

static void *free_thread(void *p) {
  devrig_free((devrig_supervisor *)p);
  return NULL;
}

static void test_free_from_other_thread(void) {
  recorder rec;
  rec_init(&rec);
  /* The service has a child of its own that prints its pid. */
  devrig_supervisor *s = devrig_new("freeother", "sleep 60 & echo grandchild=$!; wait");
  ASSERT(s);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ALWAYS);
  CHECK_ST(devrig_set_policy(s, &p), DEVRIG_OK);
  CHECK_ST(devrig_set_stop_grace_ms(s, 2000), DEVRIG_OK);
  rec_attach(&rec, s);
  CHECK_ST(devrig_start(s), DEVRIG_OK);
  int li = rec_wait_line(&rec, "grandchild=", LONG_WAIT);
  int si = rec_wait_kind(&rec, DEVRIG_EVENT_STARTED, 0, LONG_WAIT);
  int gpid = 0;
  if (li >= 0) {
    pthread_mutex_lock(&rec.mu);
    gpid = atoi(strchr(rec.ln[li].text, '=') + 1);
    pthread_mutex_unlock(&rec.mu);
  }
  CHECK(gpid > 0 && si >= 0);
  CHECK(pid_alive(gpid));
  pthread_t th;
  int64_t t0 = mono_ms();
  pthread_create(&th, NULL, free_thread, s);
  pthread_join(th, NULL);
  int64_t took = mono_ms() - t0;
  CHECKF(took < 10000, "devrig_free took %lld ms", (long long)took);
  /* devrig_free waited for the run: the terminal event has arrived and no
   * child is left (not even a zombie of ours: the pids are gone). */
  CHECK(rec_wait_terminal(&rec, 0) >= 0);
  CHECK_ONE_TERMINAL(&rec);
  CHECK_EQ(count_kind(&rec, DEVRIG_EVENT_STOPPING), 1);
  CHECK_NO_SURVIVORS(&rec);
  CHECKF(!pid_alive(gpid), "grandchild %d still alive", gpid);
  if (si >= 0) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%u", rec.ev[si].pid);
    CHECKF(access(path, F_OK) != 0, "%s still exists (unreaped)", path);
  }
  rec_destroy(&rec);
}

/* ---- every API function from inside a callback -------------------------- */

typedef struct {
  devrig_supervisor *self;
  devrig_supervisor *other; /* started from inside the callback */
  const char *dir;
  pid_t victim; /* killed with devrig_kill_tree from the callback */
  bool fired;
  bool from_log; /* fired in the log callback (else the event callback) */
  /* results */
  devrig_status set_working_dir, set_env, set_policy, set_state_dir, set_grace,
      set_multiline, set_max_line, on_log, on_log_batch, on_event, run, start,
      wait, outcome, kill_tree, start_time, write_pid, remove_pid, other_start,
      cancel, cancel_again, hold_logs, release_logs;
  devrig_outcome_kind outcome_kind;
  int64_t start_ms;
  bool same_process, last_error_ok, version_ok, fresh_ok;
  size_t pid_path_len;
  char pid_path[512];
} cb_ctx;

static void noop_log(void *ud, const devrig_log_line *l) {
  (void)ud;
  (void)l;
}
static void noop_batch(void *ud, const devrig_log_line *l, size_t n) {
  (void)ud;
  (void)l;
  (void)n;
}
static void noop_event(void *ud, const devrig_event *e) {
  (void)ud;
  (void)e;
}

/* Calls every API function; runs on a libdevrig thread. */
static void call_everything(cb_ctx *c) {
  devrig_supervisor *s = c->self;
  devrig_restart_policy p = devrig_default_policy();
  c->set_working_dir = devrig_set_working_dir(s, "/");
  c->set_env = devrig_set_env(s, "K", "V");
  c->set_policy = devrig_set_policy(s, &p);
  c->set_state_dir = devrig_set_state_dir(s, c->dir);
  c->set_grace = devrig_set_stop_grace_ms(s, 100);
  c->set_multiline = devrig_set_multiline(s, false);
  c->set_max_line = devrig_set_max_line_bytes(s, 100);
  c->on_log = devrig_on_log(s, noop_log, NULL);
  c->on_log_batch = devrig_on_log_batch(s, noop_batch, NULL);
  c->on_event = devrig_on_event(s, noop_event, NULL);
  c->hold_logs = devrig_hold_logs(s);       /* only in the log callback */
  c->release_logs = devrig_release_logs(s); /* so the hold never bites */
  c->run = devrig_run(s);
  c->start = devrig_start(s);
  c->wait = devrig_wait(s, 0);
  devrig_outcome o;
  memset(&o, 0, sizeof o);
  o.kind = (devrig_outcome_kind)99;
  c->outcome = devrig_outcome_get(s, &o);
  c->outcome_kind = o.kind;
  c->kill_tree = devrig_kill_tree((uint32_t)c->victim, 2000);
  c->start_time = devrig_proc_start_time_ms((uint32_t)getpid(), &c->start_ms);
  c->same_process = devrig_same_process((uint32_t)getpid(), 0);
  c->pid_path_len = devrig_pid_file_path(c->dir, c->pid_path, sizeof c->pid_path);
  c->write_pid = devrig_write_pid_file(c->dir);
  c->remove_pid = devrig_remove_pid_file(c->dir);
  c->last_error_ok = devrig_last_error() != NULL;
  c->version_ok = devrig_version() != NULL &&
                  strcmp(devrig_version(), DEVRIG_VERSION_STRING) == 0;
  devrig_supervisor *fresh = devrig_new("fresh", "true");
  c->fresh_ok = fresh != NULL;
  devrig_free(fresh);
  c->other_start = devrig_start(c->other);
  c->cancel = devrig_cancel(s);
  c->cancel_again = devrig_cancel(s);
}

static void event_hook(recorder *r, const devrig_event *e) {
  cb_ctx *c = (cb_ctx *)r->hook_data;
  if (e->kind == DEVRIG_EVENT_RUNNING && !c->fired) {
    c->fired = true;
    call_everything(c);
  }
}

typedef struct {
  recorder *rec;
  cb_ctx *ctx;
} log_ud;

static void log_calling_everything(void *ud, const devrig_log_line *l) {
  log_ud *u = (log_ud *)ud;
  if (!u->ctx->fired && l->len >= 5 && memcmp(l->text, "hello", 5) == 0) {
    u->ctx->fired = true;
    u->ctx->from_log = true;
    call_everything(u->ctx);
  }
  rec_log_cb(u->rec, l);
}

static pid_t spawn_victim(void) {
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sleep", "sleep", "60", (char *)NULL);
    _exit(127);
  }
  return pid;
}

static void check_everything(cb_ctx *c, recorder *rec) {
  CHECK(c->fired);
  CHECK_EQ(c->set_working_dir, DEVRIG_E_STATE);
  CHECK_EQ(c->set_env, DEVRIG_E_STATE);
  CHECK_EQ(c->set_policy, DEVRIG_E_STATE);
  CHECK_EQ(c->set_state_dir, DEVRIG_E_STATE);
  CHECK_EQ(c->set_grace, DEVRIG_E_STATE);
  CHECK_EQ(c->set_multiline, DEVRIG_E_STATE);
  CHECK_EQ(c->set_max_line, DEVRIG_E_STATE);
  CHECK_EQ(c->on_log, DEVRIG_E_STATE);
  CHECK_EQ(c->on_log_batch, DEVRIG_E_STATE);
  CHECK_EQ(c->on_event, DEVRIG_E_STATE);
  CHECK_EQ(c->hold_logs, c->from_log ? DEVRIG_OK : DEVRIG_E_STATE);
  CHECK_EQ(c->release_logs, DEVRIG_OK);
  CHECK_EQ(c->run, DEVRIG_E_STATE);
  CHECK_EQ(c->start, DEVRIG_E_STATE);
  CHECK_EQ(c->wait, DEVRIG_E_STATE);
  CHECK_EQ(c->outcome, DEVRIG_OK);
  CHECK_EQ(c->outcome_kind, DEVRIG_OUTCOME_NONE);
  CHECK_EQ(c->kill_tree, DEVRIG_OK);
  CHECK_EQ(c->start_time, DEVRIG_OK);
  CHECK(c->start_ms > 0 && c->start_ms <= wall_ms());
  CHECK(c->same_process);
  CHECK(c->pid_path_len > 0 && c->pid_path_len < sizeof c->pid_path);
  CHECK(strstr(c->pid_path, "devrig.pid") != NULL);
  CHECK_EQ(c->write_pid, DEVRIG_OK);
  CHECK_EQ(c->remove_pid, DEVRIG_OK);
  CHECK(c->last_error_ok);
  CHECK(c->version_ok);
  CHECK(c->fresh_ok);
  CHECK_EQ(c->other_start, DEVRIG_OK);
  CHECK_EQ(c->cancel, DEVRIG_OK);
  CHECK_EQ(c->cancel_again, DEVRIG_OK);
  /* the victim was killed (it is our zombie now) */
  int status = 0;
  CHECK_EQ(waitpid(c->victim, &status, 0), c->victim);
  CHECK(WIFSIGNALED(status));
  /* cancel from the callback stopped the run */
  CHECK_EQ(count_kind(rec, DEVRIG_EVENT_STOPPING), 1);
  CHECK_ONE_TERMINAL(rec);
  CHECK_NO_SURVIVORS(rec);
}

/* The other supervisor, started from the callback, really runs; the main
 * thread cancels and frees it. */
static void check_other(recorder *orec, devrig_supervisor *other) {
  CHECK(rec_wait_kind(orec, DEVRIG_EVENT_RUNNING, 0, LONG_WAIT) >= 0);
  CHECK_ST(devrig_cancel(other), DEVRIG_OK);
  CHECK_ST(devrig_wait(other, LONG_WAIT), DEVRIG_OK);
  CHECK_EQ(outcome_of(other).kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_ONE_TERMINAL(orec);
  CHECK_NO_SURVIVORS(orec);
  devrig_free(other);
}

static void test_calls_from_event_callback(void) {
  char *dir = temp_dir("devrig-misuse");
  cb_ctx c;
  memset(&c, 0, sizeof c);
  c.dir = dir;
  recorder orec;
  rec_init(&orec);
  c.other = devrig_new("other", "sleep 60");
  devrig_restart_policy op = fast_policy(DEVRIG_RESTART_ALWAYS);
  devrig_set_policy(c.other, &op);
  devrig_set_stop_grace_ms(c.other, 2000);
  rec_attach(&orec, c.other);
  c.victim = spawn_victim();
  fixture f;
  ASSERT(fixture_make(&f, "evcalls", "sleep 60", fast_policy(DEVRIG_RESTART_ALWAYS)));
  c.self = f.sup;
  f.rec.on_event_hook = event_hook;
  f.rec.hook_data = &c;
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, "STARTED RUNNING STOPPING EXITED STOPPED");
  CHECK_EQ(outcome_of(f.sup).kind, DEVRIG_OUTCOME_CANCELLED);
  check_everything(&c, &f.rec);
  check_other(&orec, c.other);
  fixture_done(&f);
  rec_destroy(&orec);
  rm_rf(dir);
  free(dir);
}

static void test_calls_from_log_callback(void) {
  char *dir = temp_dir("devrig-misuse");
  cb_ctx c;
  memset(&c, 0, sizeof c);
  c.dir = dir;
  recorder orec;
  rec_init(&orec);
  c.other = devrig_new("other", "sleep 60");
  devrig_restart_policy op = fast_policy(DEVRIG_RESTART_ALWAYS);
  devrig_set_policy(c.other, &op);
  devrig_set_stop_grace_ms(c.other, 2000);
  rec_attach(&orec, c.other);
  c.victim = spawn_victim();
  fixture f;
  ASSERT(fixture_make(&f, "logcalls", "echo hello; exec sleep 60", fast_policy(DEVRIG_RESTART_ALWAYS)));
  c.self = f.sup;
  log_ud u = {&f.rec, &c};
  CHECK_ST(devrig_on_log(f.sup, log_calling_everything, &u), DEVRIG_OK);
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK(rec_wait_line(&f.rec, "hello", 0) >= 0);
  CHECK_EQ(outcome_of(f.sup).kind, DEVRIG_OUTCOME_CANCELLED);
  check_everything(&c, &f.rec);
  check_other(&orec, c.other);
  fixture_done(&f);
  rec_destroy(&orec);
  rm_rf(dir);
  free(dir);
}

/* ---- NULL callbacks ----------------------------------------------------- */

static void test_null_callbacks(void) {
  recorder rec;
  rec_init(&rec);
  devrig_supervisor *s = devrig_new("nullcb", "echo hi; echo err >&2");
  ASSERT(s);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_NEVER);
  CHECK_ST(devrig_set_policy(s, &p), DEVRIG_OK);
  rec_attach(&rec, s);
  CHECK_ST(devrig_on_log(s, NULL, NULL), DEVRIG_OK);
  CHECK_ST(devrig_on_log_batch(s, NULL, NULL), DEVRIG_OK);
  CHECK_ST(devrig_on_event(s, NULL, NULL), DEVRIG_OK);
  CHECK_ST(devrig_run(s), DEVRIG_OK);
  devrig_outcome o = outcome_of(s);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_COMPLETED);
  CHECK_EQ(o.last_exit_code, 0);
  /* the cleared callbacks were never called */
  CHECK_EQ(rec.nev, 0);
  CHECK_EQ(rec.nln, 0);
  devrig_free(s);
  rec_destroy(&rec);

  /* never any callback */
  s = devrig_new("nocb", "echo hi; exit 4");
  ASSERT(s);
  CHECK_ST(devrig_set_policy(s, &p), DEVRIG_OK);
  CHECK_ST(devrig_run(s), DEVRIG_OK);
  o = outcome_of(s);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_COMPLETED);
  CHECK_EQ(o.last_exit_code, 4);
  devrig_free(s);
}

/* ---- names -------------------------------------------------------------- */

/* devrig_new(name) fails and devrig_last_error contains `needle`. */
#define CHECK_BAD_NAME(name, needle)                                          \
  do {                                                                        \
    devrig_supervisor *t_s_ = devrig_new((name), "true");                     \
    const char *t_e_ = devrig_last_error();                                   \
    CHECKF(t_s_ == NULL && strstr(t_e_, (needle)) != NULL,                    \
           "name %s: handle %p, last_error \"%s\" (want \"%s\")", #name,      \
           (void *)t_s_, t_e_, (needle));                                     \
    devrig_free(t_s_);                                                        \
  } while (0)

static void test_bad_names(void) {
  char n129[130], n128[129], want[140];
  memset(n129, 'a', 129);
  n129[129] = 0;
  memset(n128, 'b', 128);
  n128[128] = 0;
  CHECK_BAD_NAME("", "\"\"");
  snprintf(want, sizeof want, "\"%s\"", n129);
  CHECK_BAD_NAME(n129, want);
  CHECK_BAD_NAME("a/b", "\"a/b\"");
  CHECK_BAD_NAME("../x", "\"../x\"");
  CHECK_BAD_NAME("/abs", "\"/abs\"");
  CHECK_BAD_NAME(".hidden", "\".hidden\"");
  CHECK_BAD_NAME("a b", "\"a b\"");
  CHECK_BAD_NAME("a\nb", "\"a\\nb\"");
  CHECK_BAD_NAME("tab\tx", "\"tab\\tx\"");
  devrig_supervisor *s = devrig_new(n128, "true");
  CHECKF(s != NULL, "128-char name refused: %s", devrig_last_error());
  devrig_free(s);
  s = devrig_new("A-z_0.9@x+y", "true");
  CHECKF(s != NULL, "name refused: %s", devrig_last_error());
  devrig_free(s);
}

/* ---- a huge environment ------------------------------------------------- */

#define NVARS 10000

/* 10,000 variables and one large value reach the service. */
static void test_huge_env(void) {
  fixture f;
  ASSERT(fixture_make(&f, "hugeenv",
              "echo biglen=${#BIGVAR}; echo v0=$MISUSE_V0; echo v4321=$MISUSE_V4321; "
              "echo v9999=$MISUSE_V9999; echo n=$(env | grep -c '^MISUSE_V')",
              fast_policy(DEVRIG_RESTART_NEVER)));
  char k[32], v[32];
  for (int i = 0; i < NVARS; i++) {
    snprintf(k, sizeof k, "MISUSE_V%d", i);
    snprintf(v, sizeof v, "value-%d", i);
    CHECK_ST(devrig_set_env(f.sup, k, v), DEVRIG_OK);
  }
  /* replaced, not added */
  CHECK_ST(devrig_set_env(f.sup, "MISUSE_V4321", "replaced"), DEVRIG_OK);
  /* the largest value Linux passes: "BIGVAR=" + value + NUL <= 128 KiB */
  size_t big = 128 * 1024 - sizeof "BIGVAR=";
  char *val = (char *)malloc(big + 1);
  memset(val, 'x', big);
  val[big] = 0;
  CHECK_ST(devrig_set_env(f.sup, "BIGVAR", val), DEVRIG_OK);
  free(val);
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  char want[64];
  snprintf(want, sizeof want, "biglen=%zu", big);
  CHECK(rec_wait_line(&f.rec, want, 0) >= 0);
  CHECK(rec_wait_line(&f.rec, "v0=value-0", 0) >= 0);
  CHECK(rec_wait_line(&f.rec, "v4321=replaced", 0) >= 0);
  CHECK(rec_wait_line(&f.rec, "v9999=value-9999", 0) >= 0);
  CHECK(rec_wait_line(&f.rec, "n=10000", 0) >= 0);
  CHECK_EQ(outcome_of(f.sup).kind, DEVRIG_OUTCOME_COMPLETED);
  fixture_done(&f);
}

/* One value of 1 MiB is accepted by devrig_set_env but exceeds the kernel's
 * limit for one environment string (MAX_ARG_STRLEN, 128 KiB): the spawn
 * fails with E2BIG, as devrig_set_env documents. */
static void test_env_value_over_kernel_limit(void) {
  fixture f;
  ASSERT(fixture_make(&f, "bigenv", "echo biglen=${#BIGVAR}", fast_policy(DEVRIG_RESTART_NEVER)));
  size_t big = 1 << 20;
  char *val = (char *)malloc(big + 1);
  memset(val, 'x', big);
  val[big] = 0;
  CHECK_ST(devrig_set_env(f.sup, "BIGVAR", val), DEVRIG_OK);
  free(val);
  CHECK_ERR(devrig_run(f.sup), DEVRIG_E_SPAWN, "Argument list too long");
  CHECK_KINDS(&f.rec, "SPAWN_FAILED FAILED");
  CHECK_ONE_TERMINAL(&f.rec);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_FAILED);
  CHECK(strstr(o.message, "Argument list too long") != NULL);
  fixture_done(&f);
}

/* ---- extreme and invalid policies --------------------------------------- */

static devrig_restart_policy zero_policy(void) {
  devrig_restart_policy p;
  memset(&p, 0, sizeof p);
  p.mode = DEVRIG_RESTART_ALWAYS;
  return p;
}

static void test_zero_policy(void) {
  fixture f;
  ASSERT(fixture_make(&f, "zeros", "exit 0", zero_policy()));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, "STARTED RUNNING EXITED FAILED");
  CHECK_ONE_TERMINAL(&f.rec);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_FAILED);
  CHECK_EQ(o.restarts, 0);
  CHECKF(strstr(o.message, "restart budget") != NULL, "message: %s", o.message);
  fixture_done(&f);

  /* zeros but a budget of 3 (and reset_after_ms set, see below): restarts
   * without delay, then gives up by the budget (the crash-loop guard is off) */
  devrig_restart_policy p = zero_policy();
  p.max_restarts = 3;
  p.reset_after_ms = 60000;
  ASSERT(fixture_make(&f, "zeros3", "exit 1", p));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec,
              "STARTED RUNNING EXITED BACKOFF STARTED RUNNING EXITED BACKOFF "
              "STARTED RUNNING EXITED BACKOFF STARTED RUNNING EXITED FAILED");
  CHECK_ONE_TERMINAL(&f.rec);
  for (int i = 0; i < 3; i++) {
    int b = rec_wait_kind(&f.rec, DEVRIG_EVENT_BACKOFF, i, 0);
    if (b >= 0) CHECK_EQ(f.rec.ev[b].delay_ms, 0);
  }
  o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_FAILED);
  CHECK_EQ(o.restarts, 3);
  CHECK_EQ(o.last_exit_code, 1);
  CHECKF(strstr(o.message, "restart budget") != NULL, "message: %s", o.message);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);

  /* reset_after_ms 0 forgives every run (as documented): the budget of 3
   * never ends the run; it restarts until cancelled. */
  p.reset_after_ms = 0;
  ASSERT(fixture_make(&f, "zeros3r", "exit 1", p));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  int b = rec_wait_kind(&f.rec, DEVRIG_EVENT_BACKOFF, 9, LONG_WAIT);
  CHECK(b >= 0);
  if (b >= 0) CHECK_EQ(f.rec.ev[b].restart_count, 10);
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(f.sup, LONG_WAIT), DEVRIG_OK);
  CHECK_ONE_TERMINAL(&f.rec);
  CHECK_EQ(count_kind(&f.rec, DEVRIG_EVENT_FAILED), 0);
  o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK(o.restarts >= 9);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

static void test_max_policy(void) {
  devrig_restart_policy p;
  p.mode = DEVRIG_RESTART_ALWAYS;
  p.max_restarts = UINT32_MAX;
  p.startup_max_restarts = UINT32_MAX;
  p.startup_grace_ms = UINT64_MAX;
  p.initial_delay_ms = UINT64_MAX;
  p.max_delay_ms = UINT64_MAX;
  p.reset_after_ms = UINT64_MAX;
  p.crash_loop_limit = UINT32_MAX;
  p.crash_loop_window_ms = UINT64_MAX;
  fixture f;
  ASSERT(fixture_make(&f, "maxes", "exit 1", p));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  int b = rec_wait_kind(&f.rec, DEVRIG_EVENT_BACKOFF, 0, LONG_WAIT);
  ASSERT(b >= 0);
  CHECKF(f.rec.ev[b].delay_ms >= UINT64_MAX / 2, "delay_ms %" PRIu64, f.rec.ev[b].delay_ms);
  CHECK_EQ(f.rec.ev[b].restart_count, 1);
  CHECK_ST(devrig_wait(f.sup, 0), DEVRIG_E_TIMEOUT);
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(f.sup, LONG_WAIT), DEVRIG_OK);
  int64_t took = mono_ms() - t0;
  CHECKF(took < 2000, "cancel during backoff took %lld ms", (long long)took);
  /* startup_grace_ms is never reached: no RUNNING */
  CHECK_KINDS(&f.rec, "STARTED EXITED BACKOFF STOPPING STOPPED");
  CHECK_ONE_TERMINAL(&f.rec);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_EQ(o.restarts, 0);
  CHECK_EQ(o.last_exit_code, 1);
  fixture_done(&f);
}

static void test_invalid_mode(void) {
  fixture f;
  ASSERT(fixture_make(&f, "badmode", "exit 1", fast_policy(DEVRIG_RESTART_NEVER)));
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ALWAYS);
  p.mode = (devrig_restart_mode)7;
  CHECK_ERR(devrig_set_policy(f.sup, &p), DEVRIG_E_INVALID_ARGUMENT, "restart mode 7");
  p.mode = (devrig_restart_mode)-1;
  CHECK_ERR(devrig_set_policy(f.sup, &p), DEVRIG_E_INVALID_ARGUMENT, "restart mode");
  /* the handle kept its previous policy (never) */
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, "STARTED RUNNING EXITED STOPPED");
  CHECK_EQ(outcome_of(f.sup).kind, DEVRIG_OUTCOME_COMPLETED);
  fixture_done(&f);
}

/* ---- wait timeouts, line limits ----------------------------------------- */

static void test_wait_timeouts(void) {
  fixture f;
  ASSERT(fixture_make(&f, "waits", "sleep 60", fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ERR(devrig_wait(f.sup, 0), DEVRIG_E_STATE, "not been started");
  CHECK_ERR(devrig_wait(f.sup, -2), DEVRIG_E_INVALID_ARGUMENT, "-2");
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  CHECK_ERR(devrig_wait(f.sup, -2), DEVRIG_E_INVALID_ARGUMENT, "-2");
  CHECK_ERR(devrig_wait(f.sup, INT64_MIN), DEVRIG_E_INVALID_ARGUMENT, "timeout_ms");
  int64_t t0 = mono_ms();
  CHECK_ERR(devrig_wait(f.sup, 0), DEVRIG_E_TIMEOUT, "still running");
  CHECK_ST(devrig_wait(f.sup, 50), DEVRIG_E_TIMEOUT);
  CHECK(mono_ms() - t0 < 5000);
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(f.sup, INT64_MAX), DEVRIG_OK);
  CHECK_ST(devrig_wait(f.sup, 0), DEVRIG_OK);
  CHECK_ONE_TERMINAL(&f.rec);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

static void test_max_line_bytes_bounds(void) {
  devrig_supervisor *s = devrig_new("linebytes", "true");
  ASSERT(s);
  CHECK_ERR(devrig_set_max_line_bytes(s, 0), DEVRIG_E_INVALID_ARGUMENT, "max_line_bytes 0");
  CHECK_ERR(devrig_set_max_line_bytes(s, ((size_t)1 << 30) + 1), DEVRIG_E_INVALID_ARGUMENT,
            "1073741825");
  CHECK_ERR(devrig_set_max_line_bytes(s, SIZE_MAX), DEVRIG_E_INVALID_ARGUMENT,
            "max_line_bytes");
  CHECK_ST(devrig_set_max_line_bytes(s, 1), DEVRIG_OK);
  CHECK_ST(devrig_set_max_line_bytes(s, (size_t)1 << 30), DEVRIG_OK);
  devrig_free(s);
}

int main(void) {
  RUN(test_cancel_twice);
  RUN(test_cancel_many_threads);
  RUN(test_run_twice_concurrently);
  RUN(test_start_then_run);
  RUN(test_free_from_other_thread);
  RUN(test_calls_from_event_callback);
  RUN(test_calls_from_log_callback);
  RUN(test_null_callbacks);
  RUN(test_bad_names);
  RUN(test_huge_env);
  RUN(test_env_value_over_kernel_limit);
  RUN(test_zero_policy);
  RUN(test_max_policy);
  RUN(test_invalid_mode);
  RUN(test_wait_timeouts);
  RUN(test_max_line_bytes_bounds);
  return test_summary();
}
