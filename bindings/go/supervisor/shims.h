/* C side of the cgo bridge: trampolines from libdevrig callbacks to the
 * exported Go functions in callbacks.go. Only an integer (a cgo.Handle)
 * crosses as user data; no Go pointer is ever given to C. */
#ifndef DEVRIG_GO_SHIMS_H
#define DEVRIG_GO_SHIMS_H

#include <stdint.h>
#include <stdlib.h>
#include "devrig.h"

/* Registers the trampolines on sup with user data h (a cgo.Handle). */
devrig_status devrig_go_on_log_batch(devrig_supervisor *sup, uintptr_t h);
devrig_status devrig_go_on_event(devrig_supervisor *sup, uintptr_t h);

/* devrig_set_policy and devrig_outcome_get with the struct passed by value:
 * the address of a Go variable given to C makes the variable a heap
 * allocation. */
devrig_status devrig_go_set_policy(devrig_supervisor *sup, devrig_restart_policy policy);
typedef struct {
  devrig_status status;
  devrig_outcome outcome;
} devrig_go_outcome;
devrig_go_outcome devrig_go_outcome_get(const devrig_supervisor *sup);

/* devrig_cancel on each of n handles: one crossing for a group's stop. */
void devrig_go_cancel_all(devrig_supervisor **sups, size_t n);

#endif
