// Small readers of GGUF block fields shared by block_linear.cpp and int_linear.cpp.
#pragma once

#include <cstdint>
#include <cstring>

namespace gguf {

// a little-endian uint32 at p (Q5_0 / Q5_1's fifth bits)
inline uint32_t u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q4_K / Q5_K: 6-bit scale and min of sub-block j (of 8) from the 12 packed bytes
inline void scale_min_k4(const uint8_t* s, int j, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

}  // namespace gguf
