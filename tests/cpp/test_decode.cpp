// omnisift_decode_embd / omnisift_decode_tokens against a real llama context (the tiny qwen2vl model,
// path in OMNISIFT_TINY_LLM; skipped when unset): batching, M-RoPE positions out of order, and
// failures that leave the cache as it was.
#include "omnisift.h"
#include "check.h"

#include "llama.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>


static void quiet(ggml_log_level, const char *, void *) {}

int main() {
    const char * path = std::getenv("OMNISIFT_TINY_LLM");
    if (!path || !*path) {
        std::printf("test_decode: OMNISIFT_TINY_LLM not set, skipped\n");
        return 77;
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(path, mp);
    CHECK(model != nullptr);
    if (!model) return 1;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 64;  // forces the rows below across several batches
    cp.n_ubatch = 64;
    cp.n_threads = 1;
    llama_context * ctx = llama_init_from_model(model, cp);
    CHECK(ctx != nullptr);
    const int64_t d = llama_model_n_embd_inp(model);
    llama_memory_t mem = llama_get_memory(ctx);

    // text at 0..2
    const int32_t toks[3] = {151644, 872, 198};
    const int32_t tpos[3] = {0, 1, 2};
    CHECK(omnisift_decode_tokens(ctx, toks, 3, tpos, 0, 0) == OMNISIFT_OK);

    // 150 rows laid out like an Omni chunk: a grid at t=3, one at t=28, then audio from t=3 (t drops)
    const int64_t n = 150;
    std::vector<float> embd(n * d);
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (auto & v : embd) v = nd(rng);
    std::vector<int32_t> pos(3 * n);
    for (int64_t i = 0; i < n; ++i) {
        int32_t t = i < 50 ? 3 : i < 100 ? 28 : 3 + (int32_t) (i - 100);
        int32_t h = i < 100 ? t + (int32_t) ((i % 50) / 10) : t;
        int32_t w = i < 100 ? t + (int32_t) ((i % 50) % 10) : t;
        pos[i] = t; pos[n + i] = h; pos[2 * n + i] = w;
    }
    CHECK(omnisift_decode_embd(ctx, embd.data(), n, d, pos.data(), 0, 0) == OMNISIFT_OK);
    CHECK(llama_memory_seq_pos_max(mem, 0) == 52);  // the largest t decoded (audio reaches 3 + 49)

    const int32_t after[2] = {151645, 198};
    const int32_t apos[2] = {53, 54};
    CHECK(omnisift_decode_tokens(ctx, after, 2, apos, 0, 1) == OMNISIFT_OK);
    const float * logits = llama_get_logits_ith(ctx, -1);
    CHECK(logits != nullptr && std::isfinite(logits[0]));

    // bad arguments: errors, no abort, nothing decoded
    CHECK(omnisift_decode_embd(ctx, embd.data(), n, d + 1, pos.data(), 0, 0) == OMNISIFT_ERR_ARGUMENT);
    CHECK(std::strstr(omnisift_last_error(), "width") != nullptr);
    CHECK(omnisift_decode_embd(nullptr, embd.data(), n, d, pos.data(), 0, 0) == OMNISIFT_ERR_ARGUMENT);
    pos[7] = -1;
    CHECK(omnisift_decode_embd(ctx, embd.data(), n, d, pos.data(), 0, 0) == OMNISIFT_ERR_ARGUMENT);
    pos[7] = 3;
    const int32_t bad_tok[1] = {1 << 30};
    CHECK(omnisift_decode_tokens(ctx, bad_tok, 1, apos, 0, 0) == OMNISIFT_ERR_ARGUMENT);
    CHECK(llama_memory_seq_pos_max(mem, 0) == 54);

    // more rows than the cache holds: a backend error naming n_ctx, and the cache trimmed back
    const int64_t big = 600;
    std::vector<float> many(big * d, 0.01f);
    std::vector<int32_t> mpos(3 * big);
    for (int64_t i = 0; i < big; ++i) mpos[i] = mpos[big + i] = mpos[2 * big + i] = 55 + (int32_t) i;
    CHECK(omnisift_decode_embd(ctx, many.data(), big, d, mpos.data(), 0, 0) == OMNISIFT_ERR_BACKEND);
    CHECK(std::strstr(omnisift_last_error(), "n_ctx") != nullptr);
    CHECK(llama_memory_seq_pos_max(mem, 0) == 54);
    const int32_t next_pos[2] = {55, 56};  // the context is still usable
    CHECK(omnisift_decode_tokens(ctx, after, 2, next_pos, 0, 1) == OMNISIFT_OK);

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return test_result("test_decode");
}
