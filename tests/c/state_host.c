/* state_host.c: a host process for test_state. Supervises one service with
 * a state directory, reports on stdout ("started PID", every log line as
 * "line TEXT") and blocks until it is killed.
 *
 * usage: state_host STATE_DIR NAME COMMAND */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "devrig.h"

static void on_event(void *ud, const devrig_event *e) {
  (void)ud;
  if (e->kind == DEVRIG_EVENT_STARTED) {
    printf("started %u\n", e->pid);
    fflush(stdout);
  }
}

static void on_log(void *ud, const devrig_log_line *l) {
  (void)ud;
  printf("line %.*s\n", (int)l->len, l->text);
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: state_host STATE_DIR NAME COMMAND\n");
    return 2;
  }
  devrig_supervisor *s = devrig_new(argv[2], argv[3]);
  if (!s || devrig_set_state_dir(s, argv[1]) != DEVRIG_OK) {
    fprintf(stderr, "state_host: %s\n", devrig_last_error());
    return 1;
  }
  devrig_restart_policy p = devrig_default_policy();
  p.startup_grace_ms = 0;
  devrig_set_policy(s, &p);
  devrig_set_multiline(s, false);
  devrig_on_event(s, on_event, NULL);
  devrig_on_log(s, on_log, NULL);
  if (devrig_start(s) != DEVRIG_OK) {
    fprintf(stderr, "state_host: %s\n", devrig_last_error());
    return 1;
  }
  for (;;) pause();
}
