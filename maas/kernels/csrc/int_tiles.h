// The integer kernel's tiles, activations and VNNI row products, shared by int_linear.cpp and int_greedy.cpp
// (see int_linear.cpp for the layout and the arithmetic). Everything here is in an anonymous namespace: each
// source compiles its own copy.
#pragma once

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "gguf_block.h"

namespace {

enum Fmt : int { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };
constexpr int LEVELS = 32639;  // |q| <= LEVELS keeps hi = (q - lo) / 256 within a signed byte
constexpr int PREFETCH_L2 = 16384;  // bytes ahead of the tile in use asked into L2 by the few-row products

// A tile column (16 outputs) is a run of units: for the 32-weight formats one tile per block (codes, then 16
// fp16 scales d and, with a min, 16 fp16 mins m); for Q4_K / Q5_K one unit per 256-weight super-block: its 8
// sub-block tiles (codes, then the 16 outputs' 6-bit scales sc and mins m as bytes) and then the 16 fp16 d
// and 16 fp16 dmin, for the weight d sc q - dmin m. Q6_K's sub-blocks hold two groups of 16 weights, each
// with a signed 8-bit scale: its tiles carry the 16 outputs' two scales, the unit's end the 16 fp16 d, for
// the weight d sc (q - 32).
struct Layout {
  int src_qk, src_bytes;  // weights and bytes of one file block
  int code_bytes;         // bytes of a tile's codes: 256 (nibbles), 320 / 384 (+ fifth / sixth bits), 512 (bytes)
  int off;                // the stored code minus off is the signed code
  bool min;               // a min per block (Q4_1, Q5_1) or sub-block (Q4_K, Q5_K)
  bool kq;                // K-quant super-blocks
  bool halves;            // two scales a sub-block (Q6_K)
  constexpr int sub_bytes() const { return code_bytes + (kq ? 32 : 32 + (min ? 32 : 0)); }
  constexpr int group() const { return kq ? 8 : 1; }  // 32-weight blocks per unit
  constexpr int unit_bytes() const { return group() * sub_bytes() + (kq ? (halves ? 32 : 64) : 0); }
};

template <int F>
constexpr Layout L_ = Layout{};
template <> constexpr Layout L_<Q4_0> = {32, 18, 256, 8, false, false, false};
template <> constexpr Layout L_<Q4_1> = {32, 20, 256, 0, true, false, false};
template <> constexpr Layout L_<Q5_0> = {32, 22, 320, 16, false, false, false};
template <> constexpr Layout L_<Q5_1> = {32, 24, 320, 0, true, false, false};
template <> constexpr Layout L_<Q8_0> = {32, 34, 512, 128, false, false, false};
template <> constexpr Layout L_<Q4_K> = {256, 144, 256, 0, true, true, false};
template <> constexpr Layout L_<Q5_K> = {256, 176, 320, 0, true, true, false};
template <> constexpr Layout L_<Q6_K> = {256, 210, 384, 32, false, true, true};

Layout layout(int64_t fmt) {
  switch (fmt) {
#define CASE(F) \
  case F:       \
    return L_<F>;
    CASE(Q4_0) CASE(Q4_1) CASE(Q5_0) CASE(Q5_1) CASE(Q8_0) CASE(Q4_K) CASE(Q5_K) CASE(Q6_K)
#undef CASE
    default: TORCH_CHECK(false, "no integer kernel for block format ", fmt);
  }
}


// The 8 rows of a tile's B matrix (16 outputs x 4 codes each) from its packed codes.
template <int F>
inline void unpack(const uint8_t* t, __m512i* B) {
  constexpr int code_bytes = L_<F>.code_bytes;  // 256: nibbles, 320 / 384: + 1 or 2 bit masks, 512: bytes
  if constexpr (code_bytes == 512) {
    for (int r = 0; r < 8; ++r) B[r] = _mm512_loadu_si512(t + 64 * r);
  } else {
    const __m512i low = _mm512_set1_epi8(15);
    for (int r = 0; r < 4; ++r) {
      const __m512i v = _mm512_loadu_si512(t + 64 * r);
      B[r] = _mm512_and_si512(v, low);
      B[r + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    }
    if constexpr (code_bytes > 256) {
      for (int bit = 4; bit < 4 + (code_bytes - 256) / 64; ++bit) {  // the fifth (and sixth) bits, a mask per row
        const __m512i v = _mm512_set1_epi8(static_cast<char>(1 << bit));
        for (int r = 0; r < 8; ++r) {
          __mmask64 k;
          std::memcpy(&k, t + 256 + 64 * (bit - 4) + 8 * r, 8);
          B[r] = _mm512_mask_add_epi8(B[r], k, B[r], v);
        }
      }
    }
  }
}

// Rows of x as the kernels read them: per row and 32-block, the signed high and low bytes of q (rows padded to
// a multiple of 16 with zeros), dx, sum q and dx * sum q. The bytes lie in AMX A-tile order, block by block and
// within a block 16 rows (512 bytes) at a time, so that a tile load reads 512 consecutive bytes; the per-block
// numbers lie block by block, a row group's 16 side by side.
struct Acts {
  int64_t M, Mp, K, nb;
  struct Nums {  // the per-block numbers, as a kernel's local copy (its stores cannot alias these pointers)
    const float *dx, *sxd;
    const int32_t *sx, *sxl, *shi, *shil;
    int64_t Mp;
    int64_t j(int64_t m, int64_t b) const { return b * Mp + m; }  // index of row m's block b
  };
  int64_t at(int64_t m, int64_t b) const { return nums().j(m, b) * 32; }  // byte offset of its 32 bytes
  Nums nums() const { return {dx.data(), sxd.data(), sx.data(), sxl.data(), shi.data(), shil.data(), Mp}; }
  std::vector<int8_t> hi, lo;
  std::vector<float> dx, sxd;
  std::vector<int32_t> sx, sxl;    // sum q, and over the first 16 values (for Q6_K's halves)
  std::vector<int32_t> shi, shil;  // the same sums of the high bytes (high_sums: only the HI products read them)
  const float* src = nullptr;      // the x these were rounded from
};

void quantize(const float* x, int64_t M, int64_t K, Acts& a) {
  a.src = x, a.M = M, a.K = K, a.nb = K / 32, a.Mp = (M + 15) / 16 * 16;
  auto fit = [](auto& v, int64_t n) {  // grown, never shrunk: no zero-filling when K or M alternate between calls
    if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  };
  fit(a.hi, a.Mp * K), fit(a.lo, a.Mp * K);  // reused between calls: only the padding rows are zeroed
  fit(a.dx, a.Mp * a.nb), fit(a.sxd, a.Mp * a.nb), fit(a.sx, a.Mp * a.nb), fit(a.sxl, a.Mp * a.nb);
  for (int64_t b = 0; b < a.nb && M < a.Mp; ++b) {
    std::fill_n(a.hi.data() + a.at(M, b), (a.Mp - M) * 32, 0);
    std::fill_n(a.lo.data() + a.at(M, b), (a.Mp - M) * 32, 0);
  }
  const __m512 sign = _mm512_set1_ps(-0.0f);
#pragma omp parallel for schedule(static) if (M * K >= 16384)
  for (int64_t i = 0; i < M * a.nb; ++i) {
    const int64_t m = i / a.nb, b = i % a.nb;
    const float* p = x + m * K + b * 32;
    const __m512 v0 = _mm512_loadu_ps(p), v1 = _mm512_loadu_ps(p + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1)));
    const float d = amax / static_cast<float>(LEVELS);
    const __m512 inv = _mm512_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
    // lo: the low byte as a signed value; hi = (q - lo) >> 8
    const __m512i l0 = _mm512_srai_epi32(_mm512_slli_epi32(q0, 24), 24), l1 = _mm512_srai_epi32(_mm512_slli_epi32(q1, 24), 24);
    const __m512i h0 = _mm512_srai_epi32(_mm512_sub_epi32(q0, l0), 8), h1 = _mm512_srai_epi32(_mm512_sub_epi32(q1, l1), 8);
    int8_t* ho = a.hi.data() + a.at(m, b);
    int8_t* lw = a.lo.data() + a.at(m, b);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(ho), _mm512_cvtepi32_epi8(h0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(ho + 16), _mm512_cvtepi32_epi8(h1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(lw), _mm512_cvtepi32_epi8(l0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(lw + 16), _mm512_cvtepi32_epi8(l1));
    const int32_t sl = _mm512_reduce_add_epi32(q0), s = sl + _mm512_reduce_add_epi32(q1);
    const int64_t j = a.nums().j(m, b);
    a.dx[j] = d;
    a.sx[j] = s;
    a.sxl[j] = sl;
    a.sxd[j] = d * static_cast<float>(s);
  }
}

// Acts::shi and shil, for the HI products
inline void high_sums(Acts& a) {
  if (a.shi.size() < static_cast<size_t>(a.Mp * a.nb)) a.shi.resize(a.Mp * a.nb), a.shil.resize(a.Mp * a.nb);
  for (int64_t m = 0; m < a.M; ++m)
    for (int64_t b = 0; b < a.nb; ++b) {
      const int8_t* h = a.hi.data() + a.at(m, b);
      int32_t s = 0;
      for (int k = 0; k < 16; ++k) s += h[k];
      const int64_t j = a.nums().j(m, b);
      a.shil[j] = s;
      for (int k = 16; k < 32; ++k) s += h[k];
      a.shi[j] = s;
    }
}

// acc (16 outputs of row i) += one block's contribution, from the block's high and low integer sums. HI: from
// the high bytes alone (il unused), as if each activation were 256 hi dx (an 8-bit rounding of x)
template <int F, bool HI = false>
inline __m512 epilogue(__m512i ih, __m512i il, const Acts::Nums& a, int64_t i, int64_t b, __m512 d, __m512 mn, __m512 acc) {
  constexpr Layout L = L_<F>;
  const int64_t j = a.j(i, b);
  __m512i dot = HI ? _mm512_slli_epi32(ih, 8) : _mm512_add_epi32(_mm512_slli_epi32(ih, 8), il);
  if constexpr (L.off != 0) dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(L.off * (HI ? 256 * a.shi[j] : a.sx[j])));
  acc = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(a.dx[j]), d), _mm512_cvtepi32_ps(dot), acc);
  if constexpr (L.min) acc = _mm512_fmadd_ps(mn, _mm512_set1_ps(a.sxd[j]), acc);
  return acc;
}

