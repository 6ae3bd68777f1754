// Fused CPU multiresolution hash-grid encoding (instant-ngp), forward and backward.
//
// The same lookup as physinv.core.encoding's pure-PyTorch reference, in one pass per level:
// corner rows (dense: i + j s + k s^2 with s = N_l + 1; hashed: (i * 1 ^ j * 2654435761 ^ k * 805459861)
// & (T - 1)), gather, trilinear blend. Positions are clamped to [0, 1]; the lower corner is
// floor(x N_l) kept <= N_l - 1, so x = 1 lies in the last cell with fraction 1.
//
// Backward, deterministic and free of atomics: each level's table gradient is written by exactly
// one thread, which visits the points in index order, so every row receives its contributions in
// the same order whatever the number of threads or the scheduling -> bit-identical run to run.
// Levels are handed out largest first from a shared counter (dynamic, for balance); the order of
// work affects only which thread does a level, never the sums. The x-gradient comes from the
// per-point Jacobian the forward stores when x needs a gradient (no second gather), contracted per point.
//
// Second order (a loss on the x-gradient, e.g. on normals -grad sigma): backward_tables with
// ``dirs`` gives the tables' gradient of grad_x . dirs, hessian_x its x-gradient; the gradient to
// grad_out is jac . dirs (Python). Same determinism (points in index order per level or per point).
//
// x-gradient conventions (those of the reference, see encoding.py): outside [0, 1] zero (clamp);
// at x = 0 or 1 exactly a dense level gives zero (grid_sample's border clamp), a hashed level the
// one-sided derivative of the inner cell. A point with a NaN coordinate is looked up at 0 (never out
// of range) and its features are NaN.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

