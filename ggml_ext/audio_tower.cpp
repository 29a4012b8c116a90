#include "audio_tower.h"
#include "ops.h"

#include "status.h"
#include "gguf.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>

namespace omnisift {

namespace {

// Windows per graph: bounds the compute buffer (n_embd x 100 x windows floats per activation,
// 8 MB at the 7B tower's width 1280) whatever the clip length, so that memory for a long clip does
// not grow with it; 16 windows (32 s, 1600 frames) still fill the threads of a graph.
constexpr int64_t max_windows_per_graph = 16;

struct gguf_deleter { void operator()(gguf_context * g) const { gguf_free(g); } };
struct ggml_deleter { void operator()(ggml_context * c) const { ggml_free(c); } };

class gguf_file {
public:
    explicit gguf_file(const std::string & path) : path_(path), data_(path, std::ios::binary) {
        if (!data_) fail(status::file, path + ": cannot open the mmproj file");
        ggml_context * meta = nullptr;
        gguf_init_params params = {/*.no_alloc =*/ true, /*.ctx =*/ &meta};
        gguf_.reset(gguf_init_from_file(path.c_str(), params));
        if (!gguf_) fail(status::file, path + ": not a readable GGUF file");
        meta_.reset(meta);
    }

    [[noreturn]] void bad(const std::string & problem) const { fail(status::file, path_ + ": " + problem); }

    std::string str(const char * key) const {
        int64_t id = gguf_find_key(gguf_.get(), key);
        if (id < 0 || gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_STRING) return "";
        return gguf_get_val_str(gguf_.get(), id);
    }

    bool flag(const char * key) const {
        int64_t id = gguf_find_key(gguf_.get(), key);
        return id >= 0 && gguf_get_kv_type(gguf_.get(), id) == GGUF_TYPE_BOOL && gguf_get_val_bool(gguf_.get(), id);
    }

    int64_t u32(const char * key) const {
        int64_t id = gguf_find_key(gguf_.get(), key);
        if (id < 0) bad(std::string("has no ") + key);
        if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_UINT32) bad(std::string(key) + " is not a uint32");
        return gguf_get_val_u32(gguf_.get(), id);
    }

    float f32(const char * key) const {
        int64_t id = gguf_find_key(gguf_.get(), key);
        if (id < 0) bad(std::string("has no ") + key);
        if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_FLOAT32) bad(std::string(key) + " is not a float32");
        return gguf_get_val_f32(gguf_.get(), id);
    }

    // The file's tensor `name`, checked to have shape ne (trailing 1s may be omitted).
    ggml_tensor * tensor(const std::string & name, std::initializer_list<int64_t> ne) const {
        ggml_tensor * t = ggml_get_tensor(meta_.get(), name.c_str());
        if (!t) bad("has no tensor " + name + " (is this mmproj's audio tower incomplete?)");
        int i = 0;
        for (int64_t n : ne) {
            if (t->ne[i++] != n) bad("tensor " + name + " has an unexpected shape");
        }
        for (; i < GGML_MAX_DIMS; ++i) {
            if (t->ne[i] != 1) bad("tensor " + name + " has an unexpected shape");
        }
        return t;
    }

    int64_t rows(const std::string & name) const {
        ggml_tensor * t = ggml_get_tensor(meta_.get(), name.c_str());
        if (!t) bad("has no tensor " + name + " (is this mmproj's audio tower incomplete?)");
        return t->ne[1];
    }

    // Reads tensor `name` into host memory, as float32 when widen is set.
    std::vector<uint8_t> read(const ggml_tensor * t, bool widen) const {
        int64_t id = gguf_find_tensor(gguf_.get(), t->name);
        size_t size = gguf_get_tensor_size(gguf_.get(), id);
        std::vector<uint8_t> raw(size);
        auto offset = (std::streamoff) (gguf_get_data_offset(gguf_.get()) + gguf_get_tensor_offset(gguf_.get(), id));
        if (!data_.seekg(offset) || !data_.read(reinterpret_cast<char *>(raw.data()), (std::streamsize) size)) {
            bad(std::string("cannot read tensor ") + t->name + " (truncated file?)");
        }
        if (!widen || t->type == GGML_TYPE_F32) return raw;
        const ggml_type_traits * traits = ggml_get_type_traits(t->type);
        if (!traits->to_float) bad(std::string("tensor ") + t->name + " has a type that cannot be read as float");
        std::vector<uint8_t> wide(ggml_nelements(t) * sizeof(float));
        traits->to_float(raw.data(), reinterpret_cast<float *>(wide.data()), ggml_nelements(t));
        return wide;
    }

private:
    std::string path_;
    std::unique_ptr<gguf_context, gguf_deleter> gguf_;
    std::unique_ptr<ggml_context, ggml_deleter> meta_;
    mutable std::ifstream data_;
};

