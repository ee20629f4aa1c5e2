#include "site-agent/pacs/multipart.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "site-agent/pacs/dicomweb_json.h"

namespace echofed {
namespace {

using absl::StatusCode;

TEST(MediaTypeTest, QuotedAndUnquotedParameters) {
  absl::StatusOr<MediaType> media = ParseMediaType(
      "Multipart/Related; type=\"application/dicom\"; "
      "BOUNDARY=\"a:b=c d\\\"e\"; transfer-syntax=1.2.840.10008.1.2.1 ");
  ASSERT_TRUE(media.ok()) << media.status();
  EXPECT_EQ(media->type, "multipart/related");
  EXPECT_EQ(media->Parameter("type"), "application/dicom");
  EXPECT_EQ(media->Parameter("boundary"), "a:b=c d\"e");
  EXPECT_EQ(media->Parameter("transfer-syntax"), "1.2.840.10008.1.2.1");
  EXPECT_EQ(media->Parameter("absent"), "");

  EXPECT_EQ(ParseMediaType("application/dicom")->type, "application/dicom");
}

TEST(MediaTypeTest, MalformedValuesAreRefused) {
  for (const char* bad :
       {"", "multipart", "/related", "multipart/", "text/plain; charset",
        "multipart/related; boundary=\"unterminated", "a/b; =x"}) {
    EXPECT_EQ(ParseMediaType(bad).status().code(), StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(MultipartTest, PartsWithHeadersPreambleAndEpilogue) {
  const std::string body =
      "This is a preamble.\r\n"
      "--b0\r\n"
      "Content-Type: application/dicom\r\n"
      "Content-Location:\r\n"
      "  /folded/value\r\n"
      "\r\n"
      "first\r\n--not-our-boundary\r\n"
      "\r\n--b0  \t\r\n"  // transport padding after the delimiter
      "\r\n"              // a part without headers
      "second\r\n"
      "--b0--\r\n"
      "epilogue with --b0 in it\r\n";
  absl::StatusOr<std::vector<MultipartPart>> parts = ParseMultipart(body, "b0");
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].Header("content-type"), "application/dicom");
  EXPECT_EQ((*parts)[0].Header("content-location"), "/folded/value");
  EXPECT_EQ((*parts)[0].body, "first\r\n--not-our-boundary\r\n");
  EXPECT_TRUE((*parts)[1].headers.empty());
  EXPECT_EQ((*parts)[1].body, "second");
}

TEST(MultipartTest, BinaryBodiesAndEmptyParts) {
  std::string binary("\0\r\n-\r\n--\xff", 9);
  const std::string body = "--x\r\nContent-Type: application/dicom\r\n\r\n" +
                           binary +
                           "\r\n--x\r\n"
                           "Content-Type: application/dicom\r\n"
                           "\r\n--x\r\n"  // headers, then no body at all
                           "\r\n\r\n--x--";
  absl::StatusOr<std::vector<MultipartPart>> parts = ParseMultipart(body, "x");
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 3u);
  EXPECT_EQ((*parts)[0].body, binary);
  EXPECT_EQ((*parts)[1].Header("content-type"), "application/dicom");
  EXPECT_EQ((*parts)[1].body, "");
  EXPECT_TRUE((*parts)[2].headers.empty());
  EXPECT_EQ((*parts)[2].body, "");
}

TEST(MultipartTest, EmptyPartWithoutHeaders) {
  absl::StatusOr<std::vector<MultipartPart>> parts =
      ParseMultipart("--x\r\n\r\n--x--", "x");
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_TRUE((*parts)[0].headers.empty());
  EXPECT_EQ((*parts)[0].body, "");
}

TEST(MultipartTest, QuotedBoundaryFromTheContentType) {
  absl::StatusOr<MediaType> media = ParseMediaType(
      "multipart/related; type=\"application/dicom\"; boundary=\"x:y (1)\"");
  ASSERT_TRUE(media.ok());
  const std::string body = "--x:y (1)\r\n\r\nabc\r\n--x:y (1)--\r\n";
  absl::StatusOr<std::vector<MultipartPart>> parts =
      ParseMultipart(body, media->Parameter("boundary"));
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].body, "abc");
}

