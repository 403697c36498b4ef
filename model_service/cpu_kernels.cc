// CPU kernels of the model, as XLA FFI handlers: int8 weights times float activations,
// a decode step's attention, and the statistics of each row of logits that sampling
// needs.
//
// y[r, m] = scale[m] * sum_k x[r, k] * w[m, k], for x float32 [R, K], w int8 [M, K]
// and scale float32 [M] (one layer of stacks [L, M, K] and [L, M]): every int8
// product of `model_service.layers`, a decode step's few rows and a prefill pass's
// many. Each weight byte is read from memory once per
// call and converted to float next to its use, so a step reads a quarter of the float
// bytes; XLA on a CPU either converts the whole weight first or, for one row only,
// fuses the conversion and recomputes the row's producers for every output.
//
// The product has three code paths, AVX-512, AVX2 (the build's baseline on x86-64)
// and plain C++, chosen at run time for the CPU (`ChooseInt8Path`); every output is
// computed in the same order on each (see "int8 products" below), whatever the number
// of rows, the tile it falls in or the thread that runs it. So a row's result does not
// depend on the other rows of the batch, and a request gets the same tokens alone or
// batched, on any of them. A second handler takes bfloat16 activations, for the many
// rows of a prefill pass (see "bfloat16 products"), with the same promises.

// Python.h first, as CPython asks: the library is also the extension module
// `model_service._cpu_kernels`, which hands the handler to JAX as a capsule.
#include <Python.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX2__) && defined(__FMA__)

using Lanes = __m256;

inline Lanes Zero() { return _mm256_setzero_ps(); }
inline Lanes LoadX(const float* p) { return _mm256_loadu_ps(p); }
inline void Store(float* p, Lanes v) { _mm256_storeu_ps(p, v); }
// Eight IEEE half-precision values (a float16 KV cache), as floats (F16C).
inline Lanes LoadX(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline float AsFloat(uint16_t half) { return _cvtsh_ss(half); }
inline Lanes LoadW(const int8_t* p) {
  __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
}
inline Lanes Fma(Lanes a, Lanes b, Lanes acc) { return _mm256_fmadd_ps(a, b, acc); }
// Keeps a loaded vector in a register: GCC would otherwise load it again as the
// memory operand of each FMA that uses it, and the tile of four rows is then bound by
// loads (its 8-row product about 10 % slower, 16 rows 25 %).
inline void InRegister(Lanes& v) { asm("" : "+x"(v)); }
inline float Sum(Lanes v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline Lanes Max(Lanes a, Lanes b) { return _mm256_max_ps(a, b); }
inline Lanes Add(Lanes a, Lanes b) { return _mm256_add_ps(a, b); }
inline Lanes Splat(float v) { return _mm256_set1_ps(v); }
inline float Get(Lanes v, int i) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  return lanes[i];
}

// e^x for x <= 0 to float precision (Cephes' expf: x = n ln2 + r, a degree-5
// polynomial for e^r, times 2^n); below -87 it gives about 1e-38 instead of 0.
inline Lanes Exp(Lanes x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  Lanes n = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  Lanes y = _mm256_set1_ps(1.9875691500e-4f);
  for (float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f,
                  1.6666665459e-1f, 5.0000001201e-1f})
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(c));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i two_n = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(two_n));
}

#else  // portable: GCC/Clang vector extensions, same order of operations

typedef float Lanes __attribute__((vector_size(32)));

inline Lanes Zero() { return Lanes{}; }
inline Lanes LoadX(const float* p) {
  Lanes v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void Store(float* p, Lanes v) { __builtin_memcpy(p, &v, sizeof v); }
// An IEEE half-precision value (a float16 KV cache) as a float, exactly.
inline float AsFloat(uint16_t half) {
  uint32_t sign = uint32_t(half & 0x8000) << 16, exponent = (half >> 10) & 0x1f,
           mantissa = half & 0x3ff, bits;
  if (exponent == 0x1f) {  // infinity, NaN
    bits = sign | 0x7f800000 | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: shift the mantissa up to a leading 1
    exponent = 113;
    while (!(mantissa & 0x400)) mantissa <<= 1, --exponent;
    bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13);
  }
  float value;
  __builtin_memcpy(&value, &bits, sizeof value);
  return value;
}
inline Lanes LoadX(const uint16_t* p) {
  Lanes v;
  for (int i = 0; i < 8; ++i) v[i] = AsFloat(p[i]);
  return v;
}
inline Lanes LoadW(const int8_t* p) {
  return Lanes{float(p[0]), float(p[1]), float(p[2]), float(p[3]),
               float(p[4]), float(p[5]), float(p[6]), float(p[7])};
}
inline void InRegister(Lanes&) {}
inline Lanes Fma(Lanes a, Lanes b, Lanes acc) {
  Lanes out;
  for (int i = 0; i < 8; ++i) out[i] = __builtin_fmaf(a[i], b[i], acc[i]);
  return out;
}
inline float Sum(Lanes v) {
  float s[4] = {v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]};
  float t0 = s[0] + s[2], t1 = s[1] + s[3];
  return t0 + t1;
}
inline Lanes Max(Lanes a, Lanes b) { return a > b ? a : b; }
inline Lanes Add(Lanes a, Lanes b) { return a + b; }
inline Lanes Splat(float v) { return Lanes{} + v; }
inline float Get(Lanes v, int i) { return v[i]; }
inline Lanes Exp(Lanes x) {
  Lanes out;
  for (int i = 0; i < 8; ++i) out[i] = std::exp(x[i]);
  return out;
}

#endif

inline float AsFloat(float value) { return value; }

constexpr int64_t kLanes = 8;

