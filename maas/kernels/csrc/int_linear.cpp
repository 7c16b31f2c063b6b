// Linear layers from GGUF block formats with 16-bit integer activations (AVX-512 VNNI, and AMX where the CPU
// has it): y = x @ W^T (+ b).
//
// Weights: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the 32-weight sub-blocks of Q4_K, Q5_K and Q6_K, repacked once at
// load (int_pack) into tiles of 16 output rows by one 32-weight block: the codes as unsigned bytes in the
// order an AMX B tile wants them (row r of the tile holds, for each of the 16 outputs, the codes of weights
// 4r .. 4r + 3); 4- to 6-bit codes as nibbles (low nibble: weights 0-15, high nibble: 16-31) plus a 64-bit
// mask per tile row for each higher bit; then the block's scales (see Layout). A tile column takes the bytes
// of its 16 rows of file blocks (Q4_K / Q5_K: 3% more). The stored code u stands for the weight
// (u - off) d (+ m), off = 8, 16, 128 or 32 (Q4_0, Q5_0, Q8_0, Q6_K).
//
// Activations: each run of 32 values of a row of x is rounded to integers q in [-32639, 32639] times a
// float32 scale dx = amax / 32639 (split q = 256 hi + lo into two signed bytes for the byte dot products).
// Per block the integer dot product I = sum q u is exact, then
//   acc = fma(dx * d, float(I - off * sum q), acc)            and for formats with a min
//   acc = fma(m, dx * float(sum q), acc)
// block by block in k order (Q6_K: one fma per 16-weight half, each with its own scale). Every path (few rows
// with VNNI, many with AMX) computes the same integers and the same float32 operations, so a row's result
// is the same bits alone or in any batch.
#include <torch/extension.h>

#include "gguf_block.h"
#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

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

using gguf::scale_min_k4;
using gguf::u32;

