#include "stvp.h"
#include "ops.h"

namespace omnisift {

ggml_tensor * stvp_spatial(ggml_context * ctx, ggml_tensor * x) {
    const int64_t d = x->ne[0], n = x->ne[1], g = x->ne[2];
    // The mean over tokens needs the tokens on ne0: one transposed copy, O(n D) like the input.
    ggml_tensor * xt = ggml_cont(ctx, ggml_permute(ctx, x, 1, 0, 2, 3));                 // [n, D, G]
    ggml_tensor * mean = ggml_reshape_3d(ctx, ggml_mean(ctx, xt), d, 1, g);              // [D, 1, G]
    ggml_tensor * mn = ggml_l2_norm(ctx, mean, kCosineEps);
    ggml_tensor * xn = ggml_l2_norm(ctx, x, kCosineEps);
    // [1, n, G]: row i of xn dotted with the grid's normalised mean.
    return ggml_reshape_3d(ctx, mul_mat(ctx, mn, xn), 1, n, g);
}

ggml_tensor * stvp_temporal(ggml_context * ctx, ggml_tensor * f1, ggml_tensor * f2) {
    ggml_tensor * prod = ggml_mul(ctx, ggml_l2_norm(ctx, f1, kCosineEps), ggml_l2_norm(ctx, f2, kCosineEps));
    return ggml_sum_rows(ctx, prod);                                                     // [1, n, G]
}

} // namespace omnisift