// int8 products ----------------------------------------------------------------------
//
// y[r, m] = scale[m] * sum_k x[r, k] * w[m, k] for float x and int8 w: each weight
// byte is read once per call and converted to float next to its use.
//
// Every output is computed in one fixed order, whatever the number of rows, the tile,
// the thread or the path: eight float lanes, lane l accumulating by FMA the products
// at k = 8c + l of every whole group c of eight values; the lanes summed in a fixed
// order (`Sum`), then the products past the last whole group one by one, and the total
// times the weight's scale. So a row's result does not depend on the other rows of the
// batch, and the paths agree bit for bit.

template <class X>
struct Products {
  const X* x;
  const int8_t* w;
  const float* scale;
  float* y;
  int64_t rows, outputs, depth;
};
using Product = Products<float>;

// One output from its eight lanes: their sum, the tail of k, the weight's scale.
float Finish(const Product& p, Lanes lanes, int64_t r, int64_t m) {
  float sum = Sum(lanes);
  for (int64_t k = p.depth - p.depth % kLanes; k < p.depth; ++k)
    sum = std::fma(p.x[r * p.depth + k], float(p.w[m * p.depth + k]), sum);
  return sum * p.scale[m];
}

// The paths, each a `Tile<ROWS, OUTS>(p, r, m)`: ROWS activation rows times OUTS
// weight rows from (r, m), ROWS * OUTS accumulators in registers, each weight vector
// converted once for all rows. A tile reads OUTS weight rows side by side, which the
// CPU's own prefetchers follow poorly, so it prefetches the next tile's rows in address
// order as it goes (a third faster on one row, where memory sets the pace).
// `kOuts[ROWS]`: its widest tile for ROWS rows (one row alone is bound by memory:
// more weight rows at once); narrower ones take pairs, then single outputs.

// The build's own vector unit (`Lanes`): AVX2 on x86-64, portable code elsewhere.
struct Baseline {
  using Single = Baseline;
  static constexpr int kOuts[5] = {0, 8, 2, 2, 2};

  template <int ROWS, int OUTS>
  static void Tile(const Product& p, int64_t r, int64_t m) {
    const int64_t body = p.depth - p.depth % kLanes;
    Lanes acc[ROWS][OUTS];
    for (int i = 0; i < ROWS; ++i)
      for (int j = 0; j < OUTS; ++j) acc[i][j] = Zero();
    const float* x = p.x + r * p.depth;
    const int8_t* w = p.w + m * p.depth;
    const char* next = reinterpret_cast<const char*>(w + OUTS * p.depth);
    for (int64_t k = 0; k < body; k += kLanes) {
      __builtin_prefetch(next + k * OUTS);
      Lanes xv[ROWS];
      for (int i = 0; i < ROWS; ++i) {
        xv[i] = LoadX(x + i * p.depth + k);
        InRegister(xv[i]);
      }
      for (int j = 0; j < OUTS; ++j) {
        Lanes wv = LoadW(w + j * p.depth + k);
        for (int i = 0; i < ROWS; ++i) acc[i][j] = Fma(xv[i], wv, acc[i][j]);
      }
    }
    for (int i = 0; i < ROWS; ++i)
      for (int j = 0; j < OUTS; ++j)
        p.y[(r + i) * p.outputs + m + j] = Finish(p, acc[i][j], r + i, m + j);
  }
};

#if defined(__AVX2__) && defined(__FMA__)

// AVX-512: each 16-lane vector holds the eight lanes of two outputs side by side (the
// activations' eight values twice, two weight rows' eight bytes), so one FMA does two
// outputs' work in the baseline's own order: twice the AVX2 FMA's width. Compiled for
// AVX-512 by its attribute alone; the build's baseline stays AVX2.
struct Avx512 {
  using Single = Baseline;
  static constexpr int kOuts[5] = {0, 8, 8, 8, 8};

  template <int ROWS, int OUTS>
  __attribute__((target("avx512f"))) static void Tile(const Product& p, int64_t r,
                                                      int64_t m) {
    static_assert(OUTS % 2 == 0, "outputs go in pairs");
    constexpr int kPairs = OUTS / 2;
    const int64_t body = p.depth - p.depth % kLanes;
    __m512 acc[ROWS][kPairs];
    for (auto& row : acc)
      for (auto& v : row) v = _mm512_setzero_ps();
    const float* x = p.x + r * p.depth;
    const int8_t* w = p.w + m * p.depth;
    const char* next = reinterpret_cast<const char*>(w + OUTS * p.depth);
    for (int64_t k = 0; k < body; k += kLanes) {
      __builtin_prefetch(next + k * OUTS);
      __m512 xv[ROWS];
      for (int i = 0; i < ROWS; ++i) {
        xv[i] = _mm512_castpd_ps(_mm512_broadcast_f64x4(
            _mm256_castps_pd(_mm256_loadu_ps(x + i * p.depth + k))));
        asm("" : "+v"(xv[i]));  // in a register, as `InRegister` does
      }
      for (int q = 0; q < kPairs; ++q) {
        int64_t first, second;
        __builtin_memcpy(&first, w + 2 * q * p.depth + k, 8);
        __builtin_memcpy(&second, w + (2 * q + 1) * p.depth + k, 8);
        const __m512 wv = _mm512_cvtepi32_ps(
            _mm512_cvtepi8_epi32(_mm_set_epi64x(second, first)));
        for (int i = 0; i < ROWS; ++i) acc[i][q] = _mm512_fmadd_ps(xv[i], wv, acc[i][q]);
      }
    }
    for (int i = 0; i < ROWS; ++i) {
      for (int q = 0; q < kPairs; ++q) {
        const __m512d pair = _mm512_castps_pd(acc[i][q]);
        const int64_t row = r + i, out = m + 2 * q;
        p.y[row * p.outputs + out] =
            Finish(p, _mm256_castpd_ps(_mm512_castpd512_pd256(pair)), row, out);
        p.y[row * p.outputs + out + 1] =
            Finish(p, _mm256_castpd_ps(_mm512_extractf64x4_pd(pair, 1)), row, out + 1);
      }
    }
  }
};