// the 32 stored codes of one file block, or of sub-block j of a K-quant block (unsigned: u - off is the signed
// code)
void block_codes(const uint8_t* b, int64_t fmt, uint8_t* u, int j = 0) {
  switch (fmt) {
    case Q6_K:
      for (int l = 0; l < 32; ++l) {
        const int e = 32 * j + l, h = e / 128, g = e % 128 / 32, r = e % 32;
        const int low = (b[h * 64 + (g % 2) * 32 + r] >> (4 * (g / 2))) & 15, high = (b[128 + h * 32 + r] >> (2 * g)) & 3;
        u[l] = static_cast<uint8_t>(low | high << 4);
      }
      break;
    case Q4_K:
    case Q5_K: {
      const uint8_t* q = b + (fmt == Q4_K ? 16 : 48) + 32 * (j / 2);  // low nibbles for even j, high for odd
      for (int l = 0; l < 32; ++l) {
        u[l] = static_cast<uint8_t>((q[l] >> (4 * (j % 2))) & 15);
        if (fmt == Q5_K) u[l] |= static_cast<uint8_t>(((b[16 + l] >> j) & 1) << 4);
      }
      break;
    }
    case Q4_0:
    case Q4_1: {
      const uint8_t* qs = b + (fmt == Q4_0 ? 2 : 4);
      for (int j = 0; j < 16; ++j) u[j] = qs[j] & 15, u[j + 16] = qs[j] >> 4;
      break;
    }
    case Q5_0:
    case Q5_1: {
      const uint32_t qh = u32(b + (fmt == Q5_0 ? 2 : 4));
      const uint8_t* qs = b + (fmt == Q5_0 ? 6 : 8);
      for (int j = 0; j < 16; ++j) {
        u[j] = static_cast<uint8_t>((qs[j] & 15) | ((qh >> j) & 1) << 4);
        u[j + 16] = static_cast<uint8_t>((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
      }
      break;
    }
    default:
      for (int j = 0; j < 32; ++j) u[j] = static_cast<uint8_t>(static_cast<int8_t>(b[2 + j]) + 128);
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
    const int32_t *sx, *sxl;
    int64_t Mp;
    int64_t j(int64_t m, int64_t b) const { return b * Mp + m; }  // index of row m's block b
  };
  int64_t at(int64_t m, int64_t b) const { return nums().j(m, b) * 32; }  // byte offset of its 32 bytes
  Nums nums() const { return {dx.data(), sxd.data(), sx.data(), sxl.data(), Mp}; }
  std::vector<int8_t> hi, lo;
  std::vector<float> dx, sxd;
  std::vector<int32_t> sx, sxl;  // sum q, and over the first 16 values (for Q6_K's halves)
};

void quantize(const float* x, int64_t M, int64_t K, Acts& a) {
  a.M = M, a.K = K, a.nb = K / 32, a.Mp = (M + 15) / 16 * 16;
  a.hi.resize(a.Mp * K), a.lo.resize(a.Mp * K);  // reused between calls: only the padding rows are zeroed
  a.dx.resize(a.Mp * a.nb), a.sxd.resize(a.Mp * a.nb), a.sx.resize(a.Mp * a.nb), a.sxl.resize(a.Mp * a.nb);
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

// acc (16 outputs of row i) += one block's contribution, from the block's high and low integer sums
template <int F>
inline __m512 epilogue(__m512i ih, __m512i il, const Acts::Nums& a, int64_t i, int64_t b, __m512 d, __m512 mn, __m512 acc) {
  constexpr Layout L = L_<F>;
  const int64_t j = a.j(i, b);
  __m512i dot = _mm512_add_epi32(_mm512_slli_epi32(ih, 8), il);
  if constexpr (L.off != 0) dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(L.off * a.sx[j]));
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
// Q6_K: the two halves' sums (high and low bytes each) with scales da, db: two fmas, first half first
inline __m512 epilogue6(__m512i iha, __m512i ila, __m512i ihb, __m512i ilb, const Acts::Nums& a, int64_t i, int64_t b,
                        __m512 da, __m512 db, __m512 acc) {
  const int64_t j = a.j(i, b);
  const __m512i dot_a = _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32(iha, 8), ila), _mm512_set1_epi32(32 * a.sxl[j]));
  const __m512i dot_b = _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32(ihb, 8), ilb),
                                         _mm512_set1_epi32(32 * (a.sx[j] - a.sxl[j])));
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

// Rows r0 .. r0 + R of x against the 16 outputs of tile column t, with VNNI byte dot products.
template <int F, int R>
void vnni_rows(const Acts& a, int64_t r0, const uint8_t* col, float* y, int64_t ldy, const float* bias) {
  const Acts::Nums nm = a.nums();
  __m512 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < a.nb; ++b) {
    const uint8_t* t = tile<F>(col, b);
    _mm_prefetch(reinterpret_cast<const char*>(t + 4 * L_<F>.sub_bytes()), _MM_HINT_T0);
    for (int o = 0; o < L_<F>.sub_bytes(); o += 64)  // and far ahead into L2: one row's weights stream from memory
      _mm_prefetch(reinterpret_cast<const char*>(t + PREFETCH_L2 + o), _MM_HINT_T1);
    __m512i B[8];
    unpack<F>(t, B);
    __m512 d, mn;
    scales<F>(col, b, d, mn);
    for (int i = 0; i < R; ++i) {
      const int32_t* h = reinterpret_cast<const int32_t*>(a.hi.data() + a.at(r0 + i, b));
      const int32_t* l = reinterpret_cast<const int32_t*>(a.lo.data() + a.at(r0 + i, b));
      if constexpr (L_<F>.halves) {
        __m512i ih[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()}, il[2] = {ih[0], ih[0]};
        for (int r = 0; r < 8; ++r) {
          ih[r / 4] = _mm512_dpbusd_epi32(ih[r / 4], B[r], _mm512_set1_epi32(h[r]));
          il[r / 4] = _mm512_dpbusd_epi32(il[r / 4], B[r], _mm512_set1_epi32(l[r]));
        }
        acc[i] = epilogue6(ih[0], il[0], ih[1], il[1], nm, r0 + i, b, d, mn, acc[i]);
      } else {
        __m512i ih = _mm512_setzero_si512(), il = _mm512_setzero_si512();
        for (int r = 0; r < 8; ++r) {
          ih = _mm512_dpbusd_epi32(ih, B[r], _mm512_set1_epi32(h[r]));
          il = _mm512_dpbusd_epi32(il, B[r], _mm512_set1_epi32(l[r]));
        }
        acc[i] = epilogue<F>(ih, il, nm, r0 + i, b, d, mn, acc[i]);
      }
    }
  }
  const __m512 bv = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  for (int i = 0; i < R; ++i) _mm512_storeu_ps(y + (r0 + i) * ldy, _mm512_add_ps(acc[i], bv));
}

