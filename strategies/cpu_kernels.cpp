// The CPU decode step's small operations, each one pass over its rows (see cpu_kernels.py).
//
// A decode step of a small model runs ~50 small tensor operations a layer around its four matrix
// products (norms of ~8 operations each, rotary embedding, cache writes, attention, its masks and
// merges, SiLU x up). On a CPU each costs a dispatch and a parallel region whatever its size;
// in bfloat16, where the products run on AMX, those fixed costs are half the step. Here each is
// one operation:
//
//   add_rms_norm  h' = h + y (rounded to the dtype), x = RMSNorm(h')       (y optional)
//   rope_kv       q and k rotated, k and v written into the cache at each row's position
//   head_rms_norm RMSNorm of each head's vector (Qwen3's q/k norms)
//   attention     each row's queries against its slot's keys (its prompt too, unless shared),
//                 softmax in float32, merged with a shared prompt's block; one pass per
//                 (row, key/value head)
//   silu_mul      SiLU(gate) x up from the fused gate/up product
//   signals       the sampler's per-token signals over the vocabulary, one pass per row
//
// Rounding follows transformers' modules operation by operation (every intermediate the modules
// round to the model's dtype is rounded here too), so elementwise results are the modules' own;
// sums (norm statistics, dot products, softmax) are float32 in another order, and exp is a
// polynomial, so those agree to float32 rounding.
//
// Compiled with -ffp-contract=off: a fused multiply-add would skip a rounding the modules make.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

using at::Tensor;

namespace {

// ----- number formats: every value is computed in float32 and rounded on store ---------------
inline float load(float x) { return x; }
inline float load(uint16_t b) { return __builtin_bit_cast(float, static_cast<uint32_t>(b) << 16); }

template <typename T> inline T store(float x);
template <> inline float store<float>(float x) { return x; }
template <> inline uint16_t store<uint16_t>(float x) {
  // round to nearest even, as c10::BFloat16 and torch's vectorised conversions do
  uint32_t u = __builtin_bit_cast(uint32_t, x);
  if (std::isnan(x)) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
// x rounded to T and read back: the value a module holds after rounding to the model's dtype
template <typename T> inline float round_to(float x) { return load(store<T>(x)); }

// exp(x), x clamped to [-87, 88]: Cody-Waite reduction and a degree-6 polynomial (Cephes' expf, within 2
// ulp), written so that loops over it vectorise
inline float exp_poly(float x) {
  x = std::fmin(std::fmax(x, -87.0f), 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t e = static_cast<int32_t>(n) + 127;
  return p * __builtin_bit_cast(float, e << 23);
}

#if defined(__AVX512F__)
// The same three things on 16 lanes (the hot loops below; -march=native on an AVX-512 CPU).
#include <immintrin.h>
constexpr bool kVec = true;
inline __m512 ld16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 ld16(const uint16_t* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
// round to nearest even into bfloat16's 16 high bits, NaN to the quiet NaN (as store<uint16_t>)
inline __m512i bf16_bits(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  return _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7fc0));
}
inline void st16(float* p, __m512 x) { _mm512_storeu_ps(p, x); }
inline void st16(uint16_t* p, __m512 x) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(bf16_bits(x)));
}
template <typename T> inline __m512 round16(__m512 x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    return _mm512_castsi512_ps(_mm512_slli_epi32(bf16_bits(x), 16));
  }
}
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                                      _mm512_set1_ps(0.5f)), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f)));
  r = _mm512_add_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(2.12194440e-4f)));
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), _mm512_set1_ps(1.0f));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}
#else
constexpr bool kVec = false;
#endif

template <typename T> const T* cptr(const Tensor& t) { return reinterpret_cast<const T*>(t.const_data_ptr()); }
template <typename T> T* mptr(const Tensor& t) { return reinterpret_cast<T*>(t.mutable_data_ptr()); }

// Runs f.template operator()<T>() with T the storage type of `dtype` (float or bfloat16 bits).
template <typename F> void dispatch(at::ScalarType dtype, F&& f) {
  if (dtype == at::kFloat) {
    f.template operator()<float>();
  } else if (dtype == at::kBFloat16) {
    f.template operator()<uint16_t>();
  } else {
    TORCH_CHECK(false, "tts_cpu: float32 or bfloat16 only, got ", dtype);
  }
}

void check_rows(const Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() >= 2 && t.stride(-1) == 1, "tts_cpu: ", name, " needs unit stride in its last dimension");
}

