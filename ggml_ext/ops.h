// Ops shared by the graphs of ggml_ext.
#pragma once

#include "ggml.h"

namespace omnisift {

// ggml_mul_mat that asks for F32 precision. The CPU ignores the request; CUDA otherwise computes
// with f16 weights (and quantized ones) in f16, moving the tower's rows and the selectors' scores by
// ~1e-3, beyond the tolerances they are checked with against transformers (and a score that moves
// can move a keep decision). Still TF32 on CUDA for f32 x f32 (ggml sets its cuBLAS handles so).
inline ggml_tensor * mul_mat(ggml_context * ctx, ggml_tensor * a, ggml_tensor * b) {
    ggml_tensor * t = ggml_mul_mat(ctx, a, b);
    ggml_mul_mat_set_prec(t, GGML_PREC_F32);
    return t;
}

} // namespace omnisift
