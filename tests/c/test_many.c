/* test_many.c: 200 handles at once on a small fixed number of threads, the
 * host's signal dispositions and mask left as they were, children started
 * clean. Not run under valgrind (it would only measure valgrind). */
#include "testlib.h"

#define HANDLES 200
#define MAX_THREADS 8

static struct sigaction before_act[NSIG];
static sigset_t before_mask;

static void snapshot_signals(struct sigaction *acts, sigset_t *mask) {
  for (int s = 1; s < NSIG; s++) {
    memset(&acts[s], 0, sizeof acts[s]);
    sigaction(s, NULL, &acts[s]);
  }
  pthread_sigmask(SIG_BLOCK, NULL, mask);
}

static void test_many_handles_few_threads(void) {
  static devrig_supervisor *sups[HANDLES];
  static recorder recs[HANDLES];
  int threads_before = self_threads();
  int max_threads = threads_before;
  int64_t t0 = mono_ms();
  for (int i = 0; i < HANDLES; i++) {
    char name[32];
    snprintf(name, sizeof name, "many-%d", i);
    rec_init(&recs[i]);
    sups[i] = devrig_new(name, "sleep 30");
    ASSERT(sups[i] != NULL);
    devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ALWAYS);
    CHECK_ST(devrig_set_policy(sups[i], &p), DEVRIG_OK);
    CHECK_ST(devrig_set_stop_grace_ms(sups[i], 2000), DEVRIG_OK);
    rec_attach(&recs[i], sups[i]);
    CHECK_ST(devrig_start(sups[i]), DEVRIG_OK);
    int t = self_threads();
    if (t > max_threads) max_threads = t;
  }
  int running = 0;
  for (int i = 0; i < HANDLES; i++)
    if (rec_wait_kind(&recs[i], DEVRIG_EVENT_RUNNING, 0, 20000) >= 0) running++;
  CHECK_EQ(running, HANDLES);
  int t = self_threads();
  if (t > max_threads) max_threads = t;
  printf("  %d handles running after %lld ms; threads: %d before, %d max, %d now\n", HANDLES,
         (long long)(mono_ms() - t0), threads_before, max_threads, t);
  CHECKF(max_threads <= MAX_THREADS, "%d threads for %d handles", max_threads, HANDLES);
  /* every child is alive and distinct */
  int alive = 0;
  for (int i = 0; i < HANDLES; i++)
    if (recs[i].nev > 0 && pid_alive((int)recs[i].ev[0].pid)) alive++;
  CHECK_EQ(alive, HANDLES);

  int64_t t1 = mono_ms();
  for (int i = 0; i < HANDLES; i++) CHECK_ST(devrig_cancel(sups[i]), DEVRIG_OK);
  for (int i = 0; i < HANDLES; i++) CHECK_ST(devrig_wait(sups[i], 20000), DEVRIG_OK);
  printf("  all %d stopped in %lld ms\n", HANDLES, (long long)(mono_ms() - t1));
  int bad = 0;
  for (int i = 0; i < HANDLES; i++) {
    devrig_outcome o;
    devrig_outcome_get(sups[i], &o);
    if (o.kind != DEVRIG_OUTCOME_CANCELLED) bad++;
    uint32_t pid = recs[i].nev > 0 ? recs[i].ev[0].pid : 0;
    if (pid_alive((int)pid) || pgrp_live_members((int)pid) != 0) bad++;
    if (recs[i].terminals != 1 || recs[i].after_terminal != 0) bad++;
  }
  CHECK_EQ(bad, 0);
  t = self_threads();
  CHECKF(t <= MAX_THREADS, "%d threads after the stop", t);
  for (int i = 0; i < HANDLES; i++) {
    devrig_free(sups[i]);
    rec_destroy(&recs[i]);
  }
  CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD); /* nothing left unreaped */
}