// transformers' RMSNorm of one vector x[0..D) into y: x32 * rsqrt(mean(x32²) + eps), rounded to
// the dtype, times the weight (a product in the dtype)
template <typename T>
inline void rms_norm_row(const T* x, const T* w, int64_t D, float eps, T* y) {
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (int64_t d = 0; d < D; ++d) {
    const float v = load(x[d]);
    ss += v * v;
  }
  const float r = 1.0f / std::sqrt(ss / static_cast<float>(D) + eps);
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) y[d] = store<T>(load(w[d]) * round_to<T>(load(x[d]) * r));
}

// ----- add_rms_norm -------------------------------------------------------------------------
// rms_norm_row of each row; with y, the residual add h + y comes first, rounded to the dtype.
std::tuple<Tensor, Tensor> add_rms_norm(const Tensor& h, const c10::optional<Tensor>& y, const Tensor& w, double eps) {
  check_rows(h, "h");
  TORCH_CHECK(h.dim() == 2, "tts_cpu.add_rms_norm: h must be [rows, dim]");
  const int64_t N = h.size(0), D = h.size(1);
  TORCH_CHECK(w.is_contiguous() && w.numel() == D && w.scalar_type() == h.scalar_type(), "tts_cpu.add_rms_norm: weight");
  const bool add = y.has_value();
  if (add) {
    check_rows(*y, "y");
    TORCH_CHECK(y->sizes() == h.sizes() && y->scalar_type() == h.scalar_type(), "tts_cpu.add_rms_norm: y must match h");
  }
  Tensor h_out = add ? at::empty({N, D}, h.options()) : h;
  Tensor x_out = at::empty({N, D}, h.options());
  const float feps = static_cast<float>(eps);
  dispatch(h.scalar_type(), [&]<typename T>() {
    const T* hp = cptr<T>(h);
    const T* yp = add ? cptr<T>(*y) : nullptr;
    const T* wp = cptr<T>(w);
    T* hop = mptr<T>(h_out);
    T* xop = mptr<T>(x_out);
    const int64_t sh = h.stride(0), sy = add ? y->stride(0) : 0, sho = h_out.stride(0);
    at::parallel_for(0, N, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n) {
        const T* hr = hp + n * sh;
        T* hor = hop + n * sho;
        T* xr = xop + n * D;
        if (add) {
          const T* yr = yp + n * sy;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) hor[d] = store<T>(load(hr[d]) + load(yr[d]));
        }
        rms_norm_row(add ? hor : hr, wp, D, feps, xr);
      }
    });
  });
  return {h_out, x_out};
}

// RMSNorm of each head's vector (Qwen3's q/k norms): x [N, heads, hd] with unit-stride heads.
Tensor head_rms_norm(const Tensor& x, const Tensor& w, double eps) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1, "tts_cpu.head_rms_norm: x must be [rows, heads, hd]");
  const int64_t N = x.size(0), H = x.size(1), D = x.size(2);
  TORCH_CHECK(w.is_contiguous() && w.numel() == D && w.scalar_type() == x.scalar_type(), "tts_cpu.head_rms_norm: weight");
  Tensor out = at::empty({N, H, D}, x.options());
  const float feps = static_cast<float>(eps);
  dispatch(x.scalar_type(), [&]<typename T>() {
    const T* xp = cptr<T>(x);
    const T* wp = cptr<T>(w);
    T* op = mptr<T>(out);
    const int64_t s0 = x.stride(0), s1 = x.stride(1);
    at::parallel_for(0, N * H, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const T* xr = xp + (i / H) * s0 + (i % H) * s1;
        rms_norm_row(xr, wp, D, feps, op + i * D);
      }
    });
  });
  return out;
}