TEST(MultipartTest, TruncatedOrMalformedBodiesAreDataLoss) {
  const struct {
    const char* body;
    const char* why;
  } cases[] = {
      {"--b\r\n\r\nno closing delimiter", "truncated"},
      {"--b\r\n\r\npart\r\n--b", "without its closing"},
      {"--b\r\n\r\npart\r\n--b\r\n", "truncated"},
      {"no delimiter at all", "no delimiter"},
      {"", "no delimiter"},
      {"--b--\r\n", "no part"},
      // Not a delimiter: it does not begin a line.
      {"preamble--b\r\n\r\nx\r\n--b--", "no part"},
      {"--bX\r\n\r\nx\r\n--b--", "line break"},
      {"--b\r\nContent-Type: a/b\r\nno end of headers\r\n--b--",
       "headers that do not end"},
      {"--b\r\nno colon\r\n\r\nx\r\n--b--", "without a name"},
      {"--b\r\n folded first\r\n\r\nx\r\n--b--", "folded"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<std::vector<MultipartPart>> parts =
        ParseMultipart(c.body, "b");
    EXPECT_EQ(parts.status().code(), StatusCode::kDataLoss) << c.body;
    EXPECT_TRUE(absl::StrContains(parts.status().message(), c.why))
        << c.body << ": " << parts.status();
  }
}

TEST(MultipartTest, BadBoundariesAreRefused) {
  for (const std::string& boundary :
       {std::string(), std::string(71, 'a'), std::string("ends in space "),
        std::string("semi;colon"), std::string("quote\"")}) {
    EXPECT_EQ(ParseMultipart("--x\r\n\r\n\r\n--x--", boundary).status().code(),
              StatusCode::kInvalidArgument)
        << boundary;
  }
  EXPECT_TRUE(ParseMultipart("--" + std::string(70, 'a') + "\r\n\r\nz\r\n--" +
                                 std::string(70, 'a') + "--",
                             std::string(70, 'a'))
                  .ok());
}

TEST(MultipartTest, BuiltBodiesReadBack) {
  const std::vector<std::string> files = {std::string("DICM\0\r\n--", 9), "",
                                          "third"};
  const std::string boundary = ChooseBoundary(files);
  EXPECT_NE(boundary, ChooseBoundary(files));
  for (const std::string& file : files) {
    EXPECT_FALSE(absl::StrContains(file, boundary));
  }
  absl::StatusOr<std::vector<MultipartPart>> parts = ParseMultipart(
      BuildMultipart(files, "application/dicom", boundary), boundary);
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    EXPECT_EQ((*parts)[i].body, files[i]);
    EXPECT_EQ((*parts)[i].Header("content-type"), "application/dicom");
  }
}

TEST(DicomJsonTest, ValuesOfAQidoAnswer) {
  absl::StatusOr<std::vector<google::protobuf::Struct>> objects =
      ParseDicomJsonArray(R"([
        {"0020000D": {"vr": "UI", "Value": ["1.2.3"]},
         "00200013": {"vr": "IS", "Value": [7]},
         "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^J"}]},
         "00080050": {"vr": "SH"},
         "0020000e": {"vr": "UI", "Value": ["1.2.3.4"]}},
        {}
      ])");
  ASSERT_TRUE(objects.ok()) << objects.status();
  ASSERT_EQ(objects->size(), 2u);
  const google::protobuf::Struct& first = (*objects)[0];
  EXPECT_EQ(DicomJsonString(first, "0020000D"), "1.2.3");
  EXPECT_EQ(DicomJsonString(first, "0020000d"), "1.2.3");
  EXPECT_EQ(DicomJsonString(first, "0020000E"), "1.2.3.4");
  EXPECT_EQ(DicomJsonString(first, "00200013"), "7");
  EXPECT_EQ(DicomJsonString(first, "00100010"), "DOE^J");
  EXPECT_EQ(DicomJsonString(first, "00080050"), "");
  EXPECT_EQ(DicomJsonString(first, "00080018"), "");

  EXPECT_TRUE(ParseDicomJsonArray("")->empty());
  EXPECT_TRUE(ParseDicomJsonArray(" []")->empty());
  for (const char* bad : {"{}", "[1]", "[{]", "<html>", "[\"x\"]"}) {
    EXPECT_EQ(ParseDicomJsonArray(bad).status().code(), StatusCode::kDataLoss)
        << bad;
  }
}

TEST(DicomJsonTest, StowFailures) {
  absl::StatusOr<std::vector<StowFailure>> failures = ParseStowFailures(R"({
    "00081198": {"vr": "SQ", "Value": [
      {"00081155": {"vr": "UI", "Value": ["1.2.3.4.5"]},
       "00081197": {"vr": "US", "Value": [272]}},
      {"00081155": {"vr": "UI", "Value": ["1.2.3.4.6"]}}]},
    "00081199": {"vr": "SQ"}})");
  ASSERT_TRUE(failures.ok()) << failures.status();
  ASSERT_EQ(failures->size(), 2u);
  EXPECT_EQ((*failures)[0].sop_instance_uid, "1.2.3.4.5");
  EXPECT_EQ((*failures)[0].reason, 0x0110);
  EXPECT_EQ((*failures)[1].reason, -1);
  EXPECT_TRUE(ParseStowFailures(R"({"00081198": {"vr": "SQ"}})")->empty());
  EXPECT_TRUE(ParseStowFailures("")->empty());
  EXPECT_EQ(ParseStowFailures("[1, 2]").status().code(), StatusCode::kDataLoss);

  EXPECT_EQ(DescribeStowFailureReason(0x0110), "0x0110 (processing failure)");
  EXPECT_EQ(DescribeStowFailureReason(0xA701), "0xA701 (out of resources)");
  EXPECT_EQ(DescribeStowFailureReason(0xC122),
            "0xC122 (transfer syntax not supported)");
  EXPECT_EQ(DescribeStowFailureReason(0x1234), "0x1234");
  EXPECT_EQ(DescribeStowFailureReason(-1), "no failure reason given");
}

}  // namespace
}  // namespace echofed
