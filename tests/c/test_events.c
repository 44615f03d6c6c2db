/* test_events.c: the exact event sequence of every restart path, outcomes,
 * backoff bounds and real delays, cancel in every state, stop escalation,
 * escaped grandchildren and leftovers, free on a running handle. */
#include "testlib.h"

static void test_completed_on_failure_exit0(void) {
  fixture f;
  ASSERT(fixture_make(&f, "done0", "exit 0", fast_policy(DEVRIG_RESTART_ON_FAILURE)));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, "STARTED RUNNING EXITED STOPPED");
  CHECK_ONE_TERMINAL(&f.rec);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_COMPLETED);
  CHECK_EQ(o.restarts, 0);
  CHECK_EQ(o.last_exit_code, 0);
  CHECK_EQ(o.last_signal, 0);
  CHECK(strstr(o.message, "completed") != NULL);
  /* event fields */
  rec_event *e = f.rec.ev;
  CHECK(e[0].pid > 0);
  CHECK_EQ(e[1].pid, e[0].pid);
  CHECK_EQ(e[2].pid, e[0].pid);
  CHECK_EQ(e[2].exit_code, 0);
  CHECK_EQ(e[2].signal, 0);
  CHECK(strcmp(e[0].service, "done0") == 0);
  int64_t now = wall_ms();
  for (size_t i = 0; i < f.rec.nev; i++) {
    CHECK(e[i].timestamp_ms > now - 60000 && e[i].timestamp_ms <= now + 1000);
    if (i) CHECK(e[i].timestamp_ms >= e[i - 1].timestamp_ms);
  }
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

static void test_never_nonzero(void) {
  fixture f;
  ASSERT(fixture_make(&f, "never", "exit 3", fast_policy(DEVRIG_RESTART_NEVER)));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, "STARTED RUNNING EXITED STOPPED");
  CHECK_ONE_TERMINAL(&f.rec);
  CHECK_EQ(f.rec.ev[2].exit_code, 3);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_COMPLETED);
  CHECK_EQ(o.last_exit_code, 3);
  CHECK_EQ(o.restarts, 0);
  fixture_done(&f);
}

static void test_never_killed_by_signal(void) {
  fixture f;
  ASSERT(fixture_make(&f, "sig", "kill -9 $$", fast_policy(DEVRIG_RESTART_NEVER)));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, "STARTED RUNNING EXITED STOPPED");
  CHECK_EQ(f.rec.ev[2].exit_code, -1);
  CHECK_EQ(f.rec.ev[2].signal, 9);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_COMPLETED);
  CHECK_EQ(o.last_exit_code, -1);
  CHECK_EQ(o.last_signal, 9);
  fixture_done(&f);
}

static const char *THREE_RESTARTS =
    "STARTED RUNNING EXITED BACKOFF STARTED RUNNING EXITED BACKOFF "
    "STARTED RUNNING EXITED FAILED";

static void test_always_restarts_exit0(void) {
  fixture f;
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ALWAYS);
  p.max_restarts = 2;
  ASSERT(fixture_make(&f, "always", "exit 0", p));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, THREE_RESTARTS);
  CHECK_ONE_TERMINAL(&f.rec);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_FAILED);
  CHECK_EQ(o.restarts, 2);
  CHECK_EQ(o.last_exit_code, 0);
  CHECK(strstr(o.message, "restart budget") != NULL);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

