// Linear layers straight from GGUF block formats on AVX2 or AVX-512 CPUs: y = x @ W^T (+ b), fp32 activations.
//
// W is (N, K) stored as llama.cpp stores it: each row is K / QK blocks of one format (Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0: 32 weights; Q4_K, Q5_K, Q6_K: 256). Blocks decode to fp32 with exactly the file's
// values (every product in a block's formula is exact in fp32 and the one subtraction rounds once, as
// gguf-py's dequantizer does). One row of x multiplies each block as it is decoded, in registers;
// several rows share a strip of rows decoded once. Every output accumulates x[k] * w[k] in the same
// order (one W-lane accumulator, k ascending, one fixed horizontal sum) whatever M is, so a row's result
// does not depend on what else is in the batch. Float32 weights (fmt 0) take the same tiles, for the fused
// decode (decode.cpp).
//
// The same source builds twice (kernels/native.py): with AVX2 (8 lanes) and, for CPUs that have it, with
// AVX-512 (16 lanes, __AVX512F__ defined); Vec below is the one difference. The two builds sum in different
// orders, so their results differ in the last bits; within one build every path agrees.
#include <torch/extension.h>

#include "gguf_block.h"
#include "vec_math.h"
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace {

enum Fmt : int { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };

// W float lanes: a register of floats, and W codes (bytes) in the low bytes of an __m128i
#ifdef __AVX512F__
struct Vec {
  static constexpr int W = 16;
  using F = __m512;
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F bcast(const float* p) { return _mm512_set1_ps(*p); }  // vbroadcastss from memory: a load
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F from_u8(__m128i c) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(c)); }
  static F from_s8(__m128i c) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c)); }
  static __m128i codes(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  static float hsum(F v) {  // a fixed tree: 16 -> 8 -> 4 -> 2 -> 1
    return sum8(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
  }
};
#else
struct Vec {
  static constexpr int W = 8;
  using F = __m256;
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F from_u8(__m128i c) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)); }
  static F from_s8(__m128i c) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)); }
  static __m128i codes(const uint8_t* p) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); }
  static float hsum(F s) { return sum8(s); }
};
#endif
constexpr int W = Vec::W;
using VF = Vec::F;

// fp16 -> fp32 through a table: a scalar load, and a broadcast straight from the table is a plain load,
// where converting in registers and broadcasting takes three shuffle-port operations per scale.
const float* f16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (int i = 0; i < 65536; ++i) t[i] = _cvtsh_ss(static_cast<uint16_t>(i));
    return t;
  }();
  return table.data();
}

const float* const F16 = f16_table();

inline const float* f16p(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16 + h;
}

inline float f16(const uint8_t* p) { return *f16p(p); }

inline VF bcast_f16(const uint8_t* p) { return Vec::bcast(f16p(p)); }

using gguf::u32;

// W codes (bytes in the low bytes of c) -> sink(j, code * s + b). Codes are widened W at a time from
// W-byte pieces (a load, or a shift and mask of one), so each vector costs one shuffle-port widening.
template <bool SIGNED, class Sink>
inline void emit(__m128i c, VF s, VF b, int j, Sink& sink) {
  sink(j, Vec::fmadd(SIGNED ? Vec::from_s8(c) : Vec::from_u8(c), s, b));
}

// the bits of each of W bytes at `shift`, masked (a per-byte shift)
inline __m128i bits(const uint8_t* p, int shift, int mask) {
  return _mm_and_si128(_mm_srli_epi16(Vec::codes(p), shift), _mm_set1_epi8(static_cast<char>(mask)));
}

using gguf::scale_min_k4;

template <int F> struct Spec;
template <> struct Spec<Q4_0> { static constexpr int QK = 32, BYTES = 18; };
template <> struct Spec<Q4_1> { static constexpr int QK = 32, BYTES = 20; };
template <> struct Spec<Q5_0> { static constexpr int QK = 32, BYTES = 22; };
template <> struct Spec<Q5_1> { static constexpr int QK = 32, BYTES = 24; };
template <> struct Spec<Q8_0> { static constexpr int QK = 32, BYTES = 34; };
template <> struct Spec<Q4_K> { static constexpr int QK = 256, BYTES = 144; };
template <> struct Spec<Q5_K> { static constexpr int QK = 256, BYTES = 176; };
template <> struct Spec<Q6_K> { static constexpr int QK = 256, BYTES = 210; };

// Block<F>::decode(block, sink): sink(j, w) receives the block's weights W j .. W j + W - 1 as floats.
template <int F> struct Block;

