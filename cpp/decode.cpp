// C API: omnisift_decode_embd / omnisift_decode_tokens, decoding at explicit positions.
#include "omnisift.h"
#include "decode.h"
#include "error.h"

#include "llama.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

namespace {

using omnisift::fail;
using omnisift::require;

bool uses_mrope(const llama_model * model) {
    const auto rt = llama_model_rope_type(model);
    return rt == LLAMA_ROPE_TYPE_MROPE || rt == LLAMA_ROPE_TYPE_IMROPE;
}

// Owns the arrays a llama_batch points at (llama_batch_init cannot size pos for 4 sections).
struct batch_storage {
    std::vector<float>        embd;
    std::vector<llama_token>  token;
    std::vector<llama_pos>    pos;
    std::vector<int32_t>      n_seq_id;
    std::vector<llama_seq_id> seq_id_val;
    std::vector<llama_seq_id*> seq_id;
    std::vector<int8_t>       logits;

    const float *             embd_in_place = nullptr;   // rows used where they are, instead of embd

    llama_batch view(int32_t n, llama_seq_id sid, bool want_last) {
        n_seq_id.assign(n, 1);
        seq_id_val.assign(n, sid);
        seq_id.resize(n);
        for (int32_t i = 0; i < n; ++i) seq_id[i] = &seq_id_val[i];
        logits.assign(n, 0);
        if (want_last) logits[n - 1] = 1;
        llama_batch b = {};
        b.n_tokens = n;
        b.token = token.empty() ? nullptr : token.data();
        // llama_decode only reads the rows.
        b.embd = embd_in_place ? const_cast<float *>(embd_in_place) : embd.empty() ? nullptr : embd.data();
        b.pos = pos.data();
        b.n_seq_id = n_seq_id.data();
        b.seq_id = seq_id.data();
        b.logits = logits.data();
        return b;
    }
};

std::string decode_failure(int32_t ret, int64_t done, int64_t total, uint32_t n_ctx) {
    std::string why = ret == 1 ? "no room left in the KV cache (n_ctx = " + std::to_string(n_ctx) +
                                     "): use a larger n_ctx or a lower retention"
                    : ret == 2 ? "aborted"
                               : "llama_decode returned " + std::to_string(ret);
    return "decoding failed after " + std::to_string(done) + " of " + std::to_string(total) + " rows: " + why;
}

// Runs fn over batches of at most n_batch rows, also starting a new batch before every row for
// which cut(row) is true; on failure trims the sequence back to where this call started.
template <typename Cut, typename Fn>
int64_t decode_batches(llama_context * lctx, llama_seq_id seq_id, int64_t n, Cut && cut, Fn && decode_one) {
    llama_memory_t mem = llama_get_memory(lctx);
    const llama_pos start = llama_memory_seq_pos_max(mem, seq_id) + 1;  // section 0 (t) under M-RoPE
    const int64_t n_batch = llama_n_batch(lctx);
    int64_t n_calls = 0;
    for (int64_t off = 0, cnt = 0; off < n; off += cnt) {
        cnt = 1;
        while (off + cnt < n && cnt < n_batch && !cut(off + cnt)) ++cnt;
        const int32_t ret = decode_one(off, (int32_t) cnt, off + cnt == n);
        ++n_calls;
        if (ret != 0) {
            llama_memory_seq_rm(mem, seq_id, start, -1);
            fail(omnisift::status::backend, decode_failure(ret, off, n, llama_n_ctx(lctx)));
        }
    }
    return n_calls;
}

} // namespace

