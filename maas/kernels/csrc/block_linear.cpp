// Linear layers straight from GGUF block formats on AVX2 CPUs: y = x @ W^T (+ b), fp32 activations.
//
// W is (N, K) stored as llama.cpp stores it: each row is K / QK blocks of one format (Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0: 32 weights; Q4_K, Q5_K, Q6_K: 256). Blocks decode to fp32 with exactly the file's
// values (every product in a block's formula is exact in fp32 and the one subtraction rounds once, as
// gguf-py's dequantizer does). One row of x multiplies each block as it is decoded, in registers;
// several rows share a strip of rows decoded once. Every output accumulates x[k] * w[k] in the same
// order (two 8-lane accumulators, k ascending, one fixed horizontal sum) whatever M is, so a row's result
// does not depend on what else is in the batch. Float32 weights (fmt 0) take the same tiles, for the fused
// decode (decode.cpp).
#include <torch/extension.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace {

enum Fmt : int { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };

inline float f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline uint32_t u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// 32 codes (bytes) -> 4 vectors of 8 floats, code * s + b (the first 16 with (s0, b0), the rest with
// (s1, b1)), handed to sink(j, vector) for vectors j0 .. j0 + 3 of the block.
template <bool SIGNED, class Sink>
inline void emit32(__m256i codes, float s0, float b0, float s1, float b1, int j0, Sink& sink) {
  const __m128i lo = _mm256_castsi256_si128(codes), hi = _mm256_extracti128_si256(codes, 1);
  auto cvt = [](__m128i v) {
    return _mm256_cvtepi32_ps(SIGNED ? _mm256_cvtepi8_epi32(v) : _mm256_cvtepu8_epi32(v));
  };
  const __m256 S0 = _mm256_set1_ps(s0), B0 = _mm256_set1_ps(b0);
  const __m256 S1 = _mm256_set1_ps(s1), B1 = _mm256_set1_ps(b1);
  sink(j0, _mm256_fmadd_ps(cvt(lo), S0, B0));
  sink(j0 + 1, _mm256_fmadd_ps(cvt(_mm_srli_si128(lo, 8)), S0, B0));
  sink(j0 + 2, _mm256_fmadd_ps(cvt(hi), S1, B1));
  sink(j0 + 3, _mm256_fmadd_ps(cvt(_mm_srli_si128(hi, 8)), S1, B1));
}

template <class Sink>
inline void emit32u(__m256i codes, float s, float b, int j0, Sink& sink) {
  emit32<false>(codes, s, b, s, b, j0, sink);
}

// 16 bytes -> 32 codes: element j is byte j's low nibble, element j + 16 its high nibble.
inline __m256i nibbles16(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m4 = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
}

// 32 bytes shifted right by `shift` bits, masked with `mask` (a per-byte shift).
inline __m256i bits_of(const uint8_t* p, int shift, int mask) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm256_and_si256(_mm256_srli_epi16(raw, shift), _mm256_set1_epi8(static_cast<char>(mask)));
}

// Bit e of `qh` -> 0x10 in byte e (the fifth bit of Q5_0 / Q5_1 codes).
inline __m256i high_bits32(uint32_t qh) {
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                        3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(qh)), shuf);
  v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

// Q4_K / Q5_K: 6-bit scale and min of sub-block j (of 8) from the 12 packed bytes.
inline void scale_min_k4(const uint8_t* s, int j, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

template <int F> struct Spec;
template <> struct Spec<Q4_0> { static constexpr int QK = 32, BYTES = 18; };
template <> struct Spec<Q4_1> { static constexpr int QK = 32, BYTES = 20; };
template <> struct Spec<Q5_0> { static constexpr int QK = 32, BYTES = 22; };
template <> struct Spec<Q5_1> { static constexpr int QK = 32, BYTES = 24; };
template <> struct Spec<Q8_0> { static constexpr int QK = 32, BYTES = 34; };
template <> struct Spec<Q4_K> { static constexpr int QK = 256, BYTES = 144; };
template <> struct Spec<Q5_K> { static constexpr int QK = 256, BYTES = 176; };
template <> struct Spec<Q6_K> { static constexpr int QK = 256, BYTES = 210; };

// Block<F>::decode(block, sink): sink(j, w) receives the block's weights 8j .. 8j + 7 as floats.
template <int F> struct Block;

template <> struct Block<Q4_0> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    const float d = f16(b);
    emit32u(nibbles16(b + 2), d, -8.0f * d, 0, sink);  // (q - 8) * d
  }
};

template <> struct Block<Q4_1> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    emit32u(nibbles16(b + 4), f16(b), f16(b + 2), 0, sink);  // q * d + m
  }
};

template <> struct Block<Q5_0> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    const float d = f16(b);
    emit32u(_mm256_or_si256(nibbles16(b + 6), high_bits32(u32(b + 2))), d, -16.0f * d, 0, sink);
  }
};

template <> struct Block<Q5_1> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    emit32u(_mm256_or_si256(nibbles16(b + 8), high_bits32(u32(b + 4))), f16(b), f16(b + 2), 0, sink);
  }
};

template <> struct Block<Q8_0> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    const float d = f16(b);
    emit32<true>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2)), d, 0.0f, d, 0.0f, 0, sink);
  }
};

