// audio_tower: the Qwen2.5-Omni audio encoder as the model was trained, on 2-second windows.
//
// llama.cpp runs this tower as Whisper does (every clip padded to 30 s, attention over 1500
// frames, positions 0..1499), which is not the function the model learned. Here, as in
// transformers' Qwen2_5OmniAudioEncoder, the mel frames are cut into windows of 200 (2 s); each
// window gets its own convolutions (zero padding at its edges), its own sinusoidal positions from
// 0, and attention only inside itself; then average pooling by 2, the final norm and the
// projector to the LLM width. The last partial window is encoded at its real length.
//
// Weights are the a.* / mm.a.* tensors that llama.cpp's converter writes to the mmproj
// (projector type qwen2.5o), read as they are (the f16 convolution kernels are widened to f32).
#pragma once

#include "runner.h"

#include <cstdint>
#include <string>
#include <vector>

namespace omnisift {

struct audio_tower_hparams {
    int64_t n_mel   = 0; // mel bins per frame
    int64_t n_embd  = 0; // encoder width (d_model)
    int64_t n_head  = 0;
    int64_t n_ff    = 0;
    int64_t n_layer = 0;
    int64_t n_proj  = 0; // output width = LLM embedding width
    int64_t n_pos   = 0; // rows of the position table
    float   eps     = 1e-5f;
};

class audio_tower {
public:
    // Mel frames per window: 2 * n_window with Qwen2.5-Omni's n_window = 100, which the GGUF does
    // not record (both released sizes use it).
    static constexpr int64_t window_frames = 200;

    // Rows encode() produces for n_frames mel frames: 25 per second (conv stride 2, pooling 2).
    static int64_t n_tokens(int64_t n_frames);

    // Loads the tower from an mmproj GGUF onto runner's device. Throws omnisift::error
    // (OMNISIFT_ERR_FILE) for a file that is not a Qwen2.5-Omni mmproj with an audio tower.
    audio_tower(const std::string & path, const graph_runner & runner);
    ~audio_tower();
    audio_tower(const audio_tower &) = delete;
    audio_tower & operator=(const audio_tower &) = delete;

    const audio_tower_hparams & hparams() const { return hp_; }

    // mel: [n_frames][n_mel] (frame-major, as the feature extractor's frames); out:
    // [n_tokens(n_frames)][n_proj]. All windows are encoded in one graph on runner's device.
    void encode(graph_runner & runner, const float * mel, int64_t n_frames, float * out) const;

private:
    struct layer {
        ggml_tensor * ln1_w, * ln1_b, * q_w, * q_b, * k_w, * v_w, * v_b, * o_w, * o_b;
        ggml_tensor * ln2_w, * ln2_b, * up_w, * up_b, * down_w, * down_b;
    };

    // The tower on n_win windows of n_frames frames each (input [n_mel, n_frames, n_win]);
    // returns [n_proj, n_tokens(n_frames), n_win].
    ggml_tensor * build(ggml_context * ctx, ggml_tensor * mel, int64_t n_frames, int64_t n_win) const;
    ggml_tensor * norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) const;

    audio_tower_hparams hp_;
    ggml_context * ctx_ = nullptr;          // weight metadata
    ggml_backend_buffer_t buf_ = nullptr;   // weight data on the runner's device
    ggml_tensor * conv1_w_ = nullptr, * conv1_b_ = nullptr, * conv2_w_ = nullptr, * conv2_b_ = nullptr;
    ggml_tensor * pos_ = nullptr, * post_w_ = nullptr, * post_b_ = nullptr, * proj_w_ = nullptr, * proj_b_ = nullptr;
    std::vector<layer> layers_;
};

} // namespace omnisift