constexpr int PER32 = 32 / W;  // vectors per 32 weights

// 16 nibble codes (from 16 bytes at q: the low nibbles, or with `high` the high ones) -> sink(j, code * s + b).
// With AVX-512 a code looks its value up in a 16-entry table made with the same fma (vpermps reads an index's
// low 4 bits, so the low nibbles need no mask): one shuffle instead of a conversion and an fma per vector.
template <class Sink>
inline void nibbles16(const uint8_t* q, bool high, VF s, VF b, int j, Sink& sink) {
#ifdef __AVX512F__
  const VF table = Vec::fmadd(_mm512_set_ps(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), s, b);
  const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
  sink(j, _mm512_permutexvar_ps(high ? _mm512_srli_epi32(c, 4) : c, table));
#else
  for (int r = 0; r < 16 / W; ++r) emit<false>(bits(q + W * r, high ? 4 : 0, 0x0F), s, b, j * 16 / W + r, sink);
#endif
}

// Q4_0 / Q4_1: element j is byte j's low nibble, element j + 16 its high nibble (16 bytes at qs).
template <class Sink>
inline void nibble_block(const uint8_t* qs, VF s, VF b, Sink& sink) {
  nibbles16(qs, false, s, b, 0, sink);
  nibbles16(qs, true, s, b, 1, sink);
}

template <> struct Block<Q4_0> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    const VF d = bcast_f16(b);
    nibble_block(b + 2, d, Vec::mul(d, Vec::bcast(&MINUS8)), sink);  // (q - 8) * d
  }
  static constexpr float MINUS8 = -8.0f;
};

template <> struct Block<Q4_1> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    nibble_block(b + 4, bcast_f16(b), bcast_f16(b + 2), sink);  // q * d + m
  }
};

// 8 bits -> 8 bytes of 0 or 16, by table (a load straight into a vector register)
const uint64_t* spread_table() {
  static const std::vector<uint64_t> table = [] {
    std::vector<uint64_t> t(256);
    for (int v = 0; v < 256; ++v)
      for (int i = 0; i < 8; ++i) t[v] |= static_cast<uint64_t>((v >> i) & 1) << (8 * i + 4);
    return t;
  }();
  return table.data();
}

const uint64_t* const SPREAD = spread_table();

// bits W r .. W r + W - 1 of qh as 0 or 16 in W bytes (the fifth bit of Q5_0 / Q5_1 codes W r ..)
inline __m128i high_bits(uint32_t qh, int r) {
  if constexpr (W == 8) {
    return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(SPREAD + ((qh >> (8 * r)) & 0xFF)));
  } else {
    return _mm_set_epi64x(static_cast<int64_t>(SPREAD[(qh >> (16 * r + 8)) & 0xFF]),
                          static_cast<int64_t>(SPREAD[(qh >> (16 * r)) & 0xFF]));
  }
}

// Q5_0 / Q5_1: the Q4 nibble layout plus a fifth bit per element from qh
template <class Sink>
inline void five_bit_block(const uint8_t* qs, uint32_t qh, VF s, VF b, Sink& sink) {
  for (int r = 0; r < PER32; ++r)
    emit<false>(_mm_or_si128(bits(qs + (r * W) % 16, 4 * (r * W / 16), 0x0F), high_bits(qh, r)), s, b, r, sink);
}

template <> struct Block<Q5_0> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    const VF d = bcast_f16(b);
    five_bit_block(b + 6, u32(b + 2), d, Vec::mul(d, Vec::bcast(&MINUS16)), sink);  // (q - 16) * d
  }
  static constexpr float MINUS16 = -16.0f;
};

template <> struct Block<Q5_1> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    five_bit_block(b + 8, u32(b + 4), bcast_f16(b), bcast_f16(b + 2), sink);  // q * d + m
  }
};

template <> struct Block<Q8_0> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    const VF d = bcast_f16(b), zero = Vec::zero();
    for (int j = 0; j < PER32; ++j) emit<true>(Vec::codes(b + 2 + W * j), d, zero, j, sink);
  }
};

// Q4_K / Q5_K: the 8 sub-blocks' scales d * sc and negated mins -dmin * m, into memory (broadcast from there
// by loads)
inline void k4_scales(const uint8_t* b, float* S, float* B) {
  const float d = f16(b), dmin = f16(b + 2);
  for (int j = 0; j < 8; ++j) {  // scalar stores, read back by same-size broadcasts (forwarded)
    int sc, m;
    scale_min_k4(b + 4, j, sc, m);
    S[j] = d * static_cast<float>(sc);
    B[j] = -(dmin * static_cast<float>(m));
  }
}