#endif

// ROWS rows times the outputs [begin, end): the path's widest tiles, then pairs, then
// single outputs (`Path::Single`'s: the same order).
template <class Path, int ROWS, class Work>
void RowBlock(const Work& p, int64_t r, int64_t begin, int64_t end) {
  constexpr int kOuts = Path::kOuts[ROWS];
  int64_t m = begin;
  for (; m + kOuts <= end; m += kOuts) Path::template Tile<ROWS, kOuts>(p, r, m);
  for (; m + 2 <= end; m += 2) Path::template Tile<ROWS, 2>(p, r, m);
  for (; m < end; ++m) Path::Single::template Tile<ROWS, 1>(p, r, m);
}

// All rows times the outputs [begin, end), four rows at a time: the range's weights
// (a chunk, about 64 KB) stay in the CPU's cache while every row block goes over them.
template <class Path, class Work>
void OutputRange(const Work& p, int64_t begin, int64_t end) {
  int64_t r = 0;
  for (; r + 4 <= p.rows; r += 4) RowBlock<Path, 4>(p, r, begin, end);
  switch (p.rows - r) {
    case 3: RowBlock<Path, 3>(p, r, begin, end); break;
    case 2: RowBlock<Path, 2>(p, r, begin, end); break;
    case 1: RowBlock<Path, 1>(p, r, begin, end); break;
  }
}

// bfloat16 products ------------------------------------------------------------------
//
// y[r, m] = scale[m] * sum_k x[r, k] * w[m, k] for bfloat16 x (the activations of a
// prefill pass, rounded by `cpu_kernels.int8_matmul` when asked) and int8 w. Where the
// CPU has AVX512_BF16, one instruction (vdpbf16ps) does 32 multiply-adds where a float
// FMA does 16. An int8 weight is exact in bfloat16, and the product of two bfloat16
// values is exact in float32: only the sums round.
//
// The fixed order is vdpbf16ps's own, as Intel defines it (AMD's Zen 4 agreed on 32
// million sums): 16 lanes, lane i taking from each whole block of 32 values the
// products at 2i + 1 and then 2i, each by a rounded FMA; lanes i and i + 8 added and
// those eight summed as `Sum` does; the products past the last whole block one by
// one; the total times the scale. The instruction takes denormal inputs as zero and
// flushes denormal sums to zero, as an FMA does in XLA's threads (they run with FTZ
// and DAZ set): so plain FMAs, the other paths, compute the same bits. That emulation
// is slower than the float32 products: prefill asks for bfloat16 products by default
// only where the path is vdpbf16ps (`bf16_native`, `sampler.bfloat16_prefill`).
//
// vdpbf16ps reads the weights of each thread's chunk in bfloat16, converted once per
// call into a panel that every row block then reads: converting next to each use would
// cost more than the products. The emulation splits the activations' pairs once per
// row block instead, and the weights' next to their use, as the float products do.

constexpr int64_t kBlock = 32;  // bfloat16 values per vdpbf16ps

using Bf16Product = Products<uint16_t>;

// A row block's activations as the emulation reads them: of each half block (16
// values), the eight odd values as floats, then the eight even ones.
struct SplitRows {
  int64_t first = -1, rows = 0;
  std::vector<float> values;  // [rows, depth]
};

// The outputs [begin, end) of a product, their weights as the path reads them (`W`:
// bfloat16 in a panel, or the int8 weights themselves), `depth` apart.
template <class W>
struct Panel : Bf16Product {
  const W* weights;
  int64_t begin;
  SplitRows* split;  // the emulation's (null for vdpbf16ps)

  const W* Row(int64_t m) const { return weights + (m - begin) * depth; }
};

inline float Bf16ToFloat(uint16_t v) {
  const uint32_t bits = uint32_t(v) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// One output from the sum of its lanes: the tail of k, the weight's scale.
float FinishBf16(const Bf16Product& p, float sum, int64_t r, int64_t m) {
  const uint16_t* x = p.x + r * p.depth;
  const int8_t* w = p.w + m * p.depth;
  for (int64_t k = p.depth - p.depth % kBlock; k < p.depth; ++k)
    sum = std::fma(Bf16ToFloat(x[k]), float(w[k]), sum);
  return sum * p.scale[m];
}

// Eight pairs, as float lanes: their odd values and their even ones.
#if defined(__AVX2__) && defined(__FMA__)
inline void LoadPairs(const uint16_t* p, Lanes& odd, Lanes& even) {
  // A pair of bfloat16 is a float's upper half (odd) and lower half (even).
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(-65536)));
  even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
inline void LoadPairs(const int8_t* p, Lanes& odd, Lanes& even) {
  // As 16-bit integers, a pair is a 32-bit one's upper half (odd) and lower half.
  const __m256i v =
      _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  odd = _mm256_cvtepi32_ps(_mm256_srai_epi32(v, 16));
  even = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(v, 16), 16));
}
#else
inline void LoadPairs(const uint16_t* p, Lanes& odd, Lanes& even) {
  for (int i = 0; i < 8; ++i) {
    odd[i] = Bf16ToFloat(p[2 * i + 1]);
    even[i] = Bf16ToFloat(p[2 * i]);
  }
}
inline void LoadPairs(const int8_t* p, Lanes& odd, Lanes& even) {
  for (int i = 0; i < 8; ++i) {
    odd[i] = p[2 * i + 1];
    even[i] = p[2 * i];
  }
}
#endif

// vdpbf16ps's order by FMAs on the build's own vector unit: the 16 lanes as two
// vectors of eight, one for the first half of each block and one for the second. A
// lane sees only its own values, so each half goes over all the blocks in turn.
struct BaselineBf16 {
  using Single = BaselineBf16;
  using Weight = int8_t;
  static constexpr int kOuts[5] = {0, 2, 2, 2, 2};

