// C API: omnisift_prefill_*, compression units sifted and their kept rows decoded, batched across units.
#include "omnisift.h"
#include "decode.h"
#include "error.h"
#include "sift.h"

#include "llama.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

using omnisift::require;

struct omnisift_prefill {
    llama_context * lctx;
    int32_t seq_id;
    int64_t n_embd;
    int64_t max_rows;
    // Queued rows: embd [n][n_embd]; t, h, w per row (omnisift_decode_embd's [3][n] is built at flush).
    std::vector<float> embd;
    std::vector<int32_t> t, h, w;
    omnisift_prefill_stats stats{};

    int64_t n_queued() const { return (int64_t) t.size(); }

    void clear() {
        embd.clear();
        t.clear();
        h.clear();
        w.clear();
    }

    // Decodes the queue; it is empty afterwards, whether or not decoding succeeded.
    void flush(bool logits_last) {
        const int64_t n = n_queued();
        if (n == 0) return;
        std::vector<int32_t> pos;
        pos.reserve(3 * n);
        pos.insert(pos.end(), t.begin(), t.end());
        pos.insert(pos.end(), h.begin(), h.end());
        pos.insert(pos.end(), w.begin(), w.end());
        const auto t0 = std::chrono::steady_clock::now();
        try {
            stats.n_decode_calls += omnisift::decode_rows(lctx, embd.data(), n, n_embd, pos.data(), seq_id, logits_last,
                                                          &stats.bytes_host_copied);
        } catch (...) {
            clear();
            throw;
        }
        stats.t_decode_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        stats.n_flushes += 1;
        clear();
    }
};

extern "C" {

struct omnisift_prefill_params omnisift_prefill_default_params(void) {
    omnisift_prefill_params p;
    p.seq_id = 0;
    p.max_rows = 0;
    return p;
}

omnisift_prefill * omnisift_prefill_init(struct llama_context * lctx, struct omnisift_prefill_params params) {
    return omnisift::api_new<omnisift_prefill>([&] {
        require(lctx != nullptr, "llama context is NULL");
        require(params.seq_id >= 0, "seq_id must be >= 0");
        require(params.max_rows >= 0, "max_rows must be >= 0, got " + std::to_string(params.max_rows));
        auto * pf = new omnisift_prefill();
        pf->lctx = lctx;
        pf->seq_id = params.seq_id;
        pf->n_embd = llama_model_n_embd_inp(llama_get_model(lctx));
        pf->max_rows = params.max_rows > 0 ? params.max_rows : (int64_t) llama_n_batch(lctx);
        return pf;
    });
}

void omnisift_prefill_free(omnisift_prefill * pf) { delete pf; }

int32_t omnisift_prefill_add(omnisift_prefill * pf, omnisift_engine * engine, const float * embd, int64_t n_rows,
                             int64_t n_embd, const int32_t * modality, const int32_t * pos,
                             const struct omnisift_sift_params * params, int32_t renumber_from, uint8_t * keep) {
    return omnisift::api_call([&] {
        require(pf != nullptr, "prefill is NULL");
        require(embd != nullptr && modality != nullptr && pos != nullptr, "embd, modality and pos must not be NULL");
        require(n_rows > 0, "n_rows must be positive, got " + std::to_string(n_rows));
        require(n_embd == pf->n_embd, "rows have width " + std::to_string(n_embd) +
                                      " but the model's input embedding width is " + std::to_string(pf->n_embd));
        std::vector<uint8_t> kept(n_rows, 1);
        if (params != nullptr) {
            const auto t0 = std::chrono::steady_clock::now();
            omnisift::sift_checked(engine, embd, n_rows, n_embd, modality, pos, params, kept.data(), nullptr);
            pf->stats.t_sift_ms +=
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        }
        int64_t n_kept = 0;
        for (int64_t i = 0; i < n_rows; ++i) {
            require(pos[i] >= 0 && pos[n_rows + i] >= 0 && pos[2 * n_rows + i] >= 0,
                    "negative position at row " + std::to_string(i));
            n_kept += kept[i];
        }
        // A unit is never split across flushes unless it alone exceeds max_rows: decode what is
        // queued first when this unit's kept rows would not fit beside it.
        if (pf->n_queued() > 0 && pf->n_queued() + n_kept > pf->max_rows) pf->flush(false);
        // Kept rows are queued in decode order (stable by t, as omnisift_decode_embd orders them), so
        // that a flush decodes them where they are instead of copying them again into batches. The
        // decode is the same: a stable sort of units sorted one by one orders the queue as before.
        std::vector<int64_t> order;
        order.reserve(n_kept);
        for (int64_t i = 0; i < n_rows; ++i) if (kept[i]) order.push_back(i);
        if (renumber_from < 0) std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return pos[a] < pos[b]; });
        pf->stats.bytes_host_copied += n_kept * n_embd * (int64_t) sizeof(float);
        int32_t next = renumber_from;
        for (int64_t i : order) {
            pf->embd.insert(pf->embd.end(), embd + i * n_embd, embd + (i + 1) * n_embd);
            if (renumber_from >= 0) {   // ordinary RoPE: kept rows take consecutive positions
                pf->t.push_back(next);
                pf->h.push_back(next);
                pf->w.push_back(next);
                ++next;
            } else {
                pf->t.push_back(pos[i]);
                pf->h.push_back(pos[n_rows + i]);
                pf->w.push_back(pos[2 * n_rows + i]);
            }
        }
        pf->stats.n_rows_in += n_rows;
        pf->stats.n_rows_kept += n_kept;
        if (pf->n_queued() >= pf->max_rows) pf->flush(false);
        if (keep) std::copy(kept.begin(), kept.end(), keep);
    });
}

int32_t omnisift_prefill_flush(omnisift_prefill * pf, int32_t logits_last) {
    return omnisift::api_call([&] {
        require(pf != nullptr, "prefill is NULL");
        pf->flush(logits_last != 0);
    });
}

int64_t omnisift_prefill_n_queued(const omnisift_prefill * pf) { return pf ? pf->n_queued() : 0; }

struct omnisift_prefill_stats omnisift_prefill_get_stats(const omnisift_prefill * pf) {
    return pf ? pf->stats : omnisift_prefill_stats{};
}

} // extern "C"
