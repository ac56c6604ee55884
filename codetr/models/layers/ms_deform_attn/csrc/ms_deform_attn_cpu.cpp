// Multi-scale deformable attention on the CPU: fused forward and backward kernels.
//
// Layouts (all contiguous):
//   value               (B, S, H, D)      S = sum_l h_l * w_l, levels flattened row-major
//   spatial_shapes      (L, 2) int64      (h_l, w_l)
//   level_start_index   (L,)   int64
//   sampling_locations  (B, Q, H, L, P, 2) normalised xy, read as grid_sample with
//                                          align_corners=False: pixel x = loc_x * w - 0.5
//   attention_weights   (B, Q, H, L, P)
//   output              (B, Q, H, D)
//
// Forward: one task per (b, q, h) row of the output; each of the L * P points adds its
// four bilinear corners (weight 0 off the map) times its attention weight.
// Backward: one task per (b, h) pair, so that the value-gradient rows a task writes belong
// to it alone (no atomics, deterministic). Per point with corners v_c, bilinear weights w_c,
// attention a and output gradient g: grad v_c += a * w_c * g, and the attention and location
// gradients are three dot products with g, all in one pass over the channels.
//
// The per-range workers are compiled for AVX-512, AVX2 and a baseline target, chosen at
// load time by the CPU (GCC function multi-versioning), so one build runs anywhere.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace codetr_msda {
namespace {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CODETR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CODETR_CLONES
#endif
#define CODETR_INLINE inline __attribute__((always_inline))

struct Geometry {
  int64_t batch, num_value, heads, dims, queries, levels, points;
  const int64_t* shapes;  // (L, 2)
  const int64_t* starts;  // (L,)
};

// The four corners of one sampling point: in-map flags, weights and value-row offsets.
template <typename T>
struct Bilinear {
  T fx, fy;
  T w[4];          // (x0, y0), (x1, y0), (x0, y1), (x1, y1), without the attention weight
  bool valid[4];
  int64_t row[4];  // row index inside the level (y * w + x), meaningful where valid
};

template <typename T>
CODETR_INLINE bool bilinear(T loc_x, T loc_y, int64_t height, int64_t width, Bilinear<T>& b) {
  const T x = loc_x * static_cast<T>(width) - T(0.5);
  const T y = loc_y * static_cast<T>(height) - T(0.5);
  if (!(x > T(-1) && y > T(-1) && x < static_cast<T>(width) && y < static_cast<T>(height))) {
    return false;  // all four corners are off the map (or the location is NaN)
  }
  const T xf = std::floor(x), yf = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(xf), y0 = static_cast<int64_t>(yf);
  b.fx = x - xf;
  b.fy = y - yf;
  const T gx = T(1) - b.fx, gy = T(1) - b.fy;
  b.w[0] = gx * gy;
  b.w[1] = b.fx * gy;
  b.w[2] = gx * b.fy;
  b.w[3] = b.fx * b.fy;
  const bool x0_in = x0 >= 0, x1_in = x0 + 1 < width;
  const bool y0_in = y0 >= 0, y1_in = y0 + 1 < height;
  b.valid[0] = x0_in && y0_in;
  b.valid[1] = x1_in && y0_in;
  b.valid[2] = x0_in && y1_in;
  b.valid[3] = x1_in && y1_in;
  b.row[0] = y0 * width + x0;
  b.row[1] = b.row[0] + 1;
  b.row[2] = b.row[0] + width;
  b.row[3] = b.row[2] + 1;
  return true;
}

// Vector width used for the per-point loops over channels: one AVX-512 register.
template <typename T>
constexpr int kLanes = 64 / sizeof(T);

// Sum of the kLanes partial sums (pairwise, so the compiler can use vector shuffles).
template <typename T>
CODETR_INLINE T reduce(T* part) {
  for (int width = kLanes<T> / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) part[j] += part[j + width];
  }
  return part[0];
}