// ----- rope_kv ------------------------------------------------------------------------------
// transformers' x·cos + rotate_half(x)·sin with rotate_half(x) = (-x₂, x₁); `sin_s` carries the
// sign (layers.signed_sin), so out[d] = x[d]·cos[d] + x[(d + hd/2) mod hd]·sin_s[d], each product
// and the sum rounded as the modules round them. q comes back rotated; k is rotated into the
// cache and v copied there, at kc/vc[row, head, positions[row]].
Tensor rope_kv(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cos, const Tensor& sin_s,
               const Tensor& kc, const Tensor& vc, const Tensor& positions) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "tts_cpu.rope_kv: q, k, v must be [rows, heads, hd]");
  TORCH_CHECK(q.stride(2) == 1 && k.stride(2) == 1 && v.stride(2) == 1, "tts_cpu.rope_kv: unit-stride heads");
  const int64_t N = q.size(0), NQ = q.size(1), NK = k.size(1), D = q.size(2), half = D / 2;
  TORCH_CHECK(D % 2 == 0 && k.size(2) == D && v.size(2) == D && v.size(1) == NK, "tts_cpu.rope_kv: shapes");
  TORCH_CHECK(cos.is_contiguous() && sin_s.is_contiguous() && cos.numel() == N * D && sin_s.numel() == N * D,
              "tts_cpu.rope_kv: cos/sin must be contiguous [rows, hd]");
  TORCH_CHECK(kc.is_contiguous() && vc.is_contiguous() && kc.dim() == 4 && kc.size(0) >= N && kc.size(1) == NK &&
                  kc.size(3) == D && vc.sizes() == kc.sizes(),
              "tts_cpu.rope_kv: caches must be contiguous [slots, kv_heads, capacity, hd]");
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.is_contiguous() && positions.numel() == N,
              "tts_cpu.rope_kv: positions must be int64 [rows]");
  for (const Tensor* t : {&k, &v, &cos, &sin_s, &kc, &vc})
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), "tts_cpu.rope_kv: one dtype for all tensors");
  Tensor out = at::empty({N, NQ, D}, q.options());
  const int64_t cap = kc.size(2);
  const int64_t* pos = positions.const_data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n) TORCH_CHECK(pos[n] >= 0 && pos[n] < cap, "tts_cpu.rope_kv: position outside the cache");
  dispatch(q.scalar_type(), [&]<typename T>() {
    const T *qp = cptr<T>(q), *kp = cptr<T>(k), *vp = cptr<T>(v), *cp = cptr<T>(cos), *sp = cptr<T>(sin_s);
    T *op = mptr<T>(out), *kcp = mptr<T>(kc), *vcp = mptr<T>(vc);
    auto rotate = [&](const T* x, const T* c, const T* s, T* o) {
      int64_t d = 0;
#if defined(__AVX512F__)
      if (half % 16 == 0) {
        for (; d < D; d += 16) {
          const T* xr = x + (d < half ? d + half : d - half);   // the other half, 16 at a time
          const __m512 a = round16<T>(_mm512_mul_ps(ld16(x + d), ld16(c + d)));
          const __m512 b = round16<T>(_mm512_mul_ps(ld16(xr), ld16(s + d)));
          st16(o + d, _mm512_add_ps(a, b));
        }
      }
#endif
      for (; d < D; ++d) {
        const int64_t e = d < half ? d + half : d - half;
        o[d] = store<T>(round_to<T>(load(x[d]) * load(c[d])) + round_to<T>(load(x[e]) * load(s[d])));
      }
    };
    at::parallel_for(0, N, 4, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n) {
        const T *c = cp + n * D, *s = sp + n * D;
        for (int64_t h = 0; h < NQ; ++h) rotate(qp + n * q.stride(0) + h * q.stride(1), c, s, op + (n * NQ + h) * D);
        for (int64_t h = 0; h < NK; ++h) {
          const int64_t at = ((n * NK + h) * cap + pos[n]) * D;
          rotate(kp + n * k.stride(0) + h * k.stride(1), c, s, kcp + at);
          std::memcpy(vcp + at, vp + n * v.stride(0) + h * v.stride(1), D * sizeof(T));
        }
      }
    });
  });
  return out;
}

// ----- attention ----------------------------------------------------------------------------
// Row b's query heads of key/value head g (the G = heads / kv_heads consecutive query heads)
// attend to the row's own keys start[b]..positions[b] in its slot. With a prompt shared by
// several rows (shared_prefix.py), that prompt's part was computed for all its rows in one
// block: o_pre [prompts, kv_heads, n * G, hd] and its log-sum-exps lse_pre (float32), row b at
// block position inv[b] (prompt inv / n, place inv % n). The two softmaxes are merged exactly:
//     out = (o_pre·e^(lse_pre - M) + Σ_p e^(s_p - M)·v_p) / (e^(lse_pre - M) + Σ_p e^(s_p - M))
// with M the larger of lse_pre and the scores' maximum, in float32, rounded once to the dtype.
// One work item per (row, kv head), whole on one thread, so a row's result does not depend on
// the rows beside it.

struct Own {        // one work item's inputs
  int64_t P;        // own keys
  float scale;
  const float* lse; // G log-sum-exps of the shared prompt's part, or nullptr
};

// scores[j * P + p] = q_j · k_p · scale
template <typename T>
void scores_scalar(const T* q, const T* k, int64_t G, int64_t D, const Own& w, float* scores) {
  for (int64_t p = 0; p < w.P; ++p)
    for (int64_t j = 0; j < G; ++j) {
      float s = 0.f;
      for (int64_t d = 0; d < D; ++d) s += load(q[j * D + d]) * load(k[p * D + d]);
      scores[j * w.P + p] = s * w.scale;
    }
}

