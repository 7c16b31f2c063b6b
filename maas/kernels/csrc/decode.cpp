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

#include "vec_math.h"

void matmul(const float* xp, int64_t M, int64_t K, const void* w, int64_t fmt, int64_t N, const float* bp,
            float* yp, int64_t ldy, bool same_x);  // block_linear.cpp

namespace {

using Lin = std::tuple<torch::Tensor, int64_t, int64_t, int64_t, c10::optional<torch::Tensor>>;  // w, fmt, N, K, b
using Opt = c10::optional<torch::Tensor>;

// the cost per head of a task attending for all the query heads of one key head (each key and value converted
// and loaded once for them), relative to a task for one head (set from SmolLM2's decode steps, groups of 3:
// docs/cpu-inference.md; see attend)
constexpr double GROUPED_HEAD_COST = 0.65;

const float* ptr(const Opt& t) { return t.has_value() ? t->data_ptr<float>() : nullptr; }

// y (S rows, ldy apart) = x (S, K) @ W^T (+ b); same_x: x is unchanged since the previous apply
void apply(const Lin& l, const float* x, int64_t S, float* y, int64_t ldy, bool same_x = false) {
  const auto& [w, fmt, N, K, b] = l;
  matmul(x, S, K, w.data_ptr(), fmt, N, ptr(b), y, ldy, same_x);
}

// 8 cache values as float32: the cache holds float32 or float16 (uint16_t bits)
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#ifdef __AVX512F__
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#endif

// n (a multiple of 8) float32 values into the cache, rounded to nearest-even as torch's .half() does
inline void store(float* dst, const float* src, int64_t n) { std::copy(src, src + n, dst); }
inline void store(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// lanes >= k set (for 0 < k < 8): the padding of a last, partial vector
inline __m256 tail_mask(int64_t k) {
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8), _mm256_set1_epi32(static_cast<int>(k))));
}

template <typename T>
inline float dot(const float* a, const T* b, int64_t n) {  // n a multiple of 8
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8(b + i), acc);
  return sum8(acc);
}

