// A learned-head GGUF for the C++ tests, written as pyomnisift convert-head writes it.
#pragma once

#include "ggml.h"
#include "gguf.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

// A head GGUF as pyomnisift convert-head writes it, with small deterministic weights; when
// truncate_by > 0 the file is cut short by that many bytes.
inline std::string write_head(const char * tag, int64_t d, long truncate_by = 0) {
    const int64_t h = 16, nh = 8, s = 8;
    const char * tmp = std::getenv("TMPDIR");
    const std::string path = std::string(tmp ? tmp : "/tmp") + "/omnisift_test_head_" + tag + "_" +
                             std::to_string((long) getpid()) + ".gguf";
    ggml_init_params ip = {64 * ggml_tensor_overhead() + 4 * (size_t) (2 * d * h + 4 * h * h + h * s + 16 * h + 2 * s + 16), nullptr, false};
    ggml_context * ctx = ggml_init(ip);
    gguf_context * g = gguf_init_empty();
    gguf_set_val_str(g, "general.architecture", "omnisift-head");
    gguf_set_val_u32(g, "omnisift.n_embd", (uint32_t) d);
    gguf_set_val_u32(g, "omnisift.hidden", (uint32_t) h);
    gguf_set_val_u32(g, "omnisift.n_head", (uint32_t) nh);
    gguf_set_val_u32(g, "omnisift.score_hidden", (uint32_t) s);
    const struct { const char * name; int64_t ne0, ne1; } shapes[] = {
        {"v_proj.weight", d, h}, {"v_proj.bias", h, 1}, {"a_proj.weight", d, h}, {"a_proj.bias", h, 1},
        {"v_norm.weight", h, 1}, {"v_norm.bias", h, 1}, {"a_norm.weight", h, 1}, {"a_norm.bias", h, 1},
        {"cross_attn.in_proj_weight", h, 3 * h}, {"cross_attn.in_proj_bias", 3 * h, 1},
        {"cross_attn.out_proj.weight", h, h}, {"cross_attn.out_proj.bias", h, 1},
        {"post_attn_norm.weight", h, 1}, {"post_attn_norm.bias", h, 1},
        {"score_head.0.weight", h, s}, {"score_head.0.bias", s, 1}, {"score_head.2.weight", s, 1}, {"score_head.2.bias", 1, 1},
    };
    int k = 0;
    for (const auto & sh : shapes) {
        ggml_tensor * t = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, sh.ne0, sh.ne1);
        ggml_set_name(t, sh.name);
        float * v = (float *) t->data;
        for (int64_t i = 0; i < ggml_nelements(t); ++i) v[i] = (float) std::sin(0.37 * (double) (i + 31 * ++k % 97));
        gguf_add_tensor(g, t);
    }
    gguf_write_to_file(g, path.c_str(), false);
    gguf_free(g);
    ggml_free(ctx);
    if (truncate_by > 0) {
        FILE * f = std::fopen(path.c_str(), "rb");
        std::fseek(f, 0, SEEK_END);
        const long size = std::ftell(f);
        std::fclose(f);
        if (truncate(path.c_str(), size - truncate_by) != 0) std::perror("truncate");
    }
    return path;
}