template <> struct Block<Q4_K> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    alignas(32) float S[8], B[8];
    k4_scales(b, S, B);
    const uint8_t* qs = b + 16;
    for (int j = 0; j < 8; ++j) {  // sub-block j: low (even j) or high (odd j) nibbles of 32 bytes
      const VF s = Vec::bcast(S + j), m = Vec::bcast(B + j);
      const uint8_t* q = qs + 32 * (j / 2);
      for (int r = 0; r < 2; ++r) nibbles16(q + 16 * r, j % 2, s, m, 2 * j + r, sink);
    }
  }
};

template <> struct Block<Q5_K> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    alignas(32) float S[8], B[8];
    k4_scales(b, S, B);
    const uint8_t* qh = b + 16;
    const uint8_t* qs = b + 48;
    for (int j = 0; j < 8; ++j) {  // the fifth bit of sub-block j's element l is bit j of qh[l]
      const VF s = Vec::bcast(S + j), m = Vec::bcast(B + j);
      const uint8_t* q = qs + 32 * (j / 2);
      for (int r = 0; r < PER32; ++r) {
        const __m128i hi = _mm_slli_epi16(bits(qh + W * r, j, 0x01), 4);
        emit<false>(_mm_or_si128(bits(q + W * r, 4 * (j % 2), 0x0F), hi), s, m, PER32 * j + r, sink);
      }
    }
  }
};

template <> struct Block<Q6_K> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    alignas(32) float S[16], B[16];  // d * sc and -32 * d * sc for the 16 groups of 16
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = f16(b + 208);
    for (int k = 0; k < 16; ++k) {
      S[k] = d * static_cast<float>(sc[k]);
      B[k] = -32.0f * S[k];
    }
    for (int h = 0; h < 2; ++h) {
      for (int g = 0; g < 4; ++g) {  // elements h * 128 + g * 32 + l, l < 32
        const int e = h * 128 + g * 32;
        const uint8_t* lo = ql + h * 64 + (g % 2) * 32;
        const uint8_t* hb = qh + h * 32;
        for (int r = 0; r < PER32; ++r) {  // elements e + W r ..: scale group (e + W r) / 16
          const int k = (e + W * r) / 16;
          const __m128i hi = _mm_slli_epi16(bits(hb + W * r, 2 * g, 0x03), 4);
          emit<false>(_mm_or_si128(bits(lo + W * r, 4 * (g / 2), 0x0F), hi), Vec::bcast(S + k), Vec::bcast(B + k),
                      e / W + r, sink);  // (q - 32) * d * sc
        }
      }
    }
  }
};
template <int F>
void decode_row_t(const uint8_t* row, int64_t K, float* out) {
  for (int64_t i = 0; i < K / Spec<F>::QK; ++i) {
    float* o = out + i * Spec<F>::QK;
    auto store = [o](int j, VF w) { Vec::store(o + W * j, w); };
    Block<F>::decode(row + i * Spec<F>::BYTES, store);
  }
}

// One row of x against NR weight rows decoded block by block in registers: the same values and the same
// order as decode_row_t followed by tile<1, NR>, without the round trip through memory.
template <int F, int NR>
void direct(const float* x, const uint8_t* w, int64_t row_bytes, int64_t K, float* y, const float* bias) {
  constexpr int V = Spec<F>::QK / W;  // vectors per block
  VF acc[NR];
  for (int c = 0; c < NR; ++c) acc[c] = Vec::zero();
  for (int64_t i = 0; i < K / Spec<F>::QK; ++i) {
    const float* xb = x + i * Spec<F>::QK;
    for (int c = 0; c < NR; ++c) {
      VF wv[V];  // decoded into locals (registers for 32-weight blocks), then multiplied
      auto put = [&wv](int j, VF v) { wv[j] = v; };
      const uint8_t* blk = w + c * row_bytes + i * Spec<F>::BYTES;
      _mm_prefetch(reinterpret_cast<const char*>(blk + 1024), _MM_HINT_T0);  // streams: ask ahead
      _mm_prefetch(reinterpret_cast<const char*>(blk + 16384), _MM_HINT_T1);  // and far ahead into L2
      Block<F>::decode(blk, put);
      VF a = acc[c];
      for (int j = 0; j < V; ++j) a = Vec::fmadd(Vec::load(xb + W * j), wv[j], a);
      acc[c] = a;
    }
  }
  for (int c = 0; c < NR; ++c) y[c] = Vec::hsum(acc[c]) + (bias ? bias[c] : 0.0f);
}