// Off-map corners read a row of zeros and write into a scratch row, so the channel loops
// below have no branches; each parallel range owns one of each.
template <typename V, typename T>
struct SpareRows {
  explicit SpareRows(int64_t dims) : zeros(dims, V(0)), sink(4 * dims, T(0)) {}
  std::vector<V> zeros;  // read as an off-map corner's value row
  std::vector<T> sink;   // one row per corner, written by off-map corners: rows never alias
};

// V: value dtype (float, double or bfloat16); T: compute, location and output dtype.
template <typename V, typename T>
CODETR_INLINE void forward_range_impl(const Geometry& g, const V* value, const T* locs,
                                      const T* attn, T* out, int64_t begin, int64_t end) {
  const int64_t dims = g.dims, heads = g.heads, lp = g.levels * g.points;
  const int64_t row_stride = heads * dims;  // value rows (s) are H * D apart
  SpareRows<V, T> spare(dims);
  for (int64_t n = begin; n < end; ++n) {  // n = (b * Q + q) * H + h
    const int64_t h = n % heads;
    const int64_t b = n / (heads * g.queries);
    T* o = out + n * dims;
    for (int64_t d = 0; d < dims; ++d) o[d] = T(0);
    const T* a_n = attn + n * lp;
    const T* l_n = locs + n * lp * 2;
    for (int64_t l = 0; l < g.levels; ++l) {
      const int64_t height = g.shapes[2 * l], width = g.shapes[2 * l + 1];
      const V* v_l = value + ((b * g.num_value + g.starts[l]) * heads + h) * dims;
      for (int64_t p = 0; p < g.points; ++p) {
        const int64_t k = l * g.points + p;
        Bilinear<T> bl;
        if (!bilinear(l_n[2 * k], l_n[2 * k + 1], height, width, bl)) continue;
        const T a = a_n[k];
        const V* v[4];
        T w[4];
        for (int c = 0; c < 4; ++c) {
          v[c] = bl.valid[c] ? v_l + bl.row[c] * row_stride : spare.zeros.data();
          w[c] = a * bl.w[c];
        }
        for (int64_t d = 0; d < dims; ++d) {
          o[d] += w[0] * static_cast<T>(v[0][d]) + w[1] * static_cast<T>(v[1][d]) +
                  w[2] * static_cast<T>(v[2][d]) + w[3] * static_cast<T>(v[3][d]);
        }
      }
    }
  }
}

