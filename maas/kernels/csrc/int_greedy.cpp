// Greedy decoding's next token straight from a repacked LM head: the index of each row's largest logit, the same
// one (first of equals) that int_linear's logits give, while computing most logits at half the integer work.
//
// Every logit is first computed from the activations' high bytes alone (int_tiles.h, HI), which differs from
// int_linear's by at most
//   E = R e,   R = ||d c|| + ||m||   (the row's weights without and with only its mins, row by row)
//              e = ||lo dx|| + (4 nb + 24) 2^-24 (||q dx|| + ||lo dx||)   (the activation row's)
// (Cauchy-Schwarz on what the low bytes add, plus a bound on both sums' float rounding and on the comparisons'). Any row index whose
// high-byte logit plus E reaches the largest high-byte logit minus E could be the largest exact one; each tile
// column (16 logits) holding such an index is then computed exactly, as int_linear does, and the first largest
// exact logit wins. Where a high-byte logit is not a number the caller computes every logit instead.
#include <torch/extension.h>

#include "int_tiles.h"

#include <cmath>
#include <limits>

namespace {

// ||lo dx|| and ||q dx|| of activation row m, in double
void act_norms(const Acts& a, int64_t m, double& low, double& whole) {
  low = whole = 0.0;
  for (int64_t b = 0; b < a.nb; ++b) {
    const int8_t* h = a.hi.data() + a.at(m, b);
    const int8_t* l = a.lo.data() + a.at(m, b);
    int64_t sl = 0, sq = 0;
    for (int k = 0; k < 32; ++k) {
      const int64_t q = 256 * h[k] + l[k];
      sl += l[k] * l[k], sq += q * q;
    }
    const double d2 = static_cast<double>(a.dx[a.nums().j(m, b)]) * a.dx[a.nums().j(m, b)];
    low += d2 * static_cast<double>(sl), whole += d2 * static_cast<double>(sq);
  }
  low = std::sqrt(low), whole = std::sqrt(whole);
}

// the first largest of n values and its index
inline void first_max(const float* y, int n, float& best, int& at) {
  best = y[0], at = 0;
  for (int i = 1; i < n; ++i)
    if (y[i] > best) best = y[i], at = i;
}

template <int F>
int64_t greedy(const Acts& a, const uint8_t* w, int64_t N, const float* R, const float* e, int64_t* out) {
  constexpr Layout L = L_<F>;
  const int64_t cols = N / 16, col_bytes = a.nb / L.group() * L.unit_bytes(), M = a.M;
  std::vector<float> upper(M * cols);  // per row and tile column: the largest high-byte logit + E
  std::vector<float> lower(static_cast<size_t>(omp_get_max_threads()) * M, -std::numeric_limits<float>::infinity());
  bool numbers = true;
#pragma omp parallel reduction(&& : numbers)
  {
    float* low = lower.data() + omp_get_thread_num() * M;  // this thread's largest high-byte logit - E per row
    alignas(64) float y[4 * 16];
    auto bound = [&](int64_t r0, int n, int64_t t) {
      const __m512 rv = _mm512_loadu_ps(R + 16 * t);
      for (int i = 0; i < n; ++i) {
        const __m512 v = _mm512_load_ps(y + 16 * i), E = _mm512_mul_ps(rv, _mm512_set1_ps(e[r0 + i]));
        if (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q)) numbers = false;
        upper[(r0 + i) * cols + t] = _mm512_reduce_max_ps(_mm512_add_ps(v, E));
        low[r0 + i] = std::max(low[r0 + i], _mm512_reduce_max_ps(_mm512_sub_ps(v, E)));
      }
    };
#pragma omp for schedule(static)
    for (int64_t t = 0; t < cols; ++t) {
      const uint8_t* col = w + t * col_bytes;
      int64_t r = 0;
      for (; r + 4 <= M; r += 4) vnni_rows<F, 4, true>(a, r, col, y, 16, nullptr), bound(r, 4, t);
      for (; r < M; ++r) vnni_rows<F, 1, true>(a, r, col, y, 16, nullptr), bound(r, 1, t);
    }
  }
  if (!numbers) return -1;
  std::vector<std::pair<int64_t, int64_t>> cand;  // (row, tile column), in row then column order
  for (int64_t m = 0; m < M; ++m) {
    float floor = -std::numeric_limits<float>::infinity();
    for (size_t th = 0; th < lower.size() / M; ++th) floor = std::max(floor, lower[th * M + m]);
    for (int64_t t = 0; t < cols; ++t)
      if (upper[m * cols + t] >= floor) cand.emplace_back(m, t);
  }
  std::vector<float> best(cand.size());
  std::vector<int> at(cand.size());
#pragma omp parallel for schedule(dynamic, 4) if (cand.size() > 16)
  for (size_t i = 0; i < cand.size(); ++i) {
    alignas(64) float y[16];
    vnni_rows<F, 1>(a, cand[i].first, w + cand[i].second * col_bytes, y, 16, nullptr);
    first_max(y, 16, best[i], at[i]);
  }
  for (int64_t m = 0; m < M; ++m) out[m] = -1;
  std::vector<float> top(M);
  for (size_t i = 0; i < cand.size(); ++i) {
    const int64_t m = cand[i].first;
    if (out[m] < 0 || best[i] > top[m]) top[m] = best[i], out[m] = 16 * cand[i].second + at[i];
  }
  return static_cast<int64_t>(cand.size());
}

}  // namespace

