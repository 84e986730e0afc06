// gather_rows / scatter_rows_ (see index.h): host-side checks, then one Backend kernel each.
#include "engine/functions/index.h"

#include <vector>

#include "engine/functions/common.h"

namespace retort {

namespace {

// The indices as host values, each checked to lie in [0, n).
const int64_t* checked_indices(const char* op, const Tensor& table, const Tensor& indices) {
  fn::check_defined(op, indices, "indices");
  RETORT_CHECK(indices.dtype() == DType::I64 && indices.device().is_cpu(), op,
               ": indices must be an i64 tensor on the host, got ", indices.meta_str());
  fn::check_float(op, table, "table");
  RETORT_CHECK(table.dim() >= 1 && table.size(0) > 0, op, ": the table must have at least one row, got ",
               table.meta_str());
  RETORT_CHECK(!table.requires_grad(), op, ": the table ", table.meta_str(),
               " requires grad, but no gradient flows through a row lookup; detach it or keep it as a buffer");
  const int64_t* idx = indices.data<int64_t>();
  for (int64_t i = 0; i < indices.numel(); ++i)
    RETORT_CHECK(idx[i] >= 0 && idx[i] < table.size(0), op, ": index ", idx[i], " at position ", i, " of ",
                 indices.meta_str(), " is outside the table's ", table.size(0), " rows (", table.meta_str(), ")");
  return idx;
}

Shape row_shape(const Tensor& table) { return Shape(table.shape().begin() + 1, table.shape().end()); }

}  // namespace

Tensor gather_rows(const Tensor& table, const Tensor& indices) {
  checked_indices("gather_rows", table, indices);
  Shape out_shape = indices.shape();
  for (int64_t d : row_shape(table)) out_shape.push_back(d);
  Tensor out = Tensor::empty(out_shape, table.dtype(), table.device());
  if (out.numel() > 0) backend_for(table).gather_rows(table, indices.to(table.device()), out);
  return out;
}

void scatter_rows_(Tensor& table, const Tensor& indices, const Tensor& rows) {
  const char* op = "scatter_rows_";
  const int64_t* idx = checked_indices(op, table, indices);
  RETORT_CHECK(indices.dim() == 1, op, ": indices must be 1-D [M], got ", indices.meta_str());
  fn::check_compatible(op, table, rows, "table", "rows");
  Shape want{indices.numel()};
  for (int64_t d : row_shape(table)) want.push_back(d);
  RETORT_CHECK(rows.shape() == want, op, ": rows must be ", shape_str(want), " (one row of ", table.meta_str(),
               " per index), got ", rows.meta_str());
  std::vector<bool> seen(static_cast<size_t>(table.size(0)), false);
  for (int64_t i = 0; i < indices.numel(); ++i) {
    RETORT_CHECK(!seen[static_cast<size_t>(idx[i])], op, ": index ", idx[i], " appears twice in ", indices.meta_str(),
                 " (which row would win is undefined)");
    seen[static_cast<size_t>(idx[i])] = true;
  }
  if (rows.numel() > 0) backend_for(table).scatter_rows(table, indices.to(table.device()), rows);
  table.bump_version();
}

}  // namespace retort