template <typename V, typename T>
CODETR_INLINE void backward_range_impl(const Geometry& g, const V* value, const T* locs,
                                       const T* attn, const T* grad_out, T* grad_value,
                                       T* grad_locs, T* grad_attn, int64_t begin,
                                       int64_t end) {
  const int64_t dims = g.dims, heads = g.heads, lp = g.levels * g.points;
  const int64_t row_stride = heads * dims;
  const int64_t vec_dims = dims - dims % kLanes<T>;
  SpareRows<V, T> spare(dims);
  for (int64_t task = begin; task < end; ++task) {  // task = b * H + h
    const int64_t b = task / heads, h = task % heads;
    for (int64_t q = 0; q < g.queries; ++q) {
      const int64_t n = (b * g.queries + q) * heads + h;
      const T* go = grad_out + n * dims;
      const T* a_n = attn + n * lp;
      const T* l_n = locs + n * lp * 2;
      T* ga_n = grad_attn + n * lp;
      T* gl_n = grad_locs + n * lp * 2;
      for (int64_t l = 0; l < g.levels; ++l) {
        const int64_t height = g.shapes[2 * l], width = g.shapes[2 * l + 1];
        const int64_t base = ((b * g.num_value + g.starts[l]) * heads + h) * dims;
        const V* v_l = value + base;
        T* gv_l = grad_value + base;
        for (int64_t p = 0; p < g.points; ++p) {
          const int64_t k = l * g.points + p;
          Bilinear<T> bl;
          if (!bilinear(l_n[2 * k], l_n[2 * k + 1], height, width, bl)) continue;
          const T a = a_n[k];
          const V* v[4];
          T* gv[4];
          T aw[4];
          for (int c = 0; c < 4; ++c) {
            v[c] = bl.valid[c] ? v_l + bl.row[c] * row_stride : spare.zeros.data();
            gv[c] = bl.valid[c] ? gv_l + bl.row[c] * row_stride : spare.sink.data() + c * dims;
            aw[c] = a * bl.w[c];
          }
          const T fx = bl.fx, fy = bl.fy, gx = T(1) - fx, gy = T(1) - fy;
          // With s = sum_c w_c v_c the bilinear sample: grad a = s . g; grad fx =
          // a * (gy (v1 - v0) + fy (v3 - v2)) . g; grad fy = a * (gx (v2 - v0) + fx (v3 - v1)) . g.
          T ps[kLanes<T>] = {}, px[kLanes<T>] = {}, py[kLanes<T>] = {};
          {
            const V* __restrict__ v0 = v[0];
            const V* __restrict__ v1 = v[1];
            const V* __restrict__ v2 = v[2];
            const V* __restrict__ v3 = v[3];
            const T* __restrict__ gr = go;
            for (int64_t d0 = 0; d0 < vec_dims; d0 += kLanes<T>) {
              for (int j = 0; j < kLanes<T>; ++j) {
                const int64_t d = d0 + j;
                const T e0 = static_cast<T>(v0[d]), e1 = static_cast<T>(v1[d]);
                const T e2 = static_cast<T>(v2[d]), e3 = static_cast<T>(v3[d]), gd = gr[d];
                ps[j] += (bl.w[0] * e0 + bl.w[1] * e1 + bl.w[2] * e2 + bl.w[3] * e3) * gd;
                px[j] += (gy * (e1 - e0) + fy * (e3 - e2)) * gd;
                py[j] += (gx * (e2 - e0) + fx * (e3 - e1)) * gd;
              }
            }
          }
          T s_dot = T(0), x_dot = T(0), y_dot = T(0);
          for (int64_t d = vec_dims; d < dims; ++d) {  // channels past the last full vector
            const T gd = go[d];
            const T e0 = static_cast<T>(v[0][d]), e1 = static_cast<T>(v[1][d]);
            const T e2 = static_cast<T>(v[2][d]), e3 = static_cast<T>(v[3][d]);
            s_dot += (bl.w[0] * e0 + bl.w[1] * e1 + bl.w[2] * e2 + bl.w[3] * e3) * gd;
            x_dot += (gy * (e1 - e0) + fy * (e3 - e2)) * gd;
            y_dot += (gx * (e2 - e0) + fx * (e3 - e1)) * gd;
          }
          for (int c = 0; c < 4; ++c) {  // separate pass: these rows are written
            T* __restrict__ out_row = gv[c];
            const T* __restrict__ gr = go;
            const T coef = aw[c];
            for (int64_t d = 0; d < dims; ++d) out_row[d] += coef * gr[d];
          }
          ga_n[k] = s_dot + reduce(ps);
          gl_n[2 * k] = a * (x_dot + reduce(px)) * static_cast<T>(width);
          gl_n[2 * k + 1] = a * (y_dot + reduce(py)) * static_cast<T>(height);
        }
      }
    }
  }
}

