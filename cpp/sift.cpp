// C API: omnisift_head_* and omnisift_sift. The scores come from ggml graphs on the engine's device,
// batched over many grids / chunks per graph; the keep decision is made on the host (chunking.h).
#include "omnisift.h"

#include "audio_select.h"
#include "chunking.h"
#include "engine.h"
#include "error.h"
#include "runner.h"
#include "sift_head.h"
#include "stvp.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>

struct omnisift_head {
    omnisift_engine * engine;
    omnisift::sift_head head;
    omnisift_head(omnisift_engine * e, const char * path) : engine(e), head(path, e->runner().backend()) {}
};

namespace omnisift {

namespace {

// Rows read by one span's graphs. Bounds the memory of long inputs (a 300-s video is ~1.7 GB of
// 7B-width rows): the graphs' intermediates are a few times their inputs, so a span needs ~100 MB.
constexpr size_t kSpanFloats = (32u << 20) / sizeof(float);
// Distinct shapes per graph (each adds ~10 nodes).
constexpr size_t kMaxBatches = 64;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The rows of embd that a span's graphs read, on the engine's device once (uploaded, or on a CPU
// device used in place); the graphs pick them with ggml_get_rows, so no row is staged twice however
// many graphs (spatial, temporal, audio) read it. Rows that lie densely in the sequence (the
// pipeline's units) go as one range, without a host copy; scattered rows (a caller's layout with
// all audio after all video) are packed first, so a span never uploads what it does not read.
class span_rows {
public:
    span_rows(graph_runner & runner, const float * embd, int64_t d, std::vector<int64_t> rows) {
        std::sort(rows.begin(), rows.end());
        rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
        lo_ = rows.front();
        const int64_t range = rows.back() + 1 - lo_;
        if (range <= 2 * (int64_t) rows.size()) {
            res_.emplace(runner.upload(GGML_TYPE_F32, embd + lo_ * d, d, range));
        } else {
            packed_.resize(rows.size() * d);
            for (size_t i = 0; i < rows.size(); ++i) std::memcpy(packed_.data() + i * d, embd + rows[i] * d, d * sizeof(float));
            runner.note_host_copy(packed_.size() * sizeof(float));
            rows_ = std::move(rows);
            res_.emplace(runner.upload(GGML_TYPE_F32, packed_.data(), d, (int64_t) rows_.size()));
        }
    }

    ggml_tensor * tensor() const { return res_->tensor(); }

    int32_t local(int64_t row) const {
        if (rows_.empty()) return (int32_t) (row - lo_);
        return (int32_t) (std::lower_bound(rows_.begin(), rows_.end(), row) - rows_.begin());
    }

private:
    int64_t lo_ = 0;
    std::vector<int64_t> rows_;        // packed rows (empty for a range)
    std::vector<float> packed_;
    std::optional<graph_runner::resident> res_;
};

// A visual grid to score: spatially (ref == nullptr) or temporally against ref (same size).
struct visual_job {
    const grid * g;
    const grid * ref;
};

// A chunk whose audio is scored against its surviving video tokens.
struct audio_job {
    std::vector<int64_t> anchors;
    const std::vector<int64_t> * audio;
};

class sifter {
public:
    sifter(graph_runner & runner, const float * embd, int64_t n_tokens, int64_t d)
        : scores(n_tokens, kNaN), runner_(runner), embd_(embd), d_(d) {}

    span_rows stage(std::vector<int64_t> rows) { return span_rows(runner_, embd_, d_, std::move(rows)); }

    void score_visual(const span_rows & span, const std::vector<visual_job> & jobs) {
        for (size_t i = 0; i < jobs.size();) {
            // Batches of one graph, keyed by (temporal?, tokens per grid).
            std::map<std::pair<bool, size_t>, std::vector<const visual_job *>> batches;
            size_t j = i;
            for (; j < jobs.size(); ++j) {
                const auto key = std::make_pair(jobs[j].ref != nullptr, jobs[j].g->rows.size());
                if (j > i && batches.size() >= kMaxBatches && !batches.count(key)) break;
                batches[key].push_back(&jobs[j]);
            }
            i = j;

            auto g = runner_.new_graph();
            std::vector<std::vector<int32_t>> idx;
            std::vector<std::pair<ggml_tensor *, const std::vector<const visual_job *> *>> outs;
            for (const auto & [key, list] : batches) {
                const int64_t n = (int64_t) key.second;
                std::vector<const std::vector<int64_t> *> g_rows, ref_rows;
                for (const visual_job * job : list) {
                    g_rows.push_back(&job->g->rows);
                    if (job->ref) ref_rows.push_back(&job->ref->rows);
                }
                ggml_tensor * out = key.first ? stvp_temporal(g.ctx(), gather(g, idx, span, ref_rows, n),
                                                              gather(g, idx, span, g_rows, n))
                                              : stvp_spatial(g.ctx(), gather(g, idx, span, g_rows, n));
                g.output(out);
                outs.emplace_back(out, &list);
            }
            runner_.run(g);
            for (const auto & [out, list] : outs) {
                std::vector<float> host(ggml_nelements(out));
                runner_.read(out, host.data());
                const size_t n = (*list)[0]->g->rows.size();
                for (size_t k = 0; k < list->size(); ++k) {
                    const auto & rows = (*list)[k]->g->rows;
                    for (size_t r = 0; r < n; ++r) scores[rows[r]] = host[k * n + r];
                }
            }
        }
    }

    void score_audio(const span_rows & span, const std::vector<audio_job> & jobs, int32_t selector,
                     const sift_head_weights * head) {
        if (jobs.empty()) return;
        const float inf = std::numeric_limits<float>::infinity();
        const size_t nc = jobs.size();
        size_t max_na = 0, max_nv = 0;
        std::vector<const std::vector<int64_t> *> audio, anchors;
        for (const audio_job & job : jobs) {
            max_na = std::max(max_na, job.audio->size());
            max_nv = std::max(max_nv, job.anchors.size());
            audio.push_back(job.audio);
            anchors.push_back(&job.anchors);
        }
        auto g = runner_.new_graph();
        std::vector<std::vector<int32_t>> idx;
        // Padding rows repeat a chunk's first row; the masks and weights below give them no say.
        ggml_tensor * ta = gather(g, idx, span, audio, (int64_t) max_na);
        ggml_tensor * tv = gather(g, idx, span, anchors, (int64_t) max_nv);
        std::vector<float> mask, weight;
        ggml_tensor * out;
        if (selector == OMNISIFT_AUDIO_SELECTOR_ANCHOR) {
            mask.assign(nc * max_nv * max_na, 0.0f);
            weight.assign(nc * max_nv, 0.0f);
            for (size_t c = 0; c < nc; ++c) {
                const size_t na = jobs[c].audio->size(), nv = jobs[c].anchors.size();
                for (size_t jv = 0; jv < max_nv; ++jv) {
                    for (size_t ia = na; ia < max_na; ++ia) mask[(c * max_nv + jv) * max_na + ia] = -inf;
                }
                for (size_t jv = 0; jv < nv; ++jv) weight[c * max_nv + jv] = 1.0f / (float) nv;
            }
            out = anchor_scores(g.ctx(), ta, tv, g.input(GGML_TYPE_F32, mask.data(), max_na, max_nv, nc),
                                g.input(GGML_TYPE_F32, weight.data(), max_nv, 1, nc));
        } else {
            mask.assign(nc * max_na * max_nv, 0.0f);
            for (size_t c = 0; c < nc; ++c) {
                const size_t nv = jobs[c].anchors.size();
                for (size_t ia = 0; ia < max_na; ++ia) {
                    for (size_t jv = nv; jv < max_nv; ++jv) mask[(c * max_na + ia) * max_nv + jv] = -inf;
                }
            }
            out = vgas_scores(g.ctx(), *head, ta, tv, g.input(GGML_TYPE_F32, mask.data(), max_nv, max_na, 1, nc));
        }
        g.output(out);
        runner_.run(g);
        std::vector<float> host(ggml_nelements(out));
        runner_.read(out, host.data());
        for (size_t c = 0; c < nc; ++c) {
            const auto & rows = *jobs[c].audio;
            for (size_t r = 0; r < rows.size(); ++r) scores[rows[r]] = host[c * max_na + r];
        }
    }

    std::vector<double> scores;   // per token, NaN where not scored

private:
    // [d, n, lists.size()]: the rows of each list (padded to n with its first row) picked from the
    // span on the device. The index arrays live in idx until the graph has run.
    ggml_tensor * gather(graph_runner::graph & g, std::vector<std::vector<int32_t>> & idx, const span_rows & span,
                         const std::vector<const std::vector<int64_t> *> & lists, int64_t n) {
        std::vector<int32_t> & ids = idx.emplace_back();
        ids.reserve(lists.size() * n);
        for (const auto * rows : lists) {
            for (int64_t r = 0; r < n; ++r) ids.push_back(span.local((*rows)[r < (int64_t) rows->size() ? r : 0]));
        }
        ggml_tensor * t = g.input(GGML_TYPE_I32, ids.data(), (int64_t) ids.size());
        return ggml_reshape_3d(g.ctx(), ggml_get_rows(g.ctx(), span.tensor(), t), d_, n, (int64_t) lists.size());
    }

    graph_runner & runner_;
    const float * embd_;
    int64_t d_;
};

void validate_retentions(const omnisift_sift_params & p) {
    for (auto [name, r] : {std::make_pair("video_retention", p.video_retention),
                           std::make_pair("audio_retention", p.audio_retention),
                           std::make_pair("image_retention", p.image_retention)}) {
        require(r >= OMNISIFT_RETENTION_MIN && r <= OMNISIFT_RETENTION_MAX,
                std::string(name) + " = " + std::to_string(r) + " is not in [0, 1]");
    }
}

// n_kept's and chunks' arguments: a modality / pos layout without embeddings.
void validate_layout(const int32_t * modality, const int32_t * pos, int64_t n_tokens) {
    require(n_tokens >= 0, "n_tokens = " + std::to_string(n_tokens) + " is negative");
    require(n_tokens == 0 || (modality && pos), "modality and pos must not be NULL");
    for (int64_t i = 0; i < n_tokens; ++i) {
        if (modality[i] < OMNISIFT_MODALITY_TEXT || modality[i] > OMNISIFT_MODALITY_IMAGE) {
            fail(status::argument, "modality[" + std::to_string(i) + "] = " + std::to_string(modality[i]) +
                                        " is not a modality");
        }
    }
}

void validate(const omnisift_engine * engine, const float * embd, int64_t n_tokens, int64_t n_embd,
              const int32_t * modality, const int32_t * pos, const omnisift_sift_params * p, const uint8_t * keep) {
    require(engine, "engine is NULL");
    require(p, "params is NULL");
    require(n_tokens >= 0, "n_tokens = " + std::to_string(n_tokens) + " is negative");
    require(n_embd >= 1 && n_embd <= (1 << 20), "n_embd = " + std::to_string(n_embd) + " is out of range");
    require(n_tokens == 0 || (embd && modality && pos && keep), "embd, modality, pos and keep must not be NULL");
    validate_retentions(*p);
    require(omnisift_audio_selector_name(p->audio_selector) != nullptr,
            "unknown audio_selector " + std::to_string(p->audio_selector));
    if (p->audio_selector == OMNISIFT_AUDIO_SELECTOR_VGAS) {
        require(p->head, "the vgas audio selector needs a head (params.head is NULL)");
        require(p->head->engine == engine, "the head was loaded with another engine");
        const int64_t hd = p->head->head.weights().n_embd;
        require(hd == n_embd, "the head expects embeddings of width " + std::to_string(hd) +
                              " but they have width " + std::to_string(n_embd) + " (a head for another model?)");
    }
    // fail() rather than require() in these loops: require's message would be built per element.
    for (int64_t i = 0; i < n_tokens; ++i) {
        if (modality[i] < OMNISIFT_MODALITY_TEXT || modality[i] > OMNISIFT_MODALITY_IMAGE) {
            fail(status::argument, "modality[" + std::to_string(i) + "] = " + std::to_string(modality[i]) +
                                        " is not 0 (text), 1 (video), 2 (audio) or 3 (image)");
        }
        const float * row = embd + i * n_embd;
        for (int64_t k = 0; k < n_embd; ++k) {
            if (!std::isfinite(row[k])) fail(status::argument, "embedding row " + std::to_string(i) + " holds NaN or inf");
        }
    }
}

std::vector<double> scores_of(const std::vector<int64_t> & rows, const std::vector<double> & scores) {
    std::vector<double> out(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
        out[i] = scores[rows[i]];
        if (!std::isfinite(out[i])) {
            fail(status::backend, "the graph returned a non-finite score for token " + std::to_string(rows[i]));
        }
    }
    return out;
}

void prune(const std::vector<grid> & grids, const std::vector<double> & scores, double retention, uint8_t * keep) {
    for (const grid & g : grids) {
        const int64_t n = (int64_t) g.rows.size();
        select_best(g.rows, scores_of(g.rows, scores).data(), n - drop_count(n, retention), true, keep);
    }
}

// Spans of consecutive items (chunks, images) whose rows add up to at most kSpanFloats (at least
// one item each): fn(first, last) per span.
template <typename RowsOf, typename Fn>
void for_spans(size_t n_items, int64_t d, RowsOf && rows_of, Fn && fn) {
    for (size_t i = 0; i < n_items;) {
        size_t j = i, floats = 0;
        for (; j < n_items; ++j) {
            const size_t f = rows_of(j) * (size_t) d;
            if (j > i && floats + f > kSpanFloats) break;
            floats += f;
        }
        fn(i, j);
        i = j;
    }
}

void sift(omnisift_engine * engine, const float * embd, int64_t n_tokens, int64_t n_embd, const int32_t * modality,
          const int32_t * pos, const omnisift_sift_params & p, uint8_t * keep_out, float * scores_out) {
    const sift_plan plan = make_plan(n_tokens, modality, pos);
    sifter s(engine->runner(), embd, n_tokens, n_embd);
    std::vector<uint8_t> keep(n_tokens, 1);
    const bool audio_graph = p.audio_selector == OMNISIFT_AUDIO_SELECTOR_ANCHOR || p.audio_selector == OMNISIFT_AUDIO_SELECTOR_VGAS;

    // Chunks are independent: each span of them is staged once, scored, pruned and dropped.
    auto chunk_rows = [&](size_t ci) {
        const chunk & c = plan.chunks[ci];
        size_t n = audio_graph ? c.audio.size() : 0;
        for (int64_t gi = c.first_grid; gi < c.first_grid + c.n_grids; ++gi) n += plan.video[gi].rows.size();
        return n;
    };
    for_spans(plan.chunks.size(), n_embd, chunk_rows, [&](size_t first, size_t last) {
        std::vector<int64_t> rows;
        std::vector<visual_job> visual;
        for (size_t ci = first; ci < last; ++ci) {
            const chunk & c = plan.chunks[ci];
            const grid & f1 = plan.video[c.first_grid];
            visual.push_back({&f1, nullptr});
            if (c.n_grids == 2) {
                const grid & f2 = plan.video[c.first_grid + 1];
                visual.push_back({&f2, f2.rows.size() == f1.rows.size() ? &f1 : nullptr});
            }
            for (int64_t gi = c.first_grid; gi < c.first_grid + c.n_grids; ++gi) {
                rows.insert(rows.end(), plan.video[gi].rows.begin(), plan.video[gi].rows.end());
            }
            if (audio_graph) rows.insert(rows.end(), c.audio.begin(), c.audio.end());
        }
        const span_rows span = s.stage(std::move(rows));
        s.score_visual(span, visual);
        for (size_t ci = first; ci < last; ++ci) {
            const chunk & c = plan.chunks[ci];
            for (int64_t gi = c.first_grid; gi < c.first_grid + c.n_grids; ++gi) {
                const grid & g = plan.video[gi];
                const int64_t n = (int64_t) g.rows.size();
                select_best(g.rows, scores_of(g.rows, s.scores).data(), n - drop_count(n, p.video_retention), true,
                            keep.data());
            }
        }
        if (p.audio_selector == OMNISIFT_AUDIO_SELECTOR_NONE) return;
        std::vector<audio_job> jobs;
        for (size_t ci = first; ci < last; ++ci) {
            const chunk & c = plan.chunks[ci];
            audio_job job{{}, &c.audio};
            for (int64_t gi = c.first_grid; gi < c.first_grid + c.n_grids; ++gi) {
                for (int64_t r : plan.video[gi].rows) if (keep[r]) job.anchors.push_back(r);
            }
            if (job.anchors.empty() || c.audio.size() < 2) continue;
            jobs.push_back(std::move(job));
        }
        if (p.audio_selector == OMNISIFT_AUDIO_SELECTOR_RANDOM) {
            for (const audio_job & job : jobs) {
                for (int64_t r : *job.audio) s.scores[r] = random_score(p.seed, pos[r]);
            }
        } else {
            s.score_audio(span, jobs, p.audio_selector, p.head ? &p.head->head.weights() : nullptr);
        }
        for (const audio_job & job : jobs) {
            const int64_t n = (int64_t) job.audio->size();
            select_best(*job.audio, scores_of(*job.audio, s.scores).data(), n - drop_count(n, p.audio_retention), false,
                        keep.data());
        }
    });

    if (p.image_retention < 1.0) {
        for_spans(plan.images.size(), n_embd, [&](size_t i) { return plan.images[i].rows.size(); },
                  [&](size_t first, size_t last) {
            std::vector<int64_t> rows;
            std::vector<visual_job> visual;
            for (size_t i = first; i < last; ++i) {
                visual.push_back({&plan.images[i], nullptr});
                rows.insert(rows.end(), plan.images[i].rows.begin(), plan.images[i].rows.end());
            }
            s.score_visual(s.stage(std::move(rows)), visual);
        });
        prune(plan.images, s.scores, p.image_retention, keep.data());
    }

    std::copy(keep.begin(), keep.end(), keep_out);
    if (scores_out) {
        for (int64_t i = 0; i < n_tokens; ++i) scores_out[i] = (float) s.scores[i];
    }
}

// What sift() keeps, from the grouping and the counts alone: the rules are the same, only the scores
// (which decide WHICH tokens, never HOW MANY) are left out.
int64_t n_kept(int64_t n_tokens, const int32_t * modality, const int32_t * pos, const omnisift_sift_params & p) {
    const sift_plan plan = make_plan(n_tokens, modality, pos);
    int64_t kept = n_tokens;
    auto prune_count = [&](const std::vector<grid> & grids, double r) {
        for (const grid & g : grids) kept -= drop_count((int64_t) g.rows.size(), r);
    };
    prune_count(plan.video, p.video_retention);
    if (p.image_retention < 1.0) prune_count(plan.images, p.image_retention);
    if (p.audio_selector != OMNISIFT_AUDIO_SELECTOR_NONE) {
        for (const chunk & c : plan.chunks) {
            int64_t anchors = 0;
            for (int64_t gi = c.first_grid; gi < c.first_grid + c.n_grids; ++gi) {
                const int64_t n = (int64_t) plan.video[gi].rows.size();
                anchors += n - drop_count(n, p.video_retention);
            }
            if (anchors == 0 || c.audio.size() < 2) continue;
            kept -= drop_count((int64_t) c.audio.size(), p.audio_retention);
        }
    }
    return kept;
}

} // namespace

void sift_checked(omnisift_engine * engine, const float * embd, int64_t n_tokens, int64_t n_embd,
                  const int32_t * modality, const int32_t * pos, const omnisift_sift_params * params,
                  uint8_t * keep, float * scores) {
    validate(engine, embd, n_tokens, n_embd, modality, pos, params, keep);
    if (n_tokens > 0) sift(engine, embd, n_tokens, n_embd, modality, pos, *params, keep, scores);
}

} // namespace omnisift

extern "C" {

omnisift_head * omnisift_head_load(omnisift_engine * engine, const char * path) {
    return omnisift::api_new<omnisift_head>([&] {
        omnisift::require(engine, "engine is NULL");
        omnisift::require(path, "path is NULL");
        return new omnisift_head(engine, path);
    });
}

void omnisift_head_free(omnisift_head * head) { delete head; }

int32_t omnisift_head_n_embd(const omnisift_head * head) { return head ? (int32_t) head->head.weights().n_embd : 0; }

int32_t omnisift_head_n_hidden(const omnisift_head * head) { return head ? (int32_t) head->head.weights().hidden : 0; }

struct omnisift_sift_params omnisift_sift_default_params(void) {
    omnisift_sift_params p;
    p.video_retention = 1.0;
    p.audio_retention = 1.0;
    p.image_retention = 1.0;
    p.audio_selector = OMNISIFT_AUDIO_SELECTOR_ANCHOR;
    p.head = nullptr;
    p.seed = 0;
    return p;
}

int32_t omnisift_sift(omnisift_engine * engine, const float * embd, int64_t n_tokens, int64_t n_embd,
                      const int32_t * modality, const int32_t * pos, const struct omnisift_sift_params * params,
                      uint8_t * keep, float * scores) {
    return omnisift::api_call([&] {
        omnisift::sift_checked(engine, embd, n_tokens, n_embd, modality, pos, params, keep, scores);
    });
}

int64_t omnisift_sift_n_kept(const int32_t * modality, const int32_t * pos, int64_t n_tokens,
                             const struct omnisift_sift_params * params) {
    int64_t out = -1;
    const int32_t status = omnisift::api_call([&] {
        omnisift::require(params, "params is NULL");
        omnisift::validate_retentions(*params);
        omnisift::validate_layout(modality, pos, n_tokens);
        out = n_tokens == 0 ? 0 : omnisift::n_kept(n_tokens, modality, pos, *params);
    });
    return status == OMNISIFT_OK ? out : (int64_t) status;
}

int64_t omnisift_sift_chunks(const int32_t * modality, const int32_t * pos, int64_t n_tokens, int64_t * chunk) {
    int64_t out = -1;
    const int32_t status = omnisift::api_call([&] {
        omnisift::validate_layout(modality, pos, n_tokens);
        omnisift::require(n_tokens == 0 || chunk, "chunk must not be NULL");
        const omnisift::sift_plan plan = omnisift::make_plan(n_tokens, modality, pos);
        std::vector<int64_t> of(n_tokens, -1);   // written to chunk only once nothing can fail
        for (size_t c = 0; c < plan.chunks.size(); ++c) {
            const auto & ch = plan.chunks[c];
            for (int64_t g = ch.first_grid; g < ch.first_grid + ch.n_grids; ++g) {
                for (int64_t row : plan.video[g].rows) of[row] = (int64_t) c;
            }
            for (int64_t row : ch.audio) of[row] = (int64_t) c;
        }
        std::copy(of.begin(), of.end(), chunk);
        out = (int64_t) plan.chunks.size();
    });
    return status == OMNISIFT_OK ? out : (int64_t) status;
}

const char * omnisift_audio_selector_name(int32_t selector) {
    switch (selector) {
        case OMNISIFT_AUDIO_SELECTOR_NONE:   return "none";
        case OMNISIFT_AUDIO_SELECTOR_ANCHOR: return "anchor";
        case OMNISIFT_AUDIO_SELECTOR_VGAS:   return "vgas";
        case OMNISIFT_AUDIO_SELECTOR_RANDOM: return "random";
        default:                             return nullptr;
    }
}

void omnisift_retention_range(double * min, double * max) {
    if (min) *min = OMNISIFT_RETENTION_MIN;
    if (max) *max = OMNISIFT_RETENTION_MAX;
}

} // extern "C"
