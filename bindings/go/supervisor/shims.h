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

#endif