#if defined(__AVX512F__)
// r[i] = the sum of v[i]'s 16 lanes, for 16 vectors at once (a transposing tree of adds)
inline __m512 reduce16(const __m512* v) {
  __m512 x[8], y[4];
  for (int i = 0; i < 8; ++i)
    x[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    y[i] = _mm512_add_ps(_mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0x44), _mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0xEE));
  const __m512 w0 = _mm512_add_ps(_mm512_shuffle_f32x4(y[0], y[1], 0x44), _mm512_shuffle_f32x4(y[0], y[1], 0xEE));
  const __m512 w1 = _mm512_add_ps(_mm512_shuffle_f32x4(y[2], y[3], 0x44), _mm512_shuffle_f32x4(y[2], y[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(w0, w1, 0x88), _mm512_shuffle_f32x4(w0, w1, 0xDD));
}

// q_j · k for one key as a vector of partial sums (bfloat16 pairs on the CPU's bf16 dot-product
// unit where it has one, else float32 products)
template <typename T>
inline __m512 dot_partial(const T* q, const T* k, int64_t D) {
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, uint16_t>) {
    __m512 a = _mm512_setzero_ps();
    for (int64_t c = 0; c < D; c += 32)
      a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(q + c), (__m512bh)_mm512_loadu_si512(k + c));
    return a;
  }
#endif
  __m512 a = _mm512_mul_ps(ld16(q), ld16(k));
  for (int64_t c = 16; c < D; c += 16) a = _mm512_fmadd_ps(ld16(q + c), ld16(k + c), a);
  return a;
}

template <typename T>
void scores_vec(const T* q, const T* k, int64_t G, int64_t D, const Own& w, float* scores) {
  const __m512 scale = _mm512_set1_ps(w.scale);
  const int64_t P16 = w.P / 16 * 16;
  __m512 part[16];
  for (int64_t j = 0; j < G; ++j) {
    const T* qj = q + j * D;
    float* sj = scores + j * w.P;
    for (int64_t p0 = 0; p0 < P16; p0 += 16) {
      for (int i = 0; i < 16; ++i) part[i] = dot_partial(qj, k + (p0 + i) * D, D);
      _mm512_storeu_ps(sj + p0, _mm512_mul_ps(reduce16(part), scale));
    }
    for (int64_t p = P16; p < w.P; ++p) sj[p] = _mm512_reduce_add_ps(dot_partial(qj, k + p * D, D)) * w.scale;
  }
}
#endif

// In place: scores_j → e^(s - M_j); returns nothing, fills m[j] = M_j and total[j] (including
// the shared prompt's mass e^(lse_j - M_j)).
inline void softmax_rows(float* scores, int64_t G, const Own& w, float* m, float* total) {
  for (int64_t j = 0; j < G; ++j) {
    float* sj = scores + j * w.P;
    int64_t p = 0;
    float mx = w.lse ? w.lse[j] : -INFINITY;
    float t = 0.f;
#if defined(__AVX512F__)
    const int64_t P16 = w.P / 16 * 16;
    __m512 mv = _mm512_set1_ps(mx);
    for (; p < P16; p += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(sj + p));
    mx = _mm512_reduce_max_ps(mv);
    for (int64_t r = P16; r < w.P; ++r) mx = std::fmax(mx, sj[r]);
    const __m512 mb = _mm512_set1_ps(mx);
    __m512 tv = _mm512_setzero_ps();
    for (p = 0; p < P16; p += 16) {
      const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(sj + p), mb));
      _mm512_storeu_ps(sj + p, e);
      tv = _mm512_add_ps(tv, e);
    }
    t = _mm512_reduce_add_ps(tv);
#else
    for (int64_t r = 0; r < w.P; ++r) mx = std::fmax(mx, sj[r]);
#endif
    for (; p < w.P; ++p) {
      sj[p] = exp_poly(sj[p] - mx);
      t += sj[p];
    }
    if (w.lse) t += exp_poly(w.lse[j] - mx);
    m[j] = mx;
    total[j] = t;
  }
}