// Concrete, multi-versioned entry points (function templates cannot carry target_clones).
#define CODETR_ENTRY_POINTS(NAME, V, T)                                                     \
  CODETR_CLONES void forward_range_##NAME(const Geometry& g, const V* value, const T* locs,  \
                                          const T* attn, T* out, int64_t begin,            \
                                          int64_t end) {                                   \
    forward_range_impl<V, T>(g, value, locs, attn, out, begin, end);                       \
  }                                                                                        \
  void forward_range(const Geometry& g, const V* value, const T* locs, const T* attn,      \
                     T* out, int64_t begin, int64_t end) {                                 \
    forward_range_##NAME(g, value, locs, attn, out, begin, end);                           \
  }                                                                                        \
  CODETR_CLONES void backward_range_##NAME(                                                \
      const Geometry& g, const V* value, const T* locs, const T* attn, const T* grad_out,  \
      T* grad_value, T* grad_locs, T* grad_attn, int64_t begin, int64_t end) {             \
    backward_range_impl<V, T>(g, value, locs, attn, grad_out, grad_value, grad_locs,       \
                              grad_attn, begin, end);                                      \
  }                                                                                        \
  void backward_range(const Geometry& g, const V* value, const T* locs, const T* attn,     \
                      const T* grad_out, T* grad_value, T* grad_locs, T* grad_attn,        \
                      int64_t begin, int64_t end) {                                        \
    backward_range_##NAME(g, value, locs, attn, grad_out, grad_value, grad_locs, grad_attn, \
                          begin, end);                                                     \
  }

CODETR_ENTRY_POINTS(f32, float, float)
CODETR_ENTRY_POINTS(f64, double, double)
CODETR_ENTRY_POINTS(bf16, c10::BFloat16, float)
#undef CODETR_ENTRY_POINTS

// Sums, locations, weights and gradients: float64 for float64 values, else float32.
at::ScalarType compute_type(at::ScalarType value_type) {
  return value_type == at::kDouble ? at::kDouble : at::kFloat;
}

// Calls fn(V{}, T{}) with the value and compute types of a value dtype.
template <typename Fn>
void dispatch(at::ScalarType value_type, Fn&& fn) {
  switch (value_type) {
    case at::kFloat: fn(float{}, float{}); break;
    case at::kDouble: fn(double{}, double{}); break;
    case at::kBFloat16: fn(c10::BFloat16{}, float{}); break;
    default: TORCH_CHECK(false, "unsupported value dtype ", value_type);
  }
}

struct Checked {
  Geometry geometry;
  at::Tensor value, shapes, starts, locs, attn;
};

Checked check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                     const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                     const at::Tensor& attention_weights) {
  TORCH_CHECK(value.device().is_cpu(), "codetr ms_deform_attn cpu kernel: value must be on "
              "the CPU");
  TORCH_CHECK(value.dim() == 4, "value must be (B, S, H, D), got ", value.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "sampling_locations must be (B, Q, H, L, P, 2), got ", sampling_locations.sizes());
  TORCH_CHECK(attention_weights.dim() == 5, "attention_weights must be (B, Q, H, L, P), got ",
              attention_weights.sizes());
  const at::ScalarType vtype = value.scalar_type();
  TORCH_CHECK(vtype == at::kFloat || vtype == at::kDouble || vtype == at::kBFloat16,
              "value must be float32, float64 or bfloat16, got ", vtype);
  const at::ScalarType ctype = compute_type(vtype);
  TORCH_CHECK(sampling_locations.scalar_type() == ctype &&
                  attention_weights.scalar_type() == ctype,
              "sampling_locations and attention_weights must be ", ctype, " for a ", vtype,
              " value (float32 for bfloat16 values, else the value's dtype)");
  Checked c;
  c.value = value.contiguous();
  c.locs = sampling_locations.contiguous();
  c.attn = attention_weights.contiguous();
  c.shapes = spatial_shapes.to(at::kCPU, at::kLong).contiguous();
  c.starts = level_start_index.to(at::kCPU, at::kLong).contiguous();
  Geometry& g = c.geometry;
  g.batch = value.size(0);
  g.num_value = value.size(1);
  g.heads = value.size(2);
  g.dims = value.size(3);
  g.queries = sampling_locations.size(1);
  g.levels = sampling_locations.size(3);
  g.points = sampling_locations.size(4);
  TORCH_CHECK(sampling_locations.size(0) == g.batch && sampling_locations.size(2) == g.heads,
              "sampling_locations (B, Q, H, ...) must match value's B and H");
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "attention_weights must equal sampling_locations.shape[:-1]");
  TORCH_CHECK(c.shapes.dim() == 2 && c.shapes.size(0) == g.levels && c.shapes.size(1) == 2,
              "spatial_shapes must be (L, 2) with L = ", g.levels);
  TORCH_CHECK(c.starts.numel() == g.levels, "level_start_index must have L = ", g.levels,
              " entries");
  g.shapes = c.shapes.data_ptr<int64_t>();
  g.starts = c.starts.data_ptr<int64_t>();
  for (int64_t l = 0; l < g.levels; ++l) {
    const int64_t end = g.starts[l] + g.shapes[2 * l] * g.shapes[2 * l + 1];
    TORCH_CHECK(g.starts[l] >= 0 && end <= g.num_value,
                "level ", l, " (start ", g.starts[l], ", shape ", g.shapes[2 * l], "x",
                g.shapes[2 * l + 1], ") runs past the ", g.num_value, " value positions");
  }
  return c;
}

