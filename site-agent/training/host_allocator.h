#ifndef ECHOFED_SITE_AGENT_TRAINING_HOST_ALLOCATOR_H_
#define ECHOFED_SITE_AGENT_TRAINING_HOST_ALLOCATOR_H_

namespace echofed {

// Tunes glibc's allocator for LibTorch on the CPU; call once, early in a
// process that trains or runs models (the agent, the benchmarks' echofed
// side).
//
// Every training step frees and allocates activations and gradients of
// megabytes. By default glibc serves such blocks with fresh mappings or
// trims the heap as soon as they are freed, so each step pays page faults
// to fault the same memory in again. Here blocks below 32 MiB come from
// the heap and up to 1 GiB of freed memory stays with each of glibc's
// arenas (the main heap and one per allocating thread, such as the batch
// pipeline's workers): a step reuses the previous step's pages. Measured with train_speed_bench
// (README, "Performance"): resnet18_narrow at 128 px, about 15% more
// images/s on this machine's CPU. The cost is that an agent keeps up to
// that memory between rounds instead of returning it.
//
// Has no effect (and returns false) with another C library or when glibc
// refuses a setting; true when both settings took.
bool TuneHostAllocatorForTraining();

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_TRAINING_HOST_ALLOCATOR_H_