// acc[j * D + d] = Σ_p e_jp · v_p[d]
template <typename T>
void weighted_values(const float* e, const T* v, int64_t G, int64_t D, const Own& w, float* acc, float* vf) {
  std::fill(acc, acc + G * D, 0.f);
#if defined(__AVX512F__)
  if (D % 16 == 0) {
    const int64_t B = 16;   // keys per block: their values read as float32 once, then used G times
    for (int64_t p0 = 0; p0 < w.P; p0 += B) {
      const int64_t nb = std::min(B, w.P - p0);
      const float* rows;
      if constexpr (std::is_same_v<T, float>) {
        rows = v + p0 * D;
      } else {
        for (int64_t i = 0; i < nb * D; i += 16) _mm512_storeu_ps(vf + i, ld16(v + p0 * D + i));
        rows = vf;
      }
      for (int64_t j = 0; j < G; ++j) {
        const float* ej = e + j * w.P + p0;
        float* aj = acc + j * D;
        for (int64_t c = 0; c < D; c += 16) {
          __m512 a = _mm512_loadu_ps(aj + c);
          for (int64_t i = 0; i < nb; ++i) a = _mm512_fmadd_ps(_mm512_set1_ps(ej[i]), _mm512_loadu_ps(rows + i * D + c), a);
          _mm512_storeu_ps(aj + c, a);
        }
      }
    }
    return;
  }
#endif
  for (int64_t p = 0; p < w.P; ++p)
    for (int64_t j = 0; j < G; ++j) {
      const float x = e[j * w.P + p];
      for (int64_t d = 0; d < D; ++d) acc[j * D + d] += x * load(v[p * D + d]);
    }
}

#if defined(__AVX512BF16__)
// The same sum for bfloat16 values on the CPU's bf16 dot-product unit: keys p and p+1 are taken
// as a pair, their values interleaved per d (the unit's pair layout, built once for all G heads)
// and their weights rounded to bfloat16, as SDPA's flash kernel rounds its probabilities before
// its value product. D = 16 C; each head's C accumulators stay in registers.
template <int C>
void weighted_values_bf16(const float* e, const uint16_t* v, int64_t G, const Own& w, float* acc,
                          std::vector<uint16_t>& vp, std::vector<uint16_t>& eb) {
  constexpr int64_t D = 16 * C;
  const int64_t pairs = (w.P + 1) / 2;
  vp.resize(pairs * C * 32);   // C vectors of 32 bf16 a pair (unaligned loads and stores)
  eb.resize(2 * pairs + 16);
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t pr = 0; pr < pairs; ++pr) {
    const uint16_t* r0 = v + 2 * pr * D;
    const bool second = 2 * pr + 1 < w.P;
    for (int h = 0; h < C / 2; ++h) {
      const __m512i a = _mm512_loadu_si512(r0 + 32 * h);
      const __m512i b = second ? _mm512_loadu_si512(r0 + D + 32 * h) : zero;
      _mm512_storeu_si512(vp.data() + (pr * C + 2 * h) * 32, _mm512_unpacklo_epi16(a, b));      // d = 32h + 8(k/4) + k%4
      _mm512_storeu_si512(vp.data() + (pr * C + 2 * h + 1) * 32, _mm512_unpackhi_epi16(a, b));  // d = 32h + 8(k/4) + 4 + k%4
    }
  }
  // the interleaving's order back to d order, 16 outputs at a time
  const __m512i back0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i back1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  const uint32_t* ew = reinterpret_cast<const uint32_t*>(eb.data());
  for (int64_t j = 0; j < G; ++j) {
    const float* ej = e + j * w.P;
    int64_t p = 0;
    for (; p + 16 <= w.P; p += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(eb.data() + p), _mm512_cvtepi32_epi16(bf16_bits(_mm512_loadu_ps(ej + p))));
    for (; p < w.P; ++p) eb[p] = store<uint16_t>(ej[p]);
    eb[w.P] = 0;   // an odd count's last pair weighs a zero row by zero
    __m512 a[C];
    for (int c = 0; c < C; ++c) a[c] = _mm512_setzero_ps();
    for (int64_t pr = 0; pr < pairs; ++pr) {
      const __m512bh wv = (__m512bh)_mm512_set1_epi32(static_cast<int>(ew[pr]));
      for (int c = 0; c < C; ++c)
        a[c] = _mm512_dpbf16_ps(a[c], (__m512bh)_mm512_loadu_si512(vp.data() + (pr * C + c) * 32), wv);
    }
    float* aj = acc + j * D;
    for (int h = 0; h < C / 2; ++h) {
      _mm512_storeu_ps(aj + 32 * h, _mm512_permutex2var_ps(a[2 * h], back0, a[2 * h + 1]));
      _mm512_storeu_ps(aj + 32 * h + 16, _mm512_permutex2var_ps(a[2 * h], back1, a[2 * h + 1]));
    }
  }
}
#endif

