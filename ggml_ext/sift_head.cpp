#include "sift_head.h"

#include "status.h"

#include "ggml-alloc.h"
#include "gguf.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

namespace omnisift {

namespace {

struct gguf_deleter { void operator()(gguf_context * g) const { gguf_free(g); } };
struct file_closer { void operator()(FILE * f) const { std::fclose(f); } };

[[noreturn]] void bad_file(const std::string & path, const std::string & problem) {
    fail(status::file, path + ": " + problem);
}

int64_t get_u32(const gguf_context * g, const std::string & path, const char * key) {
    const int64_t id = gguf_find_key(g, key);
    if (id < 0) bad_file(path, std::string("missing metadata key ") + key);
    if (gguf_get_kv_type(g, id) != GGUF_TYPE_UINT32) bad_file(path, std::string(key) + " is not a u32");
    const int64_t v = gguf_get_val_u32(g, id);
    if (v <= 0 || v > (1 << 20)) bad_file(path, std::string(key) + " = " + std::to_string(v) + " is out of range");
    return v;
}

} // namespace

sift_head::sift_head(const std::string & path, ggml_backend_t backend) {
    gguf_init_params params = {/*.no_alloc =*/ true, /*.ctx =*/ &ctx_};
    std::unique_ptr<gguf_context, gguf_deleter> g(gguf_init_from_file(path.c_str(), params));
    if (!g) {
        std::unique_ptr<FILE, file_closer> probe(std::fopen(path.c_str(), "rb"));
        bad_file(path, probe ? "not a valid GGUF file" : "cannot open the file");
    }
    try {
        const int64_t arch = gguf_find_key(g.get(), "general.architecture");
        if (arch < 0 || gguf_get_kv_type(g.get(), arch) != GGUF_TYPE_STRING ||
            std::string(gguf_get_val_str(g.get(), arch)) != "omnisift-head") {
            bad_file(path, "not an OmniSIFT head (general.architecture is not \"omnisift-head\"; "
                           "convert the checkpoint with pyomnisift convert-head)");
        }
        w_.n_embd = get_u32(g.get(), path, "omnisift.n_embd");
        w_.hidden = get_u32(g.get(), path, "omnisift.hidden");
        w_.n_head = get_u32(g.get(), path, "omnisift.n_head");
        w_.score_hidden = get_u32(g.get(), path, "omnisift.score_hidden");
        if (w_.hidden % w_.n_head != 0) {
            bad_file(path, "omnisift.hidden = " + std::to_string(w_.hidden) + " is not a multiple of omnisift.n_head = " +
                           std::to_string(w_.n_head));
        }

        const int64_t d = w_.n_embd, h = w_.hidden, s = w_.score_hidden;
        auto get = [&](const char * name, int64_t ne0, int64_t ne1) {
            ggml_tensor * t = ggml_get_tensor(ctx_, name);
            if (!t) bad_file(path, std::string("missing tensor ") + name);
            if (t->type != GGML_TYPE_F32) bad_file(path, std::string(name) + " is " + ggml_type_name(t->type) + ", expected f32");
            if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1) {
                bad_file(path, std::string(name) + " has shape [" + std::to_string(t->ne[0]) + ", " + std::to_string(t->ne[1]) +
                               "], expected [" + std::to_string(ne0) + ", " + std::to_string(ne1) + "] (ggml order)");
            }
            return t;
        };
        w_.v_proj_w = get("v_proj.weight", d, h);          w_.v_proj_b = get("v_proj.bias", h, 1);
        w_.a_proj_w = get("a_proj.weight", d, h);          w_.a_proj_b = get("a_proj.bias", h, 1);
        w_.v_norm_w = get("v_norm.weight", h, 1);          w_.v_norm_b = get("v_norm.bias", h, 1);
        w_.a_norm_w = get("a_norm.weight", h, 1);          w_.a_norm_b = get("a_norm.bias", h, 1);
        w_.in_proj_w = get("cross_attn.in_proj_weight", h, 3 * h);
        w_.in_proj_b = get("cross_attn.in_proj_bias", 3 * h, 1);
        w_.out_proj_w = get("cross_attn.out_proj.weight", h, h);
        w_.out_proj_b = get("cross_attn.out_proj.bias", h, 1);
        w_.post_norm_w = get("post_attn_norm.weight", h, 1); w_.post_norm_b = get("post_attn_norm.bias", h, 1);
        w_.score0_w = get("score_head.0.weight", h, s);    w_.score0_b = get("score_head.0.bias", s, 1);
        w_.score2_w = get("score_head.2.weight", s, 1);    w_.score2_b = get("score_head.2.bias", 1, 1);

        std::unique_ptr<FILE, file_closer> f(std::fopen(path.c_str(), "rb"));
        if (!f) bad_file(path, "cannot open the file");
        std::fseek(f.get(), 0, SEEK_END);
        const long file_size = std::ftell(f.get());
        const size_t data_offset = gguf_get_data_offset(g.get());
        for (int64_t i = 0; i < gguf_get_n_tensors(g.get()); ++i) {
            const size_t end = data_offset + gguf_get_tensor_offset(g.get(), i) + gguf_get_tensor_size(g.get(), i);
            if (file_size < 0 || end > (size_t) file_size) bad_file(path, "truncated (tensor data past the end of the file)");
        }

        buf_ = ggml_backend_alloc_ctx_tensors(ctx_, backend);
        if (!buf_) fail(status::backend, path + ": cannot allocate the head's weights on the device");
        // Without the mark the scheduler places the head's ops by a tie-break, not by where its weights are.
        ggml_backend_buffer_set_usage(buf_, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        std::vector<uint8_t> host;
        for (int64_t i = 0; i < gguf_get_n_tensors(g.get()); ++i) {
            ggml_tensor * t = ggml_get_tensor(ctx_, gguf_get_tensor_name(g.get(), i));
            host.resize(ggml_nbytes(t));
            std::fseek(f.get(), (long) (data_offset + gguf_get_tensor_offset(g.get(), i)), SEEK_SET);
            if (std::fread(host.data(), 1, host.size(), f.get()) != host.size()) bad_file(path, "read error");
            const float * v = reinterpret_cast<const float *>(host.data());
            for (int64_t j = 0; j < ggml_nelements(t); ++j) {
                if (!std::isfinite(v[j])) bad_file(path, std::string(t->name) + " holds NaN or inf values");
            }
            ggml_backend_tensor_set(t, host.data(), 0, host.size());
        }
    } catch (...) {
        if (buf_) ggml_backend_buffer_free(buf_);
        ggml_free(ctx_);
        throw;
    }
}

sift_head::~sift_head() {
    ggml_backend_buffer_free(buf_);
    ggml_free(ctx_);
}

} // namespace omnisift