// Per row of x (M, K), the index of its largest logit against repacked w, as the first maximum of int_linear(x, w)
// would give (R from int_head_norms), and how many tile columns were computed exactly; (empty, -1) where some
// logit is not a number (compute them all).
std::tuple<torch::Tensor, int64_t> int_greedy(torch::Tensor x, torch::Tensor w, int64_t fmt, torch::Tensor R) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous(), "x: contiguous 2-D float32");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0) * 16;
  const Layout L = layout(fmt - 100);
  TORCH_CHECK(K % L.src_qk == 0 && w.dtype() == torch::kUInt8 && w.dim() == 3 && w.is_contiguous() &&
                  w.size(1) == K / 32 / L.group() && w.size(2) == L.unit_bytes(),
              "w: repacked tiles of this format for K inputs");
  TORCH_CHECK(R.dtype() == torch::kFloat32 && R.dim() == 1 && R.size(0) == N, "R: one float32 per output");
  thread_local Acts a;
  quantize(x.data_ptr<float>(), M, K, a);
  high_sums(a);
  std::vector<float> e(M);
  const double rounding = (4.0 * static_cast<double>(a.nb) + 24.0) * std::ldexp(1.0, -24);
  for (int64_t m = 0; m < M; ++m) {
    double low, whole;
    act_norms(a, m, low, whole);
    e[m] = std::nextafter(static_cast<float>((low + rounding * (whole + low)) * (1.0 + 1e-6)),
                          std::numeric_limits<float>::infinity());
  }
  auto out = torch::empty({M}, torch::dtype(torch::kInt64));
  int64_t exact = -1;
  with_format(fmt, [&](auto f) {
    exact = greedy<decltype(f)::value>(a, w.data_ptr<uint8_t>(), N, R.data_ptr<float>(), e.data(), out.data_ptr<int64_t>());
  });
  return {exact < 0 ? torch::empty({0}, torch::dtype(torch::kInt64)) : out, exact};
}

// R = ||d c|| + ||m|| of each output of repacked w (rounded up): what int_greedy's bound needs of the weights
torch::Tensor int_head_norms(torch::Tensor w, int64_t fmt, int64_t K) {
  const Layout L = layout(fmt - 100);
  TORCH_CHECK(w.dtype() == torch::kUInt8 && w.dim() == 3 && w.is_contiguous() && w.size(2) == L.unit_bytes(),
              "w: repacked tiles of this format");
  const int64_t N = w.size(0) * 16, nb = K / 32;
  auto out = torch::empty({N}, torch::dtype(torch::kFloat32));
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    double sc = 0.0, sm = 0.0;
    for (int64_t b = 0; b < nb; ++b) {
      BlockRow r;
      block_row(wp, L, nb, n, b, r);
      for (int k = 0; k < 32; ++k) sc += static_cast<double>(r.code[k] * r.d[k]) * (r.code[k] * r.d[k]);
      sm += 32.0 * r.mn * r.mn;
    }
    op[n] = std::nextafter(static_cast<float>((std::sqrt(sc) + std::sqrt(sm)) * (1.0 + 1e-6)),
                           std::numeric_limits<float>::infinity());
  }
  return out;
}

void register_greedy(pybind11::module& m) {
  m.def("int_greedy", &int_greedy, "greedy next tokens from a repacked LM head (first largest logit per row)",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("int_head_norms", &int_head_norms, "the per-output weight norms int_greedy's bound needs");
}
