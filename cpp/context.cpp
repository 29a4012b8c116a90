// C API: omnisift_context_*, a compression unit encoded (libmtmd's vision encoder, the audio tower),
// sifted and queued in one call; the queue's kept rows of several units decoded per llama_decode.
#include "omnisift.h"
#include "decode.h"
#include "error.h"
#include "sift.h"

#include "llama.h"
#include "mtmd.h"

#include <algorithm>
#include <climits>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using omnisift::fail;
using omnisift::require;
using omnisift::status;

namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

struct bitmap_deleter { void operator()(mtmd_bitmap * b) const { mtmd_bitmap_free(b); } };
struct chunks_deleter { void operator()(mtmd_input_chunks * c) const { mtmd_input_chunks_free(c); } };
using bitmap_ptr = std::unique_ptr<mtmd_bitmap, bitmap_deleter>;
using chunks_ptr = std::unique_ptr<mtmd_input_chunks, chunks_deleter>;

// Encodes one image or one temporal pair of frames with libmtmd; returns its rows (the encoder's
// output buffer, valid until the next encode) and their count.
const float * encode_grid(mtmd_context * mctx, const uint8_t * const * frames, int32_t n, int32_t width,
                          int32_t height, int64_t * n_tokens) {
    std::vector<bitmap_ptr> owned;
    std::vector<const mtmd_bitmap *> bitmaps;
    for (int32_t i = 0; i < n; ++i) {
        owned.emplace_back(mtmd_bitmap_init((uint32_t) width, (uint32_t) height, frames[i]));
        if (!owned.back()) fail(status::backend, "libmtmd could not hold a frame");
        mtmd_bitmap_set_mergeable(owned.back().get(), n == 2);
        bitmaps.push_back(owned.back().get());
    }
    std::string text;
    for (int32_t i = 0; i < n; ++i) text += mtmd_default_marker();
    mtmd_input_text input = {text.c_str(), text.size(), /*add_special=*/false, /*parse_special=*/false};
    chunks_ptr chunks(mtmd_input_chunks_init());
    if (!chunks) fail(status::backend, "libmtmd could not allocate input chunks");
    if (mtmd_tokenize(mctx, chunks.get(), &input, bitmaps.data(), bitmaps.size()) != 0) {
        fail(status::argument, "libmtmd could not tokenize the frames");
    }
    const mtmd_input_chunk * image = nullptr;
    int n_images = 0;
    for (size_t i = 0; i < mtmd_input_chunks_size(chunks.get()); ++i) {
        const mtmd_input_chunk * c = mtmd_input_chunks_get(chunks.get(), i);
        if (mtmd_input_chunk_get_type(c) == MTMD_INPUT_CHUNK_TYPE_IMAGE) {
            image = c;
            ++n_images;
        }
    }
    if (n_images != 1) {
        fail(status::argument, "libmtmd made " + std::to_string(n_images) + " image chunks of " + std::to_string(n) +
                               " frame(s): this projector does not merge frame pairs (video needs a Qwen-VL family model)");
    }
    if (mtmd_encode_chunk(mctx, image) != 0) fail(status::backend, "libmtmd failed to encode the frames");
    *n_tokens = (int64_t) mtmd_input_chunk_get_n_tokens(image);
    return mtmd_get_output_embd(mctx);
}

} // namespace

struct omnisift_context {
    llama_context * lctx = nullptr;
    mtmd_context * mctx = nullptr;
    omnisift_engine * engine = nullptr;
    omnisift_audio_tower * tower = nullptr;
    omnisift_context_params params{};
    int64_t n_embd = 0;
    // The width the sift scores: the main embedding. Rows of a deepstack model (Qwen3-VL's tower)
    // carry n_embd_main-wide features for later layers after it, which the method does not score.
    int64_t n_embd_main = 0;
    std::vector<float> main_rows;
    int64_t n_mel = 0;
    omnisift_context_stats stats{};

    // The item being decoded.
    bool sift = false;
    omnisift_sift_params sift_params{};
    // Its audio stream: rows [audio_start, audio_start + audio.size() / n_embd) held.
    std::vector<float> audio;
    int64_t audio_start = 0;
    // The last grid's frames and rows (identical frames take these rows).
    std::vector<uint8_t> last_pixels;
    std::vector<float> last_rows;
    int32_t last_width = 0, last_height = 0, last_n_frames = 0;