at::Tensor ms_deform_attn_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                  const at::Tensor& level_start_index,
                                  const at::Tensor& sampling_locations,
                                  const at::Tensor& attention_weights) {
  Checked c = check_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                           attention_weights);
  const Geometry& g = c.geometry;
  // Output in the compute type (the caller casts it to the value's dtype if it wants).
  at::Tensor out = at::empty({g.batch, g.queries, g.heads, g.dims},
                             c.locs.options());
  const int64_t rows = g.batch * g.queries * g.heads;
  dispatch(c.value.scalar_type(), [&](auto v_tag, auto t_tag) {
    using V = decltype(v_tag);
    using T = decltype(t_tag);
    const V* v = c.value.data_ptr<V>();
    const T* l = c.locs.data_ptr<T>();
    const T* a = c.attn.data_ptr<T>();
    T* o = out.data_ptr<T>();
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      forward_range(g, v, l, a, o, begin, end);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  Checked c = check_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                           attention_weights);
  const Geometry& g = c.geometry;
  const at::ScalarType ctype = compute_type(c.value.scalar_type());
  at::Tensor grad = grad_output.to(ctype).contiguous();
  TORCH_CHECK(grad.numel() == g.batch * g.queries * g.heads * g.dims,
              "grad_output must have B * Q * H * D elements");
  // Accumulated in the compute type; cast to the value's dtype once at the end.
  at::Tensor grad_value = at::zeros(c.value.sizes(), c.locs.options());
  // Points that fall off every level are skipped by the kernel: their gradients are 0.
  at::Tensor grad_locs = at::zeros_like(c.locs);
  at::Tensor grad_attn = at::zeros_like(c.attn);
  dispatch(c.value.scalar_type(), [&](auto v_tag, auto t_tag) {
    using V = decltype(v_tag);
    using T = decltype(t_tag);
    const V* v = c.value.data_ptr<V>();
    const T* l = c.locs.data_ptr<T>();
    const T* a = c.attn.data_ptr<T>();
    const T* go = grad.data_ptr<T>();
    T* gv = grad_value.data_ptr<T>();
    T* gl = grad_locs.data_ptr<T>();
    T* ga = grad_attn.data_ptr<T>();
    at::parallel_for(0, g.batch * g.heads, 1, [&](int64_t begin, int64_t end) {
      backward_range(g, v, l, a, go, gv, gl, ga, begin, end);
    });
  });
  if (grad_value.scalar_type() != c.value.scalar_type()) {
    grad_value = grad_value.to(c.value.scalar_type());
  }
  return {grad_value, grad_locs, grad_attn};
}

}  // namespace
}  // namespace codetr_msda

TORCH_LIBRARY(codetr_msda, m) {
  m.def(
      "forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(codetr_msda, CPU, m) {
  m.impl("forward", &codetr_msda::ms_deform_attn_forward);
  m.impl("backward", &codetr_msda::ms_deform_attn_backward);
}
