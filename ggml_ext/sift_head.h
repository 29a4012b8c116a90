// The learned audio selector of OmniSIFT (the paper's VGAS) as loaded from a head GGUF written by
// pyomnisift convert-head: weights in one backend buffer on the engine's device.
//
// File format: general.architecture = "omnisift-head"; u32 keys omnisift.n_embd (D, the LLM width),
// omnisift.hidden (attention width, 512 in OmniSIFT-7B), omnisift.n_head (8), omnisift.score_hidden
// (256); f32 tensors named as in the checkpoint without the "thinker.compressor." prefix, in ggml
// order (ne0 = PyTorch's last dimension): v_proj / a_proj .weight [D, hidden] .bias [hidden];
// v_norm / a_norm / post_attn_norm .weight .bias [hidden]; cross_attn.in_proj_weight [hidden,
// 3 hidden], cross_attn.in_proj_bias [3 hidden]; cross_attn.out_proj.weight [hidden, hidden], .bias;
// score_head.0.weight [hidden, score_hidden], .bias; score_head.2.weight [score_hidden, 1], .bias [1].
#pragma once

#include "ggml.h"
#include "ggml-backend.h"

#include <string>

namespace omnisift {

struct sift_head_weights {
    int64_t n_embd = 0, hidden = 0, n_head = 0, score_hidden = 0;
    ggml_tensor * v_proj_w, * v_proj_b, * a_proj_w, * a_proj_b;
    ggml_tensor * v_norm_w, * v_norm_b, * a_norm_w, * a_norm_b;
    ggml_tensor * in_proj_w, * in_proj_b, * out_proj_w, * out_proj_b;
    ggml_tensor * post_norm_w, * post_norm_b;
    ggml_tensor * score0_w, * score0_b, * score2_w, * score2_b;
};

class sift_head {
public:
    // Reads and validates path, then uploads the weights to backend. Throws omnisift::error
    // (OMNISIFT_ERR_FILE) naming the file and the problem.
    sift_head(const std::string & path, ggml_backend_t backend);
    ~sift_head();
    sift_head(const sift_head &) = delete;
    sift_head & operator=(const sift_head &) = delete;

    const sift_head_weights & weights() const { return w_; }

private:
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer_t buf_ = nullptr;
    sift_head_weights w_;
};

} // namespace omnisift