Tensor attention(const Tensor& q, const Tensor& kc, const Tensor& vc, const Tensor& positions, const Tensor& start,
                 const c10::optional<Tensor>& o_pre, const c10::optional<Tensor>& lse_pre,
                 const c10::optional<Tensor>& inv, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.is_contiguous(), "tts_cpu.attention: q must be contiguous [rows, heads, hd]");
  const int64_t B = q.size(0), NQ = q.size(1), D = q.size(2);
  TORCH_CHECK(kc.is_contiguous() && vc.is_contiguous() && kc.dim() == 4 && kc.size(0) >= B && kc.size(3) == D &&
                  vc.sizes() == kc.sizes(),
              "tts_cpu.attention: caches must be contiguous [slots, kv_heads, capacity, hd]");
  const int64_t NK = kc.size(1), cap = kc.size(2), G = NQ / NK;
  TORCH_CHECK(NQ % NK == 0, "tts_cpu.attention: heads must be a multiple of kv_heads");
  for (const Tensor* t : {&positions, &start})
    TORCH_CHECK(t->scalar_type() == at::kLong && t->is_contiguous() && t->numel() == B,
                "tts_cpu.attention: positions and start must be int64 [rows]");
  for (const Tensor* t : {&kc, &vc}) TORCH_CHECK(t->scalar_type() == q.scalar_type(), "tts_cpu.attention: one dtype");
  const bool merge = o_pre.has_value();
  int64_t n = 0, prompts = 0;
  if (merge) {
    TORCH_CHECK(lse_pre.has_value() && inv.has_value(), "tts_cpu.attention: o_pre needs lse_pre and inv");
    TORCH_CHECK(o_pre->dim() == 4 && o_pre->stride(3) == 1 && o_pre->size(1) == NK && o_pre->size(2) % G == 0 &&
                    o_pre->size(3) == D && o_pre->scalar_type() == q.scalar_type(),
                "tts_cpu.attention: o_pre must be [prompts, kv_heads, n * group, hd] with unit-stride heads");
    prompts = o_pre->size(0);
    n = o_pre->size(2) / G;
    TORCH_CHECK(lse_pre->dim() == 3 && lse_pre->scalar_type() == at::kFloat && lse_pre->size(0) == prompts &&
                    lse_pre->size(1) == NK && lse_pre->size(2) == n * G,
                "tts_cpu.attention: lse_pre must be float32 [prompts, kv_heads, n * group]");
    TORCH_CHECK(inv->scalar_type() == at::kLong && inv->is_contiguous() && inv->numel() == B,
                "tts_cpu.attention: inv must be int64 [rows]");
  }
  const int64_t* pos = positions.const_data_ptr<int64_t>();
  const int64_t* st = start.const_data_ptr<int64_t>();
  const int64_t* ip = merge ? inv->const_data_ptr<int64_t>() : nullptr;
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(st[b] >= 0 && pos[b] < cap && st[b] <= pos[b], "tts_cpu.attention: positions outside the cache");
    if (merge) TORCH_CHECK(ip[b] >= 0 && ip[b] < prompts * n, "tts_cpu.attention: inv outside the block");
  }
  Tensor out = at::empty({B, NQ * D}, q.options());
  const float* lp = merge ? lse_pre->const_data_ptr<float>() : nullptr;
  const int64_t os[3] = {merge ? o_pre->stride(0) : 0, merge ? o_pre->stride(1) : 0, merge ? o_pre->stride(2) : 0};
  const int64_t ls[3] = {merge ? lse_pre->stride(0) : 0, merge ? lse_pre->stride(1) : 0, merge ? lse_pre->stride(2) : 0};
  TORCH_CHECK(G <= 64, "tts_cpu.attention: at most 64 query heads per key/value head");
  const bool vec = kVec && D % 16 == 0 && (q.scalar_type() == at::kFloat || D % 32 == 0);
  dispatch(q.scalar_type(), [&]<typename T>() {
    const T *qp = cptr<T>(q), *kp = cptr<T>(kc), *vp = cptr<T>(vc);
    const T* opre = merge ? cptr<T>(*o_pre) : nullptr;
    T* op = mptr<T>(out);
    at::parallel_for(0, B * NK, 1, [&](int64_t lo, int64_t hi) {
      std::vector<float> scores, acc(G * D), vf(16 * D), m(G), total(G);
#if defined(__AVX512BF16__)
      std::vector<uint16_t> vpairs;
      std::vector<uint16_t> eb;
#endif
      for (int64_t item = lo; item < hi; ++item) {
        const int64_t b = item / NK, g = item % NK;
        // the row's first query in the shared block: prompt ip / n, place ip % n
        const int64_t grp = merge ? ip[b] / n : 0, at = merge ? (ip[b] % n) * G : 0;
        float lse[64];
        if (merge)
          for (int64_t j = 0; j < G; ++j) lse[j] = lp[grp * ls[0] + g * ls[1] + (at + j) * ls[2]];
        const Own w{pos[b] - st[b] + 1, static_cast<float>(scale), merge ? lse : nullptr};
        scores.resize(G * w.P);
        const T* qb = qp + (b * NQ + g * G) * D;
        const T* k = kp + ((b * NK + g) * cap + st[b]) * D;
        const T* v = vp + ((b * NK + g) * cap + st[b]) * D;
#if defined(__AVX512F__)
        if (vec)
          scores_vec(qb, k, G, D, w, scores.data());
        else
#endif
          scores_scalar(qb, k, G, D, w, scores.data());
        softmax_rows(scores.data(), G, w, m.data(), total.data());
        bool done = false;
#if defined(__AVX512BF16__)
        if constexpr (std::is_same_v<T, uint16_t>) {
          done = true;
          if (D == 32) weighted_values_bf16<2>(scores.data(), v, G, w, acc.data(), vpairs, eb);
          else if (D == 64) weighted_values_bf16<4>(scores.data(), v, G, w, acc.data(), vpairs, eb);
          else if (D == 128) weighted_values_bf16<8>(scores.data(), v, G, w, acc.data(), vpairs, eb);
          else done = false;
        }
#endif
        if (!done) weighted_values(scores.data(), v, G, D, w, acc.data(), vf.data());
        T* ob = op + (b * NQ + g * G) * D;
        for (int64_t j = 0; j < G; ++j) {
          const float inv_total = 1.0f / total[j];
          const float pre = merge ? exp_poly(w.lse[j] - m[j]) : 0.f;
          const T* oj = merge ? opre + grp * os[0] + g * os[1] + (at + j) * os[2] : nullptr;
          int64_t d = 0;
#if defined(__AVX512F__)
          const __m512 vinv = _mm512_set1_ps(inv_total), vpre = _mm512_set1_ps(pre);
          for (; d + 16 <= D; d += 16) {
            __m512 x = _mm512_loadu_ps(acc.data() + j * D + d);
            if (merge) x = _mm512_add_ps(x, _mm512_mul_ps(vpre, ld16(oj + d)));
            st16(ob + j * D + d, _mm512_mul_ps(x, vinv));
          }
#endif
          for (; d < D; ++d) {
            const float x = merge ? acc[j * D + d] + pre * load(oj[d]) : acc[j * D + d];
            ob[j * D + d] = store<T>(x * inv_total);
          }
        }
      }
    });
  });
  return out;
}

