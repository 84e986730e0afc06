// Rows of a table by index, for lookup tables that are state rather than parameters (CRD's memory
// banks of one embedding per training sample): no gradient flows through them, and a table that
// requires grad is refused. Indices are host bookkeeping (as Batch::indices), checked on the host —
// each in [0, N), distinct for a scatter — and moved to the table's device for the kernel.
#pragma once
#include "engine/tensor.h"

namespace retort {

// table [N, ...] (f32 or f64, any device), indices I64 of any shape S on the host ->
// [S..., table.shape[1:]...]: the rows table[indices[...]].
Tensor gather_rows(const Tensor& table, const Tensor& indices);
// table[indices[i]] = rows[i] in place: indices I64 [M] on the host, distinct; rows [M, table.shape[1:]...]
// of the table's dtype and device.
void scatter_rows_(Tensor& table, const Tensor& indices, const Tensor& rows);

}  // namespace retort