  // The row block's activations split (`SplitRows`), once for all its weight tiles.
  static const float* Split(const Panel<int8_t>& p, int64_t r, int rows) {
    SplitRows& split = *p.split;
    if (split.first != r || split.rows != rows) {
      split.first = r;
      split.rows = rows;
      split.values.resize(rows * p.depth);
      const int64_t body = p.depth - p.depth % kBlock;
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t k = 0; k < body; k += kBlock / 2) {
          Lanes odd, even;
          LoadPairs(p.x + (r + i) * p.depth + k, odd, even);
          Store(split.values.data() + i * p.depth + k, odd);
          Store(split.values.data() + i * p.depth + k + 8, even);
        }
      }
    }
    return split.values.data();
  }

  template <int ROWS, int OUTS>
  static void Tile(const Panel<int8_t>& p, int64_t r, int64_t m) {
    const int64_t body = p.depth - p.depth % kBlock;
    const float* x = Split(p, r, ROWS);
    const int8_t* w = p.Row(m);
    Lanes halves[2][ROWS][OUTS];
    for (int half = 0; half < 2; ++half) {
      Lanes acc[ROWS][OUTS];
      for (auto& row : acc)
        for (auto& v : row) v = Zero();
      for (int64_t k = half * kBlock / 2; k < body; k += kBlock) {
        for (int j = 0; j < OUTS; ++j) {
          Lanes w_odd, w_even;
          LoadPairs(w + j * p.depth + k, w_odd, w_even);
          for (int i = 0; i < ROWS; ++i) {
            const float* pairs = x + i * p.depth + k;
            acc[i][j] =
                Fma(LoadX(pairs + 8), w_even, Fma(LoadX(pairs), w_odd, acc[i][j]));
          }
        }
      }
      for (int i = 0; i < ROWS; ++i)
        for (int j = 0; j < OUTS; ++j) halves[half][i][j] = acc[i][j];
    }
    for (int i = 0; i < ROWS; ++i)
      for (int j = 0; j < OUTS; ++j)
        p.y[(r + i) * p.outputs + m + j] =
            FinishBf16(p, Sum(Add(halves[0][i][j], halves[1][i][j])), r + i, m + j);
  }
};

#if defined(__AVX2__) && defined(__FMA__)

// The sums of 16 vectors of 16 lanes, each in the order of the other paths (lanes i
// and i + 8 added, then i and i + 4, i and i + 2, i and i + 1: halves folded onto each
// other), in one vector: lane 4 * (n % 4) + n / 4 holds vector n's. Three
// instructions per sum, where folding one vector at a time takes about ten.
__attribute__((target("avx512f"))) inline __m512 SumSixteen(const __m512 (&v)[16]) {
  __m512 halves[8], quarters[4], pairs[2];
  for (int n = 0; n < 8; ++n)  // [v 2n folded to 8 lanes, v 2n+1 folded to 8]
    halves[n] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * n], v[2 * n + 1], 0x44),
                              _mm512_shuffle_f32x4(v[2 * n], v[2 * n + 1], 0xEE));
  for (int n = 0; n < 4; ++n)  // 128-bit quarter q: v 4n+q folded to 4 lanes
    quarters[n] =
        _mm512_add_ps(_mm512_shuffle_f32x4(halves[2 * n], halves[2 * n + 1], 0x88),
                      _mm512_shuffle_f32x4(halves[2 * n], halves[2 * n + 1], 0xDD));
  for (int n = 0; n < 2; ++n)  // quarter q: v 8n+q, then v 8n+4+q, in two lanes each
    pairs[n] = _mm512_add_ps(_mm512_shuffle_ps(quarters[2 * n], quarters[2 * n + 1], 0x44),
                             _mm512_shuffle_ps(quarters[2 * n], quarters[2 * n + 1], 0xEE));
  // quarter q: v q, v 4+q, v 8+q, v 12+q
  return _mm512_add_ps(_mm512_shuffle_ps(pairs[0], pairs[1], 0x88),
                       _mm512_shuffle_ps(pairs[0], pairs[1], 0xDD));
}

// vdpbf16ps itself: a block of 32 values of a row and of a weight per instruction.
struct Avx512Bf16 {
  using Single = Avx512Bf16;
  using Weight = uint16_t;
  static constexpr int kOuts[5] = {0, 4, 4, 4, 4};

