// Suppression of small released counts (common/disclosure_control.h),
// and the withheld classes of an aggregate.

#include "common/disclosure_control.h"

#include <cstdint>
#include <vector>

#include "common/eval_aggregate.h"
#include "gtest/gtest.h"
#include "proto/metrics.pb.h"

namespace echofed {
namespace {

// Disclosure control: small cells are withheld, and so is what would give
// them away by subtraction from a released total.
TEST(WithheldCellsTest, PrimaryAndSecondarySuppression) {
  auto withheld = [](std::vector<int64_t> parts, int64_t min_cell_count,
                     bool total_public = true) {
    DisclosureTable table;
    int64_t total = 0;
    for (int64_t part : parts) total += part;
    table.counts.push_back(total);
    table.public_cells.push_back(total_public);
    DisclosureTable::Partition partition{0, {}};
    for (int64_t part : parts) {
      partition.parts.push_back(static_cast<int>(table.counts.size()));
      table.counts.push_back(part);
      table.public_cells.push_back(false);
    }
    table.partitions.push_back(partition);
    return WithheldCells(table, min_cell_count);
  };
  // Nothing small: everything released, zeros included.
  EXPECT_EQ(withheld({30, 12, 0}, 5),
            (std::vector<bool>{false, false, false, false}));
  // One small class: the next smallest goes with it, or 30 - (42 - 3 - 12)
  // would tell the 3.
  EXPECT_EQ(withheld({30, 12, 3}, 5),
            (std::vector<bool>{false, false, true, true}));
  // Two small classes holding 5 together: they hide each other.
  EXPECT_EQ(withheld({30, 2, 3}, 5),
            (std::vector<bool>{false, false, true, true}));
  // Two small classes holding fewer than 5: a third goes too.
  EXPECT_EQ(withheld({30, 1, 2, 40}, 5),
            (std::vector<bool>{false, true, true, true, false}));
  // Nothing to hide a lone small cell behind but a total that may go: it
  // goes; a public one stays (and the cell is withheld regardless).
  EXPECT_EQ(withheld({3, 0}, 5, /*total_public=*/false),
            (std::vector<bool>{true, true, false}));
  EXPECT_EQ(withheld({3, 0}, 5), (std::vector<bool>{false, true, false}));
  // A minimum of 1 withholds nothing.
  EXPECT_EQ(withheld({30, 1}, 1), (std::vector<bool>{false, false, false}));

  // Nested partitions: screened = excluded + included, included = a + b.
  // b (3) is small; a goes with it (included is released); then included
  // itself stays, so screened's partition is untouched.
  DisclosureTable table;
  table.counts = {50, 10, 40, 37, 3};
  table.partitions = {{0, {1, 2}}, {2, {3, 4}}};
  EXPECT_EQ(WithheldCells(table, 5),
            (std::vector<bool>{false, false, false, true, true}));
  // b public (released elsewhere): the other part cannot hide the small
  // one alone, so their total goes, and with it the excluded count.
  table.counts = {50, 10, 40, 3, 37};
  table.public_cells = {false, false, false, false, true};
  EXPECT_EQ(WithheldCells(table, 5),
            (std::vector<bool>{false, true, true, true, false}));
}

TEST(WithheldCellsTest, WithheldClassesAreValidated) {
  EvalAggregate a;
  InitAggregate(3, &a);
  ASSERT_TRUE(AddCase(&a, 0, {0.8, 0.1, 0.1}).ok());
  ASSERT_TRUE(AddCase(&a, 1, {0.2, 0.7, 0.1}).ok());
  a.set_num_patients(2);
  a.add_withheld_classes(2);
  EXPECT_TRUE(ValidateAggregate(a, 3).ok());
  EvalAggregate unsorted = a;
  unsorted.add_withheld_classes(0);
  EXPECT_FALSE(ValidateAggregate(unsorted, 3).ok());
  EvalAggregate with_images = a;
  with_images.set_withheld_classes(0, 1);
  EXPECT_FALSE(ValidateAggregate(with_images, 3).ok());
  EvalAggregate out_of_range = a;
  out_of_range.set_withheld_classes(0, 3);
  EXPECT_FALSE(ValidateAggregate(out_of_range, 3).ok());
  // A suppressed set does not say which classes it had.
  EvalAggregate suppressed;
  suppressed.set_class_count(3);
  suppressed.mutable_confusion()->Resize(9, 0);
  suppressed.set_suppressed(true);
  EXPECT_TRUE(ValidateAggregate(suppressed, 3).ok());
  suppressed.add_withheld_classes(2);
  EXPECT_FALSE(ValidateAggregate(suppressed, 3).ok());
}

}  // namespace
}  // namespace echofed
