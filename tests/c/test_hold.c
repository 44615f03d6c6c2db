/* test_hold.c: log backpressure that blocks no thread, devrig_hold_logs and
 * devrig_release_logs: where a hold may be taken, what stops while held
 * (reading, delivering, EXITED) and what does not (a stop), nothing lost
 * or reordered through a consumer thread, and free or cancel of a held
 * run. */
#include "testlib.h"

/* A recorder whose log callback holds the logs when a line equals
 * `hold_at` (once), and records what devrig_hold_logs returned. */
typedef struct {
  recorder rec;
  devrig_supervisor *sup;
  const char *hold_at;
  devrig_status hold_status;
  bool held;
  uint32_t pid;
} holder;

static void holder_log_cb(void *ud, const devrig_log_line *l) {
  holder *h = (holder *)ud;
  rec_log_cb(&h->rec, l);
  pthread_mutex_lock(&h->rec.mu);
  h->pid = l->pid;
  bool hit = !h->held && h->hold_at && strcmp(l->text, h->hold_at) == 0;
  pthread_mutex_unlock(&h->rec.mu);
  if (!hit) return;
  devrig_status st = devrig_hold_logs(h->sup);
  pthread_mutex_lock(&h->rec.mu);
  h->hold_status = st;
  h->held = true;
  pthread_cond_broadcast(&h->rec.cv);
  pthread_mutex_unlock(&h->rec.mu);
}

static devrig_supervisor *holder_make(holder *h, const char *name, const char *cmd,
                                      const char *hold_at) {
  memset(h, 0, sizeof *h);
  rec_init(&h->rec);
  h->hold_at = hold_at;
  h->hold_status = -1;
  h->sup = devrig_new(name, cmd);
  if (!h->sup) return NULL;
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_NEVER);
  devrig_set_policy(h->sup, &p);
  devrig_set_stop_grace_ms(h->sup, 300);
  devrig_set_multiline(h->sup, false); /* each line delivered when read */
  devrig_on_event(h->sup, rec_event_cb, &h->rec);
  devrig_on_log(h->sup, holder_log_cb, h);
  return h->sup;
}

static bool holder_wait_held(holder *h, int64_t timeout_ms) {
  int64_t deadline = mono_ms() + timeout_ms;
  pthread_mutex_lock(&h->rec.mu);
  while (!h->held && mono_ms() < deadline) cond_wait_ms(&h->rec.cv, &h->rec.mu, 50);
  bool held = h->held;
  pthread_mutex_unlock(&h->rec.mu);
  return held;
}

static size_t lines_now(recorder *r) {
  pthread_mutex_lock(&r->mu);
  size_t n = r->nln;
  pthread_mutex_unlock(&r->mu);
  return n;
}

/* ---- where a hold may be taken ---- */

static devrig_supervisor *g_first; /* held from the other handle's callback */
static devrig_status g_from_event = -1, g_from_other = -1;

/* Each result is stored before the recorder sees the call, whose lock
 * then publishes it to the waiting test. */
static void hold_in_event_cb(void *ud, const devrig_event *e) {
  if (e->kind == DEVRIG_EVENT_STARTED) g_from_event = devrig_hold_logs(g_first);
  rec_event_cb(ud, e);
}

static void hold_other_log_cb(void *ud, const devrig_log_line *l) {
  if (g_from_other == (devrig_status)-1) g_from_other = devrig_hold_logs(g_first);
  rec_log_cb(ud, l);
}

