#ifndef ECHOFED_COMMON_DISCLOSURE_CONTROL_H_
#define ECHOFED_COMMON_DISCLOSURE_CONTROL_H_

// Statistical disclosure control of released counts (the site applies it).

#include <cstdint>
#include <vector>

namespace echofed {

// A table of patient counts in which some cells are the totals of others
// (partitions). A cell is withheld when 0 < count < min_cell_count
// (primary suppression), and then, until no withheld cell can be
// recovered by subtraction, more (secondary suppression): in a partition
// whose total is released, a single withheld part, or withheld parts that
// together hold fewer than min_cell_count patients, take the smallest
// other non-zero part with them, or, when there is none that may be
// withheld, the total; a withheld total with every part released takes
// its smallest non-zero part. Zeros are released: "nobody" names nobody.
// Public cells (released elsewhere anyway, e.g. an evaluation set's size)
// are never withheld, and never chosen to hide another.
struct DisclosureTable {
  std::vector<int64_t> counts;
  std::vector<bool> public_cells;  // empty: none; else one per count
  struct Partition {
    int total = 0;           // index of the total
    std::vector<int> parts;  // indices of the cells that sum to it
  };
  std::vector<Partition> partitions;
};
// One flag per cell: true to withhold. Indices out of range are ignored.
std::vector<bool> WithheldCells(const DisclosureTable& table,
                                int64_t min_cell_count);

}  // namespace echofed

#endif  // ECHOFED_COMMON_DISCLOSURE_CONTROL_H_
