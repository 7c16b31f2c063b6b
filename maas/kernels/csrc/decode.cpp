// The decoder layers for rows that decode one token each, in one native call per step: RMSNorm, the
// projections (block_linear.cpp's matmul: GGUF blocks or float32 rows), query/key norms, RoPE, the KV
// write into the slot cache (float32 or float16), attention over each row's cached positions (a sliding
// window where the layer has one), the gated MLP (SiLU or GELU-tanh) and the residuals; Gemma 3's extra
// norms where given. Every step works row by row in a fixed order, so a row's result does not depend on the
// other rows.
#include <torch/extension.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

void matmul(const float* xp, int64_t M, int64_t K, const void* w, int64_t fmt, int64_t N, const float* bp,
            float* yp, int64_t ldy);

namespace {

using Lin = std::tuple<torch::Tensor, int64_t, int64_t, int64_t, c10::optional<torch::Tensor>>;  // w, fmt, N, K, b
using Opt = c10::optional<torch::Tensor>;

const float* ptr(const Opt& t) { return t.has_value() ? t->data_ptr<float>() : nullptr; }

// y (S rows, ldy apart) = x (S, K) @ W^T (+ b)
void apply(const Lin& l, const float* x, int64_t S, float* y, int64_t ldy) {
  const auto& [w, fmt, N, K, b] = l;
  matmul(x, S, K, w.data_ptr(), fmt, N, ptr(b), y, ldy);
}

inline float sum8(__m256 v) {
  __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  t = _mm_add_ps(t, _mm_movehl_ps(t, t));
  t = _mm_add_ss(t, _mm_movehdup_ps(t));
  return _mm_cvtss_f32(t);
}

// 8 cache values as float32: the cache holds float32 or float16 (uint16_t bits)
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// n (a multiple of 8) float32 values into the cache, rounded to nearest-even as torch's .half() does
inline void store(float* dst, const float* src, int64_t n) { std::copy(src, src + n, dst); }
inline void store(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

template <typename T>
inline float dot(const float* a, const T* b, int64_t n) {  // n a multiple of 8
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8(b + i), acc);
  return sum8(acc);
}

// out = x / sqrt(mean(x^2) + eps) * w (out may be x)
inline void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  const float r = 1.0f / std::sqrt(dot(x, x, n) / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * r * w[i];
}

// rotate-half RoPE on one head: v[i], v[i + h] with cos / sin rows of length 2h
inline void rope(float* v, const float* c, const float* s, int64_t hd) {
  const int64_t h = hd / 2;
  for (int64_t i = 0; i < h; ++i) {
    const float x1 = v[i], x2 = v[i + h];
    v[i] = x1 * c[i] - x2 * s[i];
    v[i + h] = x2 * c[i + h] + x1 * s[i + h];
  }
}

struct Layer {
  Opt in_norm, attn_out_norm, ff_norm, ff_out_norm, q_norm, k_norm;
  std::vector<Lin> qkv, gate_up;
  Lin o, down;
  int64_t window;
  bool local;
};

class Decoder {
 public:
  Decoder(int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t hidden, int64_t inter, double eps, int64_t act,
          double q_scale)
      : H(heads), KV(kv_heads), hd(head_dim), D(hidden), I(inter), eps(static_cast<float>(eps)), act(act),
        q_scale(static_cast<float>(q_scale)) {
    TORCH_CHECK(hd % 8 == 0 && D % 16 == 0 && I % 16 == 0, "sizes must be multiples of 16 (head_dim of 8)");
  }

  void add_layer(Opt in_norm, Opt attn_out_norm, Opt ff_norm, Opt ff_out_norm, Opt q_norm, Opt k_norm,
                 std::vector<Lin> qkv, Lin o, std::vector<Lin> gate_up, Lin down, int64_t window, bool local) {
    TORCH_CHECK(qkv.size() == 1 || qkv.size() == 3, "qkv: one fused projection or three");
    TORCH_CHECK(gate_up.size() == 1 || gate_up.size() == 2, "gate_up: one fused projection or two");
    layers.push_back({in_norm, attn_out_norm, ff_norm, ff_out_norm, q_norm, k_norm, std::move(qkv), std::move(gate_up),
                      std::move(o), std::move(down), window, local});
  }