// 1-D convolution, kernel 3, padding 1, on a batch: x [T, IC, N], w [3, IC, OC] -> [OC, T', N].
ggml_tensor * conv1d(ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * x, int stride) {
    ggml_tensor * cols = ggml_im2col(ctx, w, x, stride, 0, 1, 0, 1, 0, false, GGML_TYPE_F32); // [IC*3, T', N]
    ggml_tensor * y = mul_mat(ctx, ggml_reshape_2d(ctx, w, w->ne[0] * w->ne[1], w->ne[2]),
                                   ggml_reshape_2d(ctx, cols, cols->ne[0], cols->ne[1] * cols->ne[2]));
    y = ggml_reshape_3d(ctx, y, w->ne[2], cols->ne[1], cols->ne[2]);
    return ggml_add(ctx, y, ggml_reshape_1d(ctx, b, w->ne[2]));
}

} // namespace

int64_t audio_tower::n_tokens(int64_t n_frames) {
    if (n_frames <= 0) return 0;
    int64_t after_conv = (n_frames - 1) / 2 + 1;
    return after_conv / 2;
}

audio_tower::audio_tower(const std::string & path, const graph_runner & runner) {
    gguf_file file(path);
    if (file.str("general.architecture") != "clip") {
        file.bad("not a multimodal projector (general.architecture is not 'clip')");
    }
    if (!file.flag("clip.has_audio_encoder")) file.bad("this mmproj has no audio encoder");
    std::string ptype = file.str("clip.audio.projector_type");
    if (ptype.empty()) ptype = file.str("clip.projector_type");
    if (ptype != "qwen2.5o") {
        file.bad("audio projector type is '" + ptype + "', not 'qwen2.5o': only Qwen2.5-Omni's audio "
                 "tower runs on 2-second windows; Whisper-style towers (Qwen2-Audio, Ultravox, Voxtral) "
                 "are encoded by libmtmd");
    }
    hp_.n_mel   = file.u32("clip.audio.num_mel_bins");
    hp_.n_embd  = file.u32("clip.audio.embedding_length");
    hp_.n_head  = file.u32("clip.audio.attention.head_count");
    hp_.n_ff    = file.u32("clip.audio.feed_forward_length");
    hp_.n_layer = file.u32("clip.audio.block_count");
    hp_.n_proj  = file.u32("clip.audio.projection_dim");
    hp_.eps     = file.f32("clip.audio.attention.layer_norm_epsilon");
    const int64_t d = hp_.n_embd;
    if (d <= 0 || hp_.n_head <= 0 || d % hp_.n_head != 0) file.bad("audio width is not a multiple of its head count");

    // (tensor in file, widen to f32, where to store the copy on the device)
    struct wanted { ggml_tensor * src; bool widen; ggml_tensor ** dst; };
    std::vector<wanted> todo;
    auto want = [&](ggml_tensor ** dst, const std::string & name, std::initializer_list<int64_t> ne, bool widen = false) {
        todo.push_back({file.tensor(name, ne), widen, dst});
    };
    // The convolutions run on f32 im2col columns; widening their (f16) kernels keeps the mel
    // input in f32 instead of rounding it to f16 as a mixed-type matmul would.
    want(&conv1_w_, "a.conv1d.1.weight", {3, hp_.n_mel, d}, true);
    want(&conv1_b_, "a.conv1d.1.bias", {1, d}, true);
    want(&conv2_w_, "a.conv1d.2.weight", {3, d, d}, true);
    want(&conv2_b_, "a.conv1d.2.bias", {1, d}, true);
    hp_.n_pos = file.rows("a.position_embd.weight");
    if (hp_.n_pos < window_frames / 2) file.bad("a.position_embd.weight has fewer rows than a window");
    want(&pos_, "a.position_embd.weight", {d, hp_.n_pos}, true);
    layers_.resize(hp_.n_layer);
    for (int64_t il = 0; il < hp_.n_layer; ++il) {
        layer & l = layers_[il];
        const std::string p = "a.blk." + std::to_string(il) + ".";
        want(&l.ln1_w, p + "ln1.weight", {d}, true);
        want(&l.ln1_b, p + "ln1.bias", {d}, true);
        want(&l.q_w, p + "attn_q.weight", {d, d});
        want(&l.q_b, p + "attn_q.bias", {d}, true);
        want(&l.k_w, p + "attn_k.weight", {d, d});
        want(&l.v_w, p + "attn_v.weight", {d, d});
        want(&l.v_b, p + "attn_v.bias", {d}, true);
        want(&l.o_w, p + "attn_out.weight", {d, d});
        want(&l.o_b, p + "attn_out.bias", {d}, true);
        want(&l.ln2_w, p + "ln2.weight", {d}, true);
        want(&l.ln2_b, p + "ln2.bias", {d}, true);
        want(&l.up_w, p + "ffn_up.weight", {d, hp_.n_ff});
        want(&l.up_b, p + "ffn_up.bias", {hp_.n_ff}, true);
        want(&l.down_w, p + "ffn_down.weight", {hp_.n_ff, d});
        want(&l.down_b, p + "ffn_down.bias", {d}, true);
    }
    want(&post_w_, "a.post_ln.weight", {d}, true);
    want(&post_b_, "a.post_ln.bias", {d}, true);
    want(&proj_w_, "mm.a.fc.weight", {d, hp_.n_proj});
    want(&proj_b_, "mm.a.fc.bias", {hp_.n_proj}, true);

    ggml_init_params params = {
        /*.mem_size   =*/ ggml_tensor_overhead() * todo.size(),
        /*.mem_buffer =*/ nullptr,
        /*.no_alloc   =*/ true,
    };
    ctx_ = ggml_init(params);
    if (!ctx_) fail(status::backend, "cannot allocate a ggml context for the audio tower");
    for (const wanted & w : todo) {
        ggml_type type = w.widen ? GGML_TYPE_F32 : w.src->type;
        *w.dst = ggml_new_tensor(ctx_, type, GGML_MAX_DIMS, w.src->ne);
        ggml_set_name(*w.dst, w.src->name);
    }
    buf_ = ggml_backend_alloc_ctx_tensors(ctx_, runner.backend());
    if (!buf_) {
        ggml_free(ctx_);
        fail(status::backend, "cannot allocate the audio tower's weights on " + runner.device_name());
    }
    // Lets the scheduler run the ops that use these weights on their device.
    ggml_backend_buffer_set_usage(buf_, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    try {
        for (const wanted & w : todo) {
            std::vector<uint8_t> data = file.read(w.src, w.widen);
            ggml_backend_tensor_set(*w.dst, data.data(), 0, ggml_nbytes(*w.dst));
        }
    } catch (...) {
        ggml_backend_buffer_free(buf_);
        ggml_free(ctx_);
        throw;
    }
}

audio_tower::~audio_tower() {
    ggml_backend_buffer_free(buf_);
    ggml_free(ctx_);
}

ggml_tensor * audio_tower::norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) const {
    return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, hp_.eps), w), b);
}

