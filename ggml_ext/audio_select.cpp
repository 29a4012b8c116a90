#include "audio_select.h"
#include "ops.h"

#include "stvp.h"

#include <cmath>

namespace omnisift {

namespace {

constexpr float kLayerNormEps = 1e-5f;   // PyTorch nn.LayerNorm default, as in the reference

ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    return ggml_add(ctx, mul_mat(ctx, w, x), b);
}

ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, kLayerNormEps), w), b);
}

// Rows [i * h, (i + 1) * h) of the packed in_proj weight (ggml: columns of ne1) and bias.
ggml_tensor * weight_slice(ggml_context * ctx, ggml_tensor * w, int64_t i, int64_t h) {
    return ggml_view_2d(ctx, w, w->ne[0], h, w->nb[1], i * h * w->nb[1]);
}

ggml_tensor * bias_slice(ggml_context * ctx, ggml_tensor * b, int64_t i, int64_t h) {
    return ggml_view_1d(ctx, b, h, i * h * ggml_element_size(b));
}

} // namespace

ggml_tensor * anchor_scores(ggml_context * ctx, ggml_tensor * a, ggml_tensor * v, ggml_tensor * mask,
                            ggml_tensor * weight) {
    const int64_t max_na = a->ne[1], c = a->ne[2];
    ggml_tensor * an = ggml_l2_norm(ctx, a, kCosineEps);
    ggml_tensor * vn = ggml_l2_norm(ctx, v, kCosineEps);
    ggml_tensor * cos = mul_mat(ctx, an, vn);                                        // [max_na, max_nv, C]
    ggml_tensor * p = ggml_soft_max_ext(ctx, cos, mask, 1.0f / kAnchorTemperature, 0.0f);  // over audio
    ggml_tensor * pt = ggml_cont(ctx, ggml_permute(ctx, p, 1, 0, 2, 3));                  // [max_nv, max_na, C]
    ggml_tensor * mass = mul_mat(ctx, pt, weight);                                    // [max_na, 1, C]
    return ggml_reshape_3d(ctx, mass, max_na, 1, c);
}

ggml_tensor * vgas_scores(ggml_context * ctx, const sift_head_weights & w, ggml_tensor * a, ggml_tensor * v,
                          ggml_tensor * mask) {
    const int64_t h = w.hidden, nh = w.n_head, hd = h / nh;
    const int64_t max_na = a->ne[1], max_nv = v->ne[1], c = a->ne[2];

    ggml_tensor * vh = layer_norm(ctx, linear(ctx, v, w.v_proj_w, w.v_proj_b), w.v_norm_w, w.v_norm_b);  // [h, max_nv, C]
    ggml_tensor * ah = layer_norm(ctx, linear(ctx, a, w.a_proj_w, w.a_proj_b), w.a_norm_w, w.a_norm_b);  // [h, max_na, C]

    ggml_tensor * q = linear(ctx, ah, weight_slice(ctx, w.in_proj_w, 0, h), bias_slice(ctx, w.in_proj_b, 0, h));
    ggml_tensor * k = linear(ctx, vh, weight_slice(ctx, w.in_proj_w, 1, h), bias_slice(ctx, w.in_proj_b, 1, h));
    ggml_tensor * vv = linear(ctx, vh, weight_slice(ctx, w.in_proj_w, 2, h), bias_slice(ctx, w.in_proj_b, 2, h));

    // Heads split the projected width in contiguous blocks of hd, as nn.MultiheadAttention does.
    q = ggml_permute(ctx, ggml_reshape_4d(ctx, q, hd, nh, max_na, c), 0, 2, 1, 3);      // [hd, max_na, nh, C]
    k = ggml_permute(ctx, ggml_reshape_4d(ctx, k, hd, nh, max_nv, c), 0, 2, 1, 3);      // [hd, max_nv, nh, C]
    ggml_tensor * vt = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, vv, hd, nh, max_nv, c), 1, 2, 0, 3));  // [max_nv, hd, nh, C]

    ggml_tensor * kq = mul_mat(ctx, ggml_cont(ctx, k), ggml_cont(ctx, q));          // [max_nv, max_na, nh, C]
    kq = ggml_soft_max_ext(ctx, kq, mask, 1.0f / std::sqrt((float) hd), 0.0f);            // over anchors
    ggml_tensor * att = mul_mat(ctx, vt, kq);                                        // [hd, max_na, nh, C]
    att = ggml_cont(ctx, ggml_permute(ctx, att, 0, 2, 1, 3));                             // [hd, nh, max_na, C]
    att = ggml_reshape_3d(ctx, att, h, max_na, c);
    att = linear(ctx, att, w.out_proj_w, w.out_proj_b);

    ggml_tensor * x = layer_norm(ctx, ggml_add(ctx, att, ah), w.post_norm_w, w.post_norm_b);
    x = ggml_silu(ctx, linear(ctx, x, w.score0_w, w.score0_b));
    return ggml_sigmoid(ctx, linear(ctx, x, w.score2_w, w.score2_b));                     // [1, max_na, C]
}

} // namespace omnisift
