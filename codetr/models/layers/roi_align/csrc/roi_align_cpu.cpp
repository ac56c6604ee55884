// RoIAlign over a feature pyramid on the CPU: every RoI pooled from its own level in one call,
// forward and backward.
//
// Same result as torchvision's roi_align (average pooling, `aligned`, adaptive or fixed
// sampling grid), computed another way. Sampling is bilinear on a regular grid of points per
// bin, and both the bilinear weights and the "point off the map" rule factor into a y part
// times an x part, so a bin's value is
//     out[c, i, j] = 1/count * sum_r wy_i[r] * sum_x wx_j[x] * feat[c, r, x]
// with wy_i / wx_j the summed row / column weights of bin row i / column j (a few entries
// each). Those weights are computed once per RoI (not per channel and sample), and the
// inner loop runs over contiguous columns.
//
// Layouts: feats[l] (B, C, H_l, W_l) contiguous; rois (K, 5) [batch, x1, y1, x2, y2] in
// image pixels; levels (K,) int64; output (K, C, PH, PW).
// Forward: one task per RoI. Backward: one task per (level, image, channel) plane, which
// visits that image's RoIs of that level in order: each plane has one writer (no atomics,
// the same result for any thread count), and a task zeroes its own plane first.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace codetr_roi_align {
namespace {

// The summed 1-D weights of the bins along one axis of one RoI: bin b covers positions
// start[b] .. start[b] + len[b] - 1 with weights w[off[b] ...].
template <typename T>
struct AxisWeights {
  std::vector<int64_t> start, len, off;
  std::vector<T> w;
};

// Bins of `bins` cells from `lo` with cell size `size` over a map of `extent` positions,
// `grid` sample points per cell; torchvision's bilinear rules per coordinate.
template <typename T>
void axis_weights(T lo, T size, int64_t bins, int64_t grid, int64_t extent,
                  AxisWeights<T>& a) {
  a.start.assign(bins, 0);
  a.len.assign(bins, 0);
  a.off.assign(bins, 0);
  a.w.clear();
  std::vector<int64_t> idx;
  std::vector<T> wt;
  for (int64_t b = 0; b < bins; ++b) {
    idx.clear();
    wt.clear();
    for (int64_t s = 0; s < grid; ++s) {
      T v = lo + static_cast<T>(b) * size +
            (static_cast<T>(s) + T(0.5)) * size / static_cast<T>(grid);
      if (v < T(-1) || v > static_cast<T>(extent)) continue;  // off the map: weight 0
      if (v <= T(0)) v = T(0);
      int64_t low = static_cast<int64_t>(v), high;
      if (low >= extent - 1) {
        low = high = extent - 1;
        v = static_cast<T>(low);
      } else {
        high = low + 1;
      }
      const T l = v - static_cast<T>(low);
      idx.push_back(low);
      wt.push_back(T(1) - l);
      idx.push_back(high);
      wt.push_back(l);
    }
    a.off[b] = static_cast<int64_t>(a.w.size());
    if (idx.empty()) continue;
    const int64_t first = *std::min_element(idx.begin(), idx.end());
    const int64_t last = *std::max_element(idx.begin(), idx.end());
    a.start[b] = first;
    a.len[b] = last - first + 1;
    a.w.resize(a.w.size() + a.len[b], T(0));
    T* w = a.w.data() + a.off[b];
    for (size_t e = 0; e < idx.size(); ++e) w[idx[e] - first] += wt[e];
  }
}

struct Params {
  int64_t ph, pw, sampling_ratio;
  bool aligned;
  std::vector<double> scales;
};

// Row and column weights of RoI `k` on its level (height h, width w), and 1 / count.
template <typename T>
T roi_weights(const T* roi, double scale, int64_t h, int64_t w, const Params& p,
              AxisWeights<T>& ys, AxisWeights<T>& xs) {
  const T offset = p.aligned ? T(0.5) : T(0);
  const T sc = static_cast<T>(scale);
  const T x1 = roi[1] * sc - offset, y1 = roi[2] * sc - offset;
  T rw = roi[3] * sc - offset - x1, rh = roi[4] * sc - offset - y1;
  if (!p.aligned) {
    rw = std::max(rw, T(1));
    rh = std::max(rh, T(1));
  }
  const T bh = rh / static_cast<T>(p.ph), bw = rw / static_cast<T>(p.pw);
  const int64_t gh = p.sampling_ratio > 0 ? p.sampling_ratio
                                          : static_cast<int64_t>(std::ceil(rh / p.ph));
  const int64_t gw = p.sampling_ratio > 0 ? p.sampling_ratio
                                          : static_cast<int64_t>(std::ceil(rw / p.pw));
  axis_weights(y1, bh, p.ph, std::max<int64_t>(gh, 0), h, ys);
  axis_weights(x1, bw, p.pw, std::max<int64_t>(gw, 0), w, xs);
  return T(1) / static_cast<T>(std::max<int64_t>(gh * gw, 1));
}

// Level sizes, RoIs and their levels, checked once.
struct Geometry {
  int64_t batch = 0, channels = 0;
  std::vector<int64_t> heights, widths;
  at::Tensor rois, levels;  // (K, 5) in the compute dtype, (K,) int64
};

Geometry check(at::IntArrayRef shapes, at::ScalarType dtype, const at::Tensor& rois,
               const at::Tensor& levels, const Params& p) {
  TORCH_CHECK(!shapes.empty() && shapes.size() % 4 == 0,
              "roi_align: level shapes must be 4 numbers (B, C, H, W) per level");
  const int64_t L = static_cast<int64_t>(shapes.size() / 4);
  TORCH_CHECK(static_cast<int64_t>(p.scales.size()) == L,
              "roi_align: one spatial scale per level");
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "roi_align cpu kernel: features must be float32 or float64, got ", dtype);
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "rois must be (K, 5), got ",
              rois.sizes());
  TORCH_CHECK(levels.dim() == 1 && levels.size(0) == rois.size(0),
              "levels must be (K,) for K rois");
  TORCH_CHECK(p.ph > 0 && p.pw > 0, "output size must be positive");
  Geometry g;
  g.batch = shapes[0];
  g.channels = shapes[1];
  for (int64_t l = 0; l < L; ++l) {
    TORCH_CHECK(shapes[4 * l] == g.batch && shapes[4 * l + 1] == g.channels,
                "every level must have the same batch and channels");
    g.heights.push_back(shapes[4 * l + 2]);
    g.widths.push_back(shapes[4 * l + 3]);
  }
  g.rois = rois.to(at::kCPU, dtype).contiguous();
  g.levels = levels.to(at::kCPU, at::kLong).contiguous();
  const int64_t* lv = g.levels.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(dtype, "roi_align_check", [&] {
    const scalar_t* r = g.rois.data_ptr<scalar_t>();
    for (int64_t k = 0; k < rois.size(0); ++k) {
      TORCH_CHECK(lv[k] >= 0 && lv[k] < L, "roi ", k, " has level ", lv[k],
                  " outside [0, ", L, ")");
      const int64_t b = static_cast<int64_t>(r[k * 5]);
      TORCH_CHECK(b >= 0 && b < g.batch, "roi ", k, " has batch index ", b,
                  " outside [0, ", g.batch, ")");
    }
  });
  return g;
}

