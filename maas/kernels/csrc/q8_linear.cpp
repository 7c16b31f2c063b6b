// Weight-only 8-bit linear layer for AVX2 CPUs: y = x @ dequant(W)^T (+ b).
//
// W is quantized in blocks of 32 along K with one fp32 scale per (row, block), like llama.cpp's
// Q8_0, and packed so that 8 output columns are contiguous:  q[N/8][K/32][32][8] int8,
// s[N/8][K/32][8] fp32.  Each output element is accumulated in the same order whatever the
// number of rows M, so a row's result does not depend on what else is in the batch.
#include <torch/extension.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <vector>

namespace {

// MR rows x NR column blocks of 8. Every output element accumulates x[k] * (q[k] * s[k/32]) over
// k = 0..K-1 in order with one FMA each, whatever MR and NR are: results do not depend on M.
template <int MR, int NR>
inline void tile(const float* x, int64_t ldx, const int8_t* q, const float* s, int64_t kblocks,
                 int64_t qstride, int64_t sstride, float* y, int64_t ldy, const float* bias) {
  __m256 acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t kb = 0; kb < kblocks; ++kb) {
    __m256 sc[NR];
    for (int c = 0; c < NR; ++c) sc[c] = _mm256_loadu_ps(s + c * sstride + kb * 8);
    const int64_t k0 = kb * 32;
    for (int k = 0; k < 32; ++k) {
      __m256 w[NR];
      for (int c = 0; c < NR; ++c) {
        __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + c * qstride + kb * 256 + k * 8));
        w[c] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw)), sc[c]);
      }
      for (int r = 0; r < MR; ++r) {
        __m256 xv = _mm256_broadcast_ss(x + r * ldx + k0 + k);
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_fmadd_ps(xv, w[c], acc[r][c]);
      }
    }
  }
  for (int c = 0; c < NR; ++c) {
    __m256 b = bias ? _mm256_loadu_ps(bias + c * 8) : _mm256_setzero_ps();
    for (int r = 0; r < MR; ++r) _mm256_storeu_ps(y + r * ldy + c * 8, _mm256_add_ps(acc[r][c], b));
  }
}

// Dequantize one column block's whole K strip to fp32 (w[k][8] = q * s), the same products the
// direct path computes, so that rows swept against the buffer get bit-identical results.
inline void dequant_strip(const int8_t* q, const float* s, int64_t kblocks, float* out) {
  for (int64_t kb = 0; kb < kblocks; ++kb) {
    __m256 sc = _mm256_loadu_ps(s + kb * 8);
    for (int k = 0; k < 32; ++k) {
      __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + kb * 256 + k * 8));
      _mm256_storeu_ps(out + (kb * 32 + k) * 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw)), sc));
    }
  }
}

// MR rows x NR column blocks against dequantized strips: acc += x[k] * w[k], k in order.
template <int MR, int NR>
inline void tile_f(const float* x, int64_t ldx, const float* const* w, int64_t K, float* y, int64_t ldy,
                   const float* bias) {
  __m256 acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m256 wv[NR];
    for (int c = 0; c < NR; ++c) wv[c] = _mm256_loadu_ps(w[c] + k * 8);
    for (int r = 0; r < MR; ++r) {
      __m256 xv = _mm256_broadcast_ss(x + r * ldx + k);
      for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  for (int c = 0; c < NR; ++c) {
    __m256 b = bias ? _mm256_loadu_ps(bias + c * 8) : _mm256_setzero_ps();
    for (int r = 0; r < MR; ++r) _mm256_storeu_ps(y + r * ldy + c * 8, _mm256_add_ps(acc[r][c], b));
  }
}

}  // namespace

torch::Tensor q8_linear(torch::Tensor x, torch::Tensor q, torch::Tensor s, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous(), "x: contiguous 2-D float32");
  TORCH_CHECK(q.dtype() == torch::kInt8 && q.dim() == 4 && q.size(2) == 32 && q.size(3) == 8, "q: [N/8, K/32, 32, 8] int8");
  const int64_t M = x.size(0), K = x.size(1), NB = q.size(0), KB = q.size(1);
  TORCH_CHECK(KB * 32 == K, "K mismatch");
  auto y = torch::empty({M, NB * 8}, x.options());
  const float* xp = x.data_ptr<float>();
  const int8_t* qp = q.data_ptr<int8_t>();
  const float* sp = s.data_ptr<float>();
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t N = NB * 8, QS = KB * 256, SS = KB * 8;
  const int64_t groups = (NB + 3) / 4;  // 4 column blocks (32 outputs) per task
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t nb0 = g * 4, nbn = std::min<int64_t>(4, NB - nb0);
    int64_t m = 0;
    if (M >= 4) {  // several rows: dequantize the strips once, then sweep row groups
      thread_local std::vector<float> buf;
      buf.resize(static_cast<size_t>(4 * K * 8));
      const float* strips[4];
      for (int64_t c = 0; c < nbn; ++c) {
        dequant_strip(qp + (nb0 + c) * QS, sp + (nb0 + c) * SS, KB, buf.data() + c * K * 8);
        strips[c] = buf.data() + c * K * 8;
      }
      for (; m + 4 <= M; m += 4) {
        int64_t c = 0;
        for (; c + 2 <= nbn; c += 2) {
          const int64_t nb = nb0 + c;
          tile_f<4, 2>(xp + m * K, K, strips + c, K, yp + m * N + nb * 8, N, bp ? bp + nb * 8 : nullptr);
        }
        for (; c < nbn; ++c) {
          const int64_t nb = nb0 + c;
          tile_f<4, 1>(xp + m * K, K, strips + c, K, yp + m * N + nb * 8, N, bp ? bp + nb * 8 : nullptr);
        }
      }
    }
    for (; m < M; ++m) {
      if (nbn == 4) {
        tile<1, 4>(xp + m * K, K, qp + nb0 * QS, sp + nb0 * SS, KB, QS, SS, yp + m * N + nb0 * 8, N, bp ? bp + nb0 * 8 : nullptr);
      } else {
        for (int64_t c = 0; c < nbn; ++c) {
          const int64_t nb = nb0 + c;
          tile<1, 1>(xp + m * K, K, qp + nb * QS, sp + nb * SS, KB, QS, SS, yp + m * N + nb * 8, N, bp ? bp + nb * 8 : nullptr);
        }
      }
    }
  }
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("q8_linear", &q8_linear, "weight-only int8 linear (AVX2)"); }