// ----- silu_mul -----------------------------------------------------------------------------
// act(gate) * up for the fused product's output [N, 2I] (gate first): SiLU x / (1 + e^-x) in
// float32 rounded to the dtype, then the product rounded, as the modules compute it.
Tensor silu_mul(const Tensor& gu) {
  check_rows(gu, "gate_up");
  TORCH_CHECK(gu.dim() == 2 && gu.size(1) % 2 == 0, "tts_cpu.silu_mul: gate_up must be [rows, 2 * intermediate]");
  const int64_t N = gu.size(0), I = gu.size(1) / 2;
  Tensor out = at::empty({N, I}, gu.options());
  dispatch(gu.scalar_type(), [&]<typename T>() {
    const T* gp = cptr<T>(gu);
    T* op = mptr<T>(out);
    const int64_t s = gu.stride(0);
    at::parallel_for(0, N, 4, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n) {
        const T *g = gp + n * s, *u = g + I;
        T* o = op + n * I;
        int64_t i = 0;
#if defined(__AVX512F__)
        for (; i + 16 <= I; i += 16) {
          const __m512 x = ld16(g + i);
          const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
          const __m512 act = round16<T>(_mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
          st16(o + i, _mm512_mul_ps(act, ld16(u + i)));
        }
#endif
        for (; i < I; ++i) {
          const float x = load(g[i]);
          o[i] = store<T>(round_to<T>(x / (1.0f + exp_poly(-x))) * load(u[i]));
        }
      }
    });
  });
  return out;
}

