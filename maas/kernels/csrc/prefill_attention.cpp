// Causal attention for prefill chunks over their slots' cached keys and values: softmax(q k^T / sqrt(hd)) v
// for every query of a chunk at positions start .. start + n - 1, each seeing the keys at or before it (the
// last `window` of them on a sliding-window layer). A task takes a block of query positions with all the
// query heads that share a key head, and only the keys that block can see: two float32 matrix products
// (BLAS, the sgemm PyTorch links) around an exact softmax. PyTorch's flash attention on the CPU skips no key
// block shorter than 512, so a chunk of 256 queries paid for every masked pair; here only the diagonal
// block's upper half is wasted. A row's sums depend on its chunk's start and its block, not on other chunks.
#include <torch/extension.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "vec_math.h"

// Fortran BLAS (MKL in PyTorch's x86 wheels); weak, so that a build without it still loads
extern "C" void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
                       const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc) __attribute__((weak));

namespace {

constexpr int64_t BLOCK = 32;  // query positions per task

// row-major C (m x n, ldc) = alpha A (m x k, lda) B^T with B (n x k, ldb) when bt, else alpha A B with B (k x n)
void gemm(bool bt, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
          int64_t ldb, float* c, int64_t ldc) {
  // column-major BLAS sees the row-major matrices transposed: C^T = op(B) A^T
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
  const int LDA = static_cast<int>(ldb), LDB = static_cast<int>(lda), LDC = static_cast<int>(ldc);
  const float beta = 0.0f;
  sgemm_(bt ? "T" : "N", "N", &M, &N, &K, &alpha, b, &LDA, a, &LDB, &beta, c, &LDC);
}

// p[0 .. len) = e^(p - max over [a, b)) inside [a, b), 0 outside; returns the sum
float softmax_row(float* p, int64_t len, int64_t a, int64_t b) {
  float mx = -INFINITY;
  for (int64_t i = a; i < b; ++i) mx = std::max(mx, p[i]);
  std::fill(p, p + a, 0.0f);
  std::fill(p + b, p + len, 0.0f);
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = a;
  for (; i + 8 <= b; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p + i), vmx));
    _mm256_storeu_ps(p + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = sum8(acc);
  if (i < b) {
    alignas(32) float r[8] = {};
    std::copy(p + i, p + b, r);
    _mm256_store_ps(r, exp8(_mm256_sub_ps(_mm256_load_ps(r), vmx)));
    for (int64_t j = i; j < b; ++j) sum += (p[j] = r[j - i]);
  }
  return sum;
}

