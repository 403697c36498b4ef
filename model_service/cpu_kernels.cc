// int8 weights times float activations on a CPU, for a decode step (few rows).
//
// y[r, m] = scale[m] * sum_k x[r, k] * w[m, k], for x float32 [R, K], w int8 [M, K]
// and scale float32 [M]: the product that `model_service.layers` sends here for up to
// MAX_ROWS_IN_KERNEL rows. Each weight byte is read from memory once per call and
// converted to float next to its use, so a step reads a quarter of the float bytes;
// XLA on a CPU either converts the whole weight first or, for one row only, fuses the
// conversion and recomputes the row's producers for every output.
//
// Every output is computed the same way whatever the number of rows, the tile it falls
// in or the thread that runs it: eight float lanes accumulated by FMA along k, summed
// in a fixed order, then the tail of k. So a row's result does not depend on the other
// rows of the batch, and a request gets the same tokens alone or batched.

// Python.h first, as CPython asks: the library is also the extension module
// `model_service._cpu_kernels`, which hands the handler to JAX as a capsule.
#include <Python.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX2__) && defined(__FMA__)

using Lanes = __m256;

inline Lanes Zero() { return _mm256_setzero_ps(); }
inline Lanes LoadX(const float* p) { return _mm256_loadu_ps(p); }
inline Lanes LoadW(const int8_t* p) {
  __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
}
inline Lanes Fma(Lanes a, Lanes b, Lanes acc) { return _mm256_fmadd_ps(a, b, acc); }
inline float Sum(Lanes v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#else  // portable: GCC/Clang vector extensions, same order of operations

typedef float Lanes __attribute__((vector_size(32)));

inline Lanes Zero() { return Lanes{}; }
inline Lanes LoadX(const float* p) {
  Lanes v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline Lanes LoadW(const int8_t* p) {
  return Lanes{float(p[0]), float(p[1]), float(p[2]), float(p[3]),
               float(p[4]), float(p[5]), float(p[6]), float(p[7])};
}
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

#endif

constexpr int64_t kLanes = 8;

struct Product {
  const float* x;
  const int8_t* w;
  const float* scale;
  float* y;
  int64_t rows, outputs, depth;
};

// ROWS activation rows times OUTS weight rows starting at (r, m): the inner loop holds
// ROWS * OUTS accumulators in registers and converts each weight vector once for all
// rows. It reads OUTS weight rows side by side, which the CPU's own prefetchers follow
// poorly, so it prefetches the next tile's rows in address order as it goes (a third
// faster on one row, where memory sets the pace).
template <int ROWS, int OUTS>
void Tile(const Product& p, int64_t r, int64_t m) {
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
    for (int i = 0; i < ROWS; ++i) xv[i] = LoadX(x + i * p.depth + k);
    for (int j = 0; j < OUTS; ++j) {
      Lanes wv = LoadW(w + j * p.depth + k);
      for (int i = 0; i < ROWS; ++i) acc[i][j] = Fma(xv[i], wv, acc[i][j]);
    }
  }
  for (int i = 0; i < ROWS; ++i) {
    for (int j = 0; j < OUTS; ++j) {
      float sum = Sum(acc[i][j]);
      for (int64_t k = body; k < p.depth; ++k)
        sum = std::fma(x[i * p.depth + k], float(w[j * p.depth + k]), sum);
      p.y[(r + i) * p.outputs + m + j] = sum * p.scale[m + j];
    }
  }
}

// ROWS rows times the outputs [begin, end).
template <int ROWS>
void RowBlock(const Product& p, int64_t r, int64_t begin, int64_t end) {
  int64_t m = begin;
  if (ROWS == 1) {  // more weight rows at once: one row alone is bound by memory
    for (; m + 8 <= end; m += 8) Tile<1, 8>(p, r, m);
  }
  for (; m + 2 <= end; m += 2) Tile<ROWS, 2>(p, r, m);
  for (; m < end; ++m) Tile<ROWS, 1>(p, r, m);
}

// All rows times the outputs [begin, end), four rows at a time: the range's weights
// (a chunk, about 64 KB) stay in the CPU's cache while every row block goes over them.
void OutputRange(const Product& p, int64_t begin, int64_t end) {
  int64_t r = 0;
  for (; r + 4 <= p.rows; r += 4) RowBlock<4>(p, r, begin, end);
  switch (p.rows - r) {
    case 3: RowBlock<3>(p, r, begin, end); break;
    case 2: RowBlock<2>(p, r, begin, end); break;
    case 1: RowBlock<1>(p, r, begin, end); break;
  }
}

// Outputs are split in chunks of about 64 KB of weights, taken in turn by the calling
// thread and by tasks on XLA's thread pool. The caller waits only for chunks already
// started, never for a task to start: a pool busy elsewhere cannot deadlock it.
// The caller counts as one of the pool's threads: one task per core in all. A task
// more than there are cores gets preempted holding a chunk, and everyone waits for
// it (on 2 cores, 2 tasks besides the caller ran as slowly as none).
struct Work {
  Product product;
  int64_t chunk, chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void Run() {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      int64_t begin = c * chunk;
      OutputRange(product, begin, std::min(begin + chunk, product.outputs));
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error Int8MatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                          ffi::Buffer<ffi::S8> w, ffi::Buffer<ffi::F32> scale,
                          ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || xd[1] != wd[1] ||
      scale.element_count() != size_t(wd[0])) {
    return ffi::Error::InvalidArgument(
        "int8_matmul takes x [R, K], w [M, K] and scale [M]");
  }
  const int64_t depth = xd[1];
  auto work = std::make_shared<Work>();
  work->product = {x.typed_data(), w.typed_data(), scale.typed_data(),
                   y->typed_data(), xd[0], wd[0], depth};
  work->chunk = std::max<int64_t>(8, (int64_t(1) << 16) / std::max<int64_t>(depth, 1));
  work->chunk += (-work->chunk) & 7;  // a multiple of the widest tile
  work->chunks = (wd[0] + work->chunk - 1) / work->chunk;
  const int64_t helpers =
      std::min<int64_t>(pool.num_threads() - 1, work->chunks - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work->Run(); });
  work->Run();
  while (work->done.load(std::memory_order_acquire) < work->chunks) {
    std::this_thread::yield();
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(Int8Matmul, Int8MatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// The module `model_service._cpu_kernels`: `handlers()` -> {name: PyCapsule}, what
// jax.ffi.register_ffi_target takes.
namespace {

PyObject* Handlers(PyObject*, PyObject*) {
  return Py_BuildValue(
      "{s:N}", "int8_matmul",
      PyCapsule_New(reinterpret_cast<void*>(Int8Matmul), nullptr, nullptr));
}

PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "The XLA FFI handlers, by name."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_cpu_kernels",
                       "XLA FFI handlers of model_service/cpu_kernels.cc", -1,
                       kMethods};

}  // namespace

PyMODINIT_FUNC PyInit__cpu_kernels() { return PyModule_Create(&kModule); }
