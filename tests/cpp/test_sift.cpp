// omnisift_sift and omnisift_head_load through the C API (run under AddressSanitizer by the lead):
// a sequence whose keep mask is known by construction, and bad arguments returning errors without
// writing the outputs.
#include "omnisift.h"
#include "check.h"
#include "head_file.h"

#include "ggml.h"
#include "gguf.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>
#include <vector>


int main() {
    omnisift_engine * eng = omnisift_engine_init(omnisift_engine_default_params());
    if (!eng) { std::fprintf(stderr, "%s\n", omnisift_last_error()); return 1; }

    // One chunk: F1 = 4 tokens, F2 = 4 tokens, 6 audio tokens; D = 2.
    // F1: tokens 0, 1 along the mean direction (cos 1), 2 and 3 orthogonal-ish: the spatial step drops
    // the two most similar (0, 1). F2: token i equals F1's token i except token 3: only 3 survives,
    // plus the lowest-index tie among 0..2 (all cos 1) -> 0.
    const int64_t d = 2;
    std::vector<float> embd = {
        1, 1,   1, 1,   1, -0.2f,   -0.2f, 1,        // F1 (mean direction (1, 1))
        1, 1,   1, 1,   1, -0.2f,   -1, 0.1f,        // F2
        1, 1,   1, 1,   1, 1,   1, 1,   1, 1,   1, 1, // audio, all equal: ties keep the first
    };
    const int64_t n = (int64_t) embd.size() / d;
    std::vector<int32_t> mod = {1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2};
    std::vector<int32_t> pos(3 * n);
    for (int64_t i = 0; i < n; ++i) {
        const int32_t t = i < 4 ? 0 : i < 8 ? 25 : (int32_t) (i - 8);
        pos[i] = pos[n + i] = pos[2 * n + i] = t;
    }
    omnisift_sift_params p = omnisift_sift_default_params();
    p.video_retention = 0.5;
    p.audio_retention = 0.5;
    std::vector<uint8_t> keep(n, 7);
    std::vector<float> scores(n);
    CHECK(omnisift_sift(eng, embd.data(), n, d, mod.data(), pos.data(), &p, keep.data(), scores.data()) == 0);
    const uint8_t want[] = {0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0};
    for (int64_t i = 0; i < n; ++i) CHECK(keep[i] == want[i]);
    CHECK(std::fabs(scores[0] - 1.0f) < 1e-6f && std::fabs(scores[4] - 1.0f) < 1e-6f);

    // Bad arguments: an error status, a message, and keep untouched.
    std::vector<uint8_t> untouched(n, 7);
    auto rejects = [&](omnisift_engine * e, const float * x, int64_t nt, int64_t nd, const int32_t * m,
                       const omnisift_sift_params * pp, const char * what) {
        std::vector<uint8_t> k(n, 7);
        const int32_t st = omnisift_sift(e, x, nt, nd, m, pos.data(), pp, k.data(), nullptr);
        CHECK(st == OMNISIFT_ERR_ARGUMENT);
        CHECK(std::strstr(omnisift_last_error(), what) != nullptr);
        CHECK(k == untouched);
    };
    rejects(nullptr, embd.data(), n, d, mod.data(), &p, "engine");
    rejects(eng, embd.data(), n, d, mod.data(), nullptr, "params");
    rejects(eng, nullptr, n, d, mod.data(), &p, "NULL");
    rejects(eng, embd.data(), -1, d, mod.data(), &p, "n_tokens");
    rejects(eng, embd.data(), n, 0, mod.data(), &p, "n_embd");
    omnisift_sift_params bad = p;
    bad.video_retention = NAN;
    rejects(eng, embd.data(), n, d, mod.data(), &bad, "video_retention");
    bad = p;
    bad.audio_selector = 9;
    rejects(eng, embd.data(), n, d, mod.data(), &bad, "audio_selector");
    bad.audio_selector = OMNISIFT_AUDIO_SELECTOR_VGAS;
    rejects(eng, embd.data(), n, d, mod.data(), &bad, "head");
    std::vector<int32_t> bad_mod = mod;
    bad_mod[3] = 4;
    rejects(eng, embd.data(), n, d, bad_mod.data(), &p, "modality[3]");
    std::vector<float> nan_embd = embd;
    nan_embd[2 * 5 + 1] = INFINITY;
    rejects(eng, nan_embd.data(), n, d, mod.data(), &p, "row 5");

    // The learned head: loads, scores every audio token, keeps the documented count.
    const std::string head_path = write_head("ok", d);
    omnisift_head * head = omnisift_head_load(eng, head_path.c_str());
    CHECK(head != nullptr);
    if (head) {
        CHECK(omnisift_head_n_embd(head) == d && omnisift_head_n_hidden(head) == 16);
        omnisift_sift_params pv = p;
        pv.audio_selector = OMNISIFT_AUDIO_SELECTOR_VGAS;
        pv.head = head;
        CHECK(omnisift_sift(eng, embd.data(), n, d, mod.data(), pos.data(), &pv, keep.data(), scores.data()) == 0);
        int kept_audio = 0;
        for (int64_t i = 8; i < n; ++i) {
            kept_audio += keep[i];
            CHECK(scores[i] > 0.0f && scores[i] < 1.0f);
        }
        CHECK(kept_audio == 3);
        // Embeddings of another width than the head's.
        std::vector<float> wide(n * 3, 0.5f);
        rejects(eng, wide.data(), n, 3, mod.data(), &pv, "width");
        omnisift_head_free(head);
    }
    std::remove(head_path.c_str());
    const std::string cut_path = write_head("cut", d, 64);
    CHECK(omnisift_head_load(eng, cut_path.c_str()) == nullptr);
    CHECK(std::strstr(omnisift_last_error(), "truncated") != nullptr);
    std::remove(cut_path.c_str());

    CHECK(omnisift_head_load(eng, "/nonexistent/head.gguf") == nullptr);
    CHECK(std::strstr(omnisift_last_error(), "cannot open") != nullptr);
    CHECK(omnisift_head_load(nullptr, "x") == nullptr);

    // The rules bindings read: selector names in enum order, the retention range, the chunks.
    CHECK(std::strcmp(omnisift_audio_selector_name(OMNISIFT_AUDIO_SELECTOR_NONE), "none") == 0);
    CHECK(std::strcmp(omnisift_audio_selector_name(OMNISIFT_AUDIO_SELECTOR_ANCHOR), "anchor") == 0);
    CHECK(std::strcmp(omnisift_audio_selector_name(OMNISIFT_AUDIO_SELECTOR_VGAS), "vgas") == 0);
    CHECK(std::strcmp(omnisift_audio_selector_name(OMNISIFT_AUDIO_SELECTOR_RANDOM), "random") == 0);
    CHECK(omnisift_audio_selector_name(4) == nullptr && omnisift_audio_selector_name(-1) == nullptr);
    double lo = -1, hi = -1;
    omnisift_retention_range(&lo, &hi);
    CHECK(lo == 0.0 && hi == 1.0);
    {
        // text, audio before the first grid, grids at t 10, 20, 30 (chunks 0, 0, 1), audio at t 10..35
        std::vector<int32_t> cm = {0, 2, 1, 1, 1, 1, 1, 1, 2, 2, 2, 3};
        std::vector<int32_t> ct = {0, 5, 10, 10, 20, 20, 30, 30, 10, 29, 35, 40};
        const int64_t cn = (int64_t) cm.size();
        std::vector<int32_t> cpos(3 * cn, 0);
        std::copy(ct.begin(), ct.end(), cpos.begin());
        std::vector<int64_t> chunk(cn, 99);
        CHECK(omnisift_sift_chunks(cm.data(), cpos.data(), cn, chunk.data()) == 2);
        const int64_t want_chunk[] = {-1, -1, 0, 0, 0, 0, 1, 1, 0, 0, 1, -1};
        for (int64_t i = 0; i < cn; ++i) CHECK(chunk[i] == want_chunk[i]);
        cm[3] = 7;
        std::vector<int64_t> same(cn, 99);
        CHECK(omnisift_sift_chunks(cm.data(), cpos.data(), cn, same.data()) == OMNISIFT_ERR_ARGUMENT);
        CHECK(same == std::vector<int64_t>(cn, 99));
        CHECK(omnisift_sift_chunks(cm.data(), cpos.data(), cn, nullptr) == OMNISIFT_ERR_ARGUMENT);
        CHECK(omnisift_sift_chunks(nullptr, nullptr, 0, nullptr) == 0);
    }

    omnisift_engine_free(eng);
    return test_result("test_sift");
}