template <typename T>
void forward_impl(const std::vector<at::Tensor>& feats, const Geometry& g, const Params& p,
                  at::Tensor& out) {
  const int64_t K = g.rois.size(0), C = g.channels, bins = p.ph * p.pw;
  const T* rois = g.rois.data_ptr<T>();
  const int64_t* lv = g.levels.data_ptr<int64_t>();
  T* o = out.data_ptr<T>();
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    AxisWeights<T> ys, xs;
    for (int64_t k = begin; k < end; ++k) {
      const int64_t h = g.heights[lv[k]], w = g.widths[lv[k]];
      const T inv = roi_weights(rois + 5 * k, p.scales[lv[k]], h, w, p, ys, xs);
      const int64_t b = static_cast<int64_t>(rois[5 * k]);
      const T* base = feats[lv[k]].data_ptr<T>() + b * C * h * w;
      for (int64_t ch = 0; ch < C; ++ch) {
        const T* plane = base + ch * h * w;
        T* out_c = o + (k * C + ch) * bins;
        for (int64_t i = 0; i < p.ph; ++i) {
          const T* wy = ys.w.data() + ys.off[i];
          for (int64_t j = 0; j < p.pw; ++j) {
            const T* wx = xs.w.data() + xs.off[j];
            T acc = T(0);
            for (int64_t r = 0; r < ys.len[i]; ++r) {
              const T* row = plane + (ys.start[i] + r) * w + xs.start[j];
              T s = T(0);
              for (int64_t x = 0; x < xs.len[j]; ++x) s += wx[x] * row[x];
              acc += wy[r] * s;
            }
            out_c[i * p.pw + j] = acc * inv;
          }
        }
      }
    }
  });
}