// block b's tile in a tile column
template <int F>
inline const uint8_t* tile(const uint8_t* col, int64_t b) {
  constexpr Layout L = L_<F>;
  return col + (b / L.group()) * L.unit_bytes() + (b % L.group()) * L.sub_bytes();
}

inline __m512 f16x16(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline __m512 u8x16(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// block b's 16 scales and mins (0 where the format has none): d and m, or d sc and -(dmin m)
// Q6_K: the two halves' sums (high and low bytes each) with scales da, db: two fmas, first half first (HI: as
// in epilogue)
template <bool HI = false>
inline __m512 epilogue6(__m512i iha, __m512i ila, __m512i ihb, __m512i ilb, const Acts::Nums& a, int64_t i, int64_t b,
                        __m512 da, __m512 db, __m512 acc) {
  const int64_t j = a.j(i, b);
  const int32_t sa = HI ? 256 * a.shil[j] : a.sxl[j], sb = HI ? 256 * (a.shi[j] - a.shil[j]) : a.sx[j] - a.sxl[j];
  const __m512i ha = _mm512_slli_epi32(iha, 8), hb = _mm512_slli_epi32(ihb, 8);
  const __m512i dot_a = _mm512_sub_epi32(HI ? ha : _mm512_add_epi32(ha, ila), _mm512_set1_epi32(32 * sa));
  const __m512i dot_b = _mm512_sub_epi32(HI ? hb : _mm512_add_epi32(hb, ilb), _mm512_set1_epi32(32 * sb));
  const __m512 dx = _mm512_set1_ps(a.dx[j]);
  acc = _mm512_fmadd_ps(_mm512_mul_ps(dx, da), _mm512_cvtepi32_ps(dot_a), acc);
  return _mm512_fmadd_ps(_mm512_mul_ps(dx, db), _mm512_cvtepi32_ps(dot_b), acc);
}

inline __m512 s8x16(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

template <int F>
inline void scales(const uint8_t* col, int64_t b, __m512& d, __m512& mn) {
  constexpr Layout L = L_<F>;
  const uint8_t* t = tile<F>(col, b);
  if constexpr (L.halves) {  // d sc of the two halves (in d and mn)
    const __m512 dh = f16x16(col + (b / 8) * L.unit_bytes() + 8 * L.sub_bytes());
    d = _mm512_mul_ps(dh, s8x16(t + L.code_bytes));
    mn = _mm512_mul_ps(dh, s8x16(t + L.code_bytes + 16));
  } else if constexpr (L.kq) {
    const uint8_t* head = col + (b / 8) * L.unit_bytes() + 8 * L.sub_bytes();
    d = _mm512_mul_ps(f16x16(head), u8x16(t + L.code_bytes));
    mn = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(f16x16(head + 32), u8x16(t + L.code_bytes + 16)));
  } else {
    d = f16x16(t + L.code_bytes);
    mn = L.min ? f16x16(t + L.code_bytes + 32) : _mm512_setzero_ps();
  }
}

// acc + the byte dot products of a's unsigned bytes with the 4 signed bytes at p, broadcast: one instruction with
// the broadcast folded into its memory operand (compilers load the broadcast into a register first)
inline __m512i dpbusd_1to16(__m512i acc, __m512i a, const int32_t* p) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(a), "m"(*p));
  return acc;
}