  // The weights in bfloat16 (exact: small integers).
  __attribute__((target("avx512f,avx512bf16"))) static void Convert(const int8_t* w,
                                                                      uint16_t* panel,
                                                                      int64_t outputs,
                                                                      int64_t depth) {
    const int64_t n = outputs * depth;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      const __m512 low = _mm512_cvtepi32_ps(
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i))));
      const __m512 high = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i + 16))));
      _mm512_storeu_si512(panel + i, __m512i(_mm512_cvtne2ps_pbh(high, low)));
    }
    for (; i < n; ++i) {
      const float value = w[i];
      uint32_t bits;
      std::memcpy(&bits, &value, sizeof bits);
      panel[i] = uint16_t(bits >> 16);
    }
  }

  template <int ROWS, int OUTS>
  __attribute__((target("avx512f,avx512bf16"))) static void Tile(const Panel<uint16_t>& p,
                                                                  int64_t r, int64_t m) {
    const int64_t body = p.depth - p.depth % kBlock;
    __m512 acc[ROWS][OUTS];
    for (auto& row : acc)
      for (auto& v : row) v = _mm512_setzero_ps();
    const uint16_t* x = p.x + r * p.depth;
    const uint16_t* w = p.Row(m);
    for (int64_t k = 0; k < body; k += kBlock) {
      __m512i xv[ROWS];
      for (int i = 0; i < ROWS; ++i) {
        xv[i] = _mm512_loadu_si512(x + i * p.depth + k);
        asm("" : "+v"(xv[i]));  // in a register, as `InRegister` does
      }
      for (int j = 0; j < OUTS; ++j) {
        const __m512i wv = _mm512_loadu_si512(w + j * p.depth + k);
        for (int i = 0; i < ROWS; ++i)
          acc[i][j] = _mm512_dpbf16_ps(acc[i][j], __m512bh(xv[i]), __m512bh(wv));
      }
    }
    alignas(64) float sums[ROWS * OUTS];  // sums[OUTS * i + j]: row i, output j
    if constexpr (ROWS * OUTS == 16) {
      alignas(64) float folded[16];
      _mm512_store_ps(folded, SumSixteen(reinterpret_cast<const __m512(&)[16]>(acc)));
      for (int n = 0; n < 16; ++n) sums[n] = folded[4 * (n % 4) + n / 4];
    } else {
      for (int n = 0; n < ROWS * OUTS; ++n) {
        const __m512 v = acc[n / OUTS][n % OUTS];
        sums[n] = Sum(_mm256_add_ps(
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
      }
    }
    for (int i = 0; i < ROWS; ++i)
      for (int j = 0; j < OUTS; ++j)
        p.y[(r + i) * p.outputs + m + j] =
            FinishBf16(p, sums[OUTS * i + j], r + i, m + j);
  }
};

#endif

// The outputs [begin, end) of a bfloat16 product: every row over their weights, as
// the path reads them.
template <class Path>
void Bf16OutputRange(const Bf16Product& p, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<typename Path::Weight, int8_t>) {
    SplitRows split;
    OutputRange<Path>(Panel<int8_t>{p, p.w + begin * p.depth, begin, &split}, begin, end);
  } else {
    thread_local std::vector<typename Path::Weight> weights;
    weights.resize((end - begin) * p.depth);
    Path::Convert(p.w + begin * p.depth, weights.data(), end - begin, p.depth);
    OutputRange<Path>(Panel<uint16_t>{p, weights.data(), begin, nullptr}, begin, end);
  }
}

struct Int8Path {
  const char* name;
  void (*run)(const Product&, int64_t begin, int64_t end);
  void (*run_bf16)(const Bf16Product&, int64_t begin, int64_t end);
  bool supported;  // by this CPU
  bool bf16_native;  // run_bf16 is vdpbf16ps, not its emulation
};

// The paths this build has, fastest first.
std::vector<Int8Path> Int8Paths() {
  std::vector<Int8Path> paths;
#if defined(__AVX2__) && defined(__FMA__)
  __builtin_cpu_init();
  // An AVX-512 CPU without AVX512_BF16 (before Cooper Lake and Zen 4) emulates it.
  const bool bf16 = __builtin_cpu_supports("avx512bf16") != 0;
  paths.push_back({"avx512", OutputRange<Avx512>,
                   bf16 ? Bf16OutputRange<Avx512Bf16> : Bf16OutputRange<BaselineBf16>,
                   __builtin_cpu_supports("avx512f") != 0, bf16});
  paths.push_back(
      {"avx2", OutputRange<Baseline>, Bf16OutputRange<BaselineBf16>, true, false});
#else
  paths.push_back(
      {"portable", OutputRange<Baseline>, Bf16OutputRange<BaselineBf16>, true, false});
#endif
  return paths;
}

// The path int8 products take: the fastest this CPU runs, or the one named by the
// environment variable GEMMA_STUDIO_INT8_PATH (read at every call, so that a test can
// compare the paths in one process). nullptr: it names no path this CPU runs.
const Int8Path* ChooseInt8Path() {
  static const std::vector<Int8Path> paths = Int8Paths();
  const char* wanted = std::getenv("GEMMA_STUDIO_INT8_PATH");
  for (const Int8Path& path : paths) {
    if (path.supported &&
        (wanted == nullptr || *wanted == '\0' || std::strcmp(wanted, path.name) == 0))
      return &path;
  }
  return nullptr;
}