static void test_restart_budget(void) {
  fixture f;
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ON_FAILURE);
  p.max_restarts = 2;
  ASSERT(fixture_make(&f, "budget", "echo hi; exit 7", p));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, THREE_RESTARTS);
  CHECK_ONE_TERMINAL(&f.rec);
  /* BACKOFF carries the number of the coming restart; pids differ per spawn */
  int b0 = rec_wait_kind(&f.rec, DEVRIG_EVENT_BACKOFF, 0, 0);
  int b1 = rec_wait_kind(&f.rec, DEVRIG_EVENT_BACKOFF, 1, 0);
  ASSERT(b0 >= 0 && b1 >= 0);
  CHECK_EQ(f.rec.ev[b0].restart_count, 1);
  CHECK_EQ(f.rec.ev[b1].restart_count, 2);
  int s0 = rec_wait_kind(&f.rec, DEVRIG_EVENT_STARTED, 0, 0);
  int s1 = rec_wait_kind(&f.rec, DEVRIG_EVENT_STARTED, 1, 0);
  int s2 = rec_wait_kind(&f.rec, DEVRIG_EVENT_STARTED, 2, 0);
  CHECK(f.rec.ev[s0].pid != f.rec.ev[s1].pid && f.rec.ev[s1].pid != f.rec.ev[s2].pid);
  CHECK_EQ(f.rec.ev[s0].restart_count, 0);
  CHECK_EQ(f.rec.ev[s2].restart_count, 2);
  int x = rec_wait_kind(&f.rec, DEVRIG_EVENT_EXITED, 2, 0);
  CHECK_EQ(f.rec.ev[x].exit_code, 7);
  int t = rec_wait_terminal(&f.rec, 0);
  CHECK(strstr(f.rec.ev[t].message, "restart budget") != NULL);
  CHECK_EQ(f.rec.ev[t].restart_count, 2);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_FAILED);
  CHECK_EQ(o.restarts, 2);
  CHECK_EQ(o.last_exit_code, 7);
  CHECK_EQ(o.last_signal, 0);
  CHECK(strstr(o.message, "restart budget") != NULL);
  /* lines of each child arrive with that child's pid, before its EXITED */
  CHECK_EQ(f.rec.nln, 3);
  for (size_t i = 0; i < f.rec.nln && i < 3; i++) {
    int st = rec_wait_kind(&f.rec, DEVRIG_EVENT_STARTED, (int)i, 0);
    int ex = rec_wait_kind(&f.rec, DEVRIG_EVENT_EXITED, (int)i, 0);
    CHECK_EQ(f.rec.ln[i].pid, f.rec.ev[st].pid);
    CHECK(f.rec.ln[i].events_before > (size_t)st && f.rec.ln[i].events_before <= (size_t)ex);
  }
  fixture_done(&f);
}

static void test_max_restarts_zero(void) {
  fixture f;
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ON_FAILURE);
  p.max_restarts = 0;
  ASSERT(fixture_make(&f, "zero", "exit 1", p));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, "STARTED RUNNING EXITED FAILED");
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_FAILED);
  CHECK_EQ(o.restarts, 0);
  CHECK_EQ(o.last_exit_code, 1);
  fixture_done(&f);
}

static void test_startup_failures(void) {
  fixture f;
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ON_FAILURE);
  p.startup_grace_ms = 5000;
  p.startup_max_restarts = 2;
  ASSERT(fixture_make(&f, "startup", "exit 1", p));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, "STARTED EXITED BACKOFF STARTED EXITED BACKOFF STARTED EXITED FAILED");
  CHECK_ONE_TERMINAL(&f.rec);
  int t = rec_wait_terminal(&f.rec, 0);
  CHECKF(strstr(f.rec.ev[t].message, "startup") != NULL, "message: %s", f.rec.ev[t].message);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_FAILED);
  CHECK_EQ(o.restarts, 2);
  CHECK(strstr(o.message, "startup") != NULL);
  fixture_done(&f);
}

static void test_crash_loop(void) {
  fixture f;
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ON_FAILURE);
  p.crash_loop_limit = 3;
  p.crash_loop_window_ms = 60000;
  ASSERT(fixture_make(&f, "loop", "exit 2", p));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, THREE_RESTARTS);
  CHECK_ONE_TERMINAL(&f.rec);
  int t = rec_wait_terminal(&f.rec, 0);
  CHECKF(strstr(f.rec.ev[t].message, "crash loop") != NULL, "message: %s",
         f.rec.ev[t].message);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_FAILED);
  CHECK_EQ(o.restarts, 2);
  CHECK(strstr(o.message, "crash loop") != NULL);
  fixture_done(&f);
}

