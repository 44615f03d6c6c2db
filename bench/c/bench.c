/* libdevrig benchmark rows in C: the limit rows (raw syscalls) and the
 * libdevrig C rows. One workload row per invocation; prints one JSON line.
 *
 *   bench w1-limit|w1-devrig|w1-devrig-batch WRITER N
 *   bench w2-limit|w2-devrig CYCLES
 *   bench w3-devrig N
 *   bench w4-limit|w4-devrig STOPS
 *   bench w5-limit|w5-devrig TREES
 *   bench burn-pids BELOW  (not a row: see w3_wrapped in harness.py)
 */
#define _GNU_SOURCE
#include <devrig.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "bench: %s: %s (%s)\n", what, strerror(errno), devrig_last_error());
    exit(1);
}

static void check(devrig_status st, const char *what) {
    if (st != DEVRIG_OK) {
        fprintf(stderr, "bench: %s: status %d: %s\n", what, (int)st, devrig_last_error());
        exit(1);
    }
}

static void raise_nofile(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

/* posix_spawn("/bin/sh -c cmd"); stdout to out_fd if >= 0; own group if pgroup. */
static pid_t spawn_sh(const char *cmd, int out_fd, int pgroup) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    if (out_fd >= 0) posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    if (pgroup) {
        posix_spawnattr_setpgroup(&attr, 0);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    }
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    pid_t pid;
    int e = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (e) { errno = e; die("posix_spawn"); }
    return pid;
}

static long status_field(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') { v = atol(line + kl + 1); break; }
    if (f) fclose(f);
    return v;
}

static double cpu_secs(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static devrig_restart_policy quiet_policy(void) {
    devrig_restart_policy p = devrig_default_policy();
    p.mode = DEVRIG_RESTART_NEVER;
    p.startup_grace_ms = 0;
    return p;
}

/* ---------------- W1 log throughput ---------------- */

static void w1_limit(const char *writer, long n) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec %s %ld", writer, n);
    int p[2];
    if (pipe2(p, O_CLOEXEC)) die("pipe");
    static char buf[64 * 1024];
    double t0 = now();
    pid_t pid = spawn_sh(cmd, p[1], 1);
    close(p[1]);
    long count = 0;
    double t1 = 0;
    for (;;) {
        ssize_t r = read(p[0], buf, sizeof buf);
        if (r < 0) { if (errno == EINTR) continue; die("read"); }
        if (r == 0) break;
        char *s = buf, *e = buf + r;
        while ((s = memchr(s, '\n', (size_t)(e - s)))) { count++; s++; }
        if (count == n && t1 == 0) t1 = now();
    }
    close(p[0]);
    waitpid(pid, NULL, 0);
    double secs = t1 - t0;
    printf("{\"lines\":%ld,\"lost\":%ld,\"secs\":%.6f,\"rate\":%.1f}\n", count, n - count, secs, count / secs);
}

struct w1 { long count, bad, n; double t1; };

static void w1_line(void *ud, const devrig_log_line *l) {
    struct w1 *w = ud;
    if (l->len != 63 || l->text[0] != 'l') w->bad++;
    if (++w->count == w->n) w->t1 = now();
}

static void w1_batch(void *ud, const devrig_log_line *ls, size_t k) {
    struct w1 *w = ud;
    for (size_t i = 0; i < k; i++) {
        if (ls[i].len != 63 || ls[i].text[0] != 'l') w->bad++;
        if (++w->count == w->n) w->t1 = now();
    }
}

static void w1_devrig(const char *writer, long n, int batch) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec %s %ld", writer, n);
    struct w1 w = {0, 0, n, 0};
    devrig_supervisor *s = devrig_new("w1", cmd);
    if (!s) die("devrig_new");
    devrig_restart_policy p = quiet_policy();
    check(devrig_set_policy(s, &p), "policy");
    if (batch) check(devrig_on_log_batch(s, w1_batch, &w), "on_log_batch");
    else check(devrig_on_log(s, w1_line, &w), "on_log");
    double t0 = now();
    check(devrig_run(s), "run");
    devrig_free(s);
    double secs = w.t1 - t0;
    printf("{\"lines\":%ld,\"lost\":%ld,\"bad\":%ld,\"secs\":%.6f,\"rate\":%.1f}\n",
           w.count, n - w.count, w.bad, secs, w.count / secs);
}

/* ---------------- W2 restart churn ---------------- */

