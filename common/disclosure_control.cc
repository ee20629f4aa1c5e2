// Primary and secondary cell suppression of released counts (WithheldCells).

#include "common/disclosure_control.h"

#include <cstdint>
#include <vector>

namespace echofed {

std::vector<bool> WithheldCells(const DisclosureTable& table,
                                int64_t min_cell_count) {
  const int n = static_cast<int>(table.counts.size());
  auto is_public = [&](int i) {
    return i < static_cast<int>(table.public_cells.size()) &&
           table.public_cells[i];
  };
  auto valid = [&](int i) { return i >= 0 && i < n; };
  std::vector<bool> withheld(n, false);
  for (int i = 0; i < n; ++i) {
    withheld[i] = !is_public(i) && table.counts[i] > 0 &&
                  table.counts[i] < min_cell_count;
  }
  // The smallest non-zero part that may still be withheld, or -1.
  auto smallest_other = [&](const std::vector<int>& parts) {
    int best = -1;
    for (int part : parts) {
      if (!valid(part) || withheld[part] || is_public(part) ||
          table.counts[part] == 0) {
        continue;
      }
      if (best < 0 || table.counts[part] < table.counts[best]) best = part;
    }
    return best;
  };
  // Each pass only adds withheld cells, so this ends within n passes.
  for (bool changed = true; changed;) {
    changed = false;
    for (const DisclosureTable::Partition& partition : table.partitions) {
      if (!valid(partition.total)) continue;
      int hidden = 0;
      int64_t hidden_sum = 0;
      bool any_nonzero = false;
      for (int part : partition.parts) {
        if (!valid(part)) continue;
        any_nonzero = any_nonzero || table.counts[part] > 0;
        if (withheld[part]) {
          ++hidden;
          hidden_sum += table.counts[part];
        }
      }
      if (!withheld[partition.total]) {
        if (hidden == 0 || (hidden > 1 && hidden_sum >= min_cell_count)) {
          continue;
        }
        int next = smallest_other(partition.parts);
        if (next >= 0) {
          withheld[next] = true;
          changed = true;
        } else if (!is_public(partition.total) &&
                   table.counts[partition.total] > 0) {
          withheld[partition.total] = true;
          changed = true;
        }
      } else if (hidden == 0 && any_nonzero) {
        int next = smallest_other(partition.parts);
        if (next >= 0) {
          withheld[next] = true;
          changed = true;
        }
      }
    }
  }
  return withheld;
}

}  // namespace echofed
