#include "embedserve/model/embedding_matrix.h"

#include <cmath>

namespace embedserve {

void L2NormalizeInPlace(float* v, int64_t dim) {
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(v[i]) * v[i];
  const double norm = std::sqrt(sum);
  if (norm < 1e-12) return;
  const double inv = 1.0 / norm;
  for (int64_t i = 0; i < dim; ++i) v[i] = static_cast<float>(v[i] * inv);
}

float Cosine(const float* a, const float* b, int64_t dim) {
  double dot = 0.0, na = 0.0, nb = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    dot += static_cast<double>(a[i]) * b[i];
    na += static_cast<double>(a[i]) * a[i];
    nb += static_cast<double>(b[i]) * b[i];
  }
  if (na < 1e-24 || nb < 1e-24) return 0.0f;
  return static_cast<float>(dot / (std::sqrt(na) * std::sqrt(nb)));
}

}  // namespace embedserve