static void w2_limit(long cycles) {
    double t0 = now();
    for (long i = 0; i < cycles; i++) {
        pid_t pid = spawn_sh("exit 1", -1, 1);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    }
    double secs = now() - t0;
    printf("{\"cycles\":%ld,\"secs\":%.6f,\"rate\":%.1f}\n", cycles, secs, cycles / secs);
}

static void count_started(void *ud, const devrig_event *e) {
    if (e->kind == DEVRIG_EVENT_STARTED) (*(long *)ud)++;
}

static void w2_devrig(long cycles) {
    devrig_supervisor *s = devrig_new("w2", "exit 1");
    if (!s) die("devrig_new");
    devrig_restart_policy p = devrig_default_policy();
    p.mode = DEVRIG_RESTART_ALWAYS;
    p.max_restarts = (uint32_t)(cycles - 1);
    p.startup_max_restarts = UINT32_MAX;
    p.startup_grace_ms = 0;
    p.initial_delay_ms = 0;
    p.max_delay_ms = 0;
    p.crash_loop_limit = 0;
    check(devrig_set_policy(s, &p), "policy");
    long started = 0;
    check(devrig_on_event(s, count_started, &started), "on_event");
    double t0 = now();
    check(devrig_run(s), "run");
    double secs = now() - t0;
    devrig_outcome o;
    devrig_outcome_get(s, &o);
    devrig_free(s);
    printf("{\"cycles\":%ld,\"restarts\":%u,\"secs\":%.6f,\"rate\":%.1f}\n", started, o.restarts, secs, started / secs);
}

/* ---------------- W3 scale ---------------- */

static atomic_long w3_lines;
static void w3_line(void *ud, const devrig_log_line *l) { (void)ud; (void)l; w3_lines++; }

static void w3_devrig(int n) {
    raise_nofile();
    long rss0 = status_field("VmRSS"), rss_first = 0;
    devrig_supervisor **s = calloc((size_t)n, sizeof *s);
    double t0 = now();
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "svc-%d", i);
        s[i] = devrig_new(name, "exec sleep 3600");
        if (!s[i]) die("devrig_new");
        devrig_restart_policy p = quiet_policy();
        check(devrig_set_policy(s[i], &p), "policy");
        check(devrig_on_log(s[i], w3_line, NULL), "on_log");
        check(devrig_start(s[i]), "start");
        if (i == 0) rss_first = status_field("VmRSS");
    }
    double start_all = now() - t0;
    usleep(500 * 1000);
    long threads = status_field("Threads");
    long rss1 = status_field("VmRSS");
    double c0 = cpu_secs(), i0 = now();
    sleep(3);
    double idle_cpu = (cpu_secs() - c0) / (now() - i0);
    double t2 = now();
    for (int i = 0; i < n; i++) devrig_cancel(s[i]);
    for (int i = 0; i < n; i++) check(devrig_wait(s[i], -1), "wait");
    double stop_all = now() - t2;
    for (int i = 0; i < n; i++) devrig_free(s[i]);
    free(s);
    printf("{\"n\":%d,\"threads\":%ld,\"start_all\":%.6f,\"stop_all\":%.6f,\"rss_per_kib\":%.2f,"
           "\"rss_first_kib\":%ld,\"idle_cpu\":%.5f}\n",
           n, threads, start_all, stop_all, (double)(rss1 - rss_first) / (n - 1), rss_first - rss0,
           idle_cpu);
}

/* The last pid handed out, from /proc/loadavg. */
static int last_pid(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) die("/proc/loadavg");
    int last = -1;
    if (fscanf(f, "%*s %*s %*s %*s %d", &last) != 1) die("/proc/loadavg: no last pid");
    fclose(f);
    return last;
}

/* Creates and reaps processes until the last pid handed out is in
 * [BELOW - 100, BELOW): the next processes then take the pids just below
 * BELOW, and after them the first free ones above. */
static void burn_pids(int below) {
    long n = 0;
    for (int last = last_pid(); last >= below || last < below - 100; last = last_pid()) {
        pid_t p = fork();
        if (p < 0) die("fork");
        if (p == 0) _exit(0);
        waitpid(p, NULL, 0);
        if (++n > 10 * 1000 * 1000) die("burn-pids: the last pid never came near");
    }
    printf("{\"burned\":%ld,\"last\":%d}\n", n, last_pid());
}