namespace {

constexpr uint32_t kPrimeY = 2654435761u;
constexpr uint32_t kPrimeZ = 805459861u;

struct Level {
  const float* table;
  float* grad;
  int64_t rows;
  int32_t res;
  bool dense;
};

// Corner rows, trilinear weights and per-axis fractions of one point in one level.
struct Cell {
  int64_t row[8];
  float w[8];
  float wa[3][2];  // per axis: lower, upper corner weight
  float gmask[3];  // 1 where the reference passes an x-gradient, else 0
  bool nan;        // a NaN coordinate: looked up at 0 (memory-safe), output NaN
};

inline void locate(const float* xp, const Level& lv, Cell& c) {
  int32_t base[3];
  const float res = static_cast<float>(lv.res);
  c.nan = false;
  for (int a = 0; a < 3; ++a) {
    const float xin = xp[a];
    c.nan |= std::isnan(xin);
    const float xa = std::fmin(std::fmax(xin, 0.0f), 1.0f);  // NaN -> 0
    const float pos = xa * res;
    int32_t b = static_cast<int32_t>(std::floor(pos));
    if (b > lv.res - 1) b = lv.res - 1;
    base[a] = b;
    const float fr = pos - static_cast<float>(b);
    c.wa[a][0] = 1.0f - fr;
    c.wa[a][1] = fr;
    c.gmask[a] = lv.dense ? ((xin > 0.0f && xin < 1.0f) ? 1.0f : 0.0f)
                          : ((xin >= 0.0f && xin <= 1.0f) ? 1.0f : 0.0f);
  }
  if (lv.dense) {
    const int64_t s = lv.res + 1;
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        for (int k = 0; k < 2; ++k)
          c.row[4 * i + 2 * j + k] = (base[0] + i) + (base[1] + j) * s + (base[2] + k) * s * s;
  } else {
    const uint32_t mask = static_cast<uint32_t>(lv.rows - 1);
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        for (int k = 0; k < 2; ++k) {
          const uint32_t h = static_cast<uint32_t>(base[0] + i) ^ (static_cast<uint32_t>(base[1] + j) * kPrimeY) ^
                             (static_cast<uint32_t>(base[2] + k) * kPrimeZ);
          c.row[4 * i + 2 * j + k] = static_cast<int64_t>(h & mask);
        }
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 2; ++k) c.w[4 * i + 2 * j + k] = (c.wa[0][i] * c.wa[1][j]) * c.wa[2][k];
}

// d out_f / d x_a of one point in one level (the trilinear weights' derivative times the corner
// features, chain rule d frac / d x = N_l), masked by the reference's clamp conventions.
template <int F>
inline void level_jacobian(const Cell& c, const float* const corner[8], float res, float* jac /* (F, 3) */) {
  for (int f = 0; f < F; ++f) {
    float d[3] = {0.0f, 0.0f, 0.0f};
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        for (int k = 0; k < 2; ++k) {
          const float v = corner[4 * i + 2 * j + k][f];
          d[0] += (i ? 1.0f : -1.0f) * (c.wa[1][j] * c.wa[2][k]) * v;
          d[1] += (j ? 1.0f : -1.0f) * (c.wa[0][i] * c.wa[2][k]) * v;
          d[2] += (k ? 1.0f : -1.0f) * (c.wa[0][i] * c.wa[1][j]) * v;
        }
    for (int a = 0; a < 3; ++a) jac[3 * f + a] = d[a] * res * c.gmask[a];
  }
}

#ifndef HASHGRID_BLOCK
#define HASHGRID_BLOCK 16
#endif
constexpr int64_t kBlock = HASHGRID_BLOCK;  // points whose corner rows are prefetched together

template <int F>
void forward_impl(const float* x, int64_t n, const std::vector<Level>& levels, float* out, float* jac) {
  const int64_t L = static_cast<int64_t>(levels.size());
  const int64_t stride = L * F;
  // points in parallel; inside a chunk one level at a time so its table stays in cache; corner rows of
  // a block of points are computed and prefetched before the gathers, so the cache misses overlap
  at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
    Cell cells[kBlock];
    for (int64_t l = 0; l < L; ++l) {
      const Level& lv = levels[l];
      const float res = static_cast<float>(lv.res);
      for (int64_t p0 = begin; p0 < end; p0 += kBlock) {
        const int64_t nb = std::min<int64_t>(kBlock, end - p0);
        for (int64_t b = 0; b < nb; ++b) {
          locate(x + 3 * (p0 + b), lv, cells[b]);
          for (int q = 0; q < 8; ++q) __builtin_prefetch(lv.table + cells[b].row[q] * F);
        }
        for (int64_t b = 0; b < nb; ++b) {
          const Cell& c = cells[b];
          const int64_t p = p0 + b;
          const float* corner[8];
          for (int q = 0; q < 8; ++q) corner[q] = lv.table + c.row[q] * F;
          float acc[F];
          for (int f = 0; f < F; ++f) acc[f] = 0.0f;
          for (int q = 0; q < 8; ++q)
            for (int f = 0; f < F; ++f) acc[f] += c.w[q] * corner[q][f];
          float* o = out + p * stride + l * F;
          for (int f = 0; f < F; ++f) o[f] = c.nan ? std::numeric_limits<float>::quiet_NaN() : acc[f];
          if (jac != nullptr) level_jacobian<F>(c, corner, res, jac + (p * stride + l * F) * 3);
        }
      }
    }
  });
}

// Corner weights of the directional derivative along v of the trilinear blend: d w_q / d x . v,
// i.e. N_l sum_a gmask_a v_a (+-1) prod_{b != a} wa[b] (the same masks as level_jacobian).
inline void directional_weights(const Cell& c, const float* v, float res, float* wd) {
  const float v0 = v[0] * c.gmask[0] * res, v1 = v[1] * c.gmask[1] * res, v2 = v[2] * c.gmask[2] * res;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 2; ++k)
        wd[4 * i + 2 * j + k] = (i ? 1.0f : -1.0f) * (c.wa[1][j] * c.wa[2][k]) * v0 +
                                (j ? 1.0f : -1.0f) * (c.wa[0][i] * c.wa[2][k]) * v1 +
                                (k ? 1.0f : -1.0f) * (c.wa[0][i] * c.wa[1][j]) * v2;
}