using RowDecoder = void (*)(const uint8_t*, int64_t, float*);
using Direct = void (*)(const float*, const uint8_t*, int64_t, int64_t, float*, const float*);

struct Kernels {
  int64_t qk, bytes;
  RowDecoder row;
  Direct direct4, direct1;
};

Kernels kernels(int fmt) {
  switch (fmt) {
#define CASE(F) \
  case F:       \
    return {Spec<F>::QK, Spec<F>::BYTES, &decode_row_t<F>, &direct<F, 4>, &direct<F, 1>};
    CASE(Q4_0) CASE(Q4_1) CASE(Q5_0) CASE(Q5_1) CASE(Q8_0) CASE(Q4_K) CASE(Q5_K) CASE(Q6_K)
#undef CASE
    default:
      TORCH_CHECK(false, "unsupported block format ", fmt);
  }
}

// MR rows of x against NR decoded weight rows: y[r][c] = sum_k x[r][k] * w[c][k] (+ bias[c]).
template <int MR, int NR>
inline void tile(const float* x, int64_t ldx, const float* w, int64_t K, float* y, int64_t ldy, const float* bias) {
  VF acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) acc[r][c] = Vec::zero();
  for (int64_t k = 0; k < K; k += W) {
    VF wv[NR];
    for (int c = 0; c < NR; ++c) wv[c] = Vec::load(w + c * K + k);
    for (int r = 0; r < MR; ++r) {
      const VF xv = Vec::load(x + r * ldx + k);
      for (int c = 0; c < NR; ++c) acc[r][c] = Vec::fmadd(xv, wv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) y[r * ldy + c] = Vec::hsum(acc[r][c]) + (bias ? bias[c] : 0.0f);
}

// the tile of x rows by weight rows that many-row products sweep: its accumulators plus a row of weights fit
// the registers (16 with AVX2, 32 with AVX-512). Every output is summed in the same order whatever the tile.
#ifdef __AVX512F__
constexpr int TM = 6, TN = 4;
#else
constexpr int TM = 4, TN = 3;
#endif

// Rows m of x against a decoded strip of `rows` weight rows (outputs n0 .. n0 + rows).
void sweep(const float* x, int64_t M, int64_t K, const float* strip, int64_t rows, float* y, int64_t N, int64_t n0,
           const float* bias) {
  const float* bb = bias ? bias + n0 : nullptr;
  int64_t m = 0;
  if (M == 1) {
    int64_t c = 0;
    for (; c + 4 <= rows; c += 4) tile<1, 4>(x, K, strip + c * K, K, y + n0 + c, N, bb ? bb + c : nullptr);
    for (; c < rows; ++c) tile<1, 1>(x, K, strip + c * K, K, y + n0 + c, N, bb ? bb + c : nullptr);
    return;
  }
  for (; m + TM <= M; m += TM) {
    int64_t c = 0;
    for (; c + TN <= rows; c += TN)
      tile<TM, TN>(x + m * K, K, strip + c * K, K, y + m * N + n0 + c, N, bb ? bb + c : nullptr);
    for (; c < rows; ++c) tile<TM, 1>(x + m * K, K, strip + c * K, K, y + m * N + n0 + c, N, bb ? bb + c : nullptr);
  }
  for (; m < M; ++m) {
    int64_t c = 0;
    for (; c + 4 <= rows; c += 4) tile<1, 4>(x + m * K, K, strip + c * K, K, y + m * N + n0 + c, N, bb ? bb + c : nullptr);
    for (; c < rows; ++c) tile<1, 1>(x + m * K, K, strip + c * K, K, y + m * N + n0 + c, N, bb ? bb + c : nullptr);
  }
}

Kernels check_blocks(const torch::Tensor& w, int64_t fmt, int64_t K) {
  const Kernels k = kernels(static_cast<int>(fmt));
  TORCH_CHECK(w.dtype() == torch::kUInt8 && w.dim() == 2 && w.is_contiguous(), "w: contiguous 2-D uint8 blocks");
  TORCH_CHECK(K % k.qk == 0 && w.size(1) == K / k.qk * k.bytes, "w's row size does not match K for this format");
  return k;
}

}  // namespace