static void test_where_a_hold_is_allowed(void) {
  CHECK_ERR(devrig_hold_logs(NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_release_logs(NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");

  holder h;
  ASSERT(holder_make(&h, "holdwhere", "echo x; sleep 30", "x"));
  g_first = h.sup;
  devrig_on_event(h.sup, hold_in_event_cb, &h.rec);
  CHECK_ERR(devrig_hold_logs(h.sup), DEVRIG_E_STATE, "log callback"); /* before the run */
  CHECK_ST(devrig_release_logs(h.sup), DEVRIG_OK);                    /* not held: harmless */

  recorder other;
  rec_init(&other);
  devrig_supervisor *o = devrig_new("holdother", "echo y; sleep 30");
  ASSERT(o != NULL);
  devrig_on_event(o, rec_event_cb, &other);
  devrig_on_log(o, hold_other_log_cb, &other);

  CHECK_ST(devrig_start(h.sup), DEVRIG_OK);
  CHECK_ST(devrig_start(o), DEVRIG_OK);
  CHECK(holder_wait_held(&h, slow(10000)));
  CHECK_ST(h.hold_status, DEVRIG_OK); /* in its own log callback */
  CHECK(rec_wait_line(&other, "y", slow(10000)) >= 0);
  CHECK_ST(g_from_event, DEVRIG_E_STATE);
  CHECK_ST(g_from_other, DEVRIG_E_STATE);
  CHECK_ERR(devrig_hold_logs(h.sup), DEVRIG_E_STATE, "log callback"); /* another thread */
  CHECK_ST(devrig_release_logs(h.sup), DEVRIG_OK);
  CHECK_ST(devrig_release_logs(h.sup), DEVRIG_OK); /* twice */
  CHECK_ST(devrig_cancel(h.sup), DEVRIG_OK);
  CHECK_ST(devrig_cancel(o), DEVRIG_OK);
  CHECK_ST(devrig_wait(h.sup, slow(10000)), DEVRIG_OK);
  CHECK_ST(devrig_wait(o, slow(10000)), DEVRIG_OK);
  CHECK_ERR(devrig_hold_logs(h.sup), DEVRIG_E_STATE, "log callback"); /* after */
  devrig_free(o);
  rec_destroy(&other);
  devrig_free(h.sup);
  rec_destroy(&h.rec);
}

/* ---- devrig_on_log: the hold takes effect after the line ---- */

static void test_hold_after_a_line(void) {
  holder h;
  ASSERT(holder_make(&h, "holdline", "printf '1\\n2\\n3\\n4\\n5\\n'; printf tail", "2"));
  CHECK_ST(devrig_start(h.sup), DEVRIG_OK);
  ASSERT(holder_wait_held(&h, slow(10000)));
  CHECK_ST(h.hold_status, DEVRIG_OK);
  /* The rest of the read, the partial "tail" (whose idle flush would come
   * after 250 ms) and EXITED all wait for the release. */
  sleep_ms(600);
  CHECK_EQ(lines_now(&h.rec), 2);
  CHECK(rec_wait_kind(&h.rec, DEVRIG_EVENT_EXITED, 0, 0) < 0);
  CHECK_ST(devrig_wait(h.sup, 0), DEVRIG_E_TIMEOUT);
  CHECK_ST(devrig_release_logs(h.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(h.sup, slow(10000)), DEVRIG_OK);
  const char *want[] = {"1", "2", "3", "4", "5", "tail"};
  CHECK_EQ(h.rec.nln, 6);
  int exited = rec_wait_kind(&h.rec, DEVRIG_EVENT_EXITED, 0, 0);
  for (size_t i = 0; i < 6 && i < h.rec.nln; i++) {
    CHECKF(strcmp(h.rec.ln[i].text, want[i]) == 0, "line %zu: \"%s\"", i, h.rec.ln[i].text);
    CHECK(h.rec.ln[i].events_before <= (size_t)exited);
  }
  CHECK_KINDS(&h.rec, "STARTED RUNNING EXITED STOPPED");
  devrig_free(h.sup);
  rec_destroy(&h.rec);
}

/* ---- a consumer thread: nothing lost, duplicated or reordered ---- */

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  devrig_supervisor *sup;
  char **q; /* ring of copied lines */
  size_t cap, head, len, max_len;
  bool held, done;
  long holds, releases;
  long consumed, bad;
  long at_exited; /* lines the callback had seen at EXITED */
  long seen;
} queue;

enum { HIGH_WATER = 2000, LOW_WATER = 200, RING = 1 << 16 };

static void queue_batch_cb(void *ud, const devrig_log_line *lines, size_t count) {
  queue *q = (queue *)ud;
  pthread_mutex_lock(&q->mu);
  for (size_t i = 0; i < count; i++) {
    if (q->len == q->cap) { /* never, if holds work: counted as bad */
      q->bad++;
      continue;
    }
    q->q[(q->head + q->len++) % q->cap] = strndup(lines[i].text, lines[i].len);
  }
  q->seen += (long)count;
  if (q->len > q->max_len) q->max_len = q->len;
  /* Under the queue's lock, as the consumer's release: a release can then
   * never come before the hold it is meant for. Neither call blocks. */
  if (q->len >= HIGH_WATER && !q->held) {
    q->held = true;
    q->holds++;
    if (devrig_hold_logs(q->sup) != DEVRIG_OK) q->bad++;
  }
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

static void queue_event_cb(void *ud, const devrig_event *e) {
  queue *q = (queue *)ud;
  pthread_mutex_lock(&q->mu);
  if (e->kind == DEVRIG_EVENT_EXITED) q->at_exited = q->seen;
  if (e->kind == DEVRIG_EVENT_STOPPED || e->kind == DEVRIG_EVENT_FAILED) q->done = true;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

static void *consumer(void *arg) {
  queue *q = (queue *)arg;
  pthread_mutex_lock(&q->mu);
  for (;;) {
    while (q->len == 0 && !q->done) cond_wait_ms(&q->cv, &q->mu, 100);
    if (q->len == 0 && q->done) break;
    char *line = q->q[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    if (strtol(line, NULL, 10) != q->consumed + 1) q->bad++;
    q->consumed++;
    free(line);
    if (q->held && q->len <= LOW_WATER) {
      q->held = false;
      q->releases++;
      devrig_release_logs(q->sup); /* under the lock: ordered with the hold flag */
    }
    if (q->consumed % 5000 == 0) { /* a slow consumer */
      pthread_mutex_unlock(&q->mu);
      sleep_ms(5);
      pthread_mutex_lock(&q->mu);
    }
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

static void test_consumer_thread_loses_nothing(void) {
  long n = getenv("DEVRIG_TEST_VALGRIND") ? 20000 : 200000;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "seq 1 %ld", n);
  queue q;
  memset(&q, 0, sizeof q);
  pthread_mutex_init(&q.mu, NULL);
  pthread_cond_init(&q.cv, NULL);
  q.cap = RING;
  q.q = (char **)calloc(q.cap, sizeof *q.q);
  q.sup = devrig_new("holdqueue", cmd);
  ASSERT(q.sup != NULL);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_NEVER);
  CHECK_ST(devrig_set_policy(q.sup, &p), DEVRIG_OK);
  CHECK_ST(devrig_on_log_batch(q.sup, queue_batch_cb, &q), DEVRIG_OK);
  CHECK_ST(devrig_on_event(q.sup, queue_event_cb, &q), DEVRIG_OK);
  pthread_t t;
  pthread_create(&t, NULL, consumer, &q);
  CHECK_ST(devrig_run(q.sup), DEVRIG_OK);
  pthread_join(t, NULL);
  CHECK_EQ(q.bad, 0);
  CHECK_EQ(q.consumed, n);
  CHECK_EQ(q.at_exited, n); /* every line before EXITED */
  CHECK(q.holds > 0);
  /* Memory stays bounded: the queue grows by at most one read past the
   * high-water mark (a read is at most 64 KiB: 16384 lines of seq's
   * output here, counting generously). */
  CHECKF(q.max_len < HIGH_WATER + 16384, "queue grew to %zu lines", q.max_len);
  printf("  %ld lines, %ld holds, queue at most %zu lines\n", n, q.holds, q.max_len);
  devrig_free(q.sup);
  free(q.q);
  pthread_mutex_destroy(&q.mu);
  pthread_cond_destroy(&q.cv);
}

/* ---- a stop is not held up; the run ends once released ---- */

static void test_cancel_while_held(void) {
  holder h;
  ASSERT(holder_make(&h, "holdcancel", "trap '' TERM; echo go; exec yes", "go"));
  CHECK_ST(devrig_start(h.sup), DEVRIG_OK);
  ASSERT(holder_wait_held(&h, slow(10000)));
  int pid = (int)h.pid;
  CHECK(pid_alive(pid));
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_cancel(h.sup), DEVRIG_OK);
  /* SIGTERM is ignored: SIGKILL after the 300 ms grace, while held. */
  CHECKF(wait_pid_gone(pid, slow(5000)), "pid %d alive while held", pid);
  int64_t took = mono_ms() - t0;
  CHECKF(took < slow(3000), "stopped %lld ms after the cancel", (long long)took);
  CHECK_ST(devrig_wait(h.sup, 200), DEVRIG_E_TIMEOUT); /* the rest of the pipe waits */
  CHECK(rec_wait_kind(&h.rec, DEVRIG_EVENT_EXITED, 0, 0) < 0);
  CHECK_EQ(lines_now(&h.rec), 1);
  CHECK_ST(devrig_release_logs(h.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(h.sup, slow(10000)), DEVRIG_OK);
  CHECK(lines_now(&h.rec) > 1); /* what `yes` wrote before it was killed */
  CHECK_KINDS(&h.rec, "STARTED RUNNING STOPPING EXITED STOPPED");
  devrig_outcome o = outcome_of(h.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_EQ(o.last_signal, 9);
  devrig_free(h.sup);
  rec_destroy(&h.rec);
}

/* ---- devrig_free of a held run releases it and does not hang ---- */

static void test_free_while_held(void) {
  holder h;
  ASSERT(holder_make(&h, "holdfree", "echo go; exec yes", "go"));
  CHECK_ST(devrig_start(h.sup), DEVRIG_OK);
  ASSERT(holder_wait_held(&h, slow(10000)));
  int pid = (int)h.pid;
  /* Later lines re-hold nothing: hold_at matched once. */
  int64_t t0 = mono_ms();
  devrig_free(h.sup); /* stops, releases, waits: every child reaped */
  int64_t took = mono_ms() - t0;
  CHECKF(took < slow(5000), "devrig_free took %lld ms", (long long)took);
  char path[64];
  snprintf(path, sizeof path, "/proc/%d", pid);
  CHECKF(access(path, F_OK) != 0, "pid %d not reaped", pid);
  rec_destroy(&h.rec);
}

/* ---- a release before the callback returns: the hold never bites ---- */

typedef struct {
  devrig_supervisor *sup;
  long next, bad;
} at_once;

static void release_at_once_cb(void *ud, const devrig_log_line *lines, size_t count) {
  at_once *a = (at_once *)ud;
  for (size_t i = 0; i < count; i++)
    if (strtol(lines[i].text, NULL, 10) != ++a->next) a->bad++;
  if (devrig_hold_logs(a->sup) != DEVRIG_OK) a->bad++;
  if (devrig_hold_logs(a->sup) != DEVRIG_OK) a->bad++; /* the same hold */
  if (devrig_release_logs(a->sup) != DEVRIG_OK) a->bad++;
}

static void test_release_before_the_callback_returns(void) {
  at_once a = {0};
  a.sup = devrig_new("holdrelease", "seq 1 50000");
  ASSERT(a.sup != NULL);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_NEVER);
  CHECK_ST(devrig_set_policy(a.sup, &p), DEVRIG_OK);
  CHECK_ST(devrig_on_log_batch(a.sup, release_at_once_cb, &a), DEVRIG_OK);
  CHECK_ST(devrig_run(a.sup), DEVRIG_OK);
  CHECK_EQ(a.bad, 0);
  CHECK_EQ(a.next, 50000);
  devrig_free(a.sup);
}

int main(void) {
  RUN(test_where_a_hold_is_allowed);
  RUN(test_hold_after_a_line);
  RUN(test_consumer_thread_loses_nothing);
  RUN(test_cancel_while_held);
  RUN(test_free_while_held);
  RUN(test_release_before_the_callback_returns);
  return test_summary();
}