// ----- signals ------------------------------------------------------------------------------
// The sampler's per-token signals from float32 logits [B, >= V] over the first V columns, as
// sampler.raw_signals computes them, in one pass per row after its maximum:
//   y = z - max z (returned, the sampler draws from it), e = exp(y), S = Σe, log_norm = log S,
//   entropy = log_norm - Σ e·y / S, self-certainty = -log V - (mean y - log_norm),
//   confidence = log_norm - mean of the top k of y.
// Tokens with -inf logits (zero probability) add nothing to Σ e·y, as in the sampler.
std::vector<Tensor> signals(const Tensor& logits, int64_t V, int64_t k) {
  TORCH_CHECK(logits.dim() == 2 && logits.stride(1) == 1 && logits.scalar_type() == at::kFloat,
              "tts_cpu.signals: logits must be float32 [rows, vocab] with unit-stride rows");
  const int64_t B = logits.size(0);
  TORCH_CHECK(V >= 1 && V <= logits.size(1) && k >= 1 && k <= V, "tts_cpu.signals: bad V or k");
  Tensor y = at::empty({B, V}, logits.options());
  Tensor out = at::empty({4, B}, logits.options());
  const float* zp = logits.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  float* op = out.mutable_data_ptr<float>();
  const int64_t sz = logits.stride(0);
  const float log_v = std::log(static_cast<float>(V));
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> top(k);
    for (int64_t b = lo; b < hi; ++b) {
      const float* z = zp + b * sz;
      float* yr = yp + b * V;
      float m = -INFINITY;
      int64_t i = 0;
#if defined(__AVX512F__)
      __m512 mv = _mm512_set1_ps(-INFINITY);
      for (; i + 16 <= V; i += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(z + i));
      m = _mm512_reduce_max_ps(mv);
#endif
      for (; i < V; ++i) m = std::fmax(m, z[i]);
      // the top k kept sorted descending; `floor` is its smallest, below which nothing enters
      std::fill(top.begin(), top.end(), -INFINITY);
      float floor = -INFINITY;
      auto offer = [&](float x) {
        if (!(x > floor)) return;
        int64_t j = k - 1;
        while (j > 0 && top[j - 1] < x) {
          top[j] = top[j - 1];
          --j;
        }
        top[j] = x;
        floor = top[k - 1];
      };
      float S = 0.f, Sey = 0.f, Sy = 0.f;
      i = 0;
#if defined(__AVX512F__)
      const __m512 mb = _mm512_set1_ps(m);
      __m512 vs = _mm512_setzero_ps(), vsey = _mm512_setzero_ps(), vsy = _mm512_setzero_ps();
      for (; i + 16 <= V; i += 16) {
        const __m512 yv = _mm512_sub_ps(_mm512_loadu_ps(z + i), mb);
        _mm512_storeu_ps(yr + i, yv);
        const __m512 e = exp16(yv);
        // e^y underflows to 0 (not e^-87) for -inf logits: those tokens add nothing
        const __mmask16 live = _mm512_cmp_ps_mask(yv, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
        vs = _mm512_mask_add_ps(vs, live, vs, e);
        vsey = _mm512_mask_add_ps(vsey, live, vsey, _mm512_mul_ps(e, yv));
        vsy = _mm512_add_ps(vsy, yv);
        if (_mm512_cmp_ps_mask(yv, _mm512_set1_ps(floor), _CMP_GT_OQ))
          for (int l = 0; l < 16; ++l) offer(yr[i + l]);
      }
      S = _mm512_reduce_add_ps(vs);
      Sey = _mm512_reduce_add_ps(vsey);
      Sy = _mm512_reduce_add_ps(vsy);
#endif
      for (; i < V; ++i) {
        const float yv = z[i] - m;
        yr[i] = yv;
        if (yv != -INFINITY) {
          const float e = exp_poly(yv);
          S += e;
          Sey += e * yv;
        }
        Sy += yv;
        offer(yv);
      }
      float top_sum = 0.f;
      for (int64_t j = 0; j < k; ++j) top_sum += top[j];
      const float log_norm = std::log(S);
      op[b] = log_norm;
      op[B + b] = log_norm - Sey / S;
      op[2 * B + b] = -log_v - (Sy / static_cast<float>(V) - log_norm);
      op[3 * B + b] = log_norm - top_sum / static_cast<float>(k);
    }
  });
  return {y, out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY(tts_cpu, m) {
  m.def("add_rms_norm", &add_rms_norm);
  m.def("head_rms_norm", &head_rms_norm);
  m.def("rope_kv", &rope_kv);
  m.def("attention", &attention);
  m.def("silu_mul", &silu_mul);
  m.def("signals", &signals);
}
