// The segmented palette expander (site-agent/data/dicom_palette.h) on its
// own: each segment type, and each way the attacker-controlled data can be
// wrong.

#include "site-agent/data/dicom_palette.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace echofed::dicom_internal {
namespace {

using Values = std::vector<uint16_t>;

TEST(SegmentedLutTest, DiscreteLinearAndIndirect) {
  // 5, 6 | linear to 10 over 4: 7, 8, 9, 10 | copy of the linear segment
  // (byte offset 8 = word 4), from 10 to 10 | discrete 1.
  const Values data = {0, 2, 5, 6, 1, 4, 10, 2, 1, 8, 0, 0, 1, 1};
  absl::StatusOr<Values> lut = ExpandSegmentedLut(data, 2, 11);
  ASSERT_TRUE(lut.ok()) << lut.status();
  EXPECT_EQ(*lut, (Values{5, 6, 7, 8, 9, 10, 10, 10, 10, 10, 1}));
}

TEST(SegmentedLutTest, LinearRoundsToNearest) {
  absl::StatusOr<Values> up = ExpandSegmentedLut({0, 1, 0, 1, 4, 10}, 2, 5);
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_EQ(*up, (Values{0, 3, 5, 8, 10}));
  absl::StatusOr<Values> down = ExpandSegmentedLut({0, 1, 10, 1, 4, 0}, 2, 5);
  ASSERT_TRUE(down.ok()) << down.status();
  EXPECT_EQ(*down, (Values{10, 7, 5, 2, 0}));
}

TEST(SegmentedLutTest, WordIndexOffsetsAsSomeWritersPutThem) {
  // Offset 4 as a byte offset is word 2, inside the first segment's values;
  // as a word index it is the linear segment.
  const Values data = {0, 2, 5, 6, 1, 2, 10, 2, 1, 4, 0};
  absl::StatusOr<Values> lut = ExpandSegmentedLut(data, 2, 6);
  ASSERT_TRUE(lut.ok()) << lut.status();
  EXPECT_EQ(*lut, (Values{5, 6, 8, 10, 10, 10}));
}

TEST(SegmentedLutTest, EightBitDataAreBytes) {
  // Bytes: discrete 2 values, linear 2 to 100, indirect copy of byte 0.
  const Values data = {0, 2, 0, 50, 1, 2, 100, 2, 1, 0, 0, 0, 0};
  absl::StatusOr<Values> lut = ExpandSegmentedLut(data, 1, 6);
  ASSERT_TRUE(lut.ok()) << lut.status();
  EXPECT_EQ(*lut, (Values{0, 50, 75, 100, 0, 50}));
}

TEST(SegmentedLutTest, MalformedDataAreRefused) {
  struct Case {
    const char* name;
    Values data;
    size_t entries;
    const char* expected;
  };
  for (const Case& c : {
           Case{"unknown opcode", {3, 1, 0}, 1, "unknown segment type 3"},
           Case{"linear first", {1, 4, 10}, 4, "first segment is linear"},
           Case{"indirect first", {2, 1, 0, 0}, 1, "first segment is indirect"},
           Case{"discrete past the end", {0, 9, 1, 2}, 9, "runs past the end"},
           Case{"too many", {0, 3, 1, 2, 3}, 2, "more than the 2 entries"},
           Case{"too few", {0, 2, 1, 2}, 3, "expands to 2 entries"},
           Case{"forward indirect",
                {0, 1, 5, 2, 1, 14, 0, 0, 1, 7},
                2,
                "starts no earlier segment"},
           Case{"indirect into values",
                {0, 2, 5, 6, 2, 1, 3, 0},
                4,
                "starts no earlier segment"},
           Case{"copies too many",
                {0, 1, 5, 2, 2, 0, 0},
                3,
                "more than come before it"},
           Case{"copies an indirect",
                {0, 1, 5, 2, 1, 0, 0, 2, 1, 6, 0},
                3,
                "copies another indirect segment"},
           Case{"no segments", {}, 1, "no segments"},
       }) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<Values> lut = ExpandSegmentedLut(c.data, 2, c.entries);
    ASSERT_FALSE(lut.ok());
    EXPECT_EQ(lut.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(lut.status().message(), c.expected))
        << lut.status();
  }
}

TEST(SegmentedLutTest, RepeatedEmptyCopiesAreBounded) {
  // Many indirect segments, each copying every empty segment before it:
  // refused by the work bound rather than looping for minutes.
  Values data = {0, 1, 7};
  for (int i = 0; i < 2000; ++i) data.insert(data.end(), {0, 0});
  for (int i = 0; i < 2000; ++i) {
    data.insert(data.end(), {2, 2000, 6, 0});
  }
  absl::StatusOr<Values> lut = ExpandSegmentedLut(data, 2, 1);
  ASSERT_FALSE(lut.ok());
  EXPECT_TRUE(absl::StrContains(lut.status().message(), "too many"))
      << lut.status();
}

}  // namespace
}  // namespace echofed::dicom_internal
