// omnisift_decode_embd / omnisift_decode_tokens against a real llama context (the tiny qwen2vl model,
// path in OMNISIFT_TINY_LLM; skipped when unset): batching, M-RoPE positions out of order, and
// failures that leave the cache as it was. Every decode is compared with llama.cpp's own: the same
// rows through plain llama_decode, in batches built here as omnisift.h documents them (t order, a
// new batch where (t, h, w) goes down), in a second context whose n_batch never splits them.
#include "omnisift.h"
#include "check.h"
#include "llama_helpers.h"

#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

// One plain llama_batch: rows (embd [n][d], pos t/h/w per row, 4 M-RoPE sections) or tokens
// (pos t only: llama.cpp spreads it), logits for the last entry only.
static int32_t ref_decode(llama_context * ctx, const std::vector<float> * embd, const std::vector<int32_t> & tokens,
                          const std::vector<int32_t> & t, const std::vector<int32_t> & h,
                          const std::vector<int32_t> & w) {
    const int32_t n = (int32_t) t.size();
    std::vector<llama_pos> pos(embd ? 4 * n : n, 0);
    for (int32_t i = 0; i < n; ++i) {
        pos[i] = t[i];
        if (embd) { pos[n + i] = h[i]; pos[2 * n + i] = w[i]; }
    }
    std::vector<int32_t> n_seq(n, 1);
    std::vector<llama_seq_id> sid(n, 0);
    std::vector<llama_seq_id *> sids(n);
    for (int32_t i = 0; i < n; ++i) sids[i] = &sid[i];
    std::vector<int8_t> logits(n, 0);
    logits[n - 1] = 1;
    llama_batch b = {};
    b.n_tokens = n;
    b.token = embd ? nullptr : const_cast<int32_t *>(tokens.data());
    b.embd = embd ? const_cast<float *>(embd->data()) : nullptr;
    b.pos = pos.data();
    b.n_seq_id = n_seq.data();
    b.seq_id = sids.data();
    b.logits = logits.data();
    return llama_decode(ctx, b);
}

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
    llama_context * ctx = new_context(model, 64);  // forces the rows below across several batches
    llama_context * ref = new_context(model, 512);  // llama.cpp's own decode, one batch per group
    CHECK(ctx != nullptr && ref != nullptr);
    if (!ctx || !ref) return 1;
    const int64_t d = llama_model_n_embd_inp(model);
    const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    llama_memory_t mem = llama_get_memory(ctx);

    // text at 0..2
    const int32_t toks[3] = {151644, 872, 198};
    const int32_t tpos[3] = {0, 1, 2};
    CHECK(omnisift_decode_tokens(ctx, toks, 3, tpos, 0, 1) == OMNISIFT_OK);
    CHECK(ref_decode(ref, nullptr, {151644, 872, 198}, {0, 1, 2}, {}, {}) == 0);
    CHECK(same_logits(ctx, ref, n_vocab, "text tokens"));

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
    CHECK(omnisift_decode_embd(ctx, embd.data(), n, d, pos.data(), 0, 1) == OMNISIFT_OK);
    CHECK(llama_memory_seq_pos_max(mem, 0) == 52);  // the largest t decoded (audio reaches 3 + 49)

    // The reference's batches, written out: grid 0; audio t = 3..27 then grid 1 (t = 28); audio
    // t = 28..52 (its first row (28, 28, 28) is below grid 1's last (28, 32, 37): a new batch).
    const std::vector<std::vector<int64_t>> groups = {{0, 50}, {100, 125}, {50, 100}, {125, 150}};
    const int split[] = {1, 3, 4};  // groups [0,1), [1,3), [3,4) are one batch each
    for (int g0 = 0, k = 0; k < 3; g0 = split[k++]) {
        std::vector<float> be;
        std::vector<int32_t> bt, bh, bw;
        for (int g = g0; g < split[k]; ++g) {
            for (int64_t r = groups[g][0]; r < groups[g][1]; ++r) {
                be.insert(be.end(), embd.begin() + r * d, embd.begin() + (r + 1) * d);
                bt.push_back(pos[r]); bh.push_back(pos[n + r]); bw.push_back(pos[2 * n + r]);
            }
        }
        CHECK(ref_decode(ref, &be, {}, bt, bh, bw) == 0);
    }
    CHECK(same_logits(ctx, ref, n_vocab, "last row of the Omni chunk"));

    const int32_t after[2] = {151645, 198};
    const int32_t apos[2] = {53, 54};
    CHECK(omnisift_decode_tokens(ctx, after, 2, apos, 0, 1) == OMNISIFT_OK);
    CHECK(ref_decode(ref, nullptr, {151645, 198}, {53, 54}, {}, {}) == 0);
    CHECK(same_logits(ctx, ref, n_vocab, "text after the chunk"));  // attends to every row above

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
    // the context is still usable and holds what it held: as if the failed calls never happened
    const int32_t next_pos[2] = {55, 56};
    CHECK(omnisift_decode_tokens(ctx, after, 2, next_pos, 0, 1) == OMNISIFT_OK);
    CHECK(ref_decode(ref, nullptr, {151645, 198}, {55, 56}, {}, {}) == 0);
    CHECK(same_logits(ctx, ref, n_vocab, "text after the failed calls"));

    llama_free(ref);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return test_result("test_decode");
}
