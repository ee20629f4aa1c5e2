#include "site-agent/training/host_allocator.h"

#include <cstdlib>  // defines __GLIBC__ on glibc systems

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace echofed {

bool TuneHostAllocatorForTraining() {
#if defined(__GLIBC__)
  // 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems
  // (half its maximum heap size); setting it also stops glibc from moving
  // the threshold by itself.
  constexpr int kMmapThreshold = 32 << 20;
  constexpr int kTrimThreshold = 1 << 30;
  const bool mapped = mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1;
  const bool trimmed = mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1;
  return mapped && trimmed;
#else
  return false;
#endif
}

}  // namespace echofed
