#ifndef ECHOFED_COMMON_HALF_H_
#define ECHOFED_COMMON_HALF_H_

// IEEE half and bfloat16 to and from float, for aggregating FLOAT16 /
// BFLOAT16 models without LibTorch on the coordinator.

#include <cmath>
#include <cstdint>
#include <cstring>

#include "proto/tensor.pb.h"

namespace echofed {

inline float Bf16ToFloat(uint16_t bits) {
  uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, 4);
  return value;
}

inline uint16_t FloatToBf16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, 4);
  // Round to nearest even.
  word += 0x7FFF + ((word >> 16) & 1);
  return static_cast<uint16_t>(word >> 16);
}

inline float HalfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  uint32_t word;
  if (exponent == 0) {
    if (mantissa == 0) {
      word = sign;
    } else {
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      word = sign | (exponent << 23) | ((mantissa & 0x3FF) << 13);
    }
  } else if (exponent == 31) {
    word = sign | 0x7F800000u | (mantissa << 13);
  } else {
    word = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &word, 4);
  return value;
}

inline uint16_t FloatToHalf(float value) {
  uint32_t word;
  std::memcpy(&word, &value, 4);
  uint16_t sign = static_cast<uint16_t>((word >> 16) & 0x8000);
  int exponent = static_cast<int>((word >> 23) & 0xFF) - 127 + 15;
  uint32_t mantissa = word & 0x7FFFFF;
  if (exponent >= 31) return sign | 0x7C00;
  if (exponent <= 0) {
    if (exponent < -10) return sign;
    mantissa |= 0x800000;
    int shift = 14 - exponent;
    uint16_t half = static_cast<uint16_t>(mantissa >> shift);
    if ((mantissa >> (shift - 1)) & 1) ++half;
    return sign | half;
  }
  uint16_t half = sign | static_cast<uint16_t>(exponent << 10) |
                  static_cast<uint16_t>(mantissa >> 13);
  if (mantissa & 0x1000) ++half;  // round half up; carries into the exponent
  return half;
}

// One element of a wire dtype as a double, and back (integers rounded).
inline double ElementToDouble(DType dtype, const char* bytes) {
  switch (dtype) {
    case FLOAT32: {
      float value;
      std::memcpy(&value, bytes, 4);
      return value;
    }
    case FLOAT64: {
      double value;
      std::memcpy(&value, bytes, 8);
      return value;
    }
    case INT64: {
      int64_t value;
      std::memcpy(&value, bytes, 8);
      return static_cast<double>(value);
    }
    case FLOAT16:
    case BFLOAT16: {
      uint16_t bits;
      std::memcpy(&bits, bytes, 2);
      return dtype == FLOAT16 ? HalfToFloat(bits) : Bf16ToFloat(bits);
    }
    default:
      return 0;
  }
}

inline void DoubleToElement(DType dtype, double value, char* bytes) {
  switch (dtype) {
    case FLOAT32: {
      float narrow = static_cast<float>(value);
      std::memcpy(bytes, &narrow, 4);
      break;
    }
    case FLOAT64:
      std::memcpy(bytes, &value, 8);
      break;
    case INT64: {
      int64_t integer = static_cast<int64_t>(std::llround(value));
      std::memcpy(bytes, &integer, 8);
      break;
    }
    case FLOAT16:
    case BFLOAT16: {
      float narrow = static_cast<float>(value);
      uint16_t bits =
          dtype == FLOAT16 ? FloatToHalf(narrow) : FloatToBf16(narrow);
      std::memcpy(bytes, &bits, 2);
      break;
    }
    default:
      break;
  }
}

}  // namespace echofed

#endif  // ECHOFED_COMMON_HALF_H_
