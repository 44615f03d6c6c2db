// devrig.h must compile as C++ and survive being included twice.
#include "devrig.h"
#include "devrig.h"

#include <cstdio>
#include <cstring>

int other_translation_unit(void);

int main() {
  devrig_restart_policy p = devrig_default_policy();
  devrig_restart_mode m = DEVRIG_RESTART_NEVER;
  if (devrig_restart_mode_parse("always", &m) != DEVRIG_OK || m != DEVRIG_RESTART_ALWAYS) return 1;
  if (std::strcmp(devrig_version(), DEVRIG_VERSION_STRING) != 0) return 1;
  if (p.max_restarts != 10) return 1;
  devrig_supervisor *s = devrig_new("cxx", "true");
  if (s == nullptr) return 1;
  devrig_free(s);
  return other_translation_unit();
}