// Runs body(i) for every i < items on the calling thread and on tasks of XLA's thread
// pool, which take items in turn. The caller waits only for items already started,
// never for a task to start: a pool busy elsewhere cannot deadlock it. The caller
// counts as one of the pool's threads: one task per core in all. A task more than
// there are cores gets preempted holding an item, and everyone waits for it (on 2
// cores, 2 tasks besides the caller ran as slowly as none).
void ParallelFor(ffi::ThreadPool& pool, int64_t items,
                 const std::function<void(int64_t)>& body) {
  struct Shared {
    std::function<void(int64_t)> body;
    int64_t items;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    void Run() {
      for (int64_t i; (i = next.fetch_add(1)) < items;) {
        body(i);
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  // Shared: a task that starts after the call returned finds no item left in it.
  auto shared = std::make_shared<Shared>();
  shared->body = body;
  shared->items = items;
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, items - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([shared] { shared->Run(); });
  shared->Run();
  while (shared->done.load(std::memory_order_acquire) < items) {
    std::this_thread::yield();
  }
}

void Run(const Int8Path& path, const Product& p, int64_t begin, int64_t end) {
  path.run(p, begin, end);
}
void Run(const Int8Path& path, const Bf16Product& p, int64_t begin, int64_t end) {
  path.run_bf16(p, begin, end);
}

// The outputs go in chunks of about 64 KB of weights, one item each. The weight is
// layer `layer` of a stack [L, M, K]: a model scanned over its layers keeps each
// weight stacked, and reads a layer where it lies rather than copying it out. X:
// float32 activations, or bfloat16 ones (`Bf16Product`).
template <ffi::DataType X>
ffi::Error Int8MatmulImpl(ffi::ThreadPool pool, ffi::Buffer<X> x, ffi::Buffer<ffi::S8> w,
                          ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::S32> layer,
                          ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 3 || xd[1] != wd[2] ||
      scale.element_count() != size_t(wd[0] * wd[1]) || layer.element_count() != 1) {
    return ffi::Error::InvalidArgument(
        "int8_matmul takes x [R, K], w [L, M, K], scale [L, M] and a layer < L");
  }
  const int64_t l = layer.typed_data()[0], outputs = wd[1], depth = wd[2];
  if (l < 0 || l >= wd[0]) {
    return ffi::Error::InvalidArgument("int8_matmul: the layer is outside the stack");
  }
  const Int8Path* path = ChooseInt8Path();
  if (path == nullptr) {
    return ffi::Error::InvalidArgument(
        "GEMMA_STUDIO_INT8_PATH names no int8 path this CPU runs");
  }
  const Products<ffi::NativeType<X>> product = {x.typed_data(),
                                                w.typed_data() + l * outputs * depth,
                                                scale.typed_data() + l * outputs,
                                                y->typed_data(),
                                                xd[0],
                                                outputs,
                                                depth};
  int64_t chunk = std::max<int64_t>(8, (int64_t(1) << 16) / std::max<int64_t>(depth, 1));
  chunk += (-chunk) & 7;  // a multiple of the widest tile
  ParallelFor(pool, (outputs + chunk - 1) / chunk, [&](int64_t c) {
    Run(*path, product, c * chunk, std::min(c * chunk + chunk, outputs));
  });
  return ffi::Error::Success();
}

// Statistics of a stretch of one row of logits: its largest value, the first index
// that holds it, and the sum of exp(value - largest).
struct Stats {
  float max;
  int64_t argmax;
  float sum;
};

Stats StretchStats(const float* v, int64_t begin, int64_t end) {
  const int64_t body = begin + (end - begin) / kLanes * kLanes;
  Lanes top = Splat(-INFINITY);
  for (int64_t i = begin; i < body; i += kLanes) top = Max(top, LoadX(v + i));
  float max = -INFINITY;
  for (int i = 0; i < kLanes; ++i) max = std::max(max, Get(top, i));
  for (int64_t i = body; i < end; ++i) max = std::max(max, v[i]);
  int64_t argmax = begin;
  while (argmax < end && v[argmax] != max) ++argmax;
  Lanes sum = Zero();
  const Lanes shift = Splat(max);
  for (int64_t i = begin; i < body; i += kLanes)
    sum = Add(sum, Exp(LoadX(v + i) - shift));
  float total = Sum(sum);
  for (int64_t i = body; i < end; ++i) total += std::exp(v[i] - max);
  return {max, argmax, total};
}

// Per row of logits [R, V]: the index of its largest value (the first, as argmax)
// and log(sum(exp)), so that a token's log-probability is its logit minus that. A row
// is cut in stretches of kStretch values, shared out between threads and combined
// in a fixed order: a row's result does not depend on the threads or the other rows.
constexpr int64_t kStretch = 16384;

ffi::Error LogitStatsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> logits,
                          ffi::ResultBuffer<ffi::S32> argmax,
                          ffi::ResultBuffer<ffi::F32> logsumexp) {
  auto dims = logits.dimensions();
  if (dims.size() != 2 || dims[1] == 0) {
    return ffi::Error::InvalidArgument("logit_stats takes logits [R, V], V > 0");
  }
  const int64_t rows = dims[0], vocab = dims[1];
  const int64_t stretches = (vocab + kStretch - 1) / kStretch;
  std::vector<Stats> parts(rows * stretches);
  const float* v = logits.typed_data();
  ParallelFor(pool, rows * stretches, [&](int64_t i) {
    const int64_t row = i / stretches, begin = i % stretches * kStretch;
    parts[i] = StretchStats(v + row * vocab, begin, std::min(begin + kStretch, vocab));
  });
  for (int64_t row = 0; row < rows; ++row) {
    const Stats* part = &parts[row * stretches];
    Stats best = part[0];
    for (int64_t s = 1; s < stretches; ++s)
      if (part[s].max > best.max) best = part[s];
    float total = 0;
    for (int64_t s = 0; s < stretches; ++s)
      total += part[s].sum * std::exp(part[s].max - best.max);
    argmax->typed_data()[row] = int32_t(best.argmax);
    logsumexp->typed_data()[row] = best.max + std::log(total);
  }
  return ffi::Error::Success();
}

// Sum of a[i] * b[i] for i < n (b float, or half-precision from a float16 cache):
// eight lanes by FMA, summed in a fixed order, then the tail.
template <class T>
float Dot(const float* a, const T* b, int64_t n) {
  const int64_t body = n - n % kLanes;
  Lanes acc = Zero();
  for (int64_t i = 0; i < body; i += kLanes) acc = Fma(LoadX(a + i), LoadX(b + i), acc);
  float sum = Sum(acc);
  for (int64_t i = body; i < n; ++i) sum = std::fma(a[i], AsFloat(b[i]), sum);
  return sum;
}

// One decode step's attention: every row's single query against the keys its cache
// holds and its own new key. Only the slots that hold visible keys are read, so a row
// early in its answer reads little of a long cache, which XLA's fixed-shape products
// read whole. The slots are cut in parts of kSlotsPerPart, each a task of its own (a
// long cache is read by both cores even for one row), and the parts' softmax sums are
// combined in a fixed order: a row's result does not depend on the other rows.
constexpr int64_t kSlotsPerPart = 512;

// `Cache`: the element type of the cached keys and values, float or half-precision
// (uint16_t, a float16 cache: half the bytes to hold and to read).
template <class Cache>
struct Attention {
  const float* q;       // [B, K, G, H], after RoPE and the query scale
  const float* k_new;   // [B, K, H], this step's key (after RoPE)
  const float* v_new;   // [B, K, H]
  const Cache* keys;    // [B, S, K, H], the cache's layer
  const Cache* values;  // [B, K, H, S]
  const int32_t* key_positions;  // [B, S], -1 for none
  const int32_t* positions;      // [B], the query's position, -1 for a free row
  float* out;                    // [B, K, G, H]
  int64_t slots, kv_heads, groups, head_dim;
  int64_t window;  // 0: none
  float soft_cap;  // 0: none
  // Per (row, kv head, part): for each query its largest logit, the sum of
  // exp(logit - largest) (0: no visible key) and the values weighted by those.
  std::vector<float> partials;

  int64_t parts() const { return (slots + kSlotsPerPart - 1) / kSlotsPerPart; }
  int64_t PartialSize() const { return groups * (2 + head_dim); }

  float Cap(float logit) const {
    return soft_cap > 0 ? std::tanh(logit / soft_cap) * soft_cap : logit;
  }

  bool Visible(int32_t key, int32_t query) const {
    return key >= 0 && key <= query && (window == 0 || query - key < window);
  }

  // Row b, kv head h, the visible keys among slots [part * kSlotsPerPart, ...).
  void Part(int64_t b, int64_t h, int64_t part, std::vector<float>& scores) {
    const int64_t S = slots, H = head_dim, G = groups, head = b * kv_heads + h;
    float* partial = &partials[(head * parts() + part) * PartialSize()];
    float *max = partial, *sum = partial + G, *weighted = partial + 2 * G;
    std::fill(sum, sum + G, 0.0f);
    const int32_t query = positions[b];
    const int32_t* kp = key_positions + b * S;
    int64_t lo = part * kSlotsPerPart, hi = std::min(lo + kSlotsPerPart, S);
    while (lo < hi && !Visible(kp[lo], query)) ++lo;
    while (hi > lo && !Visible(kp[hi - 1], query)) --hi;
    const int64_t n = hi - lo;
    if (query < 0 || n == 0) return;
    scores.resize(G * n);
    const float* qh = q + head * G * H;
    for (int64_t s = lo; s < hi; ++s) {
      const Cache* key = keys + ((b * S + s) * kv_heads + h) * H;
      const bool visible = Visible(kp[s], query);
      for (int64_t g = 0; g < G; ++g)
        scores[g * n + s - lo] = visible ? Cap(Dot(qh + g * H, key, H)) : -INFINITY;
    }
    for (int64_t g = 0; g < G; ++g) {
      // The stretch starts and ends with visible keys, so the largest score is finite;
      // a hidden one between gets e^-87 (about 1e-38) from Exp, nothing next to 1.
      float* row = &scores[g * n];
      max[g] = *std::max_element(row, row + n);
      const int64_t body = n - n % kLanes;
      Lanes total = Zero();
      for (int64_t s = 0; s < body; s += kLanes) {
        Lanes e = Exp(LoadX(row + s) - Splat(max[g]));
        __builtin_memcpy(row + s, &e, sizeof e);
        total = Add(total, e);
      }
      sum[g] = Sum(total);
      for (int64_t s = body; s < n; ++s) sum[g] += row[s] = std::exp(row[s] - max[g]);
    }
    const Cache* v = values + head * H * S + lo;
    for (int64_t d = 0; d < H; ++d)
      for (int64_t g = 0; g < G; ++g) weighted[g * H + d] = Dot(&scores[g * n], v + d * S, n);
  }

  // Row b, kv head h: the own key's score, then the parts in order, normalized.
  void Combine(int64_t b, int64_t h) const {
    const int64_t H = head_dim, G = groups, head = b * kv_heads + h;
    float* o = out + head * G * H;
    if (positions[b] < 0) {  // a free row: its token is never used
      std::fill(o, o + G * H, 0.0f);
      return;
    }
    const float* qh = q + head * G * H;
    const float* vn = v_new + head * H;
    for (int64_t g = 0; g < G; ++g) {
      const float own = Cap(Dot(qh + g * H, k_new + head * H, H));
      float max = own;
      for (int64_t part = 0; part < parts(); ++part) {
        const float* partial = &partials[(head * parts() + part) * PartialSize()];
        if (partial[G + g] > 0) max = std::max(max, partial[g]);
      }
      float* og = o + g * H;
      float total = std::exp(own - max);
      for (int64_t d = 0; d < H; ++d) og[d] = total * vn[d];
      for (int64_t part = 0; part < parts(); ++part) {
        const float* partial = &partials[(head * parts() + part) * PartialSize()];
        if (partial[G + g] == 0) continue;
        const float factor = std::exp(partial[g] - max);
        total += partial[G + g] * factor;
        const float* weighted = partial + 2 * G + g * H;
        for (int64_t d = 0; d < H; ++d) og[d] = std::fma(weighted[d], factor, og[d]);
      }
      for (int64_t d = 0; d < H; ++d) og[d] /= total;
    }
  }
};

// The step's attention over a cache of `Cache` elements: a task per (row, kv head,
// part of the slots), then each (row, kv head) combined in order.
template <class Cache>
void Attend(ffi::ThreadPool& pool, ffi::Buffer<ffi::F32>& q,
            ffi::Buffer<ffi::F32>& k_new, ffi::Buffer<ffi::F32>& v_new,
            ffi::AnyBuffer& keys, ffi::AnyBuffer& values, int64_t layer,
            ffi::Buffer<ffi::S32>& key_positions, ffi::Buffer<ffi::S32>& positions,
            ffi::ResultBuffer<ffi::F32>& out, int64_t window, float soft_cap) {
  auto qd = q.dimensions();
  const int64_t rows = qd[0], kv_heads = qd[1];
  const int64_t layer_size = keys.element_count() / keys.dimensions()[0];
  Attention<Cache> attention = {
      q.typed_data(),
      k_new.typed_data(),
      v_new.typed_data(),
      static_cast<const Cache*>(keys.untyped_data()) + layer * layer_size,
      static_cast<const Cache*>(values.untyped_data()) + layer * layer_size,
      key_positions.typed_data(),
      positions.typed_data(),
      out->typed_data(),
      /*slots=*/keys.dimensions()[2],
      kv_heads,
      /*groups=*/qd[2],
      /*head_dim=*/qd[3],
      window,
      soft_cap};
  const int64_t heads = rows * kv_heads, parts = attention.parts();
  attention.partials.resize(heads * parts * attention.PartialSize());
  ParallelFor(pool, heads * parts, [&](int64_t i) {
    thread_local std::vector<float> scores;
    attention.Part(i / parts / kv_heads, i / parts % kv_heads, i % parts, scores);
  });
  for (int64_t i = 0; i < heads; ++i) attention.Combine(i / kv_heads, i % kv_heads);
}

// The cache's keys and values are stacks over layers, [L, B, S, K, H] and
// [L, B, K, H, S]; the step reads layer `layer` where it lies.
ffi::Error DecodeAttentionImpl(
    ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k_new,
    ffi::Buffer<ffi::F32> v_new, ffi::AnyBuffer keys, ffi::AnyBuffer values,
    ffi::Buffer<ffi::S32> layer, ffi::Buffer<ffi::S32> key_positions,
    ffi::Buffer<ffi::S32> positions, ffi::ResultBuffer<ffi::F32> out, int64_t window,
    float soft_cap) {
  auto qd = q.dimensions(), kd = keys.dimensions();
  const ffi::DataType cache_type = keys.element_type();
  if (qd.size() != 4 || kd.size() != 5 || kd[1] != qd[0] || kd[3] != qd[1] ||
      kd[4] != qd[3] || values.element_count() != keys.element_count() ||
      values.element_type() != cache_type ||
      (cache_type != ffi::DataType::F32 && cache_type != ffi::DataType::F16) ||
      k_new.element_count() != size_t(qd[0] * qd[1] * qd[3]) ||
      v_new.element_count() != k_new.element_count() ||
      layer.element_count() != 1 ||
      key_positions.element_count() != size_t(kd[1] * kd[2]) ||
      positions.element_count() != size_t(qd[0])) {
    return ffi::Error::InvalidArgument(
        "decode_attention takes q [B, K, G, H], k_new and v_new [B, K, H], keys "
        "[L, B, S, K, H] and values [L, B, K, H, S] of one type (float32 or "
        "float16), a layer < L, key_positions [B, S], positions [B]");
  }
  const int64_t l = layer.typed_data()[0];
  if (l < 0 || l >= kd[0]) {
    return ffi::Error::InvalidArgument("decode_attention: the layer is outside the stack");
  }
  if (cache_type == ffi::DataType::F16) {
    Attend<uint16_t>(pool, q, k_new, v_new, keys, values, l, key_positions, positions,
                     out, window, soft_cap);
  } else {
    Attend<float>(pool, q, k_new, v_new, keys, values, l, key_positions, positions,
                  out, window, soft_cap);
  }
  return ffi::Error::Success();
}

}  // namespace

