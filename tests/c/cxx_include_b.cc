// The second translation unit including devrig.h (twice): no duplicate
// definitions at link time.
#include "devrig.h"
#include "devrig.h"

int other_translation_unit(void) {
  devrig_outcome o{};
  devrig_event_kind k = DEVRIG_EVENT_STOPPED;
  devrig_log_fn lf = nullptr;
  devrig_event_fn ef = nullptr;
  (void)lf;
  (void)ef;
  return (k == DEVRIG_EVENT_STOPPED && o.kind == DEVRIG_OUTCOME_NONE) ? 0 : 1;
}
