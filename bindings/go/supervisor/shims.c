#include "shims.h"
#include "_cgo_export.h"

static void devrig_go_log_batch_tramp(void *user_data, const devrig_log_line *lines, size_t count) {
  goDevrigLogBatch((uintptr_t)user_data, (devrig_log_line *)lines, count);
}

static void devrig_go_event_tramp(void *user_data, const devrig_event *event) {
  goDevrigEvent((uintptr_t)user_data, (devrig_event *)event);
}

devrig_status devrig_go_on_log_batch(devrig_supervisor *sup, uintptr_t h) {
  return devrig_on_log_batch(sup, devrig_go_log_batch_tramp, (void *)h);
}

devrig_status devrig_go_on_event(devrig_supervisor *sup, uintptr_t h) {
  return devrig_on_event(sup, devrig_go_event_tramp, (void *)h);
}

void devrig_go_cancel_all(devrig_supervisor **sups, size_t n) {
  for (size_t i = 0; i < n; i++) devrig_cancel(sups[i]);
}

devrig_status devrig_go_set_policy(devrig_supervisor *sup, devrig_restart_policy policy) {
  return devrig_set_policy(sup, &policy);
}

devrig_go_outcome devrig_go_outcome_get(const devrig_supervisor *sup) {
  devrig_go_outcome r = {0};
  r.status = devrig_outcome_get(sup, &r.outcome);
  return r;
}