    // The unit added last: its rows in sequence order (what the sift reads and on_unit shows).
    std::vector<float> unit;
    int64_t unit_rows = 0;

    // Queued rows: embd [n][n_embd]; t, h, w per row (omnisift_decode_embd's [3][n] is built at flush).
    std::vector<float> q_embd;
    std::vector<int32_t> q_t, q_h, q_w;

    int64_t n_queued() const { return (int64_t) q_t.size(); }

    // Decodes the unit's text tokens [from, k) with positions below t, after the queue; returns k.
    int64_t text_before(const omnisift_unit & u, int32_t t, int64_t from) {
        int64_t k = from;
        while (k < u.n_text && u.text_pos[k] < t) ++k;
        if (k > from) {
            flush(false);
            const auto t0 = clock_type::now();
            stats.n_decode_calls += omnisift::decode_tokens(lctx, u.text + from, k - from, u.text_pos + from,
                                                            params.seq_id, false);
            stats.t_decode_ms += ms_since(t0);
        }
        return k;
    }

    void check_finite(int64_t n) const {
        for (int64_t i = 0; i < n * n_embd; ++i) {
            require(std::isfinite(unit[i]), "row " + std::to_string(i / n_embd) + " holds NaN or inf");
        }
    }

    void clear_queue() {
        q_embd.clear();
        q_t.clear();
        q_h.clear();
        q_w.clear();
    }

    // Decodes the queue; it is empty afterwards, whether or not decoding succeeded.
    void flush(bool logits_last) {
        const int64_t n = n_queued();
        if (n == 0) return;
        std::vector<int32_t> pos;
        pos.reserve(3 * n);
        pos.insert(pos.end(), q_t.begin(), q_t.end());
        pos.insert(pos.end(), q_h.begin(), q_h.end());
        pos.insert(pos.end(), q_w.begin(), q_w.end());
        const auto t0 = clock_type::now();
        try {
            stats.n_decode_calls += omnisift::decode_rows(lctx, q_embd.data(), n, n_embd, pos.data(),
                                                          params.seq_id, logits_last, &stats.bytes_host_copied);
        } catch (...) {
            clear_queue();
            throw;
        }
        stats.t_decode_ms += ms_since(t0);
        stats.n_flushes += 1;
        clear_queue();
    }

    void begin(const omnisift_sift_params * p) {
        require(n_queued() == 0, "the previous media item still has queued rows: end it first");
        sift = p != nullptr;
        if (p) {
            require(engine != nullptr, "compressing needs an engine; this context has none");
            sift_params = *p;
        }
        audio.clear();
        audio_start = 0;
        last_pixels.clear();
        last_rows.clear();
        last_n_frames = 0;
        unit_rows = 0;
    }