template <typename T>
void backward_impl(const Geometry& g, const Params& p, const at::Tensor& grad,
                   std::vector<at::Tensor>& grads) {
  const int64_t K = g.rois.size(0), C = g.channels, B = g.batch;
  const int64_t L = static_cast<int64_t>(g.heights.size()), bins = p.ph * p.pw;
  const T* rois = g.rois.data_ptr<T>();
  const int64_t* lv = g.levels.data_ptr<int64_t>();
  const T* gr_out = grad.data_ptr<T>();
  // Weights of every RoI, computed once and read by every channel's task.
  std::vector<AxisWeights<T>> ys(K), xs(K);
  std::vector<T> inv(K);
  std::vector<std::vector<int64_t>> members(L * B);  // RoIs of each (level, image), in order
  for (int64_t k = 0; k < K; ++k) {
    members[lv[k] * B + static_cast<int64_t>(rois[5 * k])].push_back(k);
  }
  at::parallel_for(0, K, 16, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      inv[k] = roi_weights(rois + 5 * k, p.scales[lv[k]], g.heights[lv[k]], g.widths[lv[k]],
                           p, ys[k], xs[k]);
    }
  });
  at::parallel_for(0, L * B * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t l = task / (B * C), b = (task / C) % B, ch = task % C;
      const int64_t h = g.heights[l], w = g.widths[l];
      T* plane = grads[l].data_ptr<T>() + (b * C + ch) * h * w;
      std::memset(plane, 0, sizeof(T) * h * w);
      for (const int64_t k : members[l * B + b]) {
        const AxisWeights<T>& y = ys[k];
        const AxisWeights<T>& x = xs[k];
        const T* g_c = gr_out + (k * C + ch) * bins;
        for (int64_t i = 0; i < p.ph; ++i) {
          const T* wy = y.w.data() + y.off[i];
          for (int64_t j = 0; j < p.pw; ++j) {
            const T gij = g_c[i * p.pw + j] * inv[k];
            if (gij == T(0)) continue;
            const T* wx = x.w.data() + x.off[j];
            for (int64_t r = 0; r < y.len[i]; ++r) {
              T* __restrict__ row = plane + (y.start[i] + r) * w + x.start[j];
              const T gr = gij * wy[r];
              for (int64_t e = 0; e < x.len[j]; ++e) row[e] += gr * wx[e];
            }
          }
        }
      }
    }
  });
}

Params params(int64_t ph, int64_t pw, at::ArrayRef<double> scales, int64_t sampling_ratio,
              bool aligned) {
  return Params{ph, pw, sampling_ratio, aligned,
                std::vector<double>(scales.begin(), scales.end())};
}

at::Tensor roi_align_forward(at::TensorList feats, const at::Tensor& rois,
                             const at::Tensor& levels, at::ArrayRef<double> scales,
                             int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned) {
  const Params p = params(ph, pw, scales, sampling_ratio, aligned);
  TORCH_CHECK(!feats.empty(), "roi_align: give at least one feature level");
  std::vector<int64_t> shapes;
  std::vector<at::Tensor> planes;
  for (const auto& f : feats) {
    TORCH_CHECK(f.device().is_cpu() && f.dim() == 4 &&
                    f.scalar_type() == feats[0].scalar_type(),
                "every level must be a (B, C, H, W) CPU tensor of one dtype");
    shapes.insert(shapes.end(), f.sizes().begin(), f.sizes().end());
    planes.push_back(f.contiguous());
  }
  const Geometry g = check(shapes, feats[0].scalar_type(), rois, levels, p);
  at::Tensor out = at::empty({rois.size(0), g.channels, ph, pw}, planes[0].options());
  AT_DISPATCH_FLOATING_TYPES(feats[0].scalar_type(), "roi_align_forward", [&] {
    forward_impl<scalar_t>(planes, g, p, out);
  });
  return out;
}

// The gradient of every level (zero where it pooled no RoI); the levels' values are not
// needed, only their shapes (B, C, H_l, W_l), 4 numbers per level.
std::vector<at::Tensor> roi_align_backward(const at::Tensor& grad_output,
                                           at::IntArrayRef level_shapes,
                                           const at::Tensor& rois, const at::Tensor& levels,
                                           at::ArrayRef<double> scales, int64_t ph, int64_t pw,
                                           int64_t sampling_ratio, bool aligned) {
  const Params p = params(ph, pw, scales, sampling_ratio, aligned);
  const Geometry g = check(level_shapes, grad_output.scalar_type(), rois, levels, p);
  at::Tensor grad = grad_output.contiguous();
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == g.channels &&
                  grad.size(2) == ph && grad.size(3) == pw,
              "grad_output must be (K, C, PH, PW)");
  std::vector<at::Tensor> grads;
  for (size_t l = 0; l < g.heights.size(); ++l) {
    grads.push_back(at::empty({g.batch, g.channels, g.heights[l], g.widths[l]},
                              grad.options()));
  }
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward", [&] {
    backward_impl<scalar_t>(g, p, grad, grads);
  });
  return grads;
}

}  // namespace
}  // namespace codetr_roi_align

TORCH_LIBRARY(codetr_roi_align, m) {
  m.def(
      "forward(Tensor[] feats, Tensor rois, Tensor levels, float[] scales, int ph, int pw, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "backward(Tensor grad_output, int[] level_shapes, Tensor rois, Tensor levels, "
      "float[] scales, int ph, int pw, int sampling_ratio, bool aligned) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(codetr_roi_align, CPU, m) {
  m.impl("forward", &codetr_roi_align::roi_align_forward);
  m.impl("backward", &codetr_roi_align::roi_align_backward);
}