static void test_first_spawn_fails(void) {
  fixture f;
  ASSERT(fixture_make(&f, "nospawn", "true", fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_set_working_dir(f.sup, "/no/such/dir/devrig-test"), DEVRIG_OK);
  CHECK_ERR(devrig_run(f.sup), DEVRIG_E_SPAWN, "/no/such/dir/devrig-test");
  CHECK_KINDS(&f.rec, "SPAWN_FAILED FAILED");
  CHECK_ONE_TERMINAL(&f.rec);
  int t = rec_wait_terminal(&f.rec, 0);
  CHECK(strstr(f.rec.ev[t].message, "/no/such/dir/devrig-test") != NULL);
  CHECK(strstr(f.rec.ev[0].message, "/no/such/dir/devrig-test") != NULL);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_FAILED);
  CHECK_EQ(o.restarts, 0);
  CHECK(strstr(o.message, "/no/such/dir/devrig-test") != NULL);
  CHECK_ST(devrig_wait(f.sup, 0), DEVRIG_E_SPAWN);
  fixture_done(&f);

  /* devrig_start reports it too, and devrig_wait returns the same status */
  ASSERT(fixture_make(&f, "nospawn2", "true", fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_set_working_dir(f.sup, "/no/such/dir/devrig-test"), DEVRIG_OK);
  CHECK_ST(devrig_start(f.sup), DEVRIG_E_SPAWN);
  CHECK_ST(devrig_wait(f.sup, slow(10000)), DEVRIG_E_SPAWN);
  CHECK_KINDS(&f.rec, "SPAWN_FAILED FAILED");
  fixture_done(&f);
}

static void test_workdir_removed_before_respawn(void) {
  char *dir = temp_dir("devrig-wd");
  char cmd[600];
  /* The service removes its own working directory and fails. */
  snprintf(cmd, sizeof cmd, "cd / && rmdir '%s' && exit 1", dir);
  fixture f;
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ON_FAILURE);
  p.startup_grace_ms = 5000;
  p.startup_max_restarts = 2;
  ASSERT(fixture_make(&f, "wd", cmd, p));
  CHECK_ST(devrig_set_working_dir(f.sup, dir), DEVRIG_OK);
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK); /* only the first spawn is an error */
  CHECK_KINDS(&f.rec, "STARTED EXITED BACKOFF SPAWN_FAILED BACKOFF SPAWN_FAILED FAILED");
  CHECK_ONE_TERMINAL(&f.rec);
  int t = rec_wait_terminal(&f.rec, 0);
  CHECKF(strstr(f.rec.ev[t].message, "startup") != NULL, "message: %s", f.rec.ev[t].message);
  int sf = rec_wait_kind(&f.rec, DEVRIG_EVENT_SPAWN_FAILED, 0, 0);
  CHECK(strstr(f.rec.ev[sf].message, dir) != NULL);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_FAILED);
  CHECK(strstr(o.message, "startup") != NULL);
  fixture_done(&f);
  rm_rf(dir);
  free(dir);
}

static void test_backoff_bounds_and_delays(void) {
  fixture f;
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ON_FAILURE);
  p.initial_delay_ms = 150;
  p.max_delay_ms = 400;
  p.max_restarts = 3;
  ASSERT(fixture_make(&f, "backoff", "exit 1", p));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec,
              "STARTED RUNNING EXITED BACKOFF STARTED RUNNING EXITED BACKOFF "
              "STARTED RUNNING EXITED BACKOFF STARTED RUNNING EXITED FAILED");
  /* capped = min(150 * 2^n, 400) with n = restarts so far: 150, 300, 400 */
  uint64_t capped[3] = {150, 300, 400};
  for (int i = 0; i < 3; i++) {
    int b = rec_wait_kind(&f.rec, DEVRIG_EVENT_BACKOFF, i, 0);
    int s = rec_wait_kind(&f.rec, DEVRIG_EVENT_STARTED, i + 1, 0);
    ASSERT(b >= 0 && s > b);
    uint64_t d = f.rec.ev[b].delay_ms;
    CHECKF(d >= capped[i] / 2 && d <= capped[i], "backoff %d: delay %llu not in [%llu, %llu]",
           i, (unsigned long long)d, (unsigned long long)capped[i] / 2,
           (unsigned long long)capped[i]);
    int64_t gap = f.rec.ev[s].mono_ms - f.rec.ev[b].mono_ms;
    CHECKF(gap + 2 >= (int64_t)d, "backoff %d: next STARTED after %lld ms, delay %llu", i,
           (long long)gap, (unsigned long long)d);
    CHECKF(gap < (int64_t)d + slow(2000), "backoff %d: gap %lld ms for delay %llu", i,
           (long long)gap, (unsigned long long)d);
    CHECKF(strstr(f.rec.ev[b].message, "") != NULL, "%s", f.rec.ev[b].message);
  }
  fixture_done(&f);
}

