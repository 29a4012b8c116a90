// omnisift_context_* against a real llama context (the tiny qwen2vl model, path in OMNISIFT_TINY_LLM;
// skipped when unset), on units whose rows are given: units queued and decoded several per batch
// give the logits of llama.cpp's own llama_decode of the same rows in one batch; a unit is never
// split across flushes; a failed flush empties the queue and leaves the cache as it was; audio rows
// handed out by range from the item's stream. Under ASan + LSan in CI.
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

namespace {

// A unit whose rows are given: embd [n][d], modality, pos [3][n]; source 0 (given rows need none).
int32_t add(omnisift_context * oc, const float * embd, int64_t n, const int32_t * modality, const int32_t * pos,
            uint8_t * keep, const int32_t * source = nullptr) {
    static std::vector<int32_t> zeros;
    zeros.assign(n, 0);
    omnisift_unit u = {};
    u.n_rows = n;
    u.modality = modality;
    u.source = source ? source : zeros.data();
    u.pos = pos;
    u.renumber_from = -1;
    u.embd = embd;
    return omnisift_context_add(oc, &u, keep);
}

} // namespace

int main() {
    const char * path = std::getenv("OMNISIFT_TINY_LLM");
    if (!path || !*path) {
        std::printf("test_context: OMNISIFT_TINY_LLM not set, skipped\n");
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

    omnisift_context_params pp = omnisift_context_default_params();
    pp.max_rows = 64;   // two units fit, three do not
    omnisift_engine_params ep = omnisift_engine_default_params();
    ep.n_threads = 1;
    ep.device = "CPU";
    omnisift_engine * eng = omnisift_engine_init(ep);
    CHECK(eng != nullptr);
    omnisift_context * pf = omnisift_context_init(ctx, nullptr, eng, nullptr, pp);
    CHECK(pf != nullptr);
    CHECK(omnisift_context_begin(pf, nullptr) == OMNISIFT_OK);
    std::vector<int32_t> upos(3 * per);
    for (int64_t u = 0; u < n_units; ++u) {
        for (int k = 0; k < 3; ++k) std::copy_n(pos.begin() + k * n + u * per, per, upos.begin() + k * per);
        CHECK(add(pf, embd.data() + u * per * d, per, modality.data() + u * per, upos.data(), nullptr) == OMNISIFT_OK);
    }
    CHECK(omnisift_context_n_queued(pf) == 60);
    CHECK(omnisift_context_end(pf, 1) == OMNISIFT_OK);
    omnisift_context_stats st = omnisift_context_get_stats(pf);
    CHECK(st.n_rows_in == n && st.n_rows_kept == n && st.n_flushes == 2 && st.n_decode_calls == 2);
    CHECK(omnisift_decode_embd(ref, embd.data(), n, d, pos.data(), 0, 1) == OMNISIFT_OK);  // one batch
    CHECK(same_logits(ctx, ref, n_vocab, "four units, two per batch"));

    // a sifted unit: half of one grid kept
    omnisift_sift_params sp = omnisift_sift_default_params();
    sp.video_retention = 0.5;
    CHECK(omnisift_context_begin(pf, &sp) == OMNISIFT_OK);
    std::vector<uint8_t> keep(per, 9);
    for (int k = 0; k < 3; ++k) {
        for (int64_t i = 0; i < per; ++i) upos[k * per + i] = pos[k * n + i] + 50;
    }
    CHECK(add(pf, embd.data(), per, modality.data(), upos.data(), keep.data()) == OMNISIFT_OK);
    int kept = 0;
    for (uint8_t k : keep) kept += k;
    CHECK(kept == 15 && omnisift_context_n_queued(pf) == 15);
    int64_t n_rows = 0, n_embd = 0;
    const float * rows = omnisift_context_unit_rows(pf, &n_rows, &n_embd);
    CHECK(rows != nullptr && n_rows == per && n_embd == d && std::memcmp(rows, embd.data(), per * d * sizeof(float)) == 0);

    // bad input: an error, the mask and the queue untouched
    std::vector<float> bad(embd.begin(), embd.begin() + per * d);
    bad[5] = NAN;
    std::fill(keep.begin(), keep.end(), 9);
    CHECK(add(pf, bad.data(), per, modality.data(), upos.data(), keep.data()) == OMNISIFT_ERR_ARGUMENT);
    CHECK(keep[0] == 9 && omnisift_context_n_queued(pf) == 15);
    CHECK(omnisift_context_begin(pf, nullptr) == OMNISIFT_ERR_ARGUMENT);   // rows still queued
    CHECK(omnisift_context_end(pf, 0) == OMNISIFT_OK);

    // audio rows given as a stream: units take increasing ranges, the stream grows as they ask
    CHECK(omnisift_context_begin(pf, nullptr) == OMNISIFT_OK);
    {
        std::vector<int32_t> amod(per, OMNISIFT_MODALITY_AUDIO), asrc(per), apos(3 * per);
        std::vector<uint8_t> akeep(per);
        omnisift_unit u = {};
        u.n_rows = 20;
        u.modality = amod.data();
        u.source = asrc.data();
        u.pos = apos.data();
        u.renumber_from = -1;
        for (int64_t i = 0; i < 20; ++i) { asrc[i] = (int32_t) i; apos[i] = apos[20 + i] = apos[40 + i] = 60 + (int32_t) i; }
        u.audio_rows = embd.data();
        u.n_audio_rows = 25;            // the stream gets rows 0..24, the unit takes 0..19
        CHECK(omnisift_context_add(pf, &u, akeep.data()) == OMNISIFT_OK);
        const float * got = omnisift_context_unit_rows(pf, &n_rows, &n_embd);
        CHECK(n_rows == 20 && std::memcmp(got, embd.data(), 20 * d * sizeof(float)) == 0);
        for (int64_t i = 0; i < 10; ++i) { asrc[i] = 20 + (int32_t) i; apos[i] = apos[10 + i] = apos[20 + i] = 80 + (int32_t) i; }
        u.n_rows = 10;
        u.audio_rows = embd.data() + 25 * d;
        u.n_audio_rows = 5;             // rows 25..29; the unit takes 20..29 (20..24 held from before)
        CHECK(omnisift_context_add(pf, &u, akeep.data()) == OMNISIFT_OK);
        got = omnisift_context_unit_rows(pf, &n_rows, &n_embd);
        CHECK(n_rows == 10 && std::memcmp(got, embd.data() + 20 * d, 10 * d * sizeof(float)) == 0);
        for (int64_t i = 0; i < 10; ++i) asrc[i] = 35 + (int32_t) i;   // past the stream: refused
        u.audio_rows = nullptr;
        u.n_audio_rows = 0;
        CHECK(omnisift_context_add(pf, &u, akeep.data()) == OMNISIFT_ERR_ARGUMENT);
        CHECK(std::strstr(omnisift_last_error(), "stream") != nullptr);
    }
    CHECK(omnisift_context_end(pf, 0) == OMNISIFT_OK);
    CHECK(omnisift_context_begin(pf, nullptr) == OMNISIFT_OK);
    llama_memory_t mem = llama_get_memory(ctx);
    const llama_pos before = llama_memory_seq_pos_max(mem, 0);

    // more rows than the cache holds: the flush fails, the queue is emptied, the cache trimmed back
    const int64_t big = 600;
    std::vector<float> many(big * d, 0.01f);
    std::vector<int32_t> mpos(3 * big), mmod(big, OMNISIFT_MODALITY_AUDIO);
    for (int64_t i = 0; i < big; ++i) mpos[i] = mpos[big + i] = mpos[2 * big + i] = 200 + (int32_t) i;
    CHECK(add(pf, many.data(), big, mmod.data(), mpos.data(), nullptr) == OMNISIFT_ERR_BACKEND);
    CHECK(std::strstr(omnisift_last_error(), "n_ctx") != nullptr);
    CHECK(omnisift_context_n_queued(pf) == 0 && llama_memory_seq_pos_max(mem, 0) == before);

    CHECK(omnisift_context_init(nullptr, nullptr, nullptr, nullptr, pp) == nullptr);
    omnisift_context_free(pf);
    omnisift_engine_free(eng);
    llama_free(ref);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return test_result("test_context");
}
