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

struct omnisift_head {
    omnisift_engine * engine;
    omnisift::sift_head head;
    omnisift_head(omnisift_engine * e, const char * path) : engine(e), head(path, e->runner().backend()) {}
};

namespace omnisift {

namespace {

// Input floats staged per graph. Bounds the memory of long inputs (a 300-s video is ~1.7 GB of
// 7B-width rows): the graphs' intermediates are a few times their inputs, so a graph needs ~100 MB.
constexpr size_t kGroupFloats = (32u << 20) / sizeof(float);
// Distinct shapes per graph (each adds ~10 nodes).
constexpr size_t kMaxBatches = 64;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Copies the given rows of embd into dst, one after the other.
void gather(const float * embd, int64_t d, const std::vector<int64_t> & rows, float * dst) {
    for (size_t i = 0; i < rows.size(); ++i) std::memcpy(dst + i * d, embd + rows[i] * d, d * sizeof(float));
}

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

    void score_visual(const std::vector<visual_job> & jobs) {
        for (size_t i = 0; i < jobs.size();) {
            // Batches of one graph, keyed by (temporal?, tokens per grid).
            std::map<std::pair<bool, size_t>, std::vector<const visual_job *>> batches;
            size_t floats = 0, j = i;
            for (; j < jobs.size(); ++j) {
                const auto key = std::make_pair(jobs[j].ref != nullptr, jobs[j].g->rows.size());
                const size_t f = jobs[j].g->rows.size() * d_ * (jobs[j].ref ? 2 : 1);
                if (j > i && (floats + f > kGroupFloats || (batches.size() >= kMaxBatches && !batches.count(key)))) break;
                floats += f;
                batches[key].push_back(&jobs[j]);
            }
            i = j;

            auto g = runner_.new_graph();
            std::vector<std::vector<float>> staged;
            std::vector<std::pair<ggml_tensor *, const std::vector<const visual_job *> *>> outs;
            for (const auto & [key, list] : batches) {
                const int64_t n = (int64_t) key.second, ng = (int64_t) list.size();
                auto stage = [&](bool ref) {
                    staged.emplace_back((size_t) (d_ * n * ng));
                    for (int64_t k = 0; k < ng; ++k) gather(embd_, d_, (ref ? list[k]->ref : list[k]->g)->rows, staged.back().data() + k * n * d_);
                    return g.input(GGML_TYPE_F32, staged.back().data(), d_, n, ng);
                };
                ggml_tensor * out = key.first ? stvp_temporal(g.ctx(), stage(true), stage(false))
                                              : stvp_spatial(g.ctx(), stage(false));
                g.output(out);
                outs.emplace_back(out, &list);
            }
            runner_.run(g);
            for (const auto & [out, list] : outs) {
                std::vector<float> host(ggml_nelements(out));
                graph_runner::read(out, host.data());
                const size_t n = (*list)[0]->g->rows.size();
                for (size_t k = 0; k < list->size(); ++k) {
                    const auto & rows = (*list)[k]->g->rows;
                    for (size_t r = 0; r < n; ++r) scores[rows[r]] = host[k * n + r];
                }
            }
        }
    }

    void score_audio(const std::vector<audio_job> & jobs, int32_t selector, const sift_head_weights * head) {
        for (size_t i = 0; i < jobs.size();) {
            size_t max_na = 0, max_nv = 0, j = i;
            for (; j < jobs.size(); ++j) {
                const size_t na = std::max(max_na, jobs[j].audio->size()), nv = std::max(max_nv, jobs[j].anchors.size());
                if (j > i && (j - i + 1) * (na + nv) * d_ > kGroupFloats) break;
                max_na = na;
                max_nv = nv;
            }
            run_audio_group(&jobs[i], j - i, max_na, max_nv, selector, head);
            i = j;
        }
    }

    std::vector<double> scores;   // per token, NaN where not scored

private:
    void run_audio_group(const audio_job * jobs, size_t nc, size_t max_na, size_t max_nv, int32_t selector,
                         const sift_head_weights * head) {
        const float inf = std::numeric_limits<float>::infinity();
        std::vector<float> a(nc * max_na * d_, 0.0f), v(nc * max_nv * d_, 0.0f);
        for (size_t c = 0; c < nc; ++c) {
            gather(embd_, d_, *jobs[c].audio, a.data() + c * max_na * d_);
            gather(embd_, d_, jobs[c].anchors, v.data() + c * max_nv * d_);
        }
        auto g = runner_.new_graph();
        ggml_tensor * ta = g.input(GGML_TYPE_F32, a.data(), d_, max_na, nc);
        ggml_tensor * tv = g.input(GGML_TYPE_F32, v.data(), d_, max_nv, nc);
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
        graph_runner::read(out, host.data());
        for (size_t c = 0; c < nc; ++c) {
            const auto & rows = *jobs[c].audio;
            for (size_t r = 0; r < rows.size(); ++r) scores[rows[r]] = host[c * max_na + r];
        }
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

void sift(omnisift_engine * engine, const float * embd, int64_t n_tokens, int64_t n_embd, const int32_t * modality,
          const int32_t * pos, const omnisift_sift_params & p, uint8_t * keep_out, float * scores_out) {
    const sift_plan plan = make_plan(n_tokens, modality, pos);
    sifter s(engine->runner(), embd, n_tokens, n_embd);

    std::vector<visual_job> visual;
    for (const chunk & c : plan.chunks) {
        const grid & f1 = plan.video[c.first_grid];
        visual.push_back({&f1, nullptr});
        if (c.n_grids == 2) {
            const grid & f2 = plan.video[c.first_grid + 1];
            visual.push_back({&f2, f2.rows.size() == f1.rows.size() ? &f1 : nullptr});
        }
    }
    if (p.image_retention < 1.0) {
        for (const grid & g : plan.images) visual.push_back({&g, nullptr});
    }
    s.score_visual(visual);

    std::vector<uint8_t> keep(n_tokens, 1);
    prune(plan.video, s.scores, p.video_retention, keep.data());
    if (p.image_retention < 1.0) prune(plan.images, s.scores, p.image_retention, keep.data());

    if (p.audio_selector != OMNISIFT_AUDIO_SELECTOR_NONE) {
        std::vector<audio_job> jobs;
        for (const chunk & c : plan.chunks) {
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
            s.score_audio(jobs, p.audio_selector, p.head ? &p.head->head.weights() : nullptr);
        }
        for (const audio_job & job : jobs) {
            const int64_t n = (int64_t) job.audio->size();
            select_best(*job.audio, scores_of(*job.audio, s.scores).data(), n - drop_count(n, p.audio_retention), false,
                        keep.data());
        }
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