// m = act(g) * u over n values (a multiple of 8): SiLU g / (1 + e^-g), or GELU's tanh form with
// tanh(z) = 1 - 2 / (e^2z + 1)
inline void gated(const float* g, const float* u, float* m, int64_t n, int64_t act) {
  const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 z = _mm256_loadu_ps(g + i);
    __m256 a;
    if (act == 0) {
      a = _mm256_div_ps(z, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), z))));
    } else {
      const __m256 z3 = _mm256_mul_ps(_mm256_mul_ps(z, z), z);
      const __m256 t = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), z3, z));
      const __m256 th = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(exp8(_mm256_add_ps(t, t)), one)));
      a = _mm256_mul_ps(_mm256_mul_ps(half, z), _mm256_add_ps(one, th));
    }
    _mm256_storeu_ps(m + i, _mm256_mul_ps(a, _mm256_loadu_ps(u + i)));
  }
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
    check_x(x);
    TORCH_CHECK(kc.size() == layers.size() && vc.size() == layers.size(), "one k and v cache per layer");
    const int64_t S = x.size(0), NQ = H * hd, NKV = KV * hd, NQKV = NQ + 2 * NKV;
    const int64_t* sp = slots.data_ptr<int64_t>();
    const int64_t* pp = pos.data_ptr<int64_t>();
    Work& w = work.size(S, D, NQKV, NQ, I);
    for (size_t li = 0; li < layers.size(); ++li) {
      const Layer& L = layers[li];
      check_cache(kc[li], vc[li]);
      attention_inputs(L, x, kc[li], vc[li], sp, pp, cos_g, sin_g, cos_l, sin_l, w);
      on_cache(kc[li], vc[li], [&](auto* k, auto* v) {
        attend(w.qkv.data(), NQKV, k, v, kc[li].size(2), sp, pp, S, L.window, w.att.data());
      });
      rest_of_layer(L, x, w.att.data(), w);
    }
    return normed(x);
  }

  // Prefill rows, a layer at a time around the prefill attention: layer li's norm, projections, q/k norms and RoPE
  // for x (S, D), its keys and values written into the cache at (slots, pos), its queries into q (S, H hd).
  void prefill_qkv(int64_t li, torch::Tensor x, torch::Tensor kc, torch::Tensor vc, torch::Tensor slots,
                   torch::Tensor pos, torch::Tensor cos_g, torch::Tensor sin_g, torch::Tensor cos_l,
                   torch::Tensor sin_l, torch::Tensor q) {
    check_x(x);
    check_cache(kc, vc);
    const int64_t S = x.size(0), NQ = H * hd, NQKV = NQ + 2 * KV * hd;
    TORCH_CHECK(q.dtype() == torch::kFloat32 && q.is_contiguous() && q.numel() == S * NQ, "q: (S, heads x head_dim) float32");
    Work& w = work.size(S, D, NQKV, NQ, 0);
    attention_inputs(layer(li), x, kc, vc, slots.data_ptr<int64_t>(), pos.data_ptr<int64_t>(), cos_g, sin_g, cos_l,
                     sin_l, w);
    float* qp = q.data_ptr<float>();
#pragma omp parallel for schedule(static) if (S >= 16)
    for (int64_t s = 0; s < S; ++s) std::copy_n(w.qkv.data() + s * NQKV, NQ, qp + s * NQ);
  }

  // ... then, with the attention's output att (S, H hd): the rest of layer li on x (in place)
  void prefill_rest(int64_t li, torch::Tensor x, torch::Tensor att) {
    check_x(x);
    TORCH_CHECK(att.dtype() == torch::kFloat32 && att.is_contiguous() && att.size(0) == x.size(0) &&
                    att.size(1) == H * hd, "att: (S, heads x head_dim) float32");
    Work& w = work.size(x.size(0), D, 0, 0, I);
    rest_of_layer(layer(li), x, att.data_ptr<float>(), w);
  }

  // x with the model's final norm (in place)
  torch::Tensor normed(torch::Tensor x) {
    if (final_norm.has_value())
      for (int64_t s = 0; s < x.size(0); ++s)
        rms_norm(x.data_ptr<float>() + s * D, ptr(final_norm), x.data_ptr<float>() + s * D, D, eps);
    return x;
  }

  // the model's final norm, applied after the last layer (a PyTorch op costs more than the norm itself)
  void set_final_norm(torch::Tensor w) { final_norm = w; }

 private:
  struct Work {  // a call's buffers, kept between calls and grown, never shrunk: a prefill's call after a
                // decode's does not zero megabytes (every element is written before it is read)
    std::vector<float> h, qkv, att, a, gu, mid;
    Work& size(int64_t S, int64_t D, int64_t NQKV, int64_t NQ, int64_t I) {
      for (auto [v, n] : {std::pair{&h, S * D}, {&qkv, S * NQKV}, {&att, S * NQ}, {&a, S * D}, {&gu, S * 2 * I},
                          {&mid, S * I}})
        if (v->size() < static_cast<size_t>(n)) v->resize(n);
      return *this;
    }
  };
  Work work;  // the engine calls one method at a time

  void check_x(const torch::Tensor& x) const {
    TORCH_CHECK(x.dtype() == torch::kFloat32 && x.is_contiguous() && x.dim() == 2 && x.size(1) == D,
                "x: (S, hidden) float32");
  }

  const Layer& layer(int64_t li) const {
    TORCH_CHECK(li >= 0 && li < static_cast<int64_t>(layers.size()), "no such layer");
    return layers[li];
  }

  // fn(k, v) with the cache's element pointers: uint16_t (float16 bits) or float
  template <typename Fn>
  static void on_cache(const torch::Tensor& k, const torch::Tensor& v, Fn&& fn) {
    if (k.scalar_type() == torch::kHalf)
      fn(reinterpret_cast<uint16_t*>(k.data_ptr<at::Half>()), reinterpret_cast<uint16_t*>(v.data_ptr<at::Half>()));
    else
      fn(k.data_ptr<float>(), v.data_ptr<float>());
  }

  // xr += ar, ar first through `norm` where the layer has one (Gemma 3's post-attention / post-MLP norms)
  void add_residual(const Opt& norm, float* xr, float* ar) const {
    if (norm.has_value()) rms_norm(ar, ptr(norm), ar, D, eps);
    for (int64_t i = 0; i < D; ++i) xr[i] += ar[i];
  }

  static void check_cache(const torch::Tensor& k, const torch::Tensor& v) {
    TORCH_CHECK((k.scalar_type() == torch::kFloat || k.scalar_type() == torch::kHalf) &&
                    v.scalar_type() == k.scalar_type() && k.is_contiguous() && v.is_contiguous(),
                "the KV cache: contiguous float32 or float16");
  }

  // layer L's norm, projections, q/k norms and RoPE (queries scaled) into w.qkv, keys and values into the cache
  void attention_inputs(const Layer& L, const torch::Tensor& x, const torch::Tensor& kc, const torch::Tensor& vc, const int64_t* sp,
                        const int64_t* pp, const torch::Tensor& cos_g, const torch::Tensor& sin_g,
                        const torch::Tensor& cos_l, const torch::Tensor& sin_l, Work& w) const {
    const int64_t S = x.size(0), NQ = H * hd, NKV = KV * hd, NQKV = NQ + 2 * NKV;
    const float* xp = x.data_ptr<float>();
    const float* cs = (L.local ? cos_l : cos_g).data_ptr<float>();
    const float* sn = (L.local ? sin_l : sin_g).data_ptr<float>();
#pragma omp parallel for schedule(static) if (S >= 16)
    for (int64_t s = 0; s < S; ++s) rms_norm(xp + s * D, ptr(L.in_norm), w.h.data() + s * D, D, eps);
    apply(L.qkv[0], w.h.data(), S, w.qkv.data(), NQKV);
    if (L.qkv.size() == 3) {
      apply(L.qkv[1], w.h.data(), S, w.qkv.data() + NQ, NQKV, true);
      apply(L.qkv[2], w.h.data(), S, w.qkv.data() + NQ + NKV, NQKV, true);
    }
#pragma omp parallel for schedule(static) if (S >= 16)
    for (int64_t s = 0; s < S; ++s) {
      float* row = w.qkv.data() + s * NQKV;
      for (int64_t j = 0; j < H + KV; ++j) {  // query heads, then key heads
        float* v = row + j * hd;
        const Opt& nw = j < H ? L.q_norm : L.k_norm;
        if (nw.has_value()) rms_norm(v, ptr(nw), v, hd, eps);
        rope(v, cs + s * hd, sn + s * hd, hd);
        if (j < H && q_scale != 1.0f)
          for (int64_t i = 0; i < hd; ++i) v[i] *= q_scale;
      }
    }
    on_cache(kc, vc, [&](auto* k, auto* v) { store_kv(k, v, kc.size(2), w.qkv.data(), sp, pp, S); });
  }

  // from the attention's output att (S, H hd): the output projection, residual, MLP and residual, on x in place
  void rest_of_layer(const Layer& L, const torch::Tensor& x, const float* att, Work& w) const {
    const int64_t S = x.size(0);
    float* xp = x.data_ptr<float>();
    apply(L.o, att, S, w.a.data(), D);
#pragma omp parallel for schedule(static) if (S >= 16)
    for (int64_t s = 0; s < S; ++s) {
      add_residual(L.attn_out_norm, xp + s * D, w.a.data() + s * D);
      rms_norm(xp + s * D, ptr(L.ff_norm), w.h.data() + s * D, D, eps);
    }
    apply(L.gate_up[0], w.h.data(), S, w.gu.data(), 2 * I);
    if (L.gate_up.size() == 2) apply(L.gate_up[1], w.h.data(), S, w.gu.data() + I, 2 * I, true);
#pragma omp parallel for schedule(static) if (S >= 4)
    for (int64_t s = 0; s < S; ++s) {
      const float* g = w.gu.data() + s * 2 * I;
      gated(g, g + I, w.mid.data() + s * I, I, act);
    }
    apply(L.down, w.mid.data(), S, w.a.data(), D);
#pragma omp parallel for schedule(static) if (S >= 16)
    for (int64_t s = 0; s < S; ++s) add_residual(L.ff_out_norm, xp + s * D, w.a.data() + s * D);
  }

  // the rows' keys and values (in qkv, S rows of NQ + 2 NKV) into the cache (slots, KV, T, hd)
  template <typename C>
  void store_kv(C* kc, C* vc, int64_t T, const float* qkv, const int64_t* sp, const int64_t* pp, int64_t S) const {
    const int64_t NQ = H * hd, NKV = KV * hd, ld = NQ + 2 * NKV;
    for (int64_t s = 0; s < S; ++s)
      for (int64_t g = 0; g < KV; ++g) {
        const int64_t off = ((sp[s] * KV + g) * T + pp[s]) * hd;
        store(kc + off, qkv + s * ld + NQ + g * hd, hd);
        store(vc + off, qkv + s * ld + NQ + NKV + g * hd, hd);
      }
  }

  // softmax(q k^T / sqrt(hd)) v for each row and query head over the row's positions (the last `window`). A
  // task takes all the query heads that share a key head (each key and value converted and loaded once for
  // them) where that leaves the busiest thread less to do, else one head (more tasks to spread). Each head's
  // sums run in the same order either way, so the result does not depend on which.
  template <typename C>
  void attend(const float* qkv, int64_t ld, const C* kc, const C* vc, int64_t T, const int64_t* sp,
              const int64_t* pp, int64_t S, int64_t window, float* out) const {
    const int64_t group = H / KV;
    // e.g. one SmolLM2 row: 3 tasks of 3 heads instead of 9 of 1 on two threads
    const int64_t threads = omp_get_max_threads();
    const auto busiest = [&](int64_t n) { return static_cast<double>((n + threads - 1) / threads); };
    const double grouped_cost = busiest(S * KV) * static_cast<double>(group) * GROUPED_HEAD_COST;
    const bool grouped = group <= 4 && (S * KV >= 8 || grouped_cost < busiest(S * H));
    const int64_t tasks = grouped ? S * KV : S * H;
#pragma omp parallel for schedule(static) if (tasks > 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t s = grouped ? t / KV : t / H, h0 = grouped ? t % KV * group : t % H;
      switch (grouped ? group : 1) {
        case 1: heads<1>(qkv, ld, kc, vc, T, sp[s], pp[s], s, h0, window, out); break;
        case 2: heads<2>(qkv, ld, kc, vc, T, sp[s], pp[s], s, h0, window, out); break;
        case 3: heads<3>(qkv, ld, kc, vc, T, sp[s], pp[s], s, h0, window, out); break;
        default: heads<4>(qkv, ld, kc, vc, T, sp[s], pp[s], s, h0, window, out); break;
      }
    }
  }

  // attention of row s's query heads h0 .. h0 + G (one key head) over its positions
  template <int G, typename C>
  void heads(const float* qkv, int64_t ld, const C* kc, const C* vc, int64_t T, int64_t slot, int64_t pos, int64_t s,
             int64_t h0, int64_t window, float* out) const {
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int64_t g = h0 / (H / KV);
    const int64_t n = pos + 1, start = window > 0 && n > window ? n - window : 0, len = n - start;
    const int64_t ldp = (len + 7) / 8 * 8;  // each head's scores padded to whole vectors
    const float* q = qkv + s * ld + h0 * hd;
    const C* kb = kc + ((slot * KV + g) * T + start) * hd;
    const C* vb = vc + ((slot * KV + g) * T + start) * hd;
    thread_local std::vector<float> pv;
    pv.resize(static_cast<size_t>(G * ldp));
    float* p = pv.data();
    int64_t j = 0;
    for (; j + 4 <= len; j += 4) {
      // the cache streams from memory: ask for the keys a few steps ahead, and this step's values into L2 for
      // the weighted sum that follows
      const char* kn = reinterpret_cast<const char*>(kb + (j + 16) * hd);
      const char* vn = reinterpret_cast<const char*>(vb + j * hd);
      for (int64_t o = 0; o < 4 * hd * static_cast<int64_t>(sizeof(C)); o += 64) {
        _mm_prefetch(kn + o, _MM_HINT_T0);
        _mm_prefetch(vn + o, _MM_HINT_T1);
      }
      scores4<G>(q, kb + j * hd, scale, p + j, ldp);
    }
    for (; j < len; ++j)
      for (int h = 0; h < G; ++h) p[h * ldp + j] = dot(q + h * hd, kb + j * hd, hd) * scale;
    float sum[G];
    for (int h = 0; h < G; ++h) {
      float* ph = p + h * ldp;
      float mx = -INFINITY;
      for (int64_t i = 0; i < len; ++i) mx = std::max(mx, ph[i]);
      std::fill(ph + len, ph + ldp, mx);  // padding: its e^0 is not summed
      const __m256 vmx = _mm256_set1_ps(mx);
      __m256 acc = _mm256_setzero_ps();
      for (int64_t i = 0; i < len; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(ph + i), vmx));
        _mm256_storeu_ps(ph + i, e);
        acc = _mm256_add_ps(acc, len - i >= 8 ? e : _mm256_blendv_ps(e, _mm256_setzero_ps(), tail_mask(len - i)));
      }
      sum[h] = sum8(acc);
    }
    float* o = out + s * H * hd + h0 * hd;