    void add(const omnisift_unit & u, uint8_t * keep_out) {
        const int64_t n = u.n_rows;
        require(n > 0, "n_rows must be positive, got " + std::to_string(n));
        require(u.modality && u.source && u.pos, "modality, source and pos must not be NULL");
        require(u.n_text >= 0 && (u.n_text == 0 || (u.text && u.text_pos)),
                "text and text_pos must not be NULL when n_text is positive");
        require(u.n_text == 0 || u.renumber_from < 0, "text inside a unit needs explicit (M-RoPE) positions");
        if (u.n_text > 0) {
            const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(lctx)));
            for (int64_t k = 0; k < u.n_text; ++k) {
                require(u.text[k] >= 0 && u.text[k] < n_vocab, "text token " + std::to_string(k) + " is outside the vocabulary");
                require(u.text_pos[k] >= 0 && (k == 0 || u.text_pos[k] > u.text_pos[k - 1]),
                        "text positions must be non-negative and ascending");
            }
        }
        for (int64_t i = 0; i < n; ++i) {
            require(u.pos[i] >= 0 && u.pos[n + i] >= 0 && u.pos[2 * n + i] >= 0,
                    "negative position at row " + std::to_string(i));
            const int32_t m = u.modality[i];
            require(m == OMNISIFT_MODALITY_VIDEO || m == OMNISIFT_MODALITY_AUDIO || m == OMNISIFT_MODALITY_IMAGE,
                    "modality[" + std::to_string(i) + "] = " + std::to_string(m) + ": a unit holds video, audio or image rows");
        }
        unit_rows = 0;
        unit.resize((size_t) (n * n_embd));
        if (u.embd) {
            std::copy_n(u.embd, n * n_embd, unit.data());
        } else {
            fill_vision(u);
            fill_audio(u);
        }
        unit_rows = n;

        std::vector<uint8_t> kept(n, 1);
        if (sift) {
            const auto t0 = clock_type::now();
            const float * scored = unit.data();
            if (n_embd_main < n_embd) {
                check_finite(n);   // the sift checks only the slice it reads
                main_rows.resize((size_t) (n * n_embd_main));
                for (int64_t i = 0; i < n; ++i) {
                    std::copy_n(unit.data() + i * n_embd, n_embd_main, main_rows.data() + i * n_embd_main);
                }
                scored = main_rows.data();
            }
            omnisift::sift_checked(engine, scored, n, n_embd_main, u.modality, u.pos, &sift_params, kept.data(), nullptr);
            stats.t_sift_ms += ms_since(t0);
        } else {
            check_finite(n);
        }
        int64_t n_kept = 0;
        for (uint8_t k : kept) n_kept += k;
        // A unit is never split across flushes unless it alone exceeds max_rows: decode what is
        // queued first when this unit's kept rows would not fit beside it.
        if (n_queued() > 0 && n_queued() + n_kept > params.max_rows) flush(false);
        // Kept rows are queued in decode order (stable by t, as omnisift_decode_embd orders them), so
        // that a flush decodes them where they are instead of copying them again into batches. The
        // decode is the same: a stable sort of units sorted one by one orders the queue as before.
        std::vector<int64_t> order;
        order.reserve(n_kept);
        for (int64_t i = 0; i < n; ++i) if (kept[i]) order.push_back(i);
        if (u.renumber_from < 0) {
            std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return u.pos[a] < u.pos[b]; });
        }
        stats.bytes_host_copied += n_kept * n_embd * (int64_t) sizeof(float);
        int32_t next = u.renumber_from;
        int64_t text_done = 0;
        for (int64_t i : order) {
            if (text_done < u.n_text) text_done = text_before(u, u.pos[i], text_done);
            q_embd.insert(q_embd.end(), unit.data() + i * n_embd, unit.data() + (i + 1) * n_embd);
            if (u.renumber_from >= 0) {   // ordinary RoPE: kept rows take consecutive positions
                q_t.push_back(next);
                q_h.push_back(next);
                q_w.push_back(next);
                ++next;
            } else {
                q_t.push_back(u.pos[i]);
                q_h.push_back(u.pos[n + i]);
                q_w.push_back(u.pos[2 * n + i]);
            }
        }
        if (text_done < u.n_text) text_before(u, INT32_MAX, text_done);
        stats.n_rows_in += n;
        stats.n_rows_kept += n_kept;
        if (n_queued() >= params.max_rows) flush(false);
        if (keep_out) std::copy(kept.begin(), kept.end(), keep_out);
    }

    // Video and image rows: each grid of the unit encoded (or reused) and scattered to its rows.
    void fill_vision(const omnisift_unit & u) {
        const int64_t n = u.n_rows;
        std::vector<int32_t> grids;
        for (int64_t i = 0; i < n; ++i) {
            if (u.modality[i] != OMNISIFT_MODALITY_AUDIO) grids.push_back(u.source[i]);
        }
        std::sort(grids.begin(), grids.end());
        grids.erase(std::unique(grids.begin(), grids.end()), grids.end());
        if (grids.empty()) {
            require(u.n_frames == 0, "frames given to a unit without video or image rows");
            return;
        }
        require(mctx != nullptr, "this context has no vision encoder (no mtmd context)");
        require(u.frames_per_grid == 1 || u.frames_per_grid == 2,
                "frames_per_grid must be 1 (an image) or 2 (a video grid), got " + std::to_string(u.frames_per_grid));
        require(u.n_frames == (int64_t) grids.size() * u.frames_per_grid,
                "the unit has " + std::to_string(grids.size()) + " grid(s) of " + std::to_string(u.frames_per_grid) +
                " frame(s) but " + std::to_string(u.n_frames) + " frames were given");
        require(u.frames != nullptr && u.width > 0 && u.height > 0, "frames, width and height must be given");
        const size_t frame_bytes = (size_t) u.width * (size_t) u.height * 3;
        for (size_t g = 0; g < grids.size(); ++g) {
            const uint8_t * const * fr = u.frames + g * u.frames_per_grid;
            for (int32_t k = 0; k < u.frames_per_grid; ++k) require(fr[k] != nullptr, "a frame is NULL");
            std::vector<int64_t> rows;
            for (int64_t i = 0; i < n; ++i) {
                if (u.modality[i] != OMNISIFT_MODALITY_AUDIO && u.source[i] == grids[g]) rows.push_back(i);
            }
            const bool same = params.reuse_identical && last_n_frames == u.frames_per_grid &&
                              last_width == u.width && last_height == u.height &&
                              (int64_t) last_rows.size() == (int64_t) rows.size() * n_embd && [&] {
                                  for (int32_t k = 0; k < u.frames_per_grid; ++k) {
                                      if (std::memcmp(last_pixels.data() + k * frame_bytes, fr[k], frame_bytes) != 0) return false;
                                  }
                                  return true;
                              }();
            if (same) {
                for (size_t r = 0; r < rows.size(); ++r) {
                    std::copy_n(last_rows.data() + r * n_embd, n_embd, unit.data() + rows[r] * n_embd);
                }
                stats.n_grids_reused += 1;
                continue;
            }
            const auto t0 = clock_type::now();
            int64_t n_tok = 0;
            const float * out = encode_grid(mctx, fr, u.frames_per_grid, u.width, u.height, &n_tok);
            stats.t_vision_ms += ms_since(t0);
            stats.n_vision_calls += 1;
            if (n_tok != (int64_t) rows.size()) {
                fail(status::file, "libmtmd encoded " + std::to_string(n_tok) + " tokens from frames of " +
                                   std::to_string(u.width) + "x" + std::to_string(u.height) + ", the layout has " +
                                   std::to_string(rows.size()) + " rows for them");
            }
            for (size_t r = 0; r < rows.size(); ++r) {
                std::copy_n(out + r * n_embd, n_embd, unit.data() + rows[r] * n_embd);
            }
            if (params.reuse_identical) {
                last_pixels.resize(frame_bytes * u.frames_per_grid);
                for (int32_t k = 0; k < u.frames_per_grid; ++k) {
                    std::memcpy(last_pixels.data() + k * frame_bytes, fr[k], frame_bytes);
                }
                last_rows.assign(out, out + n_tok * n_embd);
                last_width = u.width;
                last_height = u.height;
                last_n_frames = u.frames_per_grid;
            }
        }
    }

    int64_t audio_held() const { return (int64_t) audio.size() / n_embd; }

    // Audio rows: the stream grows by the unit's new rows, then the unit takes its range.
    void fill_audio(const omnisift_unit & u) {
        const int64_t n = u.n_rows;
        int64_t lo = -1, hi = -1;
        for (int64_t i = 0; i < n; ++i) {
            if (u.modality[i] != OMNISIFT_MODALITY_AUDIO) continue;
            if (lo < 0) lo = u.source[i];
            require(u.source[i] >= hi, "audio rows of a unit must come in stream order");
            hi = u.source[i];
        }
        require(!(u.mel && u.audio_rows), "give the unit's audio as mel or as rows, not both");
        if (lo >= 0) require(lo >= audio_start, "audio row " + std::to_string(lo) + " asked after row " +
                                                std::to_string(audio_start) + " was handed out (rows come in order)");
        // Rows before this unit's first are handed out: drop them (what is left is part of a window
        // that the next unit shares).
        const int64_t drop = std::min(audio_held(), std::max<int64_t>(0, (lo >= 0 ? lo : audio_start) - audio_start));
        std::vector<float> grown;
        int64_t n_new = 0;
        if (u.mel) {
            require(tower != nullptr, "mel given but this context has no audio tower");
            require(u.n_mel_frames > 0, "n_mel_frames must be positive with mel");
            n_new = omnisift_audio_n_tokens(u.n_mel_frames);
        } else if (u.audio_rows) {
            require(u.n_audio_rows > 0, "n_audio_rows must be positive with audio_rows");
            n_new = u.n_audio_rows;
        }
        if (drop > 0) {
            audio.erase(audio.begin(), audio.begin() + drop * n_embd);
            audio_start += drop;
        }
        const size_t old = audio.size();
        if (n_new > 0) {
            audio.resize(old + (size_t) (n_new * n_embd));
            if (u.mel) {
                const auto t0 = clock_type::now();
                const int32_t st = omnisift_audio_tower_encode(tower, u.mel, u.n_mel_frames, audio.data() + old, n_new);
                stats.t_audio_ms += ms_since(t0);
                stats.n_audio_calls += 1;
                if (st != OMNISIFT_OK) {
                    audio.resize(old);
                    fail(st == OMNISIFT_ERR_ARGUMENT ? status::argument : status::backend,
                         std::string("audio tower: ") + omnisift_last_error());
                }
            } else {
                std::copy_n(u.audio_rows, n_new * n_embd, audio.data() + old);
            }
        }
        if (lo < 0) return;
        require(hi < audio_start + audio_held(), "audio row " + std::to_string(hi) + " asked, the stream holds rows up to " +
                                                 std::to_string(audio_start + audio_held()) + " (give the next windows first)");
        for (int64_t i = 0; i < n; ++i) {
            if (u.modality[i] != OMNISIFT_MODALITY_AUDIO) continue;
            std::copy_n(audio.data() + (u.source[i] - audio_start) * n_embd, n_embd, unit.data() + i * n_embd);
        }
    }
};

