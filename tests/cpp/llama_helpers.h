// Shared by the C++ tests that run a real llama context: a silent log and a logits comparison.
#pragma once

#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

inline void quiet(ggml_log_level, const char *, void *) {}

// A small context with flash attention off in the CPU backend, whose rounding would otherwise depend
// on how rows are split into ubatches (2.6e-4 of the logits' range for 100 rows decoded 100 vs
// 64 + 36; without it the split changes nothing) and hide the differences the tests look for.
inline llama_context * new_context(llama_model * model, uint32_t n_batch) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = n_batch;
    cp.n_ubatch = n_batch;
    cp.n_threads = 1;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    return llama_init_from_model(model, cp);
}

// The last logits of both contexts agree within 1e-5 of their range (random weights: range > 0).
inline bool same_logits(llama_context * a, llama_context * b, int32_t n_vocab, const char * what) {
    const float * la = llama_get_logits_ith(a, -1);
    const float * lb = llama_get_logits_ith(b, -1);
    if (!la || !lb) return false;
    float lo = lb[0], hi = lb[0], diff = 0.f;
    for (int32_t i = 0; i < n_vocab; ++i) {
        lo = std::min(lo, lb[i]);
        hi = std::max(hi, lb[i]);
        diff = std::max(diff, std::fabs(la[i] - lb[i]));  // NaN makes the comparison below false
    }
    const bool ok = hi > lo && diff <= 1e-5f * (hi - lo);
    if (!ok) std::fprintf(stderr, "%s: max |diff| %g, range %g\n", what, diff, hi - lo);
    return ok;
}
