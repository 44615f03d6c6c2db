/* test_logs.c: log lines as API.md section 1 specifies them: many lines
 * intact and in order, overlong lines in pieces, partial lines, multiline
 * grouping, streams, levels, pid, timestamps, bytes passed on as written,
 * every line before EXITED. */
#include "testlib.h"

/* The shared fixture, restart mode never, multiline as given. */
static devrig_supervisor *make(fixture *f, const char *name, const char *cmd, bool multiline) {
  if (!fixture_make(f, name, cmd, fast_policy(DEVRIG_RESTART_NEVER))) return NULL;
  devrig_set_multiline(f->sup, multiline);
  return f->sup;
}

static int exited_index(fixture *f) { return rec_wait_kind(&f->rec, DEVRIG_EVENT_EXITED, 0, 0); }

/* ---- many numbered lines, checked as they arrive ---- */

typedef struct {
  long next;      /* the number expected next */
  long bad;       /* lines out of order, damaged or on the wrong stream */
  uint32_t pid;
  int pid_changes;
  char first_bad[128];
} counter;

static void count_cb(void *ud, const devrig_log_line *l) {
  counter *c = (counter *)ud;
  char want[32];
  int n = snprintf(want, sizeof want, "%ld", c->next + 1);
  if ((size_t)n != l->len || memcmp(l->text, want, l->len) != 0 || l->stream != DEVRIG_STDOUT ||
      l->text[l->len] != 0) {
    if (c->bad++ == 0)
      snprintf(c->first_bad, sizeof c->first_bad, "want \"%s\" got \"%.*s\" (len %zu)", want,
               (int)(l->len > 60 ? 60 : l->len), l->text, l->len);
    c->next = strtol(l->text, NULL, 10); /* resynchronise */
    return;
  }
  if (c->pid != l->pid) c->pid_changes++;
  c->pid = l->pid;
  c->next++;
}

static void test_many_numbered_lines(void) {
  long n = getenv("DEVRIG_TEST_VALGRIND") ? 30000 : 300000;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "seq 1 %ld", n);
  devrig_supervisor *s = devrig_new("seq", cmd);
  ASSERT(s != NULL);
  counter c;
  memset(&c, 0, sizeof c);
  recorder rec;
  rec_init(&rec);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_NEVER);
  CHECK_ST(devrig_set_policy(s, &p), DEVRIG_OK);
  CHECK_ST(devrig_on_log(s, count_cb, &c), DEVRIG_OK);
  CHECK_ST(devrig_on_event(s, rec_event_cb, &rec), DEVRIG_OK);
  int64_t t0 = mono_ms();
  CHECK_ST(devrig_run(s), DEVRIG_OK);
  int64_t took = mono_ms() - t0;
  CHECKF(c.bad == 0, "%ld bad lines, first: %s", c.bad, c.first_bad);
  CHECK_EQ(c.next, n);
  CHECK_EQ(c.pid_changes, 1);
  CHECK_EQ(c.pid, rec.ev[0].pid);
  CHECK_KINDS(&rec, "STARTED RUNNING EXITED STOPPED");
  printf("  %ld lines in %lld ms\n", n, (long long)took);
  devrig_free(s);
  rec_destroy(&rec);
}

/* Same through the batch callback. */
typedef struct {
  counter c;
  size_t calls;
} batch_counter;

static void batch_cb(void *ud, const devrig_log_line *lines, size_t count) {
  batch_counter *b = (batch_counter *)ud;
  b->calls++;
  if (count == 0) b->c.bad++;
  for (size_t i = 0; i < count; i++) count_cb(&b->c, &lines[i]);
}

static void test_batch_callback(void) {
  long n = getenv("DEVRIG_TEST_VALGRIND") ? 5000 : 50000;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "seq 1 %ld", n);
  devrig_supervisor *s = devrig_new("batch", cmd);
  ASSERT(s != NULL);
  batch_counter b;
  memset(&b, 0, sizeof b);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_NEVER);
  CHECK_ST(devrig_set_policy(s, &p), DEVRIG_OK);
  CHECK_ST(devrig_on_log_batch(s, batch_cb, &b), DEVRIG_OK);
  CHECK_ST(devrig_run(s), DEVRIG_OK);
  CHECKF(b.c.bad == 0, "%ld bad, first: %s", b.c.bad, b.c.first_bad);
  CHECK_EQ(b.c.next, n);
  CHECK(b.calls >= 1 && b.calls < (size_t)n); /* really batched */
  devrig_free(s);
}