extern "C" {

struct omnisift_context_params omnisift_context_default_params(void) {
    omnisift_context_params p;
    p.seq_id = 0;
    p.max_rows = 0;
    p.reuse_identical = 1;
    return p;
}

omnisift_context * omnisift_context_init(struct llama_context * lctx, struct mtmd_context * mctx,
                                         omnisift_engine * engine, omnisift_audio_tower * tower,
                                         struct omnisift_context_params params) {
    return omnisift::api_new<omnisift_context>([&] {
        require(lctx != nullptr, "llama context is NULL");
        require(params.seq_id >= 0, "seq_id must be >= 0");
        require(params.max_rows >= 0, "max_rows must be >= 0, got " + std::to_string(params.max_rows));
        auto oc = std::make_unique<omnisift_context>();
        oc->lctx = lctx;
        oc->mctx = mctx;
        oc->engine = engine;
        oc->tower = tower;
        oc->params = params;
        oc->n_embd = llama_model_n_embd_inp(llama_get_model(lctx));
        oc->n_embd_main = std::min<int64_t>(oc->n_embd, llama_model_n_embd(llama_get_model(lctx)));
        if (oc->params.max_rows <= 0) oc->params.max_rows = (int64_t) llama_n_batch(lctx);
        if (tower) {
            const int64_t w = omnisift_audio_tower_n_embd(tower);
            require(w == oc->n_embd, "the audio tower's rows have width " + std::to_string(w) +
                                     " but the model's input embedding width is " + std::to_string(oc->n_embd));
            oc->n_mel = omnisift_audio_tower_n_mel(tower);
        }
        return oc.release();
    });
}

void omnisift_context_free(omnisift_context * oc) { delete oc; }

int32_t omnisift_context_begin(omnisift_context * oc, const struct omnisift_sift_params * params) {
    return omnisift::api_call([&] {
        require(oc != nullptr, "context is NULL");
        oc->begin(params);
    });
}

int32_t omnisift_context_add(omnisift_context * oc, const struct omnisift_unit * unit, uint8_t * keep) {
    return omnisift::api_call([&] {
        require(oc != nullptr, "context is NULL");
        require(unit != nullptr, "unit is NULL");
        oc->add(*unit, keep);
    });
}

int32_t omnisift_context_end(omnisift_context * oc, int32_t logits_last) {
    return omnisift::api_call([&] {
        require(oc != nullptr, "context is NULL");
        oc->flush(logits_last != 0);
    });
}

const float * omnisift_context_unit_rows(const omnisift_context * oc, int64_t * n_rows, int64_t * n_embd) {
    const bool any = oc && oc->unit_rows > 0;
    if (n_rows) *n_rows = any ? oc->unit_rows : 0;
    if (n_embd) *n_embd = oc ? oc->n_embd : 0;
    return any ? oc->unit.data() : nullptr;
}

int64_t omnisift_context_n_queued(const omnisift_context * oc) { return oc ? oc->n_queued() : 0; }

struct omnisift_context_stats omnisift_context_get_stats(const omnisift_context * oc) {
    return oc ? oc->stats : omnisift_context_stats{};
}

} // extern "C"