ggml_tensor * audio_tower::build(ggml_context * ctx, ggml_tensor * mel, int64_t n_frames, int64_t n_win) const {
    const int64_t d = hp_.n_embd, n_head = hp_.n_head, d_head = d / n_head;

    // The convolutions want time as the fastest dimension; the encoder wants channels.
    ggml_tensor * x = ggml_cont(ctx, ggml_transpose(ctx, mel));                       // [T, n_mel, N]
    x = ggml_gelu_erf(ctx, conv1d(ctx, conv1_w_, conv1_b_, x, 1));                    // [d, T, N]
    x = ggml_cont(ctx, ggml_transpose(ctx, x));                                       // [T, d, N]
    x = ggml_gelu_erf(ctx, conv1d(ctx, conv2_w_, conv2_b_, x, 2));                    // [d, T2, N]
    const int64_t n_pos = x->ne[1];
    // Positions restart at 0 in every window.
    x = ggml_add(ctx, x, ggml_view_2d(ctx, pos_, d, n_pos, pos_->nb[1], 0));

    const float kq_scale = 1.0f / std::sqrt((float) d_head);
    for (const layer & l : layers_) {
        ggml_tensor * cur = norm(ctx, x, l.ln1_w, l.ln1_b);
        ggml_tensor * q = ggml_add(ctx, mul_mat(ctx, l.q_w, cur), l.q_b);
        ggml_tensor * k = mul_mat(ctx, l.k_w, cur);
        ggml_tensor * v = ggml_add(ctx, mul_mat(ctx, l.v_w, cur), l.v_b);
        q = ggml_permute(ctx, ggml_reshape_4d(ctx, q, d_head, n_head, n_pos, n_win), 0, 2, 1, 3); // [dh, T, H, N]
        k = ggml_permute(ctx, ggml_reshape_4d(ctx, k, d_head, n_head, n_pos, n_win), 0, 2, 1, 3);
        v = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, v, d_head, n_head, n_pos, n_win), 1, 2, 0, 3)); // [T, dh, H, N]
        // Attention inside each window: the window is a batch dimension, so no mask is needed.
        ggml_tensor * kq = ggml_soft_max_ext(ctx, mul_mat(ctx, k, q), nullptr, kq_scale, 0.0f); // [Tk, Tq, H, N]
        ggml_tensor * kqv = mul_mat(ctx, v, kq);                                        // [dh, Tq, H, N]
        cur = ggml_cont_3d(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3), d, n_pos, n_win);
        cur = ggml_add(ctx, mul_mat(ctx, l.o_w, cur), l.o_b);
        x = ggml_add(ctx, x, cur);

        cur = norm(ctx, x, l.ln2_w, l.ln2_b);
        cur = ggml_gelu_erf(ctx, ggml_add(ctx, mul_mat(ctx, l.up_w, cur), l.up_b));
        cur = ggml_add(ctx, mul_mat(ctx, l.down_w, cur), l.down_b);
        x = ggml_add(ctx, x, cur);
    }

    // Average pooling of frame pairs; an odd last frame is dropped, as the reference does.
    const int64_t n_out = n_pos / 2;
    ggml_tensor * even = ggml_view_3d(ctx, x, d, n_out, n_win, 2 * x->nb[1], x->nb[2], 0);
    ggml_tensor * odd = ggml_view_3d(ctx, x, d, n_out, n_win, 2 * x->nb[1], x->nb[2], x->nb[1]);
    x = ggml_scale(ctx, ggml_add(ctx, ggml_cont(ctx, even), ggml_cont(ctx, odd)), 0.5f);

    x = norm(ctx, x, post_w_, post_b_);
    return ggml_add(ctx, mul_mat(ctx, proj_w_, x), proj_b_);                  // [n_proj, n_out, N]
}

