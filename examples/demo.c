/*
 * demo: supervise a flaky service with libdevrig.
 *
 * The service logs a few lines a second, writes an indented stack trace to
 * stderr, and crashes every few seconds. libdevrig restarts it with
 * exponential backoff until the restart budget (5) is spent. Ctrl-C stops it
 * cleanly at any moment: SIGTERM to the service, SIGKILL after the grace.
 *
 *   make demo
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "devrig.h"

static devrig_supervisor *g_sup;

static const char *const FLAKY =
    "i=0; n=$((20 + $$ % 15)); "
    "echo \"INFO service up (pid $$), will crash after $n ticks\"; "
    "while [ $i -lt $n ]; do "
    "  i=$((i+1)); "
    "  if [ $((i % 7)) -eq 0 ]; then echo \"WARN slow request #$i\"; "
    "  else echo \"INFO handled request #$i\"; fi; "
    "  sleep 0.1; "
    "done; "
    "printf 'ERROR unhandled exception: connection reset\\n"
    "    at handler (server.js:42)\\n"
    "    at loop (server.js:7)\\n' >&2; "
    "exit 3";

static int use_color(void) { return isatty(STDOUT_FILENO); }

static const char *paint(const char *code) { return use_color() ? code : ""; }

static const char *level_color(devrig_level level) {
  switch (level) {
  case DEVRIG_LEVEL_ERROR: return "\033[31m";
  case DEVRIG_LEVEL_WARN: return "\033[33m";
  case DEVRIG_LEVEL_INFO: return "\033[32m";
  default: return "\033[0m";
  }
}

static const char *event_name(devrig_event_kind kind) {
  switch (kind) {
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

static void on_log(void *user_data, const devrig_log_line *line) {
  (void)user_data;
  /* Multiline entries (the stack trace) arrive as one text with '\n'. */
  const char *p = line->text;
  const char *end = line->text + line->len;
  while (p <= end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    printf("%s%-6s %s%s|%s %s%.*s%s\n", paint("\033[36m"), line->service,
           paint("\033[2m"), line->stream == DEVRIG_STDERR ? "err" : "out",
           paint("\033[0m"), paint(level_color(line->level)), (int)n, p,
           paint("\033[0m"));
    if (!nl) break;
    p = nl + 1;
  }
  fflush(stdout);
}

static void on_event(void *user_data, const devrig_event *ev) {
  (void)user_data;
  printf("%s==> %-8s pid=%u", paint("\033[1;35m"), event_name(ev->kind), ev->pid);
  if (ev->kind == DEVRIG_EVENT_EXITED)
    printf(" exit_code=%d signal=%d runtime=%llums", ev->exit_code, ev->signal,
           (unsigned long long)ev->runtime_ms);
  if (ev->kind == DEVRIG_EVENT_BACKOFF)
    printf(" restart #%u in %llums", ev->restart_count, (unsigned long long)ev->delay_ms);
  if (ev->message[0]) printf(" (%s)", ev->message);
  printf("%s\n", paint("\033[0m"));
  fflush(stdout);
}

static void on_sigint(int sig) {
  (void)sig;
  /* devrig_cancel is async-signal-safe. */
  devrig_cancel(g_sup);
}

int main(void) {
  printf("libdevrig %s demo: a flaky service, supervised. Ctrl-C stops it.\n\n",
         devrig_version());
  g_sup = devrig_new("flaky", FLAKY);
  if (!g_sup) {
    fprintf(stderr, "devrig_new: %s\n", devrig_last_error());
    return 1;
  }
  devrig_restart_policy policy = devrig_default_policy();
  policy.max_restarts = 5;
  policy.startup_grace_ms = 1000;
  policy.initial_delay_ms = 300;
  policy.max_delay_ms = 3000;
  policy.crash_loop_limit = 0;
  if (devrig_set_policy(g_sup, &policy) != DEVRIG_OK ||
      devrig_set_stop_grace_ms(g_sup, 2000) != DEVRIG_OK ||
      devrig_on_log(g_sup, on_log, NULL) != DEVRIG_OK ||
      devrig_on_event(g_sup, on_event, NULL) != DEVRIG_OK) {
    fprintf(stderr, "setup: %s\n", devrig_last_error());
    devrig_free(g_sup);
    return 1;
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  devrig_status st = devrig_run(g_sup);
  devrig_outcome out;
  devrig_outcome_get(g_sup, &out);
  static const char *const kinds[] = {"none", "completed", "cancelled", "failed"};
  printf("\nrun returned %d; outcome: %s after %u restarts (%s)\n", (int)st,
         kinds[out.kind], out.restarts, out.message);
  devrig_free(g_sup);
  return st == DEVRIG_OK ? 0 : 1;
}