namespace {
template <ffi::DataType X>
auto BindInt8Matmul() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<X>>()
      .template Arg<ffi::Buffer<ffi::S8>>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::S32>>()
      .template Ret<ffi::Buffer<ffi::F32>>();
}
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(Int8Matmul, Int8MatmulImpl<ffi::F32>,
                              BindInt8Matmul<ffi::F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(Int8MatmulBf16, Int8MatmulImpl<ffi::BF16>,
                              BindInt8Matmul<ffi::BF16>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(DecodeAttention, DecodeAttentionImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("window")
                                  .Attr<float>("soft_cap"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LogitStats, LogitStatsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// The module `model_service._cpu_kernels`: `handlers()` -> {name: PyCapsule}, what
// jax.ffi.register_ffi_target takes.
namespace {

// The int8 products' path on this CPU and environment, by name (None: the environment
// names a path this CPU does not run).
PyObject* Int8PathName(PyObject*, PyObject*) {
  const Int8Path* path = ChooseInt8Path();
  if (path == nullptr) Py_RETURN_NONE;
  return PyUnicode_FromString(path->name);
}

// Whether that path multiplies bfloat16 natively (False for none).
PyObject* Bf16Native(PyObject*, PyObject*) {
  const Int8Path* path = ChooseInt8Path();
  return PyBool_FromLong(path != nullptr && path->bf16_native);
}

PyObject* Handlers(PyObject*, PyObject*) {
  return Py_BuildValue(
      "{s:N,s:N,s:N,s:N}", "int8_matmul",
      PyCapsule_New(reinterpret_cast<void*>(Int8Matmul), nullptr, nullptr),
      "int8_matmul_bf16",
      PyCapsule_New(reinterpret_cast<void*>(Int8MatmulBf16), nullptr, nullptr),
      "logit_stats",
      PyCapsule_New(reinterpret_cast<void*>(LogitStats), nullptr, nullptr),
      "decode_attention",
      PyCapsule_New(reinterpret_cast<void*>(DecodeAttention), nullptr, nullptr));
}

PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "The XLA FFI handlers, by name."},
    {"int8_path", Int8PathName, METH_NOARGS, "The int8 products' path, by name."},
    {"bf16_native", Bf16Native, METH_NOARGS,
     "Whether that path multiplies bfloat16 natively."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_cpu_kernels",
                       "XLA FFI handlers of model_service/cpu_kernels.cc", -1,
                       kMethods};

}  // namespace

PyMODINIT_FUNC PyInit__cpu_kernels() { return PyModule_Create(&kModule); }
