/* Links against an installed libdevrig (dynamic or static) and runs one
 * service to completion: proves that `make install` gives C users a working
 * header, library and pkg-config file. */
#include <devrig.h>
#include <stdio.h>
#include <string.h>

static int lines;

static void on_log(void *ud, const devrig_log_line *l) {
  (void)ud;
  if (l->len == 5 && memcmp(l->text, "hello", 5) == 0) lines++;
}

int main(void) {
  if (strcmp(devrig_version(), DEVRIG_VERSION_STRING) != 0) {
    fprintf(stderr, "version mismatch: %s vs %s\n", devrig_version(), DEVRIG_VERSION_STRING);
    return 1;
  }
  devrig_supervisor *s = devrig_new("smoke", "echo hello");
  if (!s || devrig_on_log(s, on_log, NULL) != DEVRIG_OK || devrig_run(s) != DEVRIG_OK) {
    fprintf(stderr, "failed: %s\n", devrig_last_error());
    return 1;
  }
  devrig_outcome o;
  devrig_outcome_get(s, &o);
  devrig_free(s);
  if (o.kind != DEVRIG_OUTCOME_COMPLETED || lines != 1) {
    fprintf(stderr, "unexpected outcome %d, %d lines\n", (int)o.kind, lines);
    return 1;
  }
  printf("install smoke test: ok\n");
  return 0;
}
