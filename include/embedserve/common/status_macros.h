// Early-return helpers for absl::Status / absl::StatusOr, used across every stage.
// Header-only; no state, safe from any thread.
#ifndef EMBEDSERVE_COMMON_STATUS_MACROS_H_
#define EMBEDSERVE_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define ES_RETURN_IF_ERROR(expr)                \
  do {                                          \
    ::absl::Status es_status_ = (expr);         \
    if (!es_status_.ok()) return es_status_;    \
  } while (0)

#define ES_CONCAT_INNER_(a, b) a##b
#define ES_CONCAT_(a, b) ES_CONCAT_INNER_(a, b)

// `lhs = value of statusor_expr`, or returns its status from the enclosing function.
// Usage: ES_ASSIGN_OR_RETURN(auto model, LoadModel(path));
#define ES_ASSIGN_OR_RETURN(lhs, expr) \
  ES_ASSIGN_OR_RETURN_IMPL_(ES_CONCAT_(es_statusor_, __LINE__), lhs, expr)
#define ES_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return std::move(tmp).status();  \
  lhs = std::move(tmp).value()

#endif  // EMBEDSERVE_COMMON_STATUS_MACROS_H_