  // x (S, D): the rows' hidden states, updated in place; k/v caches per layer (slots, KV, max_len, hd)
  torch::Tensor forward(torch::Tensor x, const std::vector<torch::Tensor>& kc, const std::vector<torch::Tensor>& vc,
                        torch::Tensor slots, torch::Tensor pos, torch::Tensor cos_g, torch::Tensor sin_g,
                        torch::Tensor cos_l, torch::Tensor sin_l) {
    TORCH_CHECK(x.dtype() == torch::kFloat32 && x.is_contiguous() && x.size(1) == D, "x: (S, hidden) float32");
    TORCH_CHECK(kc.size() == layers.size() && vc.size() == layers.size(), "one k and v cache per layer");
    for (size_t li = 0; li < layers.size(); ++li)
      TORCH_CHECK((kc[li].scalar_type() == torch::kFloat || kc[li].scalar_type() == torch::kHalf) &&
                      vc[li].scalar_type() == kc[li].scalar_type() && kc[li].is_contiguous() && vc[li].is_contiguous(),
                  "the KV cache: contiguous float32 or float16");
    const int64_t S = x.size(0), NQ = H * hd, NKV = KV * hd, NQKV = NQ + 2 * NKV;
    const int64_t* sp = slots.data_ptr<int64_t>();
    const int64_t* pp = pos.data_ptr<int64_t>();
    std::vector<float> h(S * D), qkv(S * NQKV), att(S * NQ), a(S * D), gu(S * 2 * I), mid(S * I);
    float* xp = x.data_ptr<float>();
    for (size_t li = 0; li < layers.size(); ++li) {
      const Layer& L = layers[li];
      const float* cs = (L.local ? cos_l : cos_g).data_ptr<float>();
      const float* sn = (L.local ? sin_l : sin_g).data_ptr<float>();
      for (int64_t s = 0; s < S; ++s) rms_norm(xp + s * D, ptr(L.in_norm), h.data() + s * D, D, eps);
      if (L.qkv.size() == 1) {
        apply(L.qkv[0], h.data(), S, qkv.data(), NQKV);
      } else {
        apply(L.qkv[0], h.data(), S, qkv.data(), NQKV);
        apply(L.qkv[1], h.data(), S, qkv.data() + NQ, NQKV);
        apply(L.qkv[2], h.data(), S, qkv.data() + NQ + NKV, NQKV);
      }
      for (int64_t s = 0; s < S; ++s) {
        float* row = qkv.data() + s * NQKV;
        for (int64_t j = 0; j < H + KV; ++j) {  // query heads, then key heads
          float* v = row + j * hd;
          const Opt& nw = j < H ? L.q_norm : L.k_norm;
          if (nw.has_value()) rms_norm(v, ptr(nw), v, hd, eps);
          rope(v, cs + s * hd, sn + s * hd, hd);
          if (j < H && q_scale != 1.0f)
            for (int64_t i = 0; i < hd; ++i) v[i] *= q_scale;
        }
      }
      if (kc[li].scalar_type() == torch::kHalf)
        cache_and_attend(reinterpret_cast<uint16_t*>(kc[li].data_ptr<at::Half>()),
                         reinterpret_cast<uint16_t*>(vc[li].data_ptr<at::Half>()), kc[li].size(2), qkv.data(), sp, pp,
                         S, L.window, att.data());
      else
        cache_and_attend(kc[li].data_ptr<float>(), vc[li].data_ptr<float>(), kc[li].size(2), qkv.data(), sp, pp, S,
                         L.window, att.data());
      apply(L.o, att.data(), S, a.data(), D);
      for (int64_t s = 0; s < S; ++s) {
        float* xr = xp + s * D;
        float* ar = a.data() + s * D;
        if (L.attn_out_norm.has_value()) rms_norm(ar, ptr(L.attn_out_norm), ar, D, eps);
        for (int64_t i = 0; i < D; ++i) xr[i] += ar[i];
        rms_norm(xr, ptr(L.ff_norm), h.data() + s * D, D, eps);
      }
      if (L.gate_up.size() == 1) {
        apply(L.gate_up[0], h.data(), S, gu.data(), 2 * I);
      } else {
        apply(L.gate_up[0], h.data(), S, gu.data(), 2 * I);
        apply(L.gate_up[1], h.data(), S, gu.data() + I, 2 * I);
      }
      for (int64_t s = 0; s < S; ++s) {
        const float* g = gu.data() + s * 2 * I;
        const float* u = g + I;
        float* m = mid.data() + s * I;
        if (act == 0) {
          for (int64_t i = 0; i < I; ++i) m[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
        } else {  // GELU, tanh approximation
          for (int64_t i = 0; i < I; ++i) {
            const float z = g[i];
            m[i] = 0.5f * z * (1.0f + std::tanh(0.7978845608028654f * (z + 0.044715f * z * z * z))) * u[i];
          }
        }
      }
      apply(L.down, mid.data(), S, a.data(), D);
      for (int64_t s = 0; s < S; ++s) {
        float* xr = xp + s * D;
        float* ar = a.data() + s * D;
        if (L.ff_out_norm.has_value()) rms_norm(ar, ptr(L.ff_out_norm), ar, D, eps);
        for (int64_t i = 0; i < D; ++i) xr[i] += ar[i];
      }
    }
    return x;
  }

 private:
  // the rows' keys and values (in qkv, S rows of NQ + 2 NKV) into the cache (slots, KV, T, hd), then attention
  template <typename C>
  void cache_and_attend(C* kc, C* vc, int64_t T, const float* qkv, const int64_t* sp, const int64_t* pp, int64_t S,
                        int64_t window, float* out) const {
    const int64_t NQ = H * hd, NKV = KV * hd, ld = NQ + 2 * NKV;
    for (int64_t s = 0; s < S; ++s)
      for (int64_t g = 0; g < KV; ++g) {
        const int64_t off = ((sp[s] * KV + g) * T + pp[s]) * hd;
        store(kc + off, qkv + s * ld + NQ + g * hd, hd);
        store(vc + off, qkv + s * ld + NQ + NKV + g * hd, hd);
      }
    attend(qkv, ld, kc, vc, T, sp, pp, S, window, out);
  }

  // softmax(q k^T / sqrt(hd)) v for each row and query head over the row's positions (the last `window`)
  template <typename C>
  void attend(const float* qkv, int64_t ld, const C* kc, const C* vc, int64_t T, const int64_t* sp,
              const int64_t* pp, int64_t S, int64_t window, float* out) const {
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int64_t group = H / KV;
#pragma omp parallel for schedule(static) if (S * H > 1)
    for (int64_t t = 0; t < S * H; ++t) {
      const int64_t s = t / H, head = t % H, g = head / group;
      const int64_t n = pp[s] + 1, start = window > 0 && n > window ? n - window : 0;
      const float* q = qkv + s * ld + head * hd;
      const C* kb = kc + (sp[s] * KV + g) * T * hd;
      const C* vb = vc + (sp[s] * KV + g) * T * hd;
      thread_local std::vector<float> p;
      p.resize(static_cast<size_t>(n - start));
      int64_t j = start;
      for (; j + 4 <= n; j += 4) scores4(q, kb + j * hd, scale, p.data() + (j - start));
      for (; j < n; ++j) p[j - start] = dot(q, kb + j * hd, hd) * scale;
      float mx = -INFINITY;
      for (int64_t i = 0; i < n - start; ++i) mx = std::max(mx, p[i]);
      float sum = 0.0f;
      for (int64_t i = 0; i < n - start; ++i) {
        p[i] = std::exp(p[i] - mx);
        sum += p[i];
      }
      float* o = out + s * H * hd + head * hd;
      int64_t c = 0;
      for (; c + 64 <= hd; c += 64) weighted_sum<8>(p.data(), sum, vb + start * hd + c, n - start, o + c);
      for (; c < hd; c += 8) weighted_sum<1>(p.data(), sum, vb + start * hd + c, n - start, o + c);
    }
  }

  // p[0..3] = (q . k) * scale for the four keys at k, k + hd, ..: each key's sum in dot()'s order, the four
  // side by side so that their chains of fmas overlap
  template <typename C>
  void scores4(const float* q, const C* k, float scale, float* p) const {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < hd; i += 8) {
      const __m256 qv = _mm256_loadu_ps(q + i);
      a0 = _mm256_fmadd_ps(qv, load8(k + i), a0);
      a1 = _mm256_fmadd_ps(qv, load8(k + hd + i), a1);
      a2 = _mm256_fmadd_ps(qv, load8(k + 2 * hd + i), a2);
      a3 = _mm256_fmadd_ps(qv, load8(k + 3 * hd + i), a3);
    }
    p[0] = sum8(a0) * scale;
    p[1] = sum8(a1) * scale;
    p[2] = sum8(a2) * scale;
    p[3] = sum8(a3) * scale;
  }

  // o[0 .. 8R) = sum over n positions of p[j] / sum * v[j] (v rows hd apart), accumulated in registers in
  // position order
  template <int R, typename C>
  void weighted_sum(const float* p, float sum, const C* v, int64_t n, float* o) const {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; ++j) {
      const __m256 w = _mm256_set1_ps(p[j] / sum);
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(w, load8(v + j * hd + 8 * r), acc[r]);
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(o + 8 * r, acc[r]);
  }

  int64_t H, KV, hd, D, I;
  float eps;
  int64_t act;  // 0: SiLU, 1: GELU (tanh)
  float q_scale;
  std::vector<Layer> layers;
};

}  // namespace

void register_decode(pybind11::module& m) {
  pybind11::class_<Decoder>(m, "Decoder")
      .def(pybind11::init<int64_t, int64_t, int64_t, int64_t, int64_t, double, int64_t, double>())
      .def("add_layer", &Decoder::add_layer)
      .def("forward", &Decoder::forward, pybind11::call_guard<pybind11::gil_scoped_release>());
}
