/* test_api.c: every function of devrig.h with good and bad input, calls in
 * the wrong state, and the process utilities (kill_tree, start times, PID
 * file). */
#include "testlib.h"

static const char BAD_UTF8[] = {'a', (char)0xff, (char)0xfe, 'b', 0};

static void test_version_and_last_error(void) {
  CHECK(strcmp(devrig_version(), DEVRIG_VERSION_STRING) == 0);
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", DEVRIG_VERSION_MAJOR, DEVRIG_VERSION_MINOR,
           DEVRIG_VERSION_PATCH);
  CHECK(strcmp(devrig_version(), want) == 0);
  CHECK(devrig_last_error() != NULL);
  /* A failing call sets it; a later successful call leaves it unchanged. */
  CHECK_ERR(devrig_restart_mode_parse(NULL, NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  devrig_restart_mode m;
  CHECK_ST(devrig_restart_mode_parse("always", &m), DEVRIG_OK);
  CHECK(strstr(devrig_last_error(), "NULL") != NULL);
}

static void *other_thread_error(void *arg) {
  (void)arg;
  /* A fresh thread has no failure yet. */
  return (void *)(intptr_t)(strcmp(devrig_last_error(), "") == 0);
}

static void test_last_error_is_per_thread(void) {
  CHECK_ERR(devrig_set_multiline(NULL, true), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  pthread_t t;
  void *res = NULL;
  pthread_create(&t, NULL, other_thread_error, NULL);
  pthread_join(t, &res);
  CHECK(res == (void *)1);
}

static void test_default_policy(void) {
  devrig_restart_policy p = devrig_default_policy();
  CHECK_EQ(p.mode, DEVRIG_RESTART_ON_FAILURE);
  CHECK_EQ(p.max_restarts, 10);
  CHECK_EQ(p.startup_max_restarts, 3);
  CHECK_EQ(p.startup_grace_ms, 2000);
  CHECK_EQ(p.initial_delay_ms, 500);
  CHECK_EQ(p.max_delay_ms, 30000);
  CHECK_EQ(p.reset_after_ms, 60000);
  CHECK_EQ(p.crash_loop_limit, 5);
  CHECK_EQ(p.crash_loop_window_ms, 30000);
}

static void test_restart_mode_parse(void) {
  devrig_restart_mode m = (devrig_restart_mode)99;
  CHECK_ST(devrig_restart_mode_parse("on-failure", &m), DEVRIG_OK);
  CHECK_EQ(m, DEVRIG_RESTART_ON_FAILURE);
  CHECK_ST(devrig_restart_mode_parse("always", &m), DEVRIG_OK);
  CHECK_EQ(m, DEVRIG_RESTART_ALWAYS);
  CHECK_ST(devrig_restart_mode_parse("never", &m), DEVRIG_OK);
  CHECK_EQ(m, DEVRIG_RESTART_NEVER);
  m = (devrig_restart_mode)99;
  CHECK_ERR(devrig_restart_mode_parse("sometimes", &m), DEVRIG_E_INVALID_ARGUMENT,
            "sometimes");
  CHECK_EQ(m, 99); /* output written only on success */
  CHECK_ST(devrig_restart_mode_parse("", &m), DEVRIG_E_INVALID_ARGUMENT);
  CHECK_ST(devrig_restart_mode_parse("ALWAYS ", &m), DEVRIG_E_INVALID_ARGUMENT);
  CHECK_ERR(devrig_restart_mode_parse(NULL, &m), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_restart_mode_parse("never", NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_restart_mode_parse(BAD_UTF8, &m), DEVRIG_E_INVALID_ARGUMENT, "UTF-8");
  CHECK_EQ(m, 99);
}

static void test_new_bad_input(void) {
  struct {
    const char *name, *cmd, *needle;
  } bad[] = {
      {NULL, "true", "NULL"},
      {"svc", NULL, "NULL"},
      {"", "true", "\"\""},
      {"../x", "true", "../x"},
      {"a/b", "true", "a/b"},
      {".hidden", "true", ".hidden"},
      {"a b", "true", "a b"},
      {"svc", "", "empty"},
      {"svc", "   ", "empty"},
      {BAD_UTF8, "true", "UTF-8"},
      {"svc", BAD_UTF8, "UTF-8"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    devrig_supervisor *s = devrig_new(bad[i].name, bad[i].cmd);
    CHECKF(s == NULL, "case %zu accepted", i);
    CHECKF(strstr(devrig_last_error(), bad[i].needle) != NULL,
           "case %zu: last_error \"%s\" lacks \"%s\"", i, devrig_last_error(),
           bad[i].needle);
    devrig_free(s);
  }
  char longname[200];
  memset(longname, 'a', 129);
  longname[129] = 0;
  CHECK(devrig_new(longname, "true") == NULL);
  longname[128] = 0;
  devrig_supervisor *s = devrig_new(longname, "true");
  CHECK(s != NULL);
  devrig_free(s);
  s = devrig_new("svc.v2_a-b@c+d", "true");
  CHECK(s != NULL);
  devrig_free(s);
  devrig_free(NULL); /* ignored */
}

static void test_setters_bad_input(void) {
  devrig_supervisor *s = devrig_new("setters", "true");
  ASSERT(s != NULL);
  /* NULL handle, for every function taking one */
  CHECK_ERR(devrig_set_working_dir(NULL, "/tmp"), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_set_env(NULL, "K", "V"), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  devrig_restart_policy p = devrig_default_policy();
  CHECK_ERR(devrig_set_policy(NULL, &p), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_set_state_dir(NULL, "/tmp/x"), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_set_stop_grace_ms(NULL, 1), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_set_multiline(NULL, false), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_set_max_line_bytes(NULL, 10), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_on_log(NULL, rec_log_cb, NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_on_log_batch(NULL, NULL, NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_on_event(NULL, rec_event_cb, NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_run(NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_start(NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_wait(NULL, 0), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_cancel(NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  devrig_outcome o;
  CHECK_ERR(devrig_outcome_get(NULL, &o), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_outcome_get(s, NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");

  /* NULL and invalid UTF-8 strings */
  CHECK_ERR(devrig_set_working_dir(s, NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_set_working_dir(s, BAD_UTF8), DEVRIG_E_INVALID_ARGUMENT, "UTF-8");
  CHECK_ERR(devrig_set_env(s, NULL, "v"), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_set_env(s, "K", NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_set_env(s, BAD_UTF8, "v"), DEVRIG_E_INVALID_ARGUMENT, "UTF-8");
  CHECK_ERR(devrig_set_env(s, "K", BAD_UTF8), DEVRIG_E_INVALID_ARGUMENT, "UTF-8");
  CHECK_ERR(devrig_set_env(s, "", "v"), DEVRIG_E_INVALID_ARGUMENT, "key");
  CHECK_ERR(devrig_set_env(s, "A=B", "v"), DEVRIG_E_INVALID_ARGUMENT, "A=B");
  CHECK_ERR(devrig_set_state_dir(s, NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_set_state_dir(s, BAD_UTF8), DEVRIG_E_INVALID_ARGUMENT, "UTF-8");
  /* a regular file in the way: cannot be created (DEVRIG_E_IO naming it) */
  CHECK_ERR(devrig_set_state_dir(s, "/etc/passwd/state"), DEVRIG_E_IO, "/etc/passwd/state");
  /* a parent that cannot exist (ENOENT): still DEVRIG_E_IO, as documented */
  CHECK_ERR(devrig_set_state_dir(s, "/proc/devrig-none/state"), DEVRIG_E_IO,
            "/proc/devrig-none/state");
  CHECK_ERR(devrig_set_state_dir(s, ""), DEVRIG_E_INVALID_ARGUMENT, "\"\"");

  /* Bad policies are refused and name the bad value */
  CHECK_ERR(devrig_set_policy(s, NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  p = devrig_default_policy();
  p.initial_delay_ms = 1000;
  p.max_delay_ms = 999;
  CHECK_ERR(devrig_set_policy(s, &p), DEVRIG_E_INVALID_ARGUMENT, "max_delay_ms (999)");
  CHECK(strstr(devrig_last_error(), "initial_delay_ms (1000)") != NULL);
  p = devrig_default_policy();
  p.mode = (devrig_restart_mode)7;
  CHECK_ERR(devrig_set_policy(s, &p), DEVRIG_E_INVALID_ARGUMENT, "7");
  CHECK(strstr(devrig_last_error(), "mode") != NULL);
  p = devrig_default_policy();
  p.initial_delay_ms = p.max_delay_ms = 0; /* extremes are fine */
  CHECK_ST(devrig_set_policy(s, &p), DEVRIG_OK);
  p.max_restarts = 0;
  p.crash_loop_limit = 0;
  CHECK_ST(devrig_set_policy(s, &p), DEVRIG_OK);

  /* max_line_bytes range 1..2^30 */
  CHECK_ERR(devrig_set_max_line_bytes(s, 0), DEVRIG_E_INVALID_ARGUMENT, "0");
  CHECK_ERR(devrig_set_max_line_bytes(s, ((size_t)1 << 30) + 1), DEVRIG_E_INVALID_ARGUMENT,
            "1073741825");
  CHECK_ST(devrig_set_max_line_bytes(s, (size_t)1 << 30), DEVRIG_OK);
  CHECK_ST(devrig_set_max_line_bytes(s, 1), DEVRIG_OK);

  /* Good input */
  CHECK_ST(devrig_set_working_dir(s, "/does/not/exist/yet"), DEVRIG_OK); /* not checked */
  CHECK_ST(devrig_set_env(s, "K", "v"), DEVRIG_OK);
  CHECK_ST(devrig_set_env(s, "K", ""), DEVRIG_OK);
  CHECK_ST(devrig_set_stop_grace_ms(s, 0), DEVRIG_OK);
  CHECK_ST(devrig_set_multiline(s, false), DEVRIG_OK);
  CHECK_ST(devrig_on_log(s, NULL, NULL), DEVRIG_OK);
  CHECK_ST(devrig_on_log_batch(s, NULL, NULL), DEVRIG_OK);
  CHECK_ST(devrig_on_event(s, NULL, NULL), DEVRIG_OK);
  CHECK_ST(devrig_cancel(s), DEVRIG_OK);
  CHECK_ST(devrig_cancel(s), DEVRIG_OK);
  devrig_free(s);
}

static void test_wrong_state(void) {
  devrig_supervisor *s = devrig_new("state", "sleep 30");
  ASSERT(s != NULL);
  devrig_outcome o;
  memset(&o, 0xab, sizeof o);
  CHECK_ST(devrig_outcome_get(s, &o), DEVRIG_OK);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_NONE);
  CHECK(o.message != NULL);
  CHECK_ERR(devrig_wait(s, 0), DEVRIG_E_STATE, "");
  CHECK_ST(devrig_wait(s, -1), DEVRIG_E_STATE);
  CHECK_ST(devrig_set_stop_grace_ms(s, 1000), DEVRIG_OK);
  CHECK_ST(devrig_start(s), DEVRIG_OK);
  CHECK_ERR(devrig_wait(s, -2), DEVRIG_E_INVALID_ARGUMENT, "-2");
  CHECK_ST(devrig_wait(s, 0), DEVRIG_E_TIMEOUT);
  CHECK_ST(devrig_wait(s, 50), DEVRIG_E_TIMEOUT);
  devrig_restart_policy p = devrig_default_policy();
  CHECK_ST(devrig_set_working_dir(s, "/"), DEVRIG_E_STATE);
  CHECK_ST(devrig_set_env(s, "K", "V"), DEVRIG_E_STATE);
  CHECK_ST(devrig_set_policy(s, &p), DEVRIG_E_STATE);
  CHECK_ST(devrig_set_state_dir(s, "/tmp"), DEVRIG_E_STATE);
  CHECK_ST(devrig_set_stop_grace_ms(s, 1), DEVRIG_E_STATE);
  CHECK_ST(devrig_set_multiline(s, true), DEVRIG_E_STATE);
  CHECK_ST(devrig_set_max_line_bytes(s, 100), DEVRIG_E_STATE);
  CHECK_ST(devrig_on_log(s, NULL, NULL), DEVRIG_E_STATE);
  CHECK_ST(devrig_on_log_batch(s, NULL, NULL), DEVRIG_E_STATE);
  CHECK_ST(devrig_on_event(s, NULL, NULL), DEVRIG_E_STATE);
  CHECK_ST(devrig_start(s), DEVRIG_E_STATE);
  CHECK_ST(devrig_run(s), DEVRIG_E_STATE);
  CHECK_ST(devrig_outcome_get(s, &o), DEVRIG_OK);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_NONE);
  CHECK_ST(devrig_cancel(s), DEVRIG_OK);
  CHECK_ST(devrig_wait(s, 10000), DEVRIG_OK);
  CHECK_ST(devrig_wait(s, 0), DEVRIG_OK); /* again: still the run's status */
  CHECK_ST(devrig_cancel(s), DEVRIG_OK);  /* after the run */
  CHECK_ST(devrig_outcome_get(s, &o), DEVRIG_OK);
  CHECK_EQ(o.kind, DEVRIG_OUTCOME_CANCELLED);
  CHECK_ST(devrig_run(s), DEVRIG_E_STATE); /* after the end too */
  CHECK_ST(devrig_start(s), DEVRIG_E_STATE);
  CHECK_ST(devrig_set_multiline(s, true), DEVRIG_E_STATE);
  devrig_free(s);

  /* After devrig_run returned, a second run is refused */
  s = devrig_new("state2", "exit 0");
  ASSERT(s != NULL);
  CHECK_ST(devrig_run(s), DEVRIG_OK);
  CHECK_ERR(devrig_run(s), DEVRIG_E_STATE, "");
  CHECK(strlen(devrig_last_error()) > 0);
  CHECK_ST(devrig_start(s), DEVRIG_E_STATE);
  CHECK_ST(devrig_wait(s, 0), DEVRIG_OK);
  devrig_free(s);
}

/* Spawns a shell command as a direct child in its own process group; returns
 * its pid. */
static pid_t spawn_sh(const char *cmd) {
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  return pid;
}

static int children_of(int ppid, int *out, int cap) {
  DIR *d = opendir("/proc");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    proc_stat st;
    if (read_proc_stat((int)pid, &st) && st.ppid == ppid && n < cap) out[n++] = (int)pid;
  }
  if (d) closedir(d);
  return n;
}

static void test_kill_tree(void) {
  CHECK_ERR(devrig_kill_tree(0, 10), DEVRIG_E_INVALID_ARGUMENT, "0");
  CHECK_ERR(devrig_kill_tree((uint32_t)INT32_MAX + 1, 10), DEVRIG_E_INVALID_ARGUMENT,
            "2147483648");
  CHECK_ERR(devrig_kill_tree(UINT32_MAX, 10), DEVRIG_E_INVALID_ARGUMENT, "4294967295");
  /* No such process is not an error */
  CHECK_ST(devrig_kill_tree((uint32_t)INT32_MAX, 10), DEVRIG_OK);

  /* A small tree: sh with three sleeps and a nested sh with one more. */
  pid_t root = spawn_sh("sleep 60 & sleep 60 & sh -c 'sleep 60 & wait' & wait");
  ASSERT(root > 0);
  int kids[16];
  int n = 0;
  int64_t deadline = mono_ms() + 10000;
  while ((n = children_of(root, kids, 16)) < 3 && mono_ms() < deadline) sleep_ms(10);
  ASSERT(n == 3);
  int all[32], na = 0;
  all[na++] = root;
  for (int i = 0; i < n; i++) {
    all[na++] = kids[i];
    int gk[8];
    int64_t d2 = mono_ms() + 5000;
    int m = 0;
    proc_stat st;
    /* the nested sh gets its own sleep */
    if (read_proc_stat(kids[i], &st)) {
      char comm[64], path[64];
      snprintf(path, sizeof path, "/proc/%d/comm", kids[i]);
      FILE *f = fopen(path, "r");
      if (f && fgets(comm, sizeof comm, f) && strncmp(comm, "sh", 2) == 0) {
        while ((m = children_of(kids[i], gk, 8)) < 1 && mono_ms() < d2) sleep_ms(10);
      } else {
        m = children_of(kids[i], gk, 8);
      }
      if (f) fclose(f);
    }
    for (int j = 0; j < m; j++) all[na++] = gk[j];
  }
  CHECK_EQ(na, 5);
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_kill_tree((uint32_t)root, 5000), DEVRIG_OK);
  int64_t took = mono_ms() - t0;
  CHECKF(took < 3000, "kill_tree took %lld ms (should return early)", (long long)took);
  int status;
  CHECK(waitpid(root, &status, 0) == root); /* our child: reap it */
  for (int i = 1; i < na; i++) CHECKF(wait_pid_gone(all[i], 5000), "pid %d survived", all[i]);

  /* A child ignoring SIGTERM is SIGKILLed after the grace. */
  root = spawn_sh("trap '' TERM; sleep 60 & wait; wait");
  ASSERT(root > 0);
  deadline = mono_ms() + 10000;
  while ((n = children_of(root, kids, 16)) < 1 && mono_ms() < deadline) sleep_ms(10);
  ASSERT(n == 1);
  t0 = mono_ms();
  CHECK_ST(devrig_kill_tree((uint32_t)root, 300), DEVRIG_OK);
  took = mono_ms() - t0;
  CHECKF(took >= 250 && took < 5000, "took %lld ms", (long long)took);
  CHECK(waitpid(root, &status, 0) == root);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  CHECK(wait_pid_gone(kids[0], 5000));
}

static void test_start_time_and_same_process(void) {
  int64_t start = 0;
  CHECK_ERR(devrig_proc_start_time_ms((uint32_t)getpid(), NULL), DEVRIG_E_INVALID_ARGUMENT,
            "NULL");
  CHECK_ST(devrig_proc_start_time_ms((uint32_t)getpid(), &start), DEVRIG_OK);
  int64_t now = wall_ms();
  CHECKF(start > now - 600000 && start <= now + 1000, "start %lld now %lld",
         (long long)start, (long long)now);
  int64_t again = 0;
  CHECK_ST(devrig_proc_start_time_ms((uint32_t)getpid(), &again), DEVRIG_OK);
  CHECK_EQ(again, start);
  int64_t untouched = 12345;
  CHECK_ST(devrig_proc_start_time_ms((uint32_t)INT32_MAX, &untouched), DEVRIG_E_NOT_FOUND);
  CHECK_EQ(untouched, 12345);
  CHECK_ST(devrig_proc_start_time_ms(0, &untouched), DEVRIG_E_INVALID_ARGUMENT);
  CHECK_ST(devrig_proc_start_time_ms(UINT32_MAX, &untouched), DEVRIG_E_INVALID_ARGUMENT);

  CHECK(devrig_same_process((uint32_t)getpid(), start));
  CHECK(devrig_same_process((uint32_t)getpid(), 0));
  CHECK(!devrig_same_process((uint32_t)getpid(), start - 5000));
  CHECK(!devrig_same_process((uint32_t)getpid(), start + 5000));
  CHECK(!devrig_same_process(0, 0));
  CHECK(!devrig_same_process(UINT32_MAX, 0));
  CHECK(!devrig_same_process((uint32_t)INT32_MAX, 0));

  /* A child started later has a later (or equal) start time; a zombie is
   * not alive. */
  pid_t c = fork();
  if (c == 0) {
    pause();
    _exit(0);
  }
  int64_t cs = 0;
  CHECK_ST(devrig_proc_start_time_ms((uint32_t)c, &cs), DEVRIG_OK);
  CHECK(cs >= start);
  CHECK(devrig_same_process((uint32_t)c, cs));
  kill(c, SIGKILL);
  /* wait until it is a zombie, then check */
  int64_t deadline = mono_ms() + 5000;
  while (pid_alive(c) && mono_ms() < deadline) sleep_ms(5);
  CHECK(!devrig_same_process((uint32_t)c, cs));
  CHECK(!devrig_same_process((uint32_t)c, 0));
  waitpid(c, NULL, 0);
  CHECK(!devrig_same_process((uint32_t)c, 0));
}

static void test_pid_file_path(void) {
  char buf[64];
  const char *want = "/var/run/x/devrig.pid";
  size_t wl = strlen(want);
  CHECK_EQ(devrig_pid_file_path("/var/run/x", buf, sizeof buf), wl);
  CHECK(strcmp(buf, want) == 0);
  /* cap 0 with NULL buf: just the length */
  CHECK_EQ(devrig_pid_file_path("/var/run/x", NULL, 0), wl);
  /* cap 0 with a buffer: untouched */
  memset(buf, 'Z', sizeof buf);
  CHECK_EQ(devrig_pid_file_path("/var/run/x", buf, 0), wl);
  CHECK(buf[0] == 'Z');
  /* truncation: cap-1 bytes and a NUL, return the full length */
  memset(buf, 'Z', sizeof buf);
  CHECK_EQ(devrig_pid_file_path("/var/run/x", buf, 5), wl);
  CHECK(memcmp(buf, "/var", 4) == 0 && buf[4] == 0 && buf[5] == 'Z');
  memset(buf, 'Z', sizeof buf);
  CHECK_EQ(devrig_pid_file_path("/var/run/x", buf, 1), wl);
  CHECK(buf[0] == 0 && buf[1] == 'Z');
  /* exact fit */
  CHECK_EQ(devrig_pid_file_path("/var/run/x", buf, wl + 1), wl);
  CHECK(strcmp(buf, want) == 0);
  memset(buf, 'Z', sizeof buf);
  CHECK_EQ(devrig_pid_file_path("/var/run/x", buf, wl), wl);
  CHECK(strncmp(buf, want, wl - 1) == 0 && buf[wl - 1] == 0);
  /* relative directory */
  CHECK_EQ(devrig_pid_file_path("state", buf, sizeof buf), strlen("state/devrig.pid"));
  CHECK(strcmp(buf, "state/devrig.pid") == 0);
  /* bad input returns 0 and sets last_error */
  CHECK_EQ(devrig_pid_file_path(NULL, buf, sizeof buf), 0);
  CHECK(strstr(devrig_last_error(), "NULL") != NULL);
  CHECK_EQ(devrig_pid_file_path("/x", NULL, 10), 0);
  CHECK(strstr(devrig_last_error(), "buf") != NULL);
  CHECK_EQ(devrig_pid_file_path(BAD_UTF8, buf, sizeof buf), 0);
  CHECK(strstr(devrig_last_error(), "UTF-8") != NULL);
  /* "" is refused everywhere rather than taken as the current directory */
  CHECK_EQ(devrig_pid_file_path("", buf, sizeof buf), 0);
  CHECK(strstr(devrig_last_error(), "empty") != NULL);
}

static void test_pid_file_write_remove(void) {
  char *dir = temp_dir("devrig-pidfile");
  char nested[512], path[600];
  snprintf(nested, sizeof nested, "%s/a/b/c", dir);
  size_t need = devrig_pid_file_path(nested, NULL, 0);
  ASSERT(need < sizeof path);
  CHECK_EQ(devrig_pid_file_path(nested, path, sizeof path), need);
  CHECK_ST(devrig_remove_pid_file(nested), DEVRIG_OK); /* absent, dir missing: fine */
  CHECK_ST(devrig_write_pid_file(nested), DEVRIG_OK);  /* creates a/b/c */
  char *content = read_file(path);
  ASSERT(content != NULL);
  char want[32];
  snprintf(want, sizeof want, "%d", (int)getpid());
  /* the decimal pid alone, as devrig wrote it (Go's strconv.Atoi reads it) */
  CHECKF(strcmp(content, want) == 0, "content \"%s\"", content);
  free(content);
  CHECK_ST(devrig_write_pid_file(nested), DEVRIG_OK); /* overwrite */
  CHECK_ST(devrig_remove_pid_file(nested), DEVRIG_OK);
  CHECK(access(path, F_OK) != 0);
  CHECK_ST(devrig_remove_pid_file(nested), DEVRIG_OK); /* absent again */
  CHECK_ERR(devrig_write_pid_file(NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_remove_pid_file(NULL), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_write_pid_file(BAD_UTF8), DEVRIG_E_INVALID_ARGUMENT, "UTF-8");
  CHECK_ERR(devrig_remove_pid_file(BAD_UTF8), DEVRIG_E_INVALID_ARGUMENT, "UTF-8");
  CHECK_ERR(devrig_write_pid_file("/etc/passwd/dir"), DEVRIG_E_IO, "/etc/passwd/dir");
  CHECK_ERR(devrig_write_pid_file(""), DEVRIG_E_INVALID_ARGUMENT, "empty");
  CHECK_ERR(devrig_remove_pid_file(""), DEVRIG_E_INVALID_ARGUMENT, "empty");
  rm_rf(dir);
  free(dir);
}

static void test_reap_orphans_bad_input(void) {
  uint32_t n = 77;
  CHECK_ERR(devrig_reap_orphans(NULL, 10, &n), DEVRIG_E_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(devrig_reap_orphans(BAD_UTF8, 10, &n), DEVRIG_E_INVALID_ARGUMENT, "UTF-8");
  CHECK_ERR(devrig_reap_orphans("", 10, &n), DEVRIG_E_INVALID_ARGUMENT, "empty");
  CHECK_ERR(devrig_reap_orphans("/etc/passwd", 10, &n), DEVRIG_E_NOT_FOUND, "not a directory");
  CHECK_ERR(devrig_reap_orphans("/no/such/state/dir", 10, &n), DEVRIG_E_NOT_FOUND,
            "/no/such/state/dir");
  CHECK_EQ(n, 77);
  char *dir = temp_dir("devrig-reap-empty");
  CHECK_ST(devrig_reap_orphans(dir, 10, &n), DEVRIG_OK);
  CHECK_EQ(n, 0);
  CHECK_ST(devrig_reap_orphans(dir, 10, NULL), DEVRIG_OK);
  rm_rf(dir);
  free(dir);
}

int main(void) {
  RUN(test_version_and_last_error);
  RUN(test_last_error_is_per_thread);
  RUN(test_default_policy);
  RUN(test_restart_mode_parse);
  RUN(test_new_bad_input);
  RUN(test_setters_bad_input);
  RUN(test_wrong_state);
  RUN(test_kill_tree);
  RUN(test_start_time_and_same_process);
  RUN(test_pid_file_path);
  RUN(test_pid_file_write_remove);
  RUN(test_reap_orphans_bad_input);
  return test_summary();
}
