// omnisift_prefill_* against a real llama context (the tiny qwen2vl model, path in OMNISIFT_TINY_LLM;
// skipped when unset): units queued and decoded several per batch give the logits of llama.cpp's
// own llama_decode of the same rows in one batch; a unit is never split across flushes; a failed
// flush empties the queue and leaves the cache as it was. Under ASan + LSan in CI.
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

int main() {
    const char * path = std::getenv("OMNISIFT_TINY_LLM");
    if (!path || !*path) {
        std::printf("test_prefill: OMNISIFT_TINY_LLM not set, skipped\n");
        return 77;
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(path, llama_model_default_params());
    CHECK(model != nullptr);
    if (!model) return 1;
    llama_context * ctx = new_context(model, 512);
    llama_context * ref = new_context(model, 512);
    CHECK(ctx != nullptr && ref != nullptr);
    if (!ctx || !ref) return 1;
    const int64_t d = llama_model_n_embd_inp(model);
    const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    // four units of 30 video rows at t = 10, 20, 30, 40; (t, h, w) ascends, so one batch is legal
    const int64_t per = 30, n_units = 4, n = per * n_units;
    std::vector<float> embd(n * d);
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (auto & v : embd) v = nd(rng);
    std::vector<int32_t> pos(3 * n), modality(n, OMNISIFT_MODALITY_VIDEO);
    for (int64_t i = 0; i < n; ++i) {
        const int32_t t = 10 * (int32_t) (1 + i / per), r = (int32_t) (i % per);
        pos[i] = t; pos[n + i] = t + r / 5; pos[2 * n + i] = t + r % 5;
    }

    omnisift_prefill_params pp = omnisift_prefill_default_params();
    pp.max_rows = 64;   // two units fit, three do not
    omnisift_prefill * pf = omnisift_prefill_init(ctx, pp);
    CHECK(pf != nullptr);
    std::vector<int32_t> upos(3 * per);
    for (int64_t u = 0; u < n_units; ++u) {
        for (int k = 0; k < 3; ++k) std::copy_n(pos.begin() + k * n + u * per, per, upos.begin() + k * per);
        CHECK(omnisift_prefill_add(pf, nullptr, embd.data() + u * per * d, per, d, modality.data() + u * per,
                                   upos.data(), nullptr, -1, nullptr) == OMNISIFT_OK);
    }
    CHECK(omnisift_prefill_n_queued(pf) == 60);
    CHECK(omnisift_prefill_flush(pf, 1) == OMNISIFT_OK);
    omnisift_prefill_stats st = omnisift_prefill_get_stats(pf);
    CHECK(st.n_rows_in == n && st.n_rows_kept == n && st.n_flushes == 2 && st.n_decode_calls == 2);
    CHECK(omnisift_decode_embd(ref, embd.data(), n, d, pos.data(), 0, 1) == OMNISIFT_OK);  // one batch
    CHECK(same_logits(ctx, ref, n_vocab, "four units, two per batch"));

    // a sifted unit: half of one grid kept
    omnisift_engine_params ep = omnisift_engine_default_params();
    ep.n_threads = 1;
    ep.device = "CPU";
    omnisift_engine * eng = omnisift_engine_init(ep);
    CHECK(eng != nullptr);
    omnisift_sift_params sp = omnisift_sift_default_params();
    sp.video_retention = 0.5;
    std::vector<uint8_t> keep(per, 9);
    for (int k = 0; k < 3; ++k) {
        for (int64_t i = 0; i < per; ++i) upos[k * per + i] = pos[k * n + i] + 50;
    }
    CHECK(omnisift_prefill_add(pf, eng, embd.data(), per, d, modality.data(), upos.data(), &sp, -1, keep.data()) == OMNISIFT_OK);
    int kept = 0;
    for (uint8_t k : keep) kept += k;
    CHECK(kept == 15 && omnisift_prefill_n_queued(pf) == 15);

    // bad input: an error, the mask and the queue untouched
    std::vector<float> bad(embd.begin(), embd.begin() + per * d);
    bad[5] = NAN;
    std::fill(keep.begin(), keep.end(), 9);
    CHECK(omnisift_prefill_add(pf, eng, bad.data(), per, d, modality.data(), upos.data(), &sp, -1, keep.data()) ==
          OMNISIFT_ERR_ARGUMENT);
    CHECK(keep[0] == 9 && omnisift_prefill_n_queued(pf) == 15);
    CHECK(omnisift_prefill_add(pf, eng, bad.data(), per, d + 1, modality.data(), upos.data(), &sp, -1, nullptr) ==
          OMNISIFT_ERR_ARGUMENT);
    CHECK(omnisift_prefill_flush(pf, 0) == OMNISIFT_OK);
    llama_memory_t mem = llama_get_memory(ctx);
    const llama_pos before = llama_memory_seq_pos_max(mem, 0);

    // more rows than the cache holds: the flush fails, the queue is emptied, the cache trimmed back
    const int64_t big = 600;
    std::vector<float> many(big * d, 0.01f);
    std::vector<int32_t> mpos(3 * big), mmod(big, OMNISIFT_MODALITY_AUDIO);
    for (int64_t i = 0; i < big; ++i) mpos[i] = mpos[big + i] = mpos[2 * big + i] = 200 + (int32_t) i;
    CHECK(omnisift_prefill_add(pf, nullptr, many.data(), big, d, mmod.data(), mpos.data(), nullptr, -1, nullptr) ==
          OMNISIFT_ERR_BACKEND);
    CHECK(std::strstr(omnisift_last_error(), "n_ctx") != nullptr);
    CHECK(omnisift_prefill_n_queued(pf) == 0 && llama_memory_seq_pos_max(mem, 0) == before);

    CHECK(omnisift_prefill_init(nullptr, pp) == nullptr);
    omnisift_prefill_free(pf);
    omnisift_engine_free(eng);
    llama_free(ref);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return test_result("test_prefill");
}