static void test_long_line_in_pieces(void) {
  /* 300,000 bytes a..z repeated, one newline, then a short line. */
  const size_t len = 300000;
  fixture f;
  ASSERT(make(&f, "longline",
              "awk 'BEGIN { for (i = 0; i < 300000; i++) printf \"%c\", 97 + i % 26; "
              "print \"\"; print \"after\" }'",
              true));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  char *want = (char *)malloc(len);
  for (size_t i = 0; i < len; i++) want[i] = (char)('a' + i % 26);
  size_t joined = 0, pieces = 0;
  bool same = true;
  size_t i = 0;
  for (; i < f.rec.nln && strcmp(f.rec.ln[i].text, "after") != 0; i++) {
    rec_line *l = &f.rec.ln[i];
    CHECKF(l->len <= 65536, "piece %zu has %zu bytes", i, l->len);
    if (joined + l->len > len || memcmp(want + joined, l->text, l->len) != 0) same = false;
    joined += l->len;
    pieces++;
  }
  CHECK_EQ(joined, len);
  CHECK(same);
  CHECK_EQ(pieces, (len + 65535) / 65536);
  CHECK(i + 1 == f.rec.nln); /* "after" comes last, on its own */
  free(want);
  fixture_done(&f);

  /* A small max_line_bytes: pieces of exactly that size, the rest last. */
  ASSERT(make(&f, "smallmax", "printf '%s\\n' abcdefghijklmnopqrstuvwxyz0123", true));
  CHECK_ST(devrig_set_max_line_bytes(f.sup, 8), DEVRIG_OK);
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  const char *parts[] = {"abcdefgh", "ijklmnop", "qrstuvwx", "yz0123"};
  CHECK_EQ(f.rec.nln, 4);
  for (size_t k = 0; k < 4 && k < f.rec.nln; k++)
    CHECKF(strcmp(f.rec.ln[k].text, parts[k]) == 0, "piece %zu: \"%s\"", k, f.rec.ln[k].text);
  fixture_done(&f);
}

static void test_partial_last_line(void) {
  fixture f;
  ASSERT(make(&f, "partial", "printf 'abc\\ncr\\r\\nno newline'", true));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  ASSERT(f.rec.nln == 3);
  CHECK(strcmp(f.rec.ln[0].text, "abc") == 0);
  CHECK(strcmp(f.rec.ln[1].text, "cr") == 0); /* trailing \r dropped */
  CHECK(strcmp(f.rec.ln[2].text, "no newline") == 0);
  CHECK(f.rec.ln[2].events_before <= (size_t)exited_index(&f));
  fixture_done(&f);

  /* A partial line is delivered after ~250 ms of silence, while the child
   * still runs. */
  ASSERT(make(&f, "idle", "printf 'waiting'; sleep 2; echo done", false));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  int64_t t0 = mono_ms();
  int i = rec_wait_line(&f.rec, "waiting", slow(1500));
  CHECKF(i >= 0, "partial line not delivered within 1.5 s");
  CHECK(mono_ms() - t0 < slow(1500));
  CHECK(rec_wait_kind(&f.rec, DEVRIG_EVENT_EXITED, 0, 0) < 0); /* still running */
  CHECK_ST(devrig_wait(f.sup, slow(10000)), DEVRIG_OK);
  CHECK_EQ(f.rec.nln, 2);
  if (f.rec.nln == 2) CHECK(strcmp(f.rec.ln[1].text, "done") == 0);
  fixture_done(&f);
}

static const char *TRACE_CMD =
    "printf 'Traceback (most recent call last):\\n  File \"a.py\", line 1\\n\\tin b\\n"
    "ValueError: x\\nnext line\\n  indented tail'";

static void test_multiline_on(void) {
  fixture f;
  ASSERT(make(&f, "multi", TRACE_CMD, true));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  ASSERT(f.rec.nln == 3);
  CHECK(strcmp(f.rec.ln[0].text,
               "Traceback (most recent call last):\n  File \"a.py\", line 1\n\tin b") == 0);
  CHECK_EQ(f.rec.ln[0].len, strlen(f.rec.ln[0].text));
  CHECK(strcmp(f.rec.ln[1].text, "ValueError: x") == 0);
  CHECK(strcmp(f.rec.ln[2].text, "next line\n  indented tail") == 0);
  fixture_done(&f);

  /* A group still open is delivered after ~250 ms of silence. */
  ASSERT(make(&f, "multiidle", "printf 'head\\n  tail\\n'; sleep 2", true));
  CHECK_ST(devrig_start(f.sup), DEVRIG_OK);
  CHECK(rec_wait_line(&f.rec, "head\n  tail", slow(1500)) >= 0);
  CHECK_ST(devrig_cancel(f.sup), DEVRIG_OK);
  CHECK_ST(devrig_wait(f.sup, slow(10000)), DEVRIG_OK);
  fixture_done(&f);
}

static void test_multiline_off(void) {
  fixture f;
  ASSERT(make(&f, "single", TRACE_CMD, false));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  const char *want[] = {"Traceback (most recent call last):", "  File \"a.py\", line 1",
                        "\tin b", "ValueError: x", "next line", "  indented tail"};
  CHECK_EQ(f.rec.nln, 6);
  for (size_t i = 0; i < 6 && i < f.rec.nln; i++)
    CHECKF(strcmp(f.rec.ln[i].text, want[i]) == 0, "line %zu: \"%s\"", i, f.rec.ln[i].text);
  fixture_done(&f);
}