template <> struct Block<Q4_K> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    const float d = f16(b), dmin = f16(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* qs = b + 16;
    for (int j = 0; j < 8; ++j) {  // sub-block j: low (even j) or high (odd j) nibbles of 32 bytes
      int sc, m;
      scale_min_k4(scales, j, sc, m);
      emit32u(bits_of(qs + 32 * (j / 2), 4 * (j % 2), 0x0F), d * sc, -(dmin * m), 4 * j, sink);
    }
  }
};

template <> struct Block<Q5_K> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    const float d = f16(b), dmin = f16(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* qh = b + 16;
    const uint8_t* qs = b + 48;
    for (int j = 0; j < 8; ++j) {  // the fifth bit of sub-block j's element l is bit j of qh[l]
      int sc, m;
      scale_min_k4(scales, j, sc, m);
      const __m256i hi = _mm256_slli_epi16(bits_of(qh, j, 0x01), 4);
      emit32u(_mm256_or_si256(bits_of(qs + 32 * (j / 2), 4 * (j % 2), 0x0F), hi), d * sc, -(dmin * m), 4 * j, sink);
    }
  }
};

template <> struct Block<Q6_K> {
  template <class Sink>
  static inline void decode(const uint8_t* b, Sink& sink) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = f16(b + 208);
    for (int h = 0; h < 2; ++h) {
      for (int g = 0; g < 4; ++g) {  // elements h * 128 + g * 32 + l, l < 32
        const __m256i lo = bits_of(ql + h * 64 + (g % 2) * 32, 4 * (g / 2), 0x0F);
        const __m256i hi = _mm256_slli_epi16(bits_of(qh + h * 32, 2 * g, 0x03), 4);
        const int e = h * 128 + g * 32;
        const float s0 = d * sc[e / 16], s1 = d * sc[e / 16 + 1];
        emit32<false>(_mm256_or_si256(lo, hi), s0, -32.0f * s0, s1, -32.0f * s1, e / 8, sink);  // (q - 32) * d * sc
      }
    }
  }
};

template <int F>
void decode_row_t(const uint8_t* row, int64_t K, float* out) {
  for (int64_t i = 0; i < K / Spec<F>::QK; ++i) {
    float* o = out + i * Spec<F>::QK;
    auto store = [o](int j, __m256 w) { _mm256_storeu_ps(o + 8 * j, w); };
    Block<F>::decode(row + i * Spec<F>::BYTES, store);
  }
}

inline float hsum(__m256 a0, __m256 a1) {
  const __m256 s = _mm256_add_ps(a0, a1);
  __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  t = _mm_add_ps(t, _mm_movehl_ps(t, t));
  t = _mm_add_ss(t, _mm_movehdup_ps(t));
  return _mm_cvtss_f32(t);
}

// One row of x against NR weight rows decoded block by block in registers: the same values and the same
// order as decode_row_t followed by tile<1, NR>, without the round trip through memory.
template <int F, int NR>
void direct(const float* x, const uint8_t* w, int64_t row_bytes, int64_t K, float* y, const float* bias) {
  __m256 acc[NR][2];
  for (int c = 0; c < NR; ++c) acc[c][0] = acc[c][1] = _mm256_setzero_ps();
  for (int64_t i = 0; i < K / Spec<F>::QK; ++i) {
    const float* xb = x + i * Spec<F>::QK;
    for (int c = 0; c < NR; ++c) {
      __m256* a = acc[c];
      auto fma = [xb, a](int j, __m256 v) { a[j & 1] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8 * j), v, a[j & 1]); };
      Block<F>::decode(w + c * row_bytes + i * Spec<F>::BYTES, fma);
    }
  }
  for (int c = 0; c < NR; ++c) y[c] = hsum(acc[c][0], acc[c][1]) + (bias ? bias[c] : 0.0f);
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
  __m256 acc[MR][NR][2];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) acc[r][c][0] = acc[r][c][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    for (int h = 0; h < 2; ++h) {
      __m256 wv[NR];
      for (int c = 0; c < NR; ++c) wv[c] = _mm256_loadu_ps(w + c * K + k + 8 * h);
      for (int r = 0; r < MR; ++r) {
        const __m256 xv = _mm256_loadu_ps(x + r * ldx + k + 8 * h);
        for (int c = 0; c < NR; ++c) acc[r][c][h] = _mm256_fmadd_ps(xv, wv[c], acc[r][c][h]);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) y[r * ldy + c] = hsum(acc[r][c][0], acc[r][c][1]) + (bias ? bias[c] : 0.0f);
}

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
  for (; m + 3 <= M; m += 3) {
    int64_t c = 0;
    for (; c + 2 <= rows; c += 2) tile<3, 2>(x + m * K, K, strip + c * K, K, y + m * N + n0 + c, N, bb ? bb + c : nullptr);
    for (; c < rows; ++c) tile<3, 1>(x + m * K, K, strip + c * K, K, y + m * N + n0 + c, N, bb ? bb + c : nullptr);
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
void matmul(const float* xp, int64_t M, int64_t K, const void* w, int64_t fmt, int64_t N, const float* bp,
            float* yp, int64_t ldy) {
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
         bias.has_value() ? bias->data_ptr<float>() : nullptr, y.data_ptr<float>(), N);
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

void register_decode(pybind11::module& m);  // decode.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  register_decode(m);
  m.def("block_linear", &block_linear, "x @ W^T for W in a GGUF block format (AVX2, fp32 activations)");
  m.def("block_rows", &block_rows, "rows of a GGUF block-format matrix, decoded to float32");
}
