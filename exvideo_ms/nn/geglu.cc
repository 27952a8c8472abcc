// The fused GEGLU of exvideo_ms/nn/geglu.py for MindSpore's CPU backend (ops.Custom, func_type "aot"):
// value · GELU(gate) with the exact (erf) GELU in one pass over memory, and its gradient. float32 only.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// exp(y) for y <= 0: y = n·ln2 + r, |r| <= ln2/2, e^r by its degree-6 Taylor polynomial (relative error < 2e-7),
// 2^n by building the float's exponent bits. Plain arithmetic so that the compiler vectorises the loops.
inline float exp_nonpositive(float y) {
  y = std::max(y, -87.0f);
  const float n = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest (1.5·2^23 trick)
  const float r = (y - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7).
inline float erf_as(float x) {
  const float a = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float e = 1.0f - p * t * exp_nonpositive(-a * a);
  return std::copysign(e, x);
}

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

template <typename F>
void parallel_rows(int64_t rows, F body) {
  unsigned n = std::thread::hardware_concurrency();
  n = n == 0 ? 1 : (n > 8 ? 8 : n);
  if (rows < 64 || n == 1) {
    body(0, rows);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t step = (rows + n - 1) / n;
  for (unsigned i = 0; i < n; ++i) {
    const int64_t lo = i * step, hi = lo + step < rows ? lo + step : rows;
    if (lo < hi) pool.emplace_back(body, lo, hi);
  }
  for (auto &t : pool) t.join();
}

int64_t count(int ndim, const int64_t *shape, int upto) {
  int64_t n = 1;
  for (int i = 0; i < upto; ++i) n *= shape[i];
  return n;
}

void forward_rows(const float *__restrict h, float *__restrict out, int64_t lo, int64_t hi, int64_t inner) {
  for (int64_t r = lo; r < hi; ++r) {
    const float *__restrict v = h + r * 2 * inner;
    const float *__restrict g = v + inner;
    float *__restrict o = out + r * inner;
    for (int64_t i = 0; i < inner; ++i) o[i] = v[i] * (0.5f * g[i] * (1.0f + erf_as(g[i] * kSqrtHalf)));
  }
}

void backward_rows(const float *__restrict h, const float *__restrict dout, float *__restrict dh, int64_t lo,
                   int64_t hi, int64_t inner) {
  for (int64_t r = lo; r < hi; ++r) {
    const float *__restrict v = h + r * 2 * inner;
    const float *__restrict g = v + inner;
    const float *__restrict d = dout + r * inner;
    float *__restrict dv = dh + r * 2 * inner;
    float *__restrict dg = dv + inner;
    for (int64_t i = 0; i < inner; ++i) {
      const float cdf = 0.5f * (1.0f + erf_as(g[i] * kSqrtHalf));
      const float pdf = kInvSqrt2Pi * exp_nonpositive(-0.5f * g[i] * g[i]);
      dv[i] = d[i] * g[i] * cdf;
      dg[i] = d[i] * v[i] * (cdf + g[i] * pdf);
    }
  }
}

}  // namespace

// params: h (rows, 2·inner) -> out (rows, inner); out = h[:, :inner] · GELU(h[:, inner:])
extern "C" int GegluForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  if (nparam != 2 || std::strcmp(dtypes[0], "float32") != 0) return 1;
  const int nd = ndims[0];
  const int64_t inner = shapes[0][nd - 1] / 2, rows = count(nd, shapes[0], nd - 1);
  const float *h = static_cast<const float *>(params[0]);
  float *out = static_cast<float *>(params[1]);
  parallel_rows(rows, [=](int64_t lo, int64_t hi) { forward_rows(h, out, lo, hi, inner); });
  return 0;
}

// params: h (rows, 2·inner), dout (rows, inner) -> dh (rows, 2·inner)
extern "C" int GegluBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  if (nparam != 3 || std::strcmp(dtypes[0], "float32") != 0 || std::strcmp(dtypes[1], "float32") != 0) return 1;
  const int nd = ndims[0];
  const int64_t inner = shapes[0][nd - 1] / 2, rows = count(nd, shapes[0], nd - 1);
  const float *h = static_cast<const float *>(params[0]), *dout = static_cast<const float *>(params[1]);
  float *dh = static_cast<float *>(params[2]);
  parallel_rows(rows, [=](int64_t lo, int64_t hi) { backward_rows(h, dout, dh, lo, hi, inner); });
  return 0;
}
