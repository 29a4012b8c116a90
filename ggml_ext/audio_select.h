// Graph builders of the audio selectors, batched over C chunks in a padded layout: chunk c's audio
// rows occupy the first n_a(c) of max_na slots, its visual anchors (the video tokens that survived
// STVP) the first n_v(c) of max_nv slots; padding rows are zero and masked out.
#pragma once

#include "ggml.h"
#include "sift_head.h"

namespace omnisift {

// Temperature of the anchor selector's softmax over cosine similarities (see omnisift.h).
constexpr float kAnchorTemperature = 0.1f;

// Training-free "anchor" score: each visual anchor spreads one unit of attention over its chunk's
// audio, softmax(cos(v_j, a_i) / T) over i; an audio token scores the mean mass it receives.
//   a [D, max_na, C], v [D, max_nv, C]
//   mask   [max_na, max_nv, C]: 0 for real audio slots, -inf for padded ones
//   weight [max_nv, 1, C]: 1 / n_v(c) for real anchors, 0 for padded ones
// -> [max_na, 1, C]
ggml_tensor * anchor_scores(ggml_context * ctx, ggml_tensor * a, ggml_tensor * v, ggml_tensor * mask,
                            ggml_tensor * weight);

// Learned VGAS score (sigmoid output of the head), PyTorch nn.MultiheadAttention semantics.
//   a [D, max_na, C], v [D, max_nv, C]
//   mask [max_nv, max_na, 1, C]: 0 for real anchor slots, -inf for padded ones
// -> [1, max_na, C]
ggml_tensor * vgas_scores(ggml_context * ctx, const sift_head_weights & w, ggml_tensor * a, ggml_tensor * v,
                          ggml_tensor * mask);

} // namespace omnisift