// One level's table gradient: row += w_q grad_out over the points in index order. With ``dirs``
// (N, 3) the weights are the directional ones (the table gradient of grad_x . dirs, second order).
template <int F>
void backward_level(const float* x, int64_t n, const Level& lv, const float* gout, int64_t stride, int64_t col, const float* dirs) {
  std::memset(lv.grad, 0, sizeof(float) * lv.rows * F);
  Cell cells[kBlock];
  const float res = static_cast<float>(lv.res);
  for (int64_t p0 = 0; p0 < n; p0 += kBlock) {
    const int64_t nb = std::min<int64_t>(kBlock, n - p0);
    for (int64_t b = 0; b < nb; ++b) {
      locate(x + 3 * (p0 + b), lv, cells[b]);
      for (int q = 0; q < 8; ++q) __builtin_prefetch(lv.grad + cells[b].row[q] * F, 1);
    }
    // points in index order: each row's sum is formed in the same order on every run
    for (int64_t b = 0; b < nb; ++b) {
      const Cell& c = cells[b];
      const float* g = gout + (p0 + b) * stride + col;
      float wd[8];
      const float* w = c.w;
      if (dirs != nullptr) {
        directional_weights(c, dirs + 3 * (p0 + b), res, wd);
        w = wd;
      }
      for (int q = 0; q < 8; ++q) {
        float* row = lv.grad + c.row[q] * F;
        for (int f = 0; f < F; ++f) row[f] += w[q] * g[f];
      }
    }
  }
}

template <int F>
void backward_tables_impl(const float* x, int64_t n, const std::vector<Level>& levels, const float* gout, const float* dirs) {
  const int64_t L = static_cast<int64_t>(levels.size());
  const int64_t stride = L * F;
  // largest work first: hashed (big random-access tables) before dense, finer before coarser
  std::vector<int64_t> order(L);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (levels[a].dense != levels[b].dense) return !levels[a].dense;
    return levels[a].rows > levels[b].rows;
  });
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), L));
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      for (;;) {
        const int64_t k = next.fetch_add(1);
        if (k >= L) break;
        const int64_t l = order[k];
        backward_level<F>(x, n, levels[l], gout, stride, l * F, dirs);
      }
    }
  });
}

// x-gradient of grad_x . v (second order, per point, no scatter): sum over levels and features of
// grad_out times the trilinear blend's mixed second derivatives N_l^2 (+-1)(+-1) wa[third] (the pure
// ones are zero), masked as the first derivative.
template <int F>
void hessian_x_impl(const float* x, int64_t n, const std::vector<Level>& levels, const float* gout, const float* v, float* out) {
  const int64_t L = static_cast<int64_t>(levels.size());
  const int64_t stride = L * F;
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) out[3 * p] = out[3 * p + 1] = out[3 * p + 2] = 0.0f;
    for (int64_t l = 0; l < L; ++l) {
      const Level& lv = levels[l];
      const float r2 = static_cast<float>(lv.res) * static_cast<float>(lv.res);
      for (int64_t p = begin; p < end; ++p) {
        Cell c;
        locate(x + 3 * p, lv, c);
        const float* g = gout + p * stride + l * F;
        float h01 = 0.0f, h02 = 0.0f, h12 = 0.0f;
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 2; ++j)
            for (int k = 0; k < 2; ++k) {
              const float* feat = lv.table + c.row[4 * i + 2 * j + k] * F;
              float gf = 0.0f;
              for (int f = 0; f < F; ++f) gf += g[f] * feat[f];
              const float si = i ? 1.0f : -1.0f, sj = j ? 1.0f : -1.0f, sk = k ? 1.0f : -1.0f;
              h01 += si * sj * c.wa[2][k] * gf;
              h02 += si * sk * c.wa[1][j] * gf;
              h12 += sj * sk * c.wa[0][i] * gf;
            }
        h01 *= r2 * c.gmask[0] * c.gmask[1];
        h02 *= r2 * c.gmask[0] * c.gmask[2];
        h12 *= r2 * c.gmask[1] * c.gmask[2];
        const float* vp = v + 3 * p;
        out[3 * p] += h01 * vp[1] + h02 * vp[2];
        out[3 * p + 1] += h01 * vp[0] + h12 * vp[2];
        out[3 * p + 2] += h02 * vp[0] + h12 * vp[1];
      }
    }
  });
}