bool amx_ready = false;

struct TileConfig {
  uint8_t palette, start;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

void amx_config() {
  TileConfig c;
  std::memset(&c, 0, sizeof c);
  c.palette = 1;
  for (int t : {0, 1, 5, 6}) c.rows[t] = 16, c.colsb[t] = 64;  // C: 16 rows x 16 int32
  for (int t : {3, 4}) c.rows[t] = 16, c.colsb[t] = 32;        // A: 16 rows x 32 bytes
  for (int t : {2, 7}) c.rows[t] = 8, c.colsb[t] = 64;          // B: 8 rows x (16 outputs x 4 bytes)
  // not _tile_loadconfig: GCC 12's declares only a pointer's 8 bytes as read, and drops the stores above
  asm volatile("ldtilecfg %0" : : "m"(c));
}

// All (padded) rows against NT (1 or 2) tile columns with AMX. Per block: the columns' B tiles once; then per 16
// rows two byte products per column (high and low bytes) into C tiles, stored, and the same epilogue as
// vnni_rows, run one row group behind the tile products so that the two overlap.
template <int F, int NT>
void amx_cols(const Acts& a, const uint8_t* col, int64_t col_bytes, float* y, int64_t ldy, const float* bias,
              float* acc) {
  alignas(64) uint8_t stage[NT][512];
  alignas(64) int32_t ch[2][NT][256], cl[2][NT][256];
  const Acts::Nums nm = a.nums();
  for (int64_t b = 0; b < a.nb; ++b) {
    __m512 d[NT], mn[NT];
    for (int j = 0; j < NT; ++j) {
      const uint8_t* cj = col + j * col_bytes;
      __m512i B[8];
      unpack<F>(tile<F>(cj, b), B);
      for (int r = 0; r < 8; ++r) _mm512_store_si512(stage[j] + 64 * r, B[r]);
      scales<F>(cj, b, d[j], mn[j]);
    }
    _tile_loadd(2, stage[0], 64);
    if constexpr (NT == 2) _tile_loadd(7, stage[1], 64);
    auto finish = [&](int64_t m0) {  // the epilogue of rows m0 .. m0 + 16 from buffer (m0 / 16) & 1
      const int p = static_cast<int>((m0 / 16) & 1);
      const int64_t rows = std::min<int64_t>(16, a.M - m0);
      for (int j = 0; j < NT; ++j)
        for (int64_t i = 0; i < rows; ++i) {
          float* o = acc + ((m0 + i) * NT + j) * 16;
          const __m512 sum = b > 0 ? _mm512_load_ps(o) : _mm512_setzero_ps();  // acc is not zeroed beforehand
          _mm512_store_ps(o, epilogue<F>(_mm512_load_si512(ch[p][j] + 16 * i), _mm512_load_si512(cl[p][j] + 16 * i),
                                         nm, m0 + i, b, d[j], mn[j], sum));
        }
    };
    for (int64_t m0 = 0; m0 < a.Mp; m0 += 16) {
      const int p = static_cast<int>((m0 / 16) & 1);
      _tile_loadd(3, a.hi.data() + a.at(m0, b), 32);
      _tile_loadd(4, a.lo.data() + a.at(m0, b), 32);
      _tile_zero(0);
      _tile_zero(1);
      _tile_dpbsud(0, 3, 2);
      _tile_dpbsud(1, 4, 2);
      if constexpr (NT == 2) {
        _tile_zero(5);
        _tile_zero(6);
        _tile_dpbsud(5, 3, 7);
        _tile_dpbsud(6, 4, 7);
      }
      if (m0 > 0) finish(m0 - 16);
      _tile_stored(0, ch[p][0], 64);
      _tile_stored(1, cl[p][0], 64);
      if constexpr (NT == 2) {
        _tile_stored(5, ch[p][1], 64);
        _tile_stored(6, cl[p][1], 64);
      }
    }
    finish(a.Mp - 16);
  }
  for (int j = 0; j < NT; ++j) {
    const __m512 bv = bias ? _mm512_loadu_ps(bias + 16 * j) : _mm512_setzero_ps();
    for (int64_t i = 0; i < a.M; ++i)
      _mm512_storeu_ps(y + i * ldy + 16 * j, _mm512_add_ps(_mm512_load_ps(acc + (i * NT + j) * 16), bv));
  }
}

int64_t amx_min_rows = 10;  // fewer rows go through VNNI (the same bits either way); set by int_use_amx

template <int F>
void run(const Acts& a, const uint8_t* w, int64_t N, const float* bias, float* y, int64_t ldy) {
  constexpr Layout L = L_<F>;
  const int64_t cols = N / 16, col_bytes = a.nb / L.group() * L.unit_bytes();
  const bool amx = amx_ready && a.M >= amx_min_rows && !L.halves;  // Q6_K: VNNI only (16-weight halves)
  const int64_t tasks = amx ? (cols + 1) / 2 : cols;  // AMX: two tile columns a task
#pragma omp parallel
  {
    thread_local std::vector<float> acc;  // kept between calls, never zeroed (see amx_cols)
    if (amx) {
      amx_config();
      if (acc.size() < static_cast<size_t>(a.Mp * 32 + 16)) acc.resize(a.Mp * 32 + 16);
    }
    float* ap = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(acc.data()) + 63) & ~uintptr_t(63));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      if (amx) {
        const int64_t c = 2 * t;
        const float* bt = bias ? bias + c * 16 : nullptr;
        if (c + 1 < cols)
          amx_cols<F, 2>(a, w + c * col_bytes, col_bytes, y + c * 16, ldy, bt, ap);
        else
          amx_cols<F, 1>(a, w + c * col_bytes, col_bytes, y + c * 16, ldy, bt, ap);
        continue;
      }
      const uint8_t* col = w + t * col_bytes;
      float* yt = y + t * 16;
      const float* bt = bias ? bias + t * 16 : nullptr;
      int64_t r = 0;
      for (; r + 4 <= a.M; r += 4) vnni_rows<F, 4>(a, r, col, yt, ldy, bt);
      for (; r < a.M; ++r) vnni_rows<F, 1>(a, r, col, yt, ldy, bt);
    }
    if (amx) _tile_release();
  }
}

}  // namespace

