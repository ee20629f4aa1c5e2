#include "common/json_writer.h"

#include <cmath>
#include <limits>
#include <string>

#include "common/html.h"
#include "common/metrics.h"
#include "gtest/gtest.h"

namespace echofed {
namespace {

TEST(JsonQuoteTest, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(JsonQuote(""), "\"\"");
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(JsonQuote("say \"hi\""), "\"say \\\"hi\\\"\"");
  EXPECT_EQ(JsonQuote("C:\\data"), "\"C:\\\\data\"");
  EXPECT_EQ(JsonQuote("a\nb\tc\rd"), "\"a\\nb\\tc\\rd\"");
  EXPECT_EQ(JsonQuote(std::string("\x01\x1f\0", 3)),
            "\"\\u0001\\u001f\\u0000\"");
  // 0x7f is not a JSON control character.
  EXPECT_EQ(JsonQuote("\x7f"), "\"\x7f\"");
}

TEST(JsonQuoteTest, PassesUtf8Through) {
  EXPECT_EQ(JsonQuote("I² – Ganglioneuroblastom, Ärztin"),
            "\"I² – Ganglioneuroblastom, Ärztin\"");
}

TEST(JsonWriterTest, NestsWithCommasAndIndentation) {
  JsonWriter json;
  json.BeginObject();
  json.Field("name", "site-1");
  json.Key("counts");
  json.BeginArray();
  json.Int(1);
  json.Int(-2);
  json.EndArray();
  json.Key("empty_object");
  json.BeginObject();
  json.EndObject();
  json.Key("empty_array");
  json.BeginArray();
  json.EndArray();
  json.Key("nested");
  json.BeginObject();
  json.Field("ok", true);
  json.Field("missing", false);
  json.Key("none");
  json.Null();
  json.EndObject();
  json.EndObject();
  EXPECT_EQ(json.Take(),
            "{\n"
            "  \"name\": \"site-1\",\n"
            "  \"counts\": [\n"
            "    1,\n"
            "    -2\n"
            "  ],\n"
            "  \"empty_object\": {},\n"
            "  \"empty_array\": [],\n"
            "  \"nested\": {\n"
            "    \"ok\": true,\n"
            "    \"missing\": false,\n"
            "    \"none\": null\n"
            "  }\n"
            "}\n");
}

TEST(JsonWriterTest, InlineArraysStayOnOneLine) {
  JsonWriter json;
  json.BeginObject();
  json.Key("points");
  json.BeginArray();
  json.BeginArray(/*inline_array=*/true);
  json.Number(0.5);
  json.BeginArray();  // inside an inline array: inline too
  json.Int(1);
  json.Int(2);
  json.EndArray();
  json.EndArray();
  json.EndArray();
  json.FieldInterval("ci", Interval{0.25, 0.75});
  json.EndObject();
  EXPECT_EQ(json.Take(),
            "{\n"
            "  \"points\": [\n"
            "    [0.5, [1, 2]]\n"
            "  ],\n"
            "  \"ci\": [0.25, 0.75]\n"
            "}\n");
}

TEST(JsonWriterTest, TopLevelScalarAndFieldOverloads) {
  JsonWriter scalar;
  scalar.String("x\"y");
  EXPECT_EQ(scalar.Take(), "\"x\\\"y\"\n");

  JsonWriter json;
  json.BeginObject();
  json.Field("view", absl::string_view("a"));
  json.Field("std", std::string("b"));
  json.Field("int", 3);
  json.Field("int64", int64_t{9007199254740993});
  json.Field("double", 2.0);
  json.EndObject();
  EXPECT_EQ(json.Take(),
            "{\n"
            "  \"view\": \"a\",\n"
            "  \"std\": \"b\",\n"
            "  \"int\": 3,\n"
            "  \"int64\": 9007199254740993,\n"
            "  \"double\": 2\n"
            "}\n");
}

std::string Numbers(JsonWriter::NumberFormat format) {
  JsonWriter json(format);
  json.BeginArray(/*inline_array=*/true);
  json.Number(0.1);
  json.Number(1.0 / 3);
  json.Number(1e-7);
  json.Number(123456789.0);
  json.Number(std::nan(""));
  json.Number(std::numeric_limits<double>::infinity());
  json.Number(-std::numeric_limits<double>::infinity());
  json.EndArray();
  return json.Take();
}

TEST(JsonWriterTest, NonFiniteNumbersAreNullInEitherFormat) {
  EXPECT_EQ(Numbers(JsonWriter::NumberFormat::kShortest),
            "[0.1, 0.3333333333333333, 1e-07, 123456789, null, null, null]\n");
  EXPECT_EQ(Numbers(JsonWriter::NumberFormat::kSixSignificantDigits),
            "[0.1, 0.333333, 1e-07, 1.23457e+08, null, null, null]\n");

  JsonWriter json;
  json.BeginObject();
  json.FieldInterval("ci", Interval());  // NaN bounds
  json.EndObject();
  EXPECT_EQ(json.Take(), "{\n  \"ci\": [null, null]\n}\n");
}

TEST(HtmlEscapeTest, EscapesMarkupAndQuotesOnly) {
  EXPECT_EQ(HtmlEscape(""), "");
  EXPECT_EQ(HtmlEscape("<b>\"A&B\" 'c'</b>"),
            "&lt;b&gt;&quot;A&amp;B&quot; &#39;c&#39;&lt;/b&gt;");
  // Entities are not recognised: an ampersand is always escaped.
  EXPECT_EQ(HtmlEscape("&amp;"), "&amp;amp;");
  EXPECT_EQ(HtmlEscape("I² – Ärztin\n"), "I² – Ärztin\n");
}

}  // namespace
}  // namespace echofed