static void test_streams_pid_timestamp_service(void) {
  fixture f;
  ASSERT(make(&f, "streams", "echo out1; echo err1 >&2; echo out2; echo err2 >&2", true));
  int64_t before = wall_ms();
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  int64_t after = wall_ms();
  ASSERT(f.rec.nln == 4);
  uint32_t pid = f.rec.ev[0].pid;
  const char *outs[2], *errs[2];
  int no = 0, ne = 0;
  for (size_t i = 0; i < 4; i++) {
    rec_line *l = &f.rec.ln[i];
    CHECK_EQ(l->pid, pid);
    CHECK(l->timestamp_ms >= before - 5 && l->timestamp_ms <= after + 5);
    CHECK(strcmp(l->service, "streams") == 0);
    if (l->stream == DEVRIG_STDOUT && no < 2) outs[no++] = l->text;
    else if (l->stream == DEVRIG_STDERR && ne < 2) errs[ne++] = l->text;
    else CHECKF(0, "line %zu: stream %d", i, (int)l->stream);
  }
  ASSERT(no == 2 && ne == 2);
  /* in order within each stream */
  CHECK(strcmp(outs[0], "out1") == 0 && strcmp(outs[1], "out2") == 0);
  CHECK(strcmp(errs[0], "err1") == 0 && strcmp(errs[1], "err2") == 0);
  fixture_done(&f);
}

static void test_levels(void) {
  fixture f;
  ASSERT(make(&f, "levels",
              "echo 'ERROR boom'; echo '2024-01-01 [warn] disk'; echo 'WARNING: x'; "
              "echo 'level=info msg=hi'; echo 'DEBUG z'; echo 'trace: t'; echo 'FATAL f'; "
              "echo 'hello world'; echo 'information overload'; echo 'errors=0'",
              false));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  devrig_level want[] = {DEVRIG_LEVEL_ERROR, DEVRIG_LEVEL_WARN,  DEVRIG_LEVEL_WARN,
                         DEVRIG_LEVEL_INFO,  DEVRIG_LEVEL_DEBUG, DEVRIG_LEVEL_TRACE,
                         DEVRIG_LEVEL_ERROR, DEVRIG_LEVEL_UNKNOWN, DEVRIG_LEVEL_UNKNOWN,
                         DEVRIG_LEVEL_UNKNOWN};
  CHECK_EQ(f.rec.nln, 10);
  for (size_t i = 0; i < 10 && i < f.rec.nln; i++)
    CHECKF(f.rec.ln[i].level == want[i], "\"%s\": level %d, want %d", f.rec.ln[i].text,
           (int)f.rec.ln[i].level, (int)want[i]);
  fixture_done(&f);
}

static void test_bytes_as_written(void) {
  fixture f;
  ASSERT(make(&f, "bytes", "printf 'a\\000b\\n\\377\\376 raw\\n'", false));
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  ASSERT(f.rec.nln == 2);
  CHECK_EQ(f.rec.ln[0].len, 3);
  CHECK(memcmp(f.rec.ln[0].text, "a\0b", 4) == 0); /* NUL inside, NUL after */
  CHECK_EQ(f.rec.ln[1].len, 6);
  CHECK(memcmp(f.rec.ln[1].text, "\377\376 raw", 7) == 0);
  fixture_done(&f);
}

static void test_all_lines_before_exited(void) {
  /* Several spawns, each writing on both streams right before exiting. */
  fixture f;
  rec_init(&f.rec);
  f.sup = devrig_new("beforeexit",
                     "i=0; while [ $i -lt 2000 ]; do echo \"o $i\"; echo \"e $i\" >&2; "
                     "i=$((i+1)); done; printf 'tail'; exit 1");
  ASSERT(f.sup != NULL);
  devrig_restart_policy p = fast_policy(DEVRIG_RESTART_ON_FAILURE);
  p.max_restarts = 2;
  CHECK_ST(devrig_set_policy(f.sup, &p), DEVRIG_OK);
  rec_attach(&f.rec, f.sup);
  CHECK_ST(devrig_run(f.sup), DEVRIG_OK);
  CHECK_EQ(f.rec.nln, 3 * 4001);
  for (int k = 0; k < 3; k++) {
    int st = rec_wait_kind(&f.rec, DEVRIG_EVENT_STARTED, k, 0);
    int ex = rec_wait_kind(&f.rec, DEVRIG_EVENT_EXITED, k, 0);
    ASSERT(st >= 0 && ex > st);
    size_t seen = 0;
    for (size_t i = 0; i < f.rec.nln; i++) {
      if (f.rec.ln[i].pid != f.rec.ev[st].pid) continue;
      seen++;
      CHECKF(f.rec.ln[i].events_before > (size_t)st && f.rec.ln[i].events_before <= (size_t)ex,
             "line \"%s\" of spawn %d arrived after its EXITED", f.rec.ln[i].text, k);
    }
    CHECK_EQ(seen, 4001);
  }
  fixture_done(&f);
}

int main(void) {
  RUN(test_many_numbered_lines);
  RUN(test_batch_callback);
  RUN(test_long_line_in_pieces);
  RUN(test_partial_last_line);
  RUN(test_multiline_on);
  RUN(test_multiline_off);
  RUN(test_streams_pid_timestamp_service);
  RUN(test_levels);
  RUN(test_bytes_as_written);
  RUN(test_all_lines_before_exited);
  return test_summary();
}