// the keys or values of (slot, head g) at positions [lo, hi) as float32 rows: the cache itself when it holds
// float32, else converted into buf
const float* cache_rows(const torch::Tensor& c, int64_t slot, int64_t g, int64_t lo, int64_t hi,
                        std::vector<float>& buf) {
  const int64_t KV = c.size(1), T = c.size(2), hd = c.size(3), off = ((slot * KV + g) * T + lo) * hd;
  if (c.scalar_type() == torch::kFloat) return c.data_ptr<float>() + off;
  const auto* src = reinterpret_cast<const uint16_t*>(c.data_ptr<at::Half>()) + off;
  const int64_t n = (hi - lo) * hd;
  buf.resize(n);
#pragma omp parallel for schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; i += 8)
    _mm256_storeu_ps(buf.data() + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  return buf.data();
}

struct Task {
  int64_t chunk, g, i0;  // chunk, key head, first query (of the chunk) in the block
};

// q, out: (T, H, hd) float32; kc, vc: (slots, KV, max_len, hd) float32 or float16, every chunk's keys and
// values already written; chunks: (C, 4) int64 rows (offset, n, start, slot); window 0: none
void prefill_attention(torch::Tensor q, torch::Tensor kc, torch::Tensor vc, torch::Tensor chunks, int64_t window,
                       torch::Tensor out) {
  TORCH_CHECK(sgemm_ != nullptr, "prefill_attention: no BLAS sgemm in this PyTorch build");
  TORCH_CHECK(q.dtype() == torch::kFloat32 && q.is_contiguous() && q.dim() == 3 && out.sizes() == q.sizes() &&
                  out.dtype() == torch::kFloat32 && out.is_contiguous(), "q, out: (T, heads, head_dim) float32");
  TORCH_CHECK(kc.dim() == 4 && kc.sizes() == vc.sizes() && kc.scalar_type() == vc.scalar_type() &&
                  (kc.scalar_type() == torch::kFloat || kc.scalar_type() == torch::kHalf) && kc.is_contiguous() &&
                  vc.is_contiguous(), "the cache: (slots, kv_heads, max_len, head_dim) float32 or float16");
  TORCH_CHECK(chunks.dtype() == torch::kInt64 && chunks.is_contiguous() && chunks.dim() == 2 && chunks.size(1) == 4,
              "chunks: (C, 4) int64");
  const int64_t T = q.size(0), H = q.size(1), hd = q.size(2), KV = kc.size(1), G = H / KV, C = chunks.size(0);
  TORCH_CHECK(kc.size(3) == hd && H % KV == 0 && hd % 8 == 0, "head counts or sizes do not match");
  const int64_t* ch = chunks.data_ptr<int64_t>();
  for (int64_t c = 0; c < C; ++c) {
    const int64_t off = ch[4 * c], n = ch[4 * c + 1], start = ch[4 * c + 2], slot = ch[4 * c + 3];
    TORCH_CHECK(off >= 0 && n > 0 && off + n <= T && start >= 0 && start + n <= kc.size(2) && slot >= 0 &&
                    slot < kc.size(0), "a chunk outside q or the cache");
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float* qp = q.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // every (chunk, key head)'s keys and values from the first position its queries see, as float32 rows: kp[u]
  // + pos * hd is position pos
  std::vector<const float*> kp(C * KV), vp(C * KV);
  std::vector<std::vector<float>> bufs(2 * C * KV);  // float16 caches: the converted rows
  std::vector<Task> tasks;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t n = ch[4 * c + 1], start = ch[4 * c + 2], slot = ch[4 * c + 3], end = start + n;
    const int64_t lo = window > 0 ? std::max<int64_t>(0, start - window + 1) : 0;
    for (int64_t g = 0; g < KV; ++g) {
      const int64_t u = c * KV + g;
      kp[u] = cache_rows(kc, slot, g, lo, end, bufs[2 * u]) - lo * hd;
      vp[u] = cache_rows(vc, slot, g, lo, end, bufs[2 * u + 1]) - lo * hd;
      for (int64_t i0 = 0; i0 < n; i0 += BLOCK) tasks.push_back({c, g, i0});
    }
  }
  // the longest blocks (most keys) first, so that the last tasks to start are short
  std::stable_sort(tasks.begin(), tasks.end(), [&](const Task& x, const Task& y) {
    return ch[4 * x.chunk + 2] + x.i0 > ch[4 * y.chunk + 2] + y.i0;
  });
#pragma omp parallel  // even for one task: BLAS called inside a parallel region runs on its caller's thread alone
  {
    std::vector<float> qb(BLOCK * G * hd), ob(BLOCK * G * hd), s, sums(BLOCK * G);
#pragma omp for schedule(dynamic, 1)
    for (size_t t = 0; t < tasks.size(); ++t) {
      const auto [c, g, i0] = tasks[t];
      const int64_t off = ch[4 * c], n = ch[4 * c + 1], start = ch[4 * c + 2], u = c * KV + g;
      const int64_t nb = std::min(BLOCK, n - i0), R = nb * G, p0 = start + i0, p1 = p0 + nb;  // positions [p0, p1)
      const int64_t kmin = window > 0 ? std::max<int64_t>(0, p0 - window + 1) : 0, len = p1 - kmin;
      for (int64_t i = 0; i < nb; ++i)  // rows i G + j: position p0 + i, query head g G + j
        std::copy_n(qp + ((off + i0 + i) * H + g * G) * hd, G * hd, qb.data() + i * G * hd);
      s.resize(R * len);
      gemm(true, R, len, hd, scale, qb.data(), hd, kp[u] + kmin * hd, hd, s.data(), len);
      for (int64_t i = 0; i < nb; ++i) {
        const int64_t p = p0 + i, a = (window > 0 ? std::max<int64_t>(0, p - window + 1) : 0) - kmin;
        for (int64_t j = 0; j < G; ++j) sums[i * G + j] = softmax_row(s.data() + (i * G + j) * len, len, a, p + 1 - kmin);
      }
      gemm(false, R, hd, len, 1.0f, s.data(), len, vp[u] + kmin * hd, hd, ob.data(), hd);
      for (int64_t i = 0; i < nb; ++i)
        for (int64_t j = 0; j < G; ++j) {
          const float r = 1.0f / sums[i * G + j];
          const float* src = ob.data() + (i * G + j) * hd;
          float* dst = op + ((off + i0 + i) * H + g * G + j) * hd;
          for (int64_t d = 0; d < hd; ++d) dst[d] = src[d] * r;
        }
    }
  }
}

}  // namespace

void register_prefill_attention(pybind11::module& m) {
  m.def("prefill_attention", &prefill_attention, "causal attention of prefill chunks over the slot cache",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.attr("has_blas") = sgemm_ != nullptr;
}