// y (M, N; rows ldy apart) = x (M, K) @ W^T (+ b): W is N rows of `fmt` blocks, or float32 rows when fmt is 0 (the same
// tiles and order, without decoding). Used by block_linear and by the fused decode (decode.cpp).
#ifdef MAAS_INT
void int_matmul(const float* xp, int64_t M, int64_t K, const void* w, int64_t fmt, int64_t N, const float* bp,
                float* yp, int64_t ldy, bool same_x);  // int_linear.cpp: layers repacked for 16-bit integer activations
#endif

// same_x: x holds the same values as in the previous call (the integer kernel reuses their rounding)
void matmul(const float* xp, int64_t M, int64_t K, const void* w, int64_t fmt, int64_t N, const float* bp,
            float* yp, int64_t ldy, bool same_x) {
#ifdef MAAS_INT
  if (fmt >= 100) return int_matmul(xp, M, K, w, fmt, N, bp, yp, ldy, same_x);
#endif
  const int64_t R = M >= 8 ? 16 : 4;  // rows per strip: more when many x rows share each decode
  const int64_t tasks = (N + R - 1) / R;
  if (fmt == 0) {
    const float* wf = static_cast<const float*>(w);
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t n0 = t * R;
      sweep(xp, M, K, wf + n0 * K, std::min<int64_t>(R, N - n0), yp, ldy, n0, bp);
    }
    return;
  }
  const Kernels kern = kernels(static_cast<int>(fmt));
  const uint8_t* wp = static_cast<const uint8_t*>(w);
  const int64_t row_bytes = K / kern.qk * kern.bytes;
  if (M == 1) {  // decode in registers, no strip
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t n0 = t * R, rows = std::min<int64_t>(R, N - n0);
      const float* bb = bp ? bp + n0 : nullptr;
      if (rows == 4) {
        kern.direct4(xp, wp + n0 * row_bytes, row_bytes, K, yp + n0, bb);
      } else {
        for (int64_t c = 0; c < rows; ++c)
          kern.direct1(xp, wp + (n0 + c) * row_bytes, row_bytes, K, yp + n0 + c, bb ? bb + c : nullptr);
      }
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tasks; ++t) {
    thread_local std::vector<float> strip;
    const int64_t n0 = t * R, rows = std::min<int64_t>(R, N - n0);
    strip.resize(static_cast<size_t>(R * K));
    for (int64_t c = 0; c < rows; ++c) kern.row(wp + (n0 + c) * row_bytes, K, strip.data() + c * K);
    sweep(xp, M, K, strip.data(), rows, yp, ldy, n0, bp);
  }
}

torch::Tensor block_linear(torch::Tensor x, torch::Tensor w, int64_t fmt, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous(), "x: contiguous 2-D float32");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  check_blocks(w, fmt, K);
  TORCH_CHECK(K % 16 == 0, "K must be a multiple of 16");
  auto y = torch::empty({M, N}, x.options());
  matmul(x.data_ptr<float>(), M, K, w.data_ptr<uint8_t>(), fmt, N,
         bias.has_value() ? bias->data_ptr<float>() : nullptr, y.data_ptr<float>(), N, false);
  return y;
}

torch::Tensor block_rows(torch::Tensor w, torch::Tensor ids, int64_t fmt, int64_t K) {
  TORCH_CHECK(ids.dtype() == torch::kInt64 && ids.dim() == 1 && ids.is_contiguous(), "ids: 1-D int64");
  const Kernels kern = check_blocks(w, fmt, K);
  const int64_t n = ids.size(0), N = w.size(0), row_bytes = w.size(1);
  auto out = torch::empty({n, K}, torch::dtype(torch::kFloat32));
  const int64_t* ip = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) TORCH_CHECK(ip[i] >= 0 && ip[i] < N, "row id out of range");
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
#pragma omp parallel for schedule(static) if (n > 64)
  for (int64_t i = 0; i < n; ++i) kern.row(wp + ip[i] * row_bytes, K, op + i * K);
  return out;
}

void register_decode(pybind11::module& m);             // decode.cpp
void register_prefill_attention(pybind11::module& m);  // prefill_attention.cpp
#ifdef MAAS_INT
void register_int(pybind11::module& m);     // int_linear.cpp
void register_greedy(pybind11::module& m);  // int_greedy.cpp
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  register_decode(m);
  register_prefill_attention(m);
#ifdef MAAS_INT
  register_int(m);
  register_greedy(m);
#endif
  m.def("block_linear", &block_linear, "x @ W^T for W in a GGUF block format (fp32 activations)");
  m.attr("lanes") = W;  // 8: the AVX2 build, 16: AVX-512
  m.def("block_rows", &block_rows, "rows of a GGUF block-format matrix, decoded to float32");
}
