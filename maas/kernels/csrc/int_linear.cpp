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

#include "int_tiles.h"
#include <sys/syscall.h>
#include <unistd.h>

namespace {

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

constexpr int64_t DECODE_ONCE_ROWS = 8;  // from this many rows a tile column is decoded once for all of them
int64_t amx_min_rows = 10;  // fewer rows go through VNNI (the same bits either way); set by int_use_amx

template <int F>
void run(const Acts& a, const uint8_t* w, int64_t N, const float* bias, float* y, int64_t ldy) {
  constexpr Layout L = L_<F>;
  const int64_t cols = N / 16, col_bytes = a.nb / L.group() * L.unit_bytes();
  const bool amx = amx_ready && a.M >= amx_min_rows && !L.halves;  // Q6_K: VNNI only (16-weight halves)
  const int64_t tasks = amx ? (cols + 1) / 2 : cols;  // AMX: two tile columns a task
  // many rows through VNNI: a column at a time to whichever thread is free (the two cores of a VM can run at
  // different speeds); few rows stream the weights from memory, an even contiguous share each, and so does
  // AMX (handed out one at a time, its tasks ran slower: docs/cpu-inference.md)
  const int64_t threads = omp_get_max_threads();
  const int chunk = a.M >= DECODE_ONCE_ROWS && !amx ? 1 : static_cast<int>((tasks + threads - 1) / threads);
#pragma omp parallel
  {
    thread_local std::vector<float> acc;  // kept between calls, never zeroed (see amx_cols)
    thread_local std::vector<__m512i> decoded;  // a tile column decoded once for many rows (64-byte aligned)
    if (amx) {
      amx_config();
      if (acc.size() < static_cast<size_t>(a.Mp * 32 + 16)) acc.resize(a.Mp * 32 + 16);
    }
    float* ap = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(acc.data()) + 63) & ~uintptr_t(63));
#pragma omp for schedule(dynamic, chunk)
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
      const __m512i* U = nullptr;
      if (a.M >= DECODE_ONCE_ROWS) {
        if (decoded.size() < static_cast<size_t>(a.nb * DECODED)) decoded.resize(a.nb * DECODED);
        decode_column<F>(col, a.nb, decoded.data());
        U = decoded.data();
      }
      int64_t r = 0;
      for (; r + 4 <= a.M; r += 4) vnni_rows<F, 4>(a, r, col, yt + r * ldy, ldy, bt, U);
      for (; r < a.M; ++r) vnni_rows<F, 1>(a, r, col, yt + r * ldy, ldy, bt, U);
    }
    if (amx) _tile_release();
  }
}

}  // namespace

// fmt codes of repacked layers: 100 + the GGUF type id. same_x: x is the previous call's (same pointer, same values:
// the caller says so), whose rounding is reused
void int_matmul(const float* xp, int64_t M, int64_t K, const void* w, int64_t fmt, int64_t N, const float* bp,
                float* yp, int64_t ldy, bool same_x) {
  thread_local Acts a;
  if (!same_x || a.src != xp || a.M != M || a.K != K) quantize(xp, M, K, a);
  const uint8_t* wp = static_cast<const uint8_t*>(w);
  with_format(fmt, [&](auto f) { run<decltype(f)::value>(a, wp, N, bp, yp, ldy); });
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
  const int64_t n = ids.size(0), N = w.size(0) * 16, nb = K / 32;
  const int64_t* ip = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) TORCH_CHECK(ip[i] >= 0 && ip[i] < N, "row id out of range");
  auto out = torch::empty({n, K}, torch::dtype(torch::kFloat32));
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
#pragma omp parallel for schedule(static) if (n > 64)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t b = 0; b < nb; ++b) {
      BlockRow r;
      block_row(wp, L, nb, ip[i], b, r);
      for (int k = 0; k < 32; ++k) op[i * K + b * 32 + k] = L.min ? std::fma(r.code[k], r.d[k], r.mn) : r.code[k] * r.d[k];
    }
  return out;
}

torch::Tensor int_linear(torch::Tensor x, torch::Tensor w, int64_t fmt, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous(), "x: contiguous 2-D float32");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0) * 16;
  check_tiles(w, layout(fmt - 100), K);
  auto y = torch::empty({M, N}, x.options());
  int_matmul(x.data_ptr<float>(), M, K, w.data_ptr<uint8_t>(), fmt, N,
             bias.has_value() ? bias->data_ptr<float>() : nullptr, y.data_ptr<float>(), N, false);
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
