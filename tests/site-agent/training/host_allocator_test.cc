#include "site-agent/training/host_allocator.h"

#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace echofed {
namespace {

#if defined(__GLIBC__)
TEST(HostAllocatorTest, TrainingSizedBlocksComeFromTheHeapAndStay) {
  ASSERT_TRUE(TuneHostAllocatorForTraining());
  // 16 MiB, a gradient of a 4M-parameter layer: glibc's default would map
  // it (threshold 128 KiB until a mapped block is freed).
  constexpr size_t kBlock = 16 << 20;
  const struct mallinfo2 before = mallinfo2();
  void* block = std::malloc(kBlock);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBlock);  // the pages are in use
  const struct mallinfo2 allocated = mallinfo2();
  EXPECT_EQ(allocated.hblkhd, before.hblkhd) << "the block was mapped";
  std::free(block);
  // Freed, it stays with the process for the next step rather than going
  // back to the system (trimmed only beyond 1 GiB).
  const struct mallinfo2 freed = mallinfo2();
  EXPECT_GE(freed.arena, kBlock);
  EXPECT_GE(freed.fordblks, kBlock);
}
#else
TEST(HostAllocatorTest, OtherLibrariesAreLeftAlone) {
  EXPECT_FALSE(TuneHostAllocatorForTraining());
}
#endif

}  // namespace
}  // namespace echofed
