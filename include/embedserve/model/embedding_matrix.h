// The backend's output: pooled sentence vectors as a row-major fp32 matrix, plus the
// small vector helpers (L2 normalisation, cosine) the service and tools share.
// Plain value type: not thread-safe to mutate, safe to read from several threads.
#ifndef EMBEDSERVE_MODEL_EMBEDDING_MATRIX_H_
#define EMBEDSERVE_MODEL_EMBEDDING_MATRIX_H_

#include <cstdint>
#include <vector>

namespace embedserve {

// rows x dim floats, row i at values[i * dim .. (i + 1) * dim).
struct EmbeddingMatrix {
  int64_t rows = 0;
  int64_t dim = 0;
  std::vector<float> values;

  const float* Row(int64_t i) const { return values.data() + i * dim; }
  float* MutableRow(int64_t i) { return values.data() + i * dim; }
};

// Scales `v[0..dim)` to unit L2 norm in place; a zero vector stays zero (as
// torch.nn.functional.normalize with eps=1e-12 does).
void L2NormalizeInPlace(float* v, int64_t dim);

// Cosine similarity of two vectors of length dim, accumulated in double; 0 when either
// vector is zero.
float Cosine(const float* a, const float* b, int64_t dim);

}  // namespace embedserve

#endif  // EMBEDSERVE_MODEL_EMBEDDING_MATRIX_H_