// fmt codes of repacked layers: 100 + the GGUF type id
void int_matmul(const float* xp, int64_t M, int64_t K, const void* w, int64_t fmt, int64_t N, const float* bp,
                float* yp, int64_t ldy) {
  thread_local Acts a;
  quantize(xp, M, K, a);
  const uint8_t* wp = static_cast<const uint8_t*>(w);
  switch (fmt - 100) {
    case Q4_0: return run<Q4_0>(a, wp, N, bp, yp, ldy);
    case Q4_1: return run<Q4_1>(a, wp, N, bp, yp, ldy);
    case Q5_0: return run<Q5_0>(a, wp, N, bp, yp, ldy);
    case Q5_1: return run<Q5_1>(a, wp, N, bp, yp, ldy);
    case Q8_0: return run<Q8_0>(a, wp, N, bp, yp, ldy);
    case Q4_K: return run<Q4_K>(a, wp, N, bp, yp, ldy);
    case Q5_K: return run<Q5_K>(a, wp, N, bp, yp, ldy);
    case Q6_K: return run<Q6_K>(a, wp, N, bp, yp, ldy);
    default: TORCH_CHECK(false, "unknown repacked format ", fmt);
  }
}

// (N, row bytes) file blocks -> (N / 16, units, unit bytes) tile columns (see Layout)
torch::Tensor int_pack(torch::Tensor w, int64_t fmt, int64_t K) {
  const Layout L = layout(fmt);
  TORCH_CHECK(w.dtype() == torch::kUInt8 && w.dim() == 2 && w.is_contiguous(), "w: contiguous 2-D uint8 blocks");
  TORCH_CHECK(K % L.src_qk == 0 && w.size(1) == K / L.src_qk * L.src_bytes,
              "w's row size does not match K for this format");
  TORCH_CHECK(w.size(0) % 16 == 0, "the number of rows must be a multiple of 16");
  const int64_t N = w.size(0), nb = K / 32, units = nb / L.group(), ub = L.unit_bytes(), sb = L.sub_bytes();
  const int64_t row_bytes = w.size(1);
  auto out = torch::zeros({N / 16, units, ub}, torch::dtype(torch::kUInt8));
  const uint8_t* src = w.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N / 16 * nb; ++i) {
    const int64_t t = i / nb, b = i % nb;
    uint8_t* o = dst + t * units * ub + (b / L.group()) * ub + (b % L.group()) * sb;
    uint8_t u[16][32];
    for (int n = 0; n < 16; ++n) {
      const uint8_t* blk = src + (t * 16 + n) * row_bytes + (b * 32 / L.src_qk) * L.src_bytes;
      const int j = static_cast<int>(b % L.group());
      block_codes(blk, fmt, u[n], j);
      if (L.halves) {
        o[L.code_bytes + n] = blk[192 + 2 * j];  // the two groups' int8 scales, as bytes
        o[L.code_bytes + 16 + n] = blk[192 + 2 * j + 1];
        if (j == 0) std::memcpy(o + 8 * sb + 2 * n, blk + 208, 2);  // d, after the 8 sub-block tiles
      } else if (L.kq) {
        int sc, m;
        scale_min_k4(blk + 4, j, sc, m);
        o[L.code_bytes + n] = static_cast<uint8_t>(sc);
        o[L.code_bytes + 16 + n] = static_cast<uint8_t>(m);
        if (j == 0) {  // the super-block's d and dmin, after its 8 sub-block tiles
          uint8_t* head = o + 8 * sb;
          std::memcpy(head + 2 * n, blk, 2);
          std::memcpy(head + 32 + 2 * n, blk + 2, 2);
        }
      } else {
        std::memcpy(o + L.code_bytes + 2 * n, blk, 2);                     // d
        if (L.min) std::memcpy(o + L.code_bytes + 32 + 2 * n, blk + 2, 2);  // m
      }
    }
    for (int r = 0; r < 8; ++r)
      for (int n = 0; n < 16; ++n)
        for (int j = 0; j < 4; ++j) {
          const int e = 4 * n + j, code = u[n][4 * r + j];
          if (L.code_bytes == 512) {
            o[64 * r + e] = static_cast<uint8_t>(code);
          } else {
            o[64 * (r % 4) + e] |= static_cast<uint8_t>((code & 15) << (r < 4 ? 0 : 4));
            if (code & 16) o[256 + 8 * r + e / 8] |= static_cast<uint8_t>(1 << (e % 8));
            if (code & 32) o[320 + 8 * r + e / 8] |= static_cast<uint8_t>(1 << (e % 8));
          }
        }
  }
  return out;
}