std::vector<Level> make_levels(const std::vector<torch::Tensor>& tables, const std::vector<int64_t>& resolutions,
                               const std::vector<bool>& dense, int64_t F) {
  TORCH_CHECK(tables.size() == resolutions.size() && tables.size() == dense.size(),
              "hashgrid_cpu: tables, resolutions and dense must have one entry per level");
  std::vector<Level> levels;
  for (size_t l = 0; l < tables.size(); ++l) {
    const auto& t = tables[l];
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous() && t.dim() == 2 &&
                    t.size(1) == F,
                "hashgrid_cpu: level ", l, " table must be a contiguous float32 CPU tensor of shape (rows, ", F, ")");
    const int64_t res = resolutions[l];
    TORCH_CHECK(res >= 1, "hashgrid_cpu: level ", l, " resolution must be >= 1");
    const int64_t rows = t.size(0);
    if (dense[l]) {
      TORCH_CHECK(rows == (res + 1) * (res + 1) * (res + 1), "hashgrid_cpu: dense level ", l, " needs (N+1)^3 rows");
    } else {
      TORCH_CHECK(rows > 0 && (rows & (rows - 1)) == 0 && rows <= (int64_t(1) << 32),
                  "hashgrid_cpu: hashed level ", l, " needs a power-of-two row count");
    }
    levels.push_back(Level{t.data_ptr<float>(), nullptr, rows, static_cast<int32_t>(res), static_cast<bool>(dense[l])});
  }
  return levels;
}

void check_x(const torch::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.is_contiguous() && x.dim() == 2 &&
                  x.size(1) == 3,
              "hashgrid_cpu: x must be a contiguous float32 CPU tensor of shape (N, 3)");
}

#define HASHGRID_DISPATCH_F(F, ...)                                           \
  switch (F) {                                                                \
    case 1: { constexpr int kF = 1; __VA_ARGS__; break; }                     \
    case 2: { constexpr int kF = 2; __VA_ARGS__; break; }                     \
    case 4: { constexpr int kF = 4; __VA_ARGS__; break; }                     \
    case 8: { constexpr int kF = 8; __VA_ARGS__; break; }                     \
    default: TORCH_CHECK(false, "hashgrid_cpu: features per level must be 1, 2, 4 or 8, got ", F); \
  }

// Returns (out (N, L*F), jac (N, L*F, 3) when with_jacobian else an empty tensor).
std::tuple<torch::Tensor, torch::Tensor> forward(torch::Tensor x, std::vector<torch::Tensor> tables,
                                                 std::vector<int64_t> resolutions, std::vector<bool> dense,
                                                 bool with_jacobian) {
  check_x(x);
  TORCH_CHECK(!tables.empty(), "hashgrid_cpu: no levels");
  const int64_t F = tables[0].size(1);
  auto levels = make_levels(tables, resolutions, dense, F);
  const int64_t n = x.size(0), L = static_cast<int64_t>(levels.size());
  auto out = torch::empty({n, L * F}, x.options());
  torch::Tensor jac;
  if (with_jacobian) jac = torch::empty({n, L * F, 3}, x.options());
  if (n == 0) return {out, jac};
  HASHGRID_DISPATCH_F(F, forward_impl<kF>(x.data_ptr<float>(), n, levels, out.data_ptr<float>(),
                                          with_jacobian ? jac.data_ptr<float>() : nullptr));
  return {out, jac};
}

void check_dirs(const torch::Tensor& dirs, int64_t n) {
  TORCH_CHECK(dirs.device().is_cpu() && dirs.scalar_type() == torch::kFloat32 && dirs.is_contiguous() && dirs.dim() == 2 &&
                  dirs.size(0) == n && dirs.size(1) == 3,
              "hashgrid_cpu: dirs must be a contiguous float32 CPU tensor of shape (N, 3)");
}

// The levels of a backward call, after checking x and grad_out (N, L*F) against the tables.
std::vector<Level> backward_levels(const torch::Tensor& grad_out, const torch::Tensor& x, const std::vector<torch::Tensor>& tables,
                                   const std::vector<int64_t>& resolutions, const std::vector<bool>& dense) {
  check_x(x);
  TORCH_CHECK(!tables.empty(), "hashgrid_cpu: no levels");
  const int64_t F = tables[0].size(1);
  auto levels = make_levels(tables, resolutions, dense, F);
  const int64_t n = x.size(0), L = static_cast<int64_t>(levels.size());
  TORCH_CHECK(grad_out.device().is_cpu() && grad_out.scalar_type() == torch::kFloat32 && grad_out.is_contiguous() &&
                  grad_out.dim() == 2 && grad_out.size(0) == n && grad_out.size(1) == L * F,
              "hashgrid_cpu: grad_out must be a contiguous float32 (N, L*F) CPU tensor");
  return levels;
}