static void test_signal_dispositions_unchanged(void) {
  /* test_many_handles_few_threads ran between the snapshot (taken in main
   * before any libdevrig call) and now; supervise once more with restarts
   * and a kill, then compare. */
  recorder r;
  rec_init(&r);
  devrig_supervisor *s = devrig_new("sigs", "kill -9 $$");
  ASSERT(s != NULL);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ALWAYS);
  p.max_restarts = 2;
  devrig_set_policy(s, &p);
  rec_attach(&r, s);
  CHECK_ST(devrig_run(s), DEVRIG_OK);
  devrig_free(s);
  rec_destroy(&r);

  struct sigaction after[NSIG];
  sigset_t mask;
  snapshot_signals(after, &mask);
  for (int sig = 1; sig < NSIG; sig++) {
    struct sigaction *a = &before_act[sig], *b = &after[sig];
    bool same = a->sa_handler == b->sa_handler && a->sa_flags == b->sa_flags;
    for (int k = 1; k < NSIG && same; k++)
      if (sigismember(&a->sa_mask, k) != sigismember(&b->sa_mask, k)) same = false;
    CHECKF(same, "disposition of signal %d (%s) changed", sig, strsignal(sig));
  }
  for (int k = 1; k < NSIG; k++)
    CHECKF(sigismember(&before_mask, k) == sigismember(&mask, k),
           "signal mask changed for %d (%s)", k, strsignal(k));
}

static void test_children_start_clean(void) {
  /* The host ignores SIGUSR2 and blocks SIGUSR1 in this thread; the child
   * must still start with default dispositions and an empty mask. */
  struct sigaction ign, old;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  sigaction(SIGUSR2, &ign, &old);
  sigset_t block, oldmask;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &block, &oldmask);

  recorder r;
  rec_init(&r);
  devrig_supervisor *s =
      devrig_new("clean", "grep -E '^(SigBlk|SigIgn)' /proc/self/status; exec ls /proc/self/fd");
  ASSERT(s != NULL);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_NEVER);
  devrig_set_policy(s, &p);
  devrig_set_multiline(s, false);
  rec_attach(&r, s);
  CHECK_ST(devrig_run(s), DEVRIG_OK);
  sigaction(SIGUSR2, &old, NULL);
  pthread_sigmask(SIG_SETMASK, &oldmask, NULL);

  bool blk = false, ign_ok = false;
  char fds[128] = "";
  for (size_t i = 0; i < r.nln; i++) {
    const char *t = r.ln[i].text;
    if (strncmp(t, "SigBlk:", 7) == 0) {
      blk = true;
      CHECKF(strtoull(t + 7, NULL, 16) == 0, "child mask: %s", t);
    } else if (strncmp(t, "SigIgn:", 7) == 0) {
      ign_ok = true;
      CHECKF(strtoull(t + 7, NULL, 16) == 0, "child ignores: %s", t);
    } else {
      size_t len = strlen(fds);
      snprintf(fds + len, sizeof fds - len, "%s%s", len ? " " : "", t);
    }
  }
  CHECK(blk && ign_ok);
  /* 0 1 2 and ls's own directory descriptor: nothing leaked */
  CHECKF(strcmp(fds, "0 1 2 3") == 0, "child descriptors: %s", fds);
  /* stdin is /dev/null */
  devrig_free(s);
  rec_destroy(&r);
}

/* A host that sets SIGCHLD to SIG_IGN makes the kernel reap our children
 * itself, so their exit status is lost: the run says so in words rather
 * than "killed by signal 0". In a forked process (the disposition is
 * process-wide). */
static void test_host_ignoring_sigchld(void) {
  fflush(NULL);
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    signal(SIGCHLD, SIG_IGN);
    recorder r;
    rec_init(&r);
    devrig_supervisor *s = devrig_new("ignchld", "exit 3");
    devrig_restart_policy p = fast_policy(DEVRIG_RESTART_NEVER);
    devrig_set_policy(s, &p);
    rec_attach(&r, s);
    int bad = 0;
    if (devrig_run(s) != DEVRIG_OK) bad |= 1;
    int exited = rec_find_locked(&r, DEVRIG_EVENT_EXITED, 0);
    if (exited < 0 || strstr(r.ev[exited].message, "exit status unknown") == NULL) bad |= 2;
    devrig_outcome o;
    if (devrig_outcome_get(s, &o) != DEVRIG_OK || o.kind != DEVRIG_OUTCOME_COMPLETED ||
        strstr(o.message, "exit status unknown") == NULL)
      bad |= 4;
    if (bad)
      fprintf(stderr, "host ignoring SIGCHLD: failures %#x, EXITED \"%s\"\n", bad,
              exited >= 0 ? r.ev[exited].message : "(none)");
    _exit(bad);
  }
  int st = 0;
  ASSERT(waitpid(pid, &st, 0) == pid);
  CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "forked host: status %#x", st);
}

int main(void) {
  snapshot_signals(before_act, &before_mask);
  RUN(test_many_handles_few_threads);
  RUN(test_signal_dispositions_unchanged);
  RUN(test_children_start_clean);
  RUN(test_host_ignoring_sigchld);
  return test_summary();
}
