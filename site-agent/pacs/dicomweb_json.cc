#include "site-agent/pacs/dicomweb_json.h"

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"

namespace echofed {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

// PS3.18 F.2.1.1.2 spells tags in upper case; some servers do not.
const Value* FindAttribute(const Struct& object, absl::string_view tag) {
  const std::string upper = absl::AsciiStrToUpper(tag);
  auto found = object.fields().find(upper);
  if (found == object.fields().end()) {
    found = object.fields().find(absl::AsciiStrToLower(tag));
  }
  return found == object.fields().end() ? nullptr : &found->second;
}

// The "Value" array of an attribute, or nullptr.
const ListValue* Values(const Struct& object, absl::string_view tag) {
  const Value* attribute = FindAttribute(object, tag);
  if (attribute == nullptr || !attribute->has_struct_value()) return nullptr;
  const auto& fields = attribute->struct_value().fields();
  auto values = fields.find("Value");
  if (values == fields.end() || !values->second.has_list_value()) {
    return nullptr;
  }
  return &values->second.list_value();
}

absl::StatusOr<Value> ParseJson(absl::string_view json,
                                absl::string_view what) {
  Value value;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  if (!google::protobuf::util::JsonStringToMessage(std::string(json), &value,
                                                   options)
           .ok()) {
    return absl::DataLossError(
        absl::StrCat("the ", what, " is not valid JSON"));
  }
  return value;
}

bool IsBlank(absl::string_view text) {
  for (char c : text) {
    if (!absl::ascii_isspace(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::vector<Struct>> ParseDicomJsonArray(
    absl::string_view json) {
  std::vector<Struct> objects;
  if (IsBlank(json)) return objects;
  absl::StatusOr<Value> value = ParseJson(json, "QIDO-RS answer");
  if (!value.ok()) return value.status();
  if (!value->has_list_value()) {
    return absl::DataLossError("the QIDO-RS answer is not a JSON array");
  }
  for (const Value& item : value->list_value().values()) {
    if (!item.has_struct_value()) {
      return absl::DataLossError(
          "the QIDO-RS answer holds something other than DICOM JSON objects");
    }
    objects.push_back(item.struct_value());
  }
  return objects;
}

std::string DicomJsonString(const Struct& object, absl::string_view tag) {
  const ListValue* values = Values(object, tag);
  if (values == nullptr || values->values_size() == 0) return "";
  const Value& first = values->values(0);
  switch (first.kind_case()) {
    case Value::kStringValue:
      return first.string_value();
    case Value::kNumberValue: {
      const double number = first.number_value();
      if (std::isfinite(number) && number == std::floor(number) &&
          std::fabs(number) < 1e15) {
        return absl::StrCat(static_cast<int64_t>(number));
      }
      return absl::StrCat(number);
    }
    case Value::kStructValue: {
      const auto& fields = first.struct_value().fields();
      auto alphabetic = fields.find("Alphabetic");
      return alphabetic == fields.end() ? ""
                                        : alphabetic->second.string_value();
    }
    default:
      return "";
  }
}

std::vector<Struct> DicomJsonItems(const Struct& object,
                                   absl::string_view tag) {
  std::vector<Struct> items;
  const ListValue* values = Values(object, tag);
  if (values == nullptr) return items;
  for (const Value& item : values->values()) {
    if (item.has_struct_value()) items.push_back(item.struct_value());
  }
  return items;
}

absl::StatusOr<std::vector<StowFailure>> ParseStowFailures(
    absl::string_view json) {
  std::vector<StowFailure> failures;
  if (IsBlank(json)) return failures;
  absl::StatusOr<Value> value = ParseJson(json, "STOW-RS answer");
  if (!value.ok()) return value.status();
  const Struct* object = nullptr;
  if (value->has_struct_value()) {
    object = &value->struct_value();
  } else if (value->has_list_value() &&
             value->list_value().values_size() == 1 &&
             value->list_value().values(0).has_struct_value()) {
    object = &value->list_value().values(0).struct_value();
  } else {
    return absl::DataLossError("the STOW-RS answer is not a DICOM JSON object");
  }
  for (const Struct& item : DicomJsonItems(*object, "00081198")) {
    StowFailure failure;
    failure.sop_instance_uid = DicomJsonString(item, "00081155");
    int reason = 0;
    const std::string text = DicomJsonString(item, "00081197");
    if (!text.empty() && absl::SimpleAtoi(text, &reason)) {
      failure.reason = reason;
    }
    failures.push_back(std::move(failure));
  }
  return failures;
}

std::string DescribeStowFailureReason(int reason) {
  if (reason < 0) return "no failure reason given";
  const char* meaning = nullptr;
  switch (reason) {
    case 0x0110:
      meaning = "processing failure";
      break;
    case 0x0111:
      meaning = "duplicate SOP instance";
      break;
    case 0x0122:
      meaning = "SOP class not supported";
      break;
    case 0x0124:
      meaning = "not authorized";
      break;
    case 0xC122:
      meaning = "transfer syntax not supported";
      break;
    default:
      if (reason >= 0xA700 && reason <= 0xA7FF) {
        meaning = "out of resources";
      } else if (reason >= 0xA900 && reason <= 0xA9FF) {
        meaning = "data set does not match SOP class";
      } else if (reason >= 0xC000 && reason <= 0xCFFF) {
        meaning = "cannot understand";
      }
  }
  return meaning == nullptr ? absl::StrFormat("0x%04X", reason)
                            : absl::StrFormat("0x%04X (%s)", reason, meaning);
}

}  // namespace echofed