void audio_tower::encode(graph_runner & runner, const float * mel, int64_t n_frames, float * out) const {
    const int64_t n_full = n_frames / window_frames;
    const int64_t tail = n_frames % window_frames;
    const int64_t full_tokens = n_tokens(window_frames);
    const bool has_tail = n_tokens(tail) > 0;  // a tail of 1 or 2 frames yields no row at all
    const size_t max_nodes = 64 * (hp_.n_layer + 2) * 2;

    for (int64_t w0 = 0; w0 < n_full || (w0 == 0 && has_tail); w0 += max_windows_per_graph) {
        const int64_t n_win = std::min(max_windows_per_graph, n_full - w0);
        const bool last = w0 + max_windows_per_graph >= n_full;
        graph_runner::graph g = runner.new_graph(max_nodes);
        ggml_tensor * full_out = nullptr, * tail_out = nullptr;
        if (n_win > 0) {
            ggml_tensor * in = g.input(GGML_TYPE_F32, mel + w0 * window_frames * hp_.n_mel,
                                       hp_.n_mel, window_frames, n_win);
            full_out = build(g.ctx(), in, window_frames, n_win);
            g.output(full_out);
        }
        if (last && has_tail) {
            ggml_tensor * in = g.input(GGML_TYPE_F32, mel + n_full * window_frames * hp_.n_mel, hp_.n_mel, tail, 1);
            tail_out = build(g.ctx(), in, tail, 1);
            g.output(tail_out);
        }
        runner.run(g);
        if (full_out) runner.read(full_out, out + w0 * full_tokens * hp_.n_proj);
        if (tail_out) runner.read(tail_out, out + n_full * full_tokens * hp_.n_proj);
    }
}

} // namespace omnisift