namespace {
void check_tiles(const torch::Tensor& w, const Layout& L, int64_t K) {
  TORCH_CHECK(K % L.src_qk == 0 && w.dtype() == torch::kUInt8 && w.dim() == 3 && w.is_contiguous() &&
                  w.size(1) == K / 32 / L.group() && w.size(2) == L.unit_bytes(),
              "w: repacked tiles of this format for K inputs");
}
}  // namespace

// rows `ids` of a repacked matrix as float32: (u - off) d (+ m), or d sc u - dmin m: the file's values
torch::Tensor int_rows(torch::Tensor w, torch::Tensor ids, int64_t fmt, int64_t K) {
  const Layout L = layout(fmt - 100);
  check_tiles(w, L, K);
  TORCH_CHECK(ids.dtype() == torch::kInt64 && ids.dim() == 1 && ids.is_contiguous(), "ids: 1-D int64");
  const int64_t n = ids.size(0), N = w.size(0) * 16, nb = K / 32, ub = L.unit_bytes(), sb = L.sub_bytes();
  const int64_t* ip = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) TORCH_CHECK(ip[i] >= 0 && ip[i] < N, "row id out of range");
  auto out = torch::empty({n, K}, torch::dtype(torch::kFloat32));
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
#pragma omp parallel for schedule(static) if (n > 64)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = ip[i] / 16, c = ip[i] % 16;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* unit = wp + t * (nb / L.group()) * ub + (b / L.group()) * ub;
      const uint8_t* o = unit + (b % L.group()) * sb;
      float d, mn = 0.0f;
      uint16_t h;
      if (L.halves) {  // d sc of the half this k is in: set per k below
        std::memcpy(&h, unit + 8 * sb + 2 * c, 2);
        d = _cvtsh_ss(h);
      } else if (L.kq) {
        std::memcpy(&h, unit + 8 * sb + 2 * c, 2);
        d = _cvtsh_ss(h) * static_cast<float>(o[L.code_bytes + c]);
        std::memcpy(&h, unit + 8 * sb + 32 + 2 * c, 2);
        mn = -(_cvtsh_ss(h) * static_cast<float>(o[L.code_bytes + 16 + c]));
      } else {
        std::memcpy(&h, o + L.code_bytes + 2 * c, 2);
        d = _cvtsh_ss(h);
        if (L.min) std::memcpy(&h, o + L.code_bytes + 32 + 2 * c, 2), mn = _cvtsh_ss(h);
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
        const float v = static_cast<float>(code - L.off);
        const float dk = L.halves ? d * static_cast<float>(static_cast<int8_t>(o[L.code_bytes + 16 * (k / 16) + c])) : d;
        op[i * K + b * 32 + k] = L.min ? std::fma(v, dk, mn) : v * dk;
      }
    }
  }
  return out;
}

torch::Tensor int_linear(torch::Tensor x, torch::Tensor w, int64_t fmt, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous(), "x: contiguous 2-D float32");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0) * 16;
  check_tiles(w, layout(fmt - 100), K);
  auto y = torch::empty({M, N}, x.options());
  int_matmul(x.data_ptr<float>(), M, K, w.data_ptr<uint8_t>(), fmt, N,
             bias.has_value() ? bias->data_ptr<float>() : nullptr, y.data_ptr<float>(), N);
  return y;
}

// Ask the kernel for AMX tile state (Linux); `enable` false keeps every row count on VNNI. Returns whether AMX is on.
bool int_use_amx(bool enable, int64_t min_rows) {
  amx_min_rows = min_rows;
  if (!enable) return amx_ready = false;
  constexpr long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
  amx_ready = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
  return amx_ready;
}

void register_int(pybind11::module& m) {
  m.def("int_pack", &int_pack, "repack 32-weight GGUF blocks into the integer kernel's tiles");
  m.def("int_rows", &int_rows, "rows of a repacked matrix, as float32");
  m.def("int_linear", &int_linear, "x @ W^T with 16-bit integer activations, W repacked",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("int_use_amx", &int_use_amx, "use AMX tiles for many rows where the CPU allows it");
}