namespace omnisift {

int64_t decode_rows(llama_context * lctx, const float * embd, int64_t n_rows, int64_t n_embd, const int32_t * pos,
                    int32_t seq_id, bool logits_last, int64_t * bytes_copied) {
    require(lctx != nullptr, "llama context is NULL");
    require(embd != nullptr && pos != nullptr, "embd and pos must not be NULL");
    require(n_rows > 0, "n_rows must be positive, got " + std::to_string(n_rows));
    require(seq_id >= 0, "seq_id must be >= 0");
    const llama_model * model = llama_get_model(lctx);
    const int64_t n_embd_model = llama_model_n_embd_inp(model);
    require(n_embd == n_embd_model, "rows have width " + std::to_string(n_embd) +
                                    " but the model's input embedding width is " + std::to_string(n_embd_model));
    for (int64_t i = 0; i < 3 * n_rows; ++i) {
        require(pos[i] >= 0, "negative position at row " + std::to_string(i % n_rows));
    }

    // llama.cpp requires t to be non-decreasing within a batch and across batches; the Omni
    // sequence is not (a chunk's audio starts at the chunk's first t, after its second grid).
    // Within one batch the M-RoPE mask follows positions alone, so stable t order changes no
    // attention there. A new batch starts wherever (t, h, w) goes down: rows already decoded
    // then cannot see that row, which comes later in the sequence (the first audio token of a
    // video has its first grid's t), as in the reference's sequence-order mask.
    std::vector<int64_t> order(n_rows);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return pos[a] < pos[b]; });
    auto lex = [&](int64_t r) { return std::make_tuple(pos[r], pos[n_rows + r], pos[2 * n_rows + r]); };
    auto goes_down = [&](int64_t i) { return lex(order[i]) <= lex(order[i - 1]); };

    const bool mrope = uses_mrope(model);
    const int n_sec = mrope ? 4 : 1;
    batch_storage st;
    return decode_batches(lctx, seq_id, n_rows, goes_down, [&](int64_t off, int32_t cnt, bool last) {
        // Rows already consecutive in decode order are decoded where they are.
        bool in_place = true;
        for (int32_t i = 1; i < cnt && in_place; ++i) in_place = order[off + i] == order[off] + i;
        st.embd_in_place = in_place ? embd + order[off] * n_embd : nullptr;
        if (!in_place) {
            st.embd.resize((size_t) cnt * n_embd);
            if (bytes_copied) *bytes_copied += (int64_t) cnt * n_embd * (int64_t) sizeof(float);
        }
        st.pos.assign((size_t) cnt * n_sec, 0);
        for (int32_t i = 0; i < cnt; ++i) {
            const int64_t r = order[off + i];
            if (!in_place) std::copy_n(embd + r * n_embd, n_embd, st.embd.data() + (size_t) i * n_embd);
            st.pos[i] = pos[r];                               // t
            if (mrope) {
                st.pos[cnt + i]     = pos[n_rows + r];        // h: the row, llama.cpp's y
                st.pos[2 * cnt + i] = pos[2 * n_rows + r];    // w: the column, llama.cpp's x
            }
        }
        return llama_decode(lctx, st.view(cnt, seq_id, last && logits_last));
    });
}

int64_t decode_tokens(llama_context * lctx, const int32_t * tokens, int64_t n_tokens, const int32_t * pos,
                      int32_t seq_id, bool logits_last) {
    require(lctx != nullptr, "llama context is NULL");
    require(tokens != nullptr && pos != nullptr, "tokens and pos must not be NULL");
    require(n_tokens > 0, "n_tokens must be positive, got " + std::to_string(n_tokens));
    require(seq_id >= 0, "seq_id must be >= 0");
    const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(lctx)));
    for (int64_t i = 0; i < n_tokens; ++i) {
        require(tokens[i] >= 0 && tokens[i] < n_vocab,
                "token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                " is outside the vocabulary (" + std::to_string(n_vocab) + " tokens)");
        require(pos[i] >= 0, "negative position at token " + std::to_string(i));
    }
    batch_storage st;
    auto never = [](int64_t) { return false; };
    return decode_batches(lctx, seq_id, n_tokens, never, [&](int64_t off, int32_t cnt, bool last) {
        st.token.assign(tokens + off, tokens + off + cnt);
        st.pos.assign(pos + off, pos + off + cnt);  // llama.cpp spreads t to h and w itself
        return llama_decode(lctx, st.view(cnt, seq_id, last && logits_last));
    });
}

} // namespace omnisift

extern "C" {

int32_t omnisift_decode_embd(llama_context * lctx, const float * embd, int64_t n_rows, int64_t n_embd,
                             const int32_t * pos, int32_t seq_id, int32_t logits_last) {
    return omnisift::api_call([&] { omnisift::decode_rows(lctx, embd, n_rows, n_embd, pos, seq_id, logits_last != 0); });
}

int32_t omnisift_decode_tokens(llama_context * lctx, const int32_t * tokens, int64_t n_tokens, const int32_t * pos,
                               int32_t seq_id, int32_t logits_last) {
    return omnisift::api_call([&] { omnisift::decode_tokens(lctx, tokens, n_tokens, pos, seq_id, logits_last != 0); });
}

} // extern "C"