/* ---------------- W4 stop latency ---------------- */

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void print_samples(const char *key, double *v, int k) {
    printf("{\"%s\":[", key);
    for (int i = 0; i < k; i++) printf("%s%.6f", i ? "," : "", v[i]);
    printf("]}\n");
}

static void w4_limit(int stops) {
    double *v = calloc((size_t)stops, sizeof *v);
    for (int i = 0; i < stops; i++) {
        pid_t pid = spawn_sh("exec sleep 3600", -1, 1);
        usleep(10 * 1000);
        double t0 = now();
        kill(pid, SIGTERM);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        v[i] = (now() - t0) * 1e3;
    }
    print_samples("ms", v, stops);
}

static void w4_devrig(int stops) {
    double *v = calloc((size_t)stops, sizeof *v);
    for (int i = 0; i < stops; i++) {
        devrig_supervisor *s = devrig_new("w4", "exec sleep 3600");
        if (!s) die("devrig_new");
        devrig_restart_policy p = quiet_policy();
        check(devrig_set_policy(s, &p), "policy");
        check(devrig_start(s), "start");
        usleep(10 * 1000);
        double t0 = now();
        devrig_cancel(s);
        check(devrig_wait(s, -1), "wait");
        v[i] = (now() - t0) * 1e3;
        devrig_free(s);
    }
    print_samples("ms", v, stops);
}

/* ---------------- W5 kill_tree ---------------- */

#define TREE_SIZE 201
static const char *TREE =
    "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do "
    "sh -c 'for j in 1 2 3 4 5 6 7 8 9; do sleep 3600 & done; wait' & done; wait";

static int count_group(pid_t pgid) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    char path[300], buf[512];
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r <= 0) continue;
        buf[r] = 0;
        char *p = strrchr(buf, ')');
        char state;
        int ppid, pgrp;
        if (!p || sscanf(p + 2, "%c %d %d", &state, &ppid, &pgrp) != 3) continue;
        if (pgrp == pgid && state != 'Z') n++;
    }
    closedir(d);
    return n;
}

static pid_t build_tree(void) {
    pid_t root = spawn_sh(TREE, -1, 1);
    double t0 = now();
    int n;
    while ((n = count_group(root)) != TREE_SIZE) {
        if (now() - t0 > 20) { fprintf(stderr, "bench: tree has %d processes\n", n); exit(1); }
        usleep(20 * 1000);
    }
    usleep(50 * 1000);
    return root;
}

static void reap_all(void) {
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {}
}

static void w5(int trees, int use_devrig) {
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    double *v = calloc((size_t)trees, sizeof *v);
    for (int i = 0; i < trees; i++) {
        pid_t root = build_tree();
        double t0 = now();
        if (use_devrig) {
            check(devrig_kill_tree((uint32_t)root, 5000), "kill_tree");
            v[i] = (now() - t0) * 1e3;
            reap_all();
        } else {
            kill(-root, SIGTERM);
            reap_all();
            v[i] = (now() - t0) * 1e3;
        }
    }
    print_samples("ms", v, trees);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: bench ROW ARGS\n"); return 2; }
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *row = argv[1];
    if (!strcmp(row, "w1-limit") && argc > 3) w1_limit(argv[2], atol(argv[3]));
    else if (!strcmp(row, "w1-devrig") && argc > 3) w1_devrig(argv[2], atol(argv[3]), 0);
    else if (!strcmp(row, "w1-devrig-batch") && argc > 3) w1_devrig(argv[2], atol(argv[3]), 1);
    else if (!strcmp(row, "w2-limit")) w2_limit(atol(argv[2]));
    else if (!strcmp(row, "w2-devrig")) w2_devrig(atol(argv[2]));
    else if (!strcmp(row, "w3-devrig")) w3_devrig(atoi(argv[2]));
    else if (!strcmp(row, "w4-limit")) w4_limit(atoi(argv[2]));
    else if (!strcmp(row, "w4-devrig")) w4_devrig(atoi(argv[2]));
    else if (!strcmp(row, "w5-limit")) w5(atoi(argv[2]), 0);
    else if (!strcmp(row, "w5-devrig")) w5(atoi(argv[2]), 1);
    else if (!strcmp(row, "burn-pids")) burn_pids(atoi(argv[2]));
    else { fprintf(stderr, "bench: unknown row %s\n", row); return 2; }
    (void)cmp_d;
    return 0;
}