constexpr int DECODED = 10;  // vectors a decoded block takes: its 8 code vectors, then d and mn (see scales)

// the tile at t streams from memory: ask for the next tiles into L1 and far ahead into L2
template <int F>
inline void prefetch_ahead(const uint8_t* t) {
  _mm_prefetch(reinterpret_cast<const char*>(t + 4 * L_<F>.sub_bytes()), _MM_HINT_T0);
  for (int o = 0; o < L_<F>.sub_bytes(); o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(t + PREFETCH_L2 + o), _MM_HINT_T1);
}

// A tile column's nb blocks decoded once (codes to bytes, scales to floats) into U, DECODED vectors a block, for
// products of many rows: each group of rows then loads them instead of decoding every block again
template <int F>
void decode_column(const uint8_t* col, int64_t nb, __m512i* U) {
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* t = tile<F>(col, b);
    prefetch_ahead<F>(t);
    unpack<F>(t, U + DECODED * b);
    __m512 d, mn;
    scales<F>(col, b, d, mn);
    U[DECODED * b + 8] = _mm512_castps_si512(d);
    U[DECODED * b + 9] = _mm512_castps_si512(mn);
  }
}

// Rows r0 .. r0 + R of x against the 16 outputs of tile column t (row r0 + i's stored at y + i ldy), with VNNI byte dot products (HI: the high
// bytes' products alone, half the work: see epilogue). U: the column as decode_column left it, or null (each
// block decoded here).
template <int F, int R, bool HI = false>
void vnni_rows(const Acts& a, int64_t r0, const uint8_t* col, float* y, int64_t ldy, const float* bias,
               const __m512i* U = nullptr) {
  const Acts::Nums nm = a.nums();
  __m512 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < a.nb; ++b) {
    __m512i B[8];
    __m512 d, mn;
    if (U) {
      for (int r = 0; r < 8; ++r) B[r] = _mm512_load_si512(U + DECODED * b + r);
      d = _mm512_castsi512_ps(_mm512_load_si512(U + DECODED * b + 8));
      mn = _mm512_castsi512_ps(_mm512_load_si512(U + DECODED * b + 9));
    } else {
      const uint8_t* t = tile<F>(col, b);
      if (r0 == 0) prefetch_ahead<F>(t);  // the first rows stream the weights; later ones find them in L1
      unpack<F>(t, B);
      scales<F>(col, b, d, mn);
    }
    for (int i = 0; i < R; ++i) {
      const int32_t* h = reinterpret_cast<const int32_t*>(a.hi.data() + a.at(r0 + i, b));
      [[maybe_unused]] const int32_t* l = reinterpret_cast<const int32_t*>(a.lo.data() + a.at(r0 + i, b));
      if constexpr (L_<F>.halves) {
        __m512i ih[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()}, il[2] = {ih[0], ih[0]};
        for (int r = 0; r < 8; ++r) {
          ih[r / 4] = dpbusd_1to16(ih[r / 4], B[r], h + r);
          if constexpr (!HI) il[r / 4] = dpbusd_1to16(il[r / 4], B[r], l + r);
        }
        acc[i] = epilogue6<HI>(ih[0], il[0], ih[1], il[1], nm, r0 + i, b, d, mn, acc[i]);
      } else {
        __m512i ih = _mm512_setzero_si512(), il = _mm512_setzero_si512();
        for (int r = 0; r < 8; ++r) {
          ih = dpbusd_1to16(ih, B[r], h + r);
          if constexpr (!HI) il = dpbusd_1to16(il, B[r], l + r);
        }
        acc[i] = epilogue<F, HI>(ih, il, nm, r0 + i, b, d, mn, acc[i]);
      }
    }
  }
  const __m512 bv = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  for (int i = 0; i < R; ++i) _mm512_storeu_ps(y + i * ldy, _mm512_add_ps(acc[i], bv));
}


