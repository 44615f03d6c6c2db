/* test_state.c: state-directory records, a host SIGKILLed mid-run and
 * reap_orphans afterwards, a recorded pid reused by another process. */
#include "testlib.h"

static char helper[512];

/* The value of `key` in a record (static buffer), or NULL. */
static const char *record_get(const char *text, const char *key) {
  static char val[256];
  size_t kl = strlen(key);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
    if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
      const char *e = strchr(p, '\n');
      size_t n = e ? (size_t)(e - p - kl - 1) : strlen(p + kl + 1);
      if (n >= sizeof val) n = sizeof val - 1;
      memcpy(val, p + kl + 1, n);
      val[n] = 0;
      return val;
    }
  }
  return NULL;
}

/* Waits until the record of `name` has phase `phase`; returns its text. */
static char *wait_record(const char *dir, const char *name, const char *phase, int64_t timeout) {
  char path[600];
  snprintf(path, sizeof path, "%s/services/%s.state", dir, name);
  int64_t deadline = mono_ms() + timeout;
  for (;;) {
    char *t = read_file(path);
    if (t) {
      const char *ph = record_get(t, "phase");
      if (ph && strcmp(ph, phase) == 0) return t;
      free(t);
    }
    if (mono_ms() > deadline) return NULL;
    sleep_ms(10);
  }
}

static void test_record_written(void) {
  char *dir = temp_dir("devrig-state");
  recorder r;
  rec_init(&r);
  devrig_supervisor *s = devrig_new("recorded", "echo hi; sleep 30");
  ASSERT(s != NULL);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ALWAYS);
  devrig_set_policy(s, &p);
  CHECK_ST(devrig_set_state_dir(s, dir), DEVRIG_OK);
  rec_attach(&r, s);
  CHECK_ST(devrig_start(s), DEVRIG_OK);
  ASSERT(rec_wait_kind(&r, DEVRIG_EVENT_RUNNING, 0, 10000) >= 0);
  char *t = wait_record(dir, "recorded", "running", 10000);
  CHECK(t != NULL);
  if (t) {
    char want[32];
    snprintf(want, sizeof want, "%u", r.ev[0].pid);
    CHECK(strcmp(record_get(t, "pid"), want) == 0);
    CHECK(strcmp(record_get(t, "service"), "recorded") == 0);
    int64_t start = 0;
    CHECK_ST(devrig_proc_start_time_ms(r.ev[0].pid, &start), DEVRIG_OK);
    CHECK_EQ(strtoll(record_get(t, "start_ms"), NULL, 10), start);
    proc_stat st;
    CHECK(read_proc_stat((int)r.ev[0].pid, &st));
    CHECK_EQ(strtoull(record_get(t, "start_ticks"), NULL, 10), st.start_ticks);
    free(t);
  }
  CHECK_ST(devrig_cancel(s), DEVRIG_OK);
  CHECK_ST(devrig_wait(s, 10000), DEVRIG_OK);
  t = wait_record(dir, "recorded", "stopped", 0);
  CHECK(t != NULL);
  if (t) {
    CHECK(strcmp(record_get(t, "last_signal"), "15") == 0);
    free(t);
  }
  devrig_free(s);
  rec_destroy(&r);

  /* a completed run records its exit code */
  s = devrig_new("recorded2", "exit 4");
  ASSERT(s != NULL);
  p = fast_policy(DEVRIG_RESTART_NEVER);
  devrig_set_policy(s, &p);
  CHECK_ST(devrig_set_state_dir(s, dir), DEVRIG_OK);
  CHECK_ST(devrig_run(s), DEVRIG_OK);
  t = wait_record(dir, "recorded2", "stopped", 0);
  CHECK(t != NULL);
  if (t) {
    CHECK(strcmp(record_get(t, "last_exit_code"), "4") == 0);
    free(t);
  }
  devrig_free(s);
  /* records of supervisors that ended are not orphans */
  uint32_t n = 99;
  CHECK_ST(devrig_reap_orphans(dir, 1000, &n), DEVRIG_OK);
  CHECK_EQ(n, 0);
  rm_rf(dir);
  free(dir);
}

/* Starts state_host; returns its pid and a FILE reading its stdout. */
static pid_t start_host(const char *dir, const char *name, const char *cmd, FILE **out) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    execl(helper, helper, dir, name, cmd, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  *out = fdopen(fds[0], "r");
  return pid;
}

/* Reads host lines until one starts with `prefix`; returns the number after
 * it, or -1 (EOF). */
static long read_host(FILE *f, const char *prefix) {
  char line[512];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, prefix, strlen(prefix)) == 0) return strtol(line + strlen(prefix), NULL, 10);
  }
  return -1;
}

