// Graph builders of STVP (spatio-temporal video pruning) saliency, batched over G grids of equal
// token count n. Built-in ggml ops only, so they run on every backend.
#pragma once

#include "ggml.h"

namespace omnisift {

// Smallest norm a row is divided by (ggml_l2_norm's eps): an all-zero row has cosine 0 to anything.
constexpr float kCosineEps = 1e-12f;

// Spatial saliency: x [D, n, G] -> [1, n, G], cosine of each token to its grid's mean token.
ggml_tensor * stvp_spatial(ggml_context * ctx, ggml_tensor * x);

// Temporal saliency: f1, f2 [D, n, G] -> [1, n, G], cosine of token i of f2 to token i of f1.
ggml_tensor * stvp_temporal(ggml_context * ctx, ggml_tensor * f1, ggml_tensor * f2);

} // namespace omnisift