#ifdef __AVX512F__
    constexpr int R = G == 1 ? 16 : G == 2 ? 8 : 8;  // 8-lane units per head and pass (32 registers)
#else
    constexpr int R = G == 1 ? 8 : G == 2 ? 4 : 2;  // 8-lane units per head and pass: G * R accumulators
#endif
    int64_t c = 0;
    for (; c + 8 * R <= hd; c += 8 * R) weighted_sum<G, R>(p, ldp, sum, vb + c, len, o + c);
    for (; c < hd; c += 8) weighted_sum<G, 1>(p, ldp, sum, vb + c, len, o + c);
  }

  // p[h ldp + 0..3] = (q_h . k) * scale for the four keys at k, k + hd, .. and G query heads q_h (hd apart): each
  // key's sum in dot()'s order, side by side so that the chains of fmas overlap
  template <int G, typename C>
  void scores4(const float* q, const C* k, float scale, float* p, int64_t ldp) const {
    __m256 a[G][4];
    for (int h = 0; h < G; ++h)
      for (int r = 0; r < 4; ++r) a[h][r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < hd; i += 8) {
      const __m256 k0 = load8(k + i), k1 = load8(k + hd + i), k2 = load8(k + 2 * hd + i), k3 = load8(k + 3 * hd + i);
      for (int h = 0; h < G; ++h) {
        const __m256 qv = _mm256_loadu_ps(q + h * hd + i);
        a[h][0] = _mm256_fmadd_ps(qv, k0, a[h][0]);
        a[h][1] = _mm256_fmadd_ps(qv, k1, a[h][1]);
        a[h][2] = _mm256_fmadd_ps(qv, k2, a[h][2]);
        a[h][3] = _mm256_fmadd_ps(qv, k3, a[h][3]);
      }
    }
    for (int h = 0; h < G; ++h)
      for (int r = 0; r < 4; ++r) p[h * ldp + r] = sum8(a[h][r]) * scale;
  }

  // o_h[0 .. 8R) = sum over n positions of p_h[j] / sum_h * v[j] (v rows hd apart) for G heads (o_h hd apart,
  // p_h ldp apart), accumulated in registers in position order (lane by lane: the same bits at any width)
  template <int G, int R, typename C>
  void weighted_sum(const float* p, int64_t ldp, const float* sum, const C* v, int64_t n, float* o) const {
#ifdef __AVX512F__
    if constexpr (R % 2 == 0) {  // 16 lanes
      constexpr int R2 = R / 2;
      __m512 acc[G][R2];
      for (int h = 0; h < G; ++h)
        for (int r = 0; r < R2; ++r) acc[h][r] = _mm512_setzero_ps();
      for (int64_t j = 0; j < n; ++j) {
        __m512 vv[R2];
        for (int r = 0; r < R2; ++r) vv[r] = load16(v + j * hd + 16 * r);
        for (int h = 0; h < G; ++h) {
          const __m512 w = _mm512_set1_ps(p[h * ldp + j] / sum[h]);
          for (int r = 0; r < R2; ++r) acc[h][r] = _mm512_fmadd_ps(w, vv[r], acc[h][r]);
        }
      }
      for (int h = 0; h < G; ++h)
        for (int r = 0; r < R2; ++r) _mm512_storeu_ps(o + h * hd + 16 * r, acc[h][r]);
      return;
    }
#endif
    __m256 acc[G][R];
    for (int h = 0; h < G; ++h)
      for (int r = 0; r < R; ++r) acc[h][r] = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; ++j) {
      __m256 vv[R];
      for (int r = 0; r < R; ++r) vv[r] = load8(v + j * hd + 8 * r);
      for (int h = 0; h < G; ++h) {
        const __m256 w = _mm256_set1_ps(p[h * ldp + j] / sum[h]);
        for (int r = 0; r < R; ++r) acc[h][r] = _mm256_fmadd_ps(w, vv[r], acc[h][r]);
      }
    }
    for (int h = 0; h < G; ++h)
      for (int r = 0; r < R; ++r) _mm256_storeu_ps(o + h * hd + 8 * r, acc[h][r]);
  }

  int64_t H, KV, hd, D, I;
  float eps;
  int64_t act;  // 0: SiLU, 1: GELU (tanh)
  float q_scale;
  std::vector<Layer> layers;
  Opt final_norm;
};

}  // namespace

void register_decode(pybind11::module& m) {
  pybind11::class_<Decoder>(m, "Decoder")
      .def(pybind11::init<int64_t, int64_t, int64_t, int64_t, int64_t, double, int64_t, double>())
      .def("add_layer", &Decoder::add_layer)
      .def("set_final_norm", &Decoder::set_final_norm)
      .def("prefill_qkv", &Decoder::prefill_qkv, pybind11::call_guard<pybind11::gil_scoped_release>())
      .def("prefill_rest", &Decoder::prefill_rest, pybind11::call_guard<pybind11::gil_scoped_release>())
      .def("normed", &Decoder::normed)
      .def("forward", &Decoder::forward, pybind11::call_guard<pybind11::gil_scoped_release>());
}