// Table gradients: one (rows_l, F) tensor per level. With a defined ``dirs`` (N, 3): the table
// gradients of sum_n grad_x[n] . dirs[n] (grad_x = backward_x(grad_out, jac)), the second-order term.
std::vector<torch::Tensor> backward_tables(torch::Tensor grad_out, torch::Tensor x, std::vector<torch::Tensor> tables,
                                           std::vector<int64_t> resolutions, std::vector<bool> dense,
                                           c10::optional<torch::Tensor> dirs) {
  auto levels = backward_levels(grad_out, x, tables, resolutions, dense);
  const int64_t F = tables[0].size(1), n = x.size(0), L = static_cast<int64_t>(levels.size());
  std::vector<torch::Tensor> grads;
  for (int64_t l = 0; l < L; ++l) {
    grads.push_back(torch::empty_like(tables[l]));  // zeroed by the thread that owns the level
    levels[l].grad = grads.back().data_ptr<float>();
  }
  const float* dirs_ptr = nullptr;
  if (dirs.has_value() && dirs->defined()) {
    check_dirs(*dirs, n);
    dirs_ptr = dirs->data_ptr<float>();
  }
  HASHGRID_DISPATCH_F(F, backward_tables_impl<kF>(x.data_ptr<float>(), n, levels, grad_out.data_ptr<float>(), dirs_ptr));
  return grads;
}

// x-gradient of sum_n grad_x[n] . dirs[n] (the encoding's second derivative in x contracted with
// grad_out and dirs): (N, 3).
torch::Tensor hessian_x(torch::Tensor grad_out, torch::Tensor x, std::vector<torch::Tensor> tables,
                        std::vector<int64_t> resolutions, std::vector<bool> dense, torch::Tensor dirs) {
  auto levels = backward_levels(grad_out, x, tables, resolutions, dense);
  const int64_t F = tables[0].size(1), n = x.size(0);
  check_dirs(dirs, n);
  auto out = torch::empty({n, 3}, x.options());
  if (n == 0) return out;
  HASHGRID_DISPATCH_F(F, hessian_x_impl<kF>(x.data_ptr<float>(), n, levels, grad_out.data_ptr<float>(), dirs.data_ptr<float>(),
                                            out.data_ptr<float>()));
  return out;
}

// x-gradient from the forward's Jacobian: grad_x[n, a] = sum_c grad_out[n, c] jac[n, c, a], c in order.
torch::Tensor backward_x(torch::Tensor grad_out, torch::Tensor jac) {
  TORCH_CHECK(grad_out.scalar_type() == torch::kFloat32 && grad_out.is_contiguous() && grad_out.dim() == 2 &&
                  jac.scalar_type() == torch::kFloat32 && jac.is_contiguous() && jac.dim() == 3 &&
                  jac.size(0) == grad_out.size(0) && jac.size(1) == grad_out.size(1) && jac.size(2) == 3,
              "hashgrid_cpu: backward_x needs grad_out (N, C) and jac (N, C, 3), contiguous float32");
  const int64_t n = grad_out.size(0), C = grad_out.size(1);
  auto grad_x = torch::empty({n, 3}, grad_out.options());
  const float* g = grad_out.data_ptr<float>();
  const float* j = jac.data_ptr<float>();
  float* o = grad_x.data_ptr<float>();
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      float s[3] = {0.0f, 0.0f, 0.0f};
      for (int64_t c = 0; c < C; ++c)
        for (int a = 0; a < 3; ++a) s[a] += g[p * C + c] * j[(p * C + c) * 3 + a];
      for (int a = 0; a < 3; ++a) o[p * 3 + a] = s[a];
    }
  });
  return grad_x;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "physinv fused CPU hash-grid encoding (forward, deterministic backward)";
  m.def("forward", &forward, "x (N,3), tables, resolutions, dense, with_jacobian -> (out (N, L*F), jac (N, L*F, 3))");
  m.def("backward_tables", &backward_tables, "grad_out, x, tables, resolutions, dense, dirs (None or (N, 3): second order) -> [grad table per level]",
        py::arg("grad_out"), py::arg("x"), py::arg("tables"), py::arg("resolutions"), py::arg("dense"), py::arg("dirs") = py::none());
  m.def("hessian_x", &hessian_x, "grad_out, x, tables, resolutions, dense, dirs (N, 3) -> x-gradient of grad_x . dirs (N, 3)");
  m.def("backward_x", &backward_x, "grad_out (N, C), jac (N, C, 3) -> grad_x (N, 3)");
}