static void test_host_killed_then_reap_orphans(void) {
  char *dir = temp_dir("devrig-orphans");
  FILE *out = NULL;
  /* main sh, a background sleep in its group, an escaped (setsid) one */
  pid_t host = start_host(dir, "orphan",
                          "sleep 60 & echo bg $!; (setsid sh -c 'echo esc $$; exec sleep 60' &); "
                          "sleep 60",
                          &out);
  ASSERT(host > 0 && out != NULL);
  long main_pid = read_host(out, "started ");
  long bg = read_host(out, "line bg ");
  long esc = read_host(out, "line esc ");
  ASSERT(main_pid > 0 && bg > 0 && esc > 0);
  char *rec = wait_record(dir, "orphan", "running", 10000);
  CHECK(rec != NULL);
  free(rec);
  kill(host, SIGKILL);
  int status;
  CHECK(waitpid(host, &status, 0) == host && WIFSIGNALED(status));
  fclose(out);
  /* the service outlived its host */
  CHECK(pid_alive((int)main_pid) && pid_alive((int)bg) && pid_alive((int)esc));
  uint32_t n = 0;
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_reap_orphans(dir, 2000, &n), DEVRIG_OK);
  CHECK_EQ(n, 1);
  CHECK(mono_ms() - t0 < 5000);
  CHECK(wait_pid_gone((int)main_pid, 5000));
  CHECK(wait_pid_gone((int)bg, 5000));
  CHECKF(wait_pid_gone((int)esc, 5000), "escaped %ld survived reap_orphans", esc);
  CHECK_EQ(pgrp_live_members((int)main_pid), 0);
  /* the record is gone; a second reap finds nothing */
  char path[600];
  snprintf(path, sizeof path, "%s/services/orphan.state", dir);
  CHECK(access(path, F_OK) != 0);
  CHECK_ST(devrig_reap_orphans(dir, 2000, &n), DEVRIG_OK);
  CHECK_EQ(n, 0);
  rm_rf(dir);
  free(dir);
}

static void write_record(const char *dir, const char *name, long pid,
                         unsigned long long ticks) {
  char path[600], boot[64] = "";
  snprintf(path, sizeof path, "%s/services", dir);
  mkdir(path, 0700);
  FILE *b = fopen("/proc/sys/kernel/random/boot_id", "r");
  if (b) {
    if (fgets(boot, sizeof boot, b)) boot[strcspn(boot, "\n")] = 0;
    fclose(b);
  }
  snprintf(path, sizeof path, "%s/services/%s.state", dir, name);
  FILE *f = fopen(path, "w");
  fprintf(f,
          "devrig-state 1\nservice=%s\npid=%ld\nstart_ms=0\nstart_ticks=%llu\nboot_id=%s\n"
          "phase=running\nlast_exit_code=0\nlast_signal=0\n"
          "tag=DEVRIG_TEST_NO_SUCH_TAG_%d\nhost_pid=1\nupdated_ms=0\n",
          name, pid, ticks, boot, (int)getpid());
  fclose(f);
}

static void test_reused_pid_not_touched(void) {
  char *dir = temp_dir("devrig-reuse");
  pid_t other = fork();
  if (other == 0) {
    execl("/bin/sleep", "sleep", "30", (char *)NULL);
    _exit(127);
  }
  ASSERT(other > 0);
  proc_stat st;
  int64_t deadline = mono_ms() + 5000;
  /* wait for the exec so the start time is final */
  while (mono_ms() < deadline) {
    char comm[64] = "", p[64];
    snprintf(p, sizeof p, "/proc/%d/comm", (int)other);
    FILE *f = fopen(p, "r");
    if (f) {
      if (!fgets(comm, sizeof comm, f)) comm[0] = 0;
      fclose(f);
    }
    if (strncmp(comm, "sleep", 5) == 0) break;
    sleep_ms(5);
  }
  ASSERT(read_proc_stat(other, &st));
  /* The record names this pid but another start time: a reused pid. */
  write_record(dir, "reused", other, st.start_ticks + 1);
  uint32_t n = 99;
  CHECK_ST(devrig_reap_orphans(dir, 500, &n), DEVRIG_OK);
  CHECK_EQ(n, 0);
  CHECK(pid_alive(other));
  /* With the right start time it is the same process: reaped. */
  write_record(dir, "same", other, st.start_ticks);
  CHECK_ST(devrig_reap_orphans(dir, 2000, &n), DEVRIG_OK);
  CHECK_EQ(n, 1);
  int status = 0;
  CHECK(waitpid(other, &status, 0) == other); /* still ours to reap */
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
  rm_rf(dir);
  free(dir);
}

int main(int argc, char **argv) {
  (void)argc;
  /* state_host lives beside this program */
  snprintf(helper, sizeof helper, "%s", argv[0]);
  char *slash = strrchr(helper, '/');
  snprintf(slash ? slash + 1 : helper, sizeof helper - (size_t)(slash ? slash + 1 - helper : 0),
           "state_host");
  RUN(test_record_written);
  RUN(test_host_killed_then_reap_orphans);
  RUN(test_reused_pid_not_touched);
  return test_summary();
}