static void test_cancel_latency(void) {
  fixture f;
  ASSERT(fixture_make(&f, "cancel", "sleep 30", fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  ASSERT(rec_wait_kind(&f.rec, DEVRIG_EVENT_RUNNING, 0, slow(10000)) >= 0);
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK); /* idempotent */
  CHECK_ST(devrig_wait(f.sup, slow(10000)), DEVRIG_OK);
  int64_t took = mono_ms() - t0;
  CHECKF(took < slow(1000), "cancel took %lld ms", (long long)took);
  CHECK_KINDS(&f.rec, "STARTED RUNNING STOPPING EXITED STOPPED");
  CHECK_ONE_TERMINAL(&f.rec);
  int x = rec_wait_kind(&f.rec, DEVRIG_EVENT_EXITED, 0, 0);
  CHECK_EQ(f.rec.ev[x].signal, SIGTERM);
  CHECK_EQ(f.rec.ev[x].exit_code, -1);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_EQ(o.restarts, 0);
  CHECK_EQ(o.last_signal, SIGTERM);
  CHECK_EQ(o.last_exit_code, -1);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

static void test_cancel_before_run(void) {
  fixture f;
  ASSERT(fixture_make(&f, "early", "sleep 30", fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK(mono_ms() - t0 < slow(1000));
  CHECK(rec_wait_kind(&f.rec, DEVRIG_EVENT_STARTED, 0, 0) < 0);
  CHECK(rec_wait_kind(&f.rec, DEVRIG_EVENT_SPAWN_FAILED, 0, 0) < 0);
  ASSERT(f.rec.nev >= 1);
  CHECK_EQ(f.rec.ev[f.rec.nev - 1].kind, DEVRIG_EVENT_STOPPED);
  CHECK_ONE_TERMINAL(&f.rec);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_EQ(o.restarts, 0);
  CHECK_EQ(o.last_exit_code, 0);
  CHECK_EQ(o.last_signal, 0);
  fixture_done(&f);
}

static void test_cancel_during_backoff(void) {
  fixture f;
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ON_FAILURE);
  p.initial_delay_ms = 20000;
  p.max_delay_ms = 20000;
  ASSERT(fixture_make(&f, "inbackoff", "exit 1", p));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  ASSERT(rec_wait_kind(&f.rec, DEVRIG_EVENT_BACKOFF, 0, slow(10000)) >= 0);
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(f.sup, slow(10000)), DEVRIG_OK);
  CHECKF(mono_ms() - t0 < slow(2000), "took %lld ms", (long long)(mono_ms() - t0));
  CHECK_KINDS(&f.rec, "STARTED RUNNING EXITED BACKOFF STOPPING STOPPED");
  CHECK_ONE_TERMINAL(&f.rec);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_EQ(o.restarts, 0);
  CHECK_EQ(o.last_exit_code, 1);
  fixture_done(&f);
}

static void test_sigterm_ignored_gets_sigkill(void) {
  fixture f;
  ASSERT(fixture_make(&f, "stubborn", "trap '' TERM; echo ready; sleep 30",
              fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_set_stop_grace_ms(f.sup, 400), DEVRIG_OK);
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  ASSERT(rec_wait_line(&f.rec, "ready", slow(10000)) >= 0);
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(f.sup, slow(10000)), DEVRIG_OK);
  int64_t took = mono_ms() - t0;
  CHECKF(took >= 380 && took < slow(3000), "stop took %lld ms (grace 400)", (long long)took);
  CHECK_KINDS(&f.rec, "STARTED RUNNING STOPPING EXITED STOPPED");
  int x = rec_wait_kind(&f.rec, DEVRIG_EVENT_EXITED, 0, 0);
  CHECK_EQ(f.rec.ev[x].signal, SIGKILL);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_EQ(o.last_signal, SIGKILL);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

/* The pid printed after `prefix` in a recorded line, or 0. */
static int line_pid(recorder *r, const char *prefix, int nth) {
  int found = 0, seen = 0;
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < r->nln; i++) {
    if (strncmp(r->ln[i].text, prefix, strlen(prefix)) == 0 && seen++ == nth) {
      found = atoi(r->ln[i].text + strlen(prefix));
      break;
    }
  }
  pthread_mutex_unlock(&r->mu);
  return found;
}

static void test_escaped_grandchild_at_stop(void) {
  fixture f;
  ASSERT(fixture_make(&f, "escape",
              "(setsid sh -c 'echo esc $$; exec sleep 60' &); echo main; sleep 60",
              fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  ASSERT(rec_wait_line(&f.rec, "esc ", slow(10000)) >= 0);
  int esc = line_pid(&f.rec, "esc ", 0);
  ASSERT(esc > 0);
  proc_stat st;
  CHECK(read_proc_stat(esc, &st) && st.sid == esc); /* really escaped */
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(f.sup, slow(15000)), DEVRIG_OK);
  CHECKF(mono_ms() - t0 < slow(3000), "stop took %lld ms", (long long)(mono_ms() - t0));
  CHECKF(!pid_alive(esc), "escaped grandchild %d survived the stop", esc);
  CHECK_NO_SURVIVORS(&f.rec);
  CHECK_ONE_TERMINAL(&f.rec);
  fixture_done(&f);
}

static void test_escaped_grandchild_holding_pipe(void) {
  /* The main process exits at once; an escaped grandchild keeps stdout
   * open. The run must end promptly, with the grandchild stopped. */
  fixture f;
  ASSERT(fixture_make(&f, "holder", "(setsid sh -c 'echo esc $$; exec sleep 60' &); sleep 0.2; exit 0",
              fast_policy(DEVRIG_RESTART_NEVER)));
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  int64_t took = mono_ms() - t0;
  CHECKF(took < slow(4000), "run took %lld ms", (long long)took);
  CHECK_KINDS(&f.rec, "STARTED RUNNING EXITED STOPPED");
  int esc = line_pid(&f.rec, "esc ", 0);
  CHECK(esc > 0);
  CHECKF(!pid_alive(esc), "escaped grandchild %d survived", esc);
  CHECK_NO_SURVIVORS(&f.rec);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_COMPLETED);
  CHECK_EQ(o.last_exit_code, 0);
  fixture_done(&f);
}

/* Leftovers: at each STARTED, every "bg PID" printed by earlier spawns must
 * be dead already. */
static int leftover_violations;
static int leftovers_checked;

static void leftover_hook(recorder *r, const devrig_event *e) {
  if (e->kind != DEVRIG_EVENT_STARTED) return;
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < r->nln; i++) {
    if (strncmp(r->ln[i].text, "bg ", 3) == 0) {
      int pid = atoi(r->ln[i].text + 3);
      leftovers_checked++;
      if (pid_alive(pid)) {
        fprintf(stderr, "leftover %d still alive at STARTED %u\n", pid, e->pid);
        leftover_violations++;
      }
    }
  }
  pthread_mutex_unlock(&r->mu);
}

static void test_leftovers_stopped_before_restart(void) {
  fixture f;
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ON_FAILURE);
  p.max_restarts = 2;
  ASSERT(fixture_make(&f, "leftover",
              "sleep 60 & echo bg $!; (setsid sh -c 'echo bg $$; exec sleep 60' &); "
              "sleep 0.2; exit 1",
              p));
  leftover_violations = leftovers_checked = 0;
  f.rec.on_event_hook = leftover_hook;
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_KINDS(&f.rec, THREE_RESTARTS);
  CHECK_EQ(leftover_violations, 0);
  CHECK_EQ(leftovers_checked, 2 + 4); /* 2 at the 2nd STARTED, 4 at the 3rd */
  for (int i = 0; i < 6; i++) {
    int pid = line_pid(&f.rec, "bg ", i);
    CHECKF(pid > 0 && !pid_alive(pid), "leftover %d (#%d) alive after the run", pid, i);
  }
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

/* cancel (and forbidden blocking calls) from inside a callback */
static int cb_run_status = -1, cb_wait_status = -1, cb_cancel_status = -1;

static void cancel_hook(recorder *r, const devrig_event *e) {
  if (e->kind != DEVRIG_EVENT_RUNNING) return;
  devrig_supervisor *s = (devrig_supervisor *)r->hook_data;
  cb_run_status = devrig_run(s);
  cb_wait_status = devrig_wait(s, 100);
  cb_cancel_status = devrig_cancel(s);
}

static void test_cancel_from_callback(void) {
  fixture f;
  ASSERT(fixture_make(&f, "cbcancel", "sleep 30", fast_policy(DEVRIG_RESTART_ALWAYS)));
  f.rec.on_event_hook = cancel_hook;
  f.rec.hook_data = f.sup;
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK(mono_ms() - t0 < slow(3000));
  CHECK_EQ(cb_run_status, DEVRIG_E_STATE);
  CHECK_EQ(cb_wait_status, DEVRIG_E_STATE);
  CHECK_EQ(cb_cancel_status, DEVRIG_OK);
  CHECK_KINDS(&f.rec, "STARTED RUNNING STOPPING EXITED STOPPED");
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

/* The outcome is set when the terminal event is emitted: its callback, and
 * any thread it wakes, reads the final outcome, matching the event. */
static devrig_outcome_kind terminal_outcome_kind;
static char terminal_outcome_msg[256], terminal_event_msg[256];

static void outcome_hook(recorder *r, const devrig_event *e) {
  if (!is_terminal(e->kind)) return;
  devrig_outcome o;
  if (devrig_outcome_get((devrig_supervisor *)r->hook_data, &o) != DEVRIG_OK) return;
  terminal_outcome_kind = o.kind;
  snprintf(terminal_outcome_msg, sizeof terminal_outcome_msg, "%s", o.message);
  snprintf(terminal_event_msg, sizeof terminal_event_msg, "%s", e->message);
}

static void check_outcome_at_terminal(const char *cmd, devrig_restart_policy p, bool cancel,
                                      const char *workdir, devrig_outcome_kind want) {
  fixture f;
  ASSERT(fixture_make(&f, "endnow", cmd, p));
  if (workdir) CHECK_ST(devrig_set_working_dir(f.sup, workdir), DEVRIG_OK);
  f.rec.on_event_hook = outcome_hook;
  f.rec.hook_data = f.sup;
  terminal_outcome_kind = DEVRIG_OUTCOME_NONE;
  terminal_outcome_msg[0] = terminal_event_msg[0] = 0;
  devrig_status st = devrig_start(f.sup);
  if (cancel) {
    CHECK_ST(st, DEVRIG_OK);
    CHECK(rec_wait_kind(&f.rec, DEVRIG_EVENT_STARTED, 0, slow(5000)) >= 0);
    CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  }
  /* Wait for the terminal event only, not for the run: the outcome must be
   * readable as soon as that event has been seen. */
  CHECK(rec_wait_terminal(&f.rec, slow(10000)) >= 0);
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, want);
  CHECK_EQ(terminal_outcome_kind, want);
  CHECK(strcmp(terminal_outcome_msg, terminal_event_msg) == 0);
  CHECK(strcmp(o.message, terminal_event_msg) == 0);
  CHECK_ST(devrig_wait(f.sup, -1), workdir ? DEVRIG_E_SPAWN : DEVRIG_OK);
  fixture_done(&f);
}

static void test_outcome_set_when_terminal_event_emitted(void) {
  devrig_restart_policy budget = fast_policy(DEVRIG_RESTART_ALWAYS);
  budget.max_restarts = 1;
  for (int i = 0; i < 20; i++) {
    check_outcome_at_terminal("exit 0", fast_policy(DEVRIG_RESTART_ON_FAILURE), false, NULL,
                              DEVRIG_OUTCOME_COMPLETED);
    check_outcome_at_terminal("exit 1", budget, false, NULL, DEVRIG_OUTCOME_FAILED);
  }
  check_outcome_at_terminal("sleep 30", fast_policy(DEVRIG_RESTART_ALWAYS), true, NULL,
                            DEVRIG_OUTCOME_CANCELLED);
  check_outcome_at_terminal("true", fast_policy(DEVRIG_RESTART_ALWAYS), false,
                            "/nonexistent/devrig-dir", DEVRIG_OUTCOME_FAILED);
}

/* devrig_start from a callback: a failed first spawn is DEVRIG_E_SPAWN and
 * the run has ended, as from any other thread (its callbacks ran nested). */
static devrig_supervisor *cb_other;
static recorder *cb_other_rec;
static devrig_status cb_start_status = -1;
static size_t cb_other_events = 0;
static devrig_outcome_kind cb_other_outcome;

static void start_other_hook(recorder *r, const devrig_event *e) {
  (void)r;
  if (e->kind == DEVRIG_EVENT_RUNNING && cb_other) {
    cb_start_status = devrig_start(cb_other);
    pthread_mutex_lock(&cb_other_rec->mu);
    cb_other_events = cb_other_rec->nev;
    pthread_mutex_unlock(&cb_other_rec->mu);
    devrig_outcome o;
    if (devrig_outcome_get(cb_other, &o) == DEVRIG_OK) cb_other_outcome = o.kind;
    cb_other = NULL;
  }
}

static void test_start_from_callback_reports_spawn_failure(void) {
  fixture a, b;
  ASSERT(fixture_make(&a, "starter", "sleep 30", fast_policy(DEVRIG_RESTART_ALWAYS)));
  ASSERT(fixture_make(&b, "nodir", "true", fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_set_working_dir(b.sup, "/nonexistent/devrig-dir"), DEVRIG_OK);
  cb_other = b.sup;
  cb_other_rec = &b.rec;
  a.rec.on_event_hook = start_other_hook;
  CHECK_ST(devrig_start(a.sup), DEVRIG_OK);
  CHECK(rec_wait_kind(&a.rec, DEVRIG_EVENT_RUNNING, 0, slow(5000)) >= 0);
  CHECK_EQ(cb_start_status, DEVRIG_E_SPAWN);
  CHECK_EQ(cb_other_events, 2); /* SPAWN_FAILED and FAILED, before the return */
  CHECK_EQ(cb_other_outcome, DEVRIG_OUTCOME_FAILED);
  CHECK_ST(devrig_wait(b.sup, 0), DEVRIG_E_SPAWN);
  CHECK(strstr(devrig_last_error(), "/nonexistent/devrig-dir") != NULL);
  CHECK_KINDS(&b.rec, "SPAWN_FAILED FAILED");
  CHECK_ST(devrig_cancel(a.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(a.sup, -1), DEVRIG_OK);
  fixture_done(&b);
  fixture_done(&a);
}

static devrig_supervisor *volatile g_sig_sup;
static volatile sig_atomic_t g_sig_status = -1;

static void on_sigusr1(int sig) {
  (void)sig;
  g_sig_status = devrig_cancel(g_sig_sup);
}

static void test_cancel_from_signal_handler(void) {
  fixture f;
  ASSERT(fixture_make(&f, "sigcancel", "sleep 30", fast_policy(DEVRIG_RESTART_ALWAYS)));
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigusr1;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, &old);
  g_sig_sup = f.sup;
  g_sig_status = -1;
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  ASSERT(rec_wait_kind(&f.rec, DEVRIG_EVENT_RUNNING, 0, slow(10000)) >= 0);
  int64_t t0 = mono_ms();
  raise(SIGUSR1);
  CHECK_ST(devrig_wait(f.sup, slow(10000)), DEVRIG_OK);
  CHECK(mono_ms() - t0 < slow(3000));
  CHECK_EQ(g_sig_status, DEVRIG_OK);
  CHECK_KINDS(&f.rec, "STARTED RUNNING STOPPING EXITED STOPPED");
  devrig_outcome o = outcome_of(f.sup);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_CANCELLED);
  sigaction(SIGUSR1, &old, NULL);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

static void test_free_running_handle(void) {
  fixture f;
  ASSERT(fixture_make(&f, "freeme", "sleep 30 & sleep 30", fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  int s = rec_wait_kind(&f.rec, DEVRIG_EVENT_RUNNING, 0, slow(10000));
  ASSERT(s >= 0);
  int pid = (int)f.rec.ev[0].pid;
  int64_t t0 = mono_ms();
  devrig_free(f.sup); /* stops it and waits for the run to end */
  CHECK(mono_ms() - t0 < slow(3000));
  CHECK(!pid_alive(pid));
  CHECK_EQ(pgrp_live_members(pid), 0);
  /* no child of ours is left unreaped */
  CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
  rec_destroy(&f.rec);
}

/* devrig_free from inside a callback: no further callback, the run ends in
 * the background and leaves nothing alive. */
static void free_hook(recorder *r, const devrig_event *e) {
  if (e->kind == DEVRIG_EVENT_RUNNING) devrig_free((devrig_supervisor *)r->hook_data);
}

static void test_free_from_callback(void) {
  fixture f;
  ASSERT(fixture_make(&f, "cbfree", "sleep 30", fast_policy(DEVRIG_RESTART_ALWAYS)));
  f.rec.on_event_hook = free_hook;
  f.rec.hook_data = f.sup;
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  ASSERT(rec_wait_kind(&f.rec, DEVRIG_EVENT_RUNNING, 0, slow(10000)) >= 0);
  int pid = (int)f.rec.ev[0].pid;
  CHECKF(wait_pid_gone(pid, slow(10000)), "child %d still alive", pid);
  int64_t deadline = mono_ms() + slow(5000);
  while (pgrp_live_members(pid) > 0 && mono_ms() < deadline) sleep_ms(10);
  CHECK_EQ(pgrp_live_members(pid), 0);
  sleep_ms(200); /* nothing more may arrive; give it a chance to */
  pthread_mutex_lock(&f.rec.mu);
  size_t n = f.rec.nev;
  pthread_mutex_unlock(&f.rec.mu);
  CHECK_EQ(n, 2); /* STARTED RUNNING, nothing after the free */
  rec_destroy(&f.rec);
}

static void test_env_and_working_dir(void) {
  fixture f;
  char *dir = temp_dir("devrig-cwd");
  ASSERT(fixture_make(&f, "envwd", "echo \"$FOO|$BAR|$(pwd)\"; exec 3</dev/null; read x; echo \"read=$?\"",
              fast_policy(DEVRIG_RESTART_NEVER)));
  CHECK_ST(devrig_set_env(f.sup, "FOO", "one"), DEVRIG_OK);
  CHECK_ST(devrig_set_env(f.sup, "BAR", "two"), DEVRIG_OK);
  CHECK_ST(devrig_set_env(f.sup, "FOO", "three"), DEVRIG_OK); /* replaces */
  CHECK_ST(devrig_set_working_dir(f.sup, dir), DEVRIG_OK);
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  ASSERT(f.rec.nln == 2);
  char want[600];
  snprintf(want, sizeof want, "three|two|%s", dir);
  CHECKF(strcmp(f.rec.ln[0].text, want) == 0, "got \"%s\" want \"%s\"", f.rec.ln[0].text, want);
  CHECK(strcmp(f.rec.ln[1].text, "read=1") == 0); /* stdin is /dev/null: EOF */
  fixture_done(&f);
  rm_rf(dir);
  free(dir);
}

/* After fork() in the host, the child's copy of a handle is inert. */
static void test_fork_child_handle_inert(void) {
  fixture f;
  ASSERT(fixture_make(&f, "forked", "sleep 30", fast_policy(DEVRIG_RESTART_ALWAYS)));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  ASSERT(rec_wait_kind(&f.rec, DEVRIG_EVENT_RUNNING, 0, slow(10000)) >= 0);
  int svc = (int)f.rec.ev[0].pid;
  pid_t c = fork();
  if (c == 0) {
    int code = 0;
    if (devrig_cancel(f.sup) != DEVRIG_E_STATE) code |= 1;
    devrig_free(f.sup); /* only releases memory */
    _exit(code);
  }
  int status = -1;
  CHECK(waitpid(c, &status, 0) == c);
  CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
  CHECK(pid_alive(svc)); /* the parent's service was not touched */
  CHECK(rec_wait_kind(&f.rec, DEVRIG_EVENT_STOPPING, 0, 0) < 0);
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(f.sup, slow(10000)), DEVRIG_OK);
  CHECK_NO_SURVIVORS(&f.rec);
  fixture_done(&f);
}

/* A write to a closed pipe from a callback (a library thread) gives EPIPE
 * and does not kill the host. */
static int epipe_result = 0;

static void epipe_log(void *ud, const devrig_log_line *l) {
  (void)l;
  int *fds = (int *)ud;
  ssize_t n = write(fds[1], "x", 1);
  epipe_result = (n == -1 && errno == EPIPE) ? 1 : -1;
}

static void test_sigpipe_does_not_kill_host(void) {
  int fds[2];
  ASSERT(pipe(fds) == 0);
  close(fds[0]);
  devrig_supervisor *s = devrig_new("epipe", "echo one");
  ASSERT(s != NULL);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_NEVER);
  devrig_set_policy(s, &p);
  CHECK_ST(devrig_on_log(s, epipe_log, fds), DEVRIG_OK);
  CHECK_ST(devrig_run(s), DEVRIG_OK);
  CHECK_EQ(epipe_result, 1);
  close(fds[1]);
  devrig_free(s);
}

/* A slow callback slows only its own service. */
static volatile int slow_calls;

static void slow_log(void *ud, const devrig_log_line *l) {
  (void)ud;
  (void)l;
  slow_calls++;
  sleep_ms(2000);
}

static void test_slow_callback_isolated(void) {
  devrig_supervisor *a = devrig_new("slowcb", "echo a; sleep 30");
  ASSERT(a != NULL);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_NEVER);
  devrig_set_policy(a, &p);
  devrig_set_multiline(a, false);
  CHECK_ST(devrig_on_log(a, slow_log, NULL), DEVRIG_OK);
  slow_calls = 0;
  CHECK_ST(devrig_start(a), DEVRIG_OK);
  int64_t deadline = mono_ms() + slow(10000);
  while (slow_calls == 0 && mono_ms() < deadline) sleep_ms(5);
  CHECK(slow_calls > 0); /* a's callback is now blocked for 2 s */
  fixture f;
  ASSERT(fixture_make(&f, "fastcb", "seq 1 1000", fast_policy(DEVRIG_RESTART_NEVER)));
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  int64_t took = mono_ms() - t0;
  CHECKF(took < slow(1500), "the other handle took %lld ms", (long long)took);
  CHECK_EQ(f.rec.nln, 1000);
  fixture_done(&f);
  devrig_cancel(a);
  CHECK_ST(devrig_wait(a, slow(20000)), DEVRIG_OK);
  devrig_free(a);
}

int main(void) {
  RUN(test_completed_on_failure_exit0);
  RUN(test_never_nonzero);
  RUN(test_never_killed_by_signal);
  RUN(test_always_restarts_exit0);
  RUN(test_restart_budget);
  RUN(test_max_restarts_zero);
  RUN(test_startup_failures);
  RUN(test_crash_loop);
  RUN(test_first_spawn_fails);
  RUN(test_workdir_removed_before_respawn);
  RUN(test_backoff_bounds_and_delays);
  RUN(test_cancel_latency);
  RUN(test_cancel_before_run);
  RUN(test_cancel_during_backoff);
  RUN(test_sigterm_ignored_gets_sigkill);
  RUN(test_escaped_grandchild_at_stop);
  RUN(test_escaped_grandchild_holding_pipe);
  RUN(test_leftovers_stopped_before_restart);
  RUN(test_cancel_from_callback);
  RUN(test_outcome_set_when_terminal_event_emitted);
  RUN(test_start_from_callback_reports_spawn_failure);
  RUN(test_cancel_from_signal_handler);
  RUN(test_free_running_handle);
  RUN(test_free_from_callback);
  RUN(test_env_and_working_dir);
  RUN(test_fork_child_handle_inert);
  RUN(test_sigpipe_does_not_kill_host);
  RUN(test_slow_callback_isolated);
  return test_summary();
}