// Output n of a repacked matrix (nb 32-weight blocks a row), block b: its 32 signed codes, each one's scale (Q6_K:
// its half's) and the block's min (0 without one): the weight is code d (+ mn).
struct BlockRow {
  float code[32], d[32], mn;
};

inline void block_row(const uint8_t* wp, const Layout& L, int64_t nb, int64_t n, int64_t b, BlockRow& out) {
  const int64_t t = n / 16, c = n % 16, ub = L.unit_bytes(), sb = L.sub_bytes();
  const uint8_t* unit = wp + t * (nb / L.group()) * ub + (b / L.group()) * ub;
  const uint8_t* o = unit + (b % L.group()) * sb;
  float d;
  uint16_t h;
  out.mn = 0.0f;
  if (L.halves) {  // d sc of the half this k is in: set per k below
    std::memcpy(&h, unit + 8 * sb + 2 * c, 2);
    d = _cvtsh_ss(h);
  } else if (L.kq) {
    std::memcpy(&h, unit + 8 * sb + 2 * c, 2);
    d = _cvtsh_ss(h) * static_cast<float>(o[L.code_bytes + c]);
    std::memcpy(&h, unit + 8 * sb + 32 + 2 * c, 2);
    out.mn = -(_cvtsh_ss(h) * static_cast<float>(o[L.code_bytes + 16 + c]));
  } else {
    std::memcpy(&h, o + L.code_bytes + 2 * c, 2);
    d = _cvtsh_ss(h);
    if (L.min) std::memcpy(&h, o + L.code_bytes + 32 + 2 * c, 2), out.mn = _cvtsh_ss(h);
  }
  for (int k = 0; k < 32; ++k) {
    const int r = k / 4, e = static_cast<int>(4 * c + k % 4);
    int code;
    if (L.code_bytes == 512) {
      code = o[64 * r + e];
    } else {
      code = (o[64 * (r % 4) + e] >> (r < 4 ? 0 : 4)) & 15;
      if (L.code_bytes >= 320 && ((o[256 + 8 * r + e / 8] >> (e % 8)) & 1)) code |= 16;
      if (L.code_bytes == 384 && ((o[320 + 8 * r + e / 8] >> (e % 8)) & 1)) code |= 32;
    }
    out.code[k] = static_cast<float>(code - L.off);
    out.d[k] = L.halves ? d * static_cast<float>(static_cast<int8_t>(o[L.code_bytes + 16 * (k / 16) + c])) : d;
  }
}

// fn(std::integral_constant<int, F>{}) for the repacked format code fmt (100 + the GGUF type id)
template <class Fn>
void with_format(int64_t fmt, Fn&& fn) {
  switch (fmt - 100) {
#define CASE(F) \
  case F:       \
    return fn(std::integral_constant<int, F>{});
    CASE(Q4_0) CASE(Q4_1) CASE(Q5_0) CASE(Q5_1) CASE(Q8_0) CASE(Q4_K) CASE(Q5_K) CASE(Q6_K)
#undef CASE
    default: throw std::invalid_argument("unknown repacked format");
  }
}

}  // namespace
