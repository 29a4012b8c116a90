#include "chunking.h"

#include "omnisift.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace omnisift {

namespace {

std::vector<grid> group_by_t(int64_t n_tokens, const int32_t * modality, const int32_t * pos_t, int32_t which) {
    std::map<int32_t, std::vector<int64_t>> by_t;
    for (int64_t i = 0; i < n_tokens; ++i) {
        if (modality[i] == which) by_t[pos_t[i]].push_back(i);
    }
    std::vector<grid> out;
    out.reserve(by_t.size());
    for (auto & [t, rows] : by_t) out.push_back({t, std::move(rows)});
    return out;
}

} // namespace

sift_plan make_plan(int64_t n_tokens, const int32_t * modality, const int32_t * pos_t) {
    sift_plan plan;
    plan.video = group_by_t(n_tokens, modality, pos_t, OMNISIFT_MODALITY_VIDEO);
    plan.images = group_by_t(n_tokens, modality, pos_t, OMNISIFT_MODALITY_IMAGE);

    const int64_t n_grids = (int64_t) plan.video.size();
    std::vector<int32_t> chunk_t;   // first t of each chunk
    for (int64_t g = 0; g < n_grids; g += 2) {
        plan.chunks.push_back({g, std::min<int64_t>(2, n_grids - g), {}});
        chunk_t.push_back(plan.video[g].t);
    }
    // Audio before the first grid belongs to no chunk: it has no visual anchors and is kept.
    for (int64_t i = 0; i < n_tokens; ++i) {
        if (modality[i] != OMNISIFT_MODALITY_AUDIO || chunk_t.empty() || pos_t[i] < chunk_t[0]) continue;
        const auto it = std::upper_bound(chunk_t.begin(), chunk_t.end(), pos_t[i]);
        plan.chunks[(it - chunk_t.begin()) - 1].audio.push_back(i);
    }
    return plan;
}

int64_t drop_count(int64_t n, double retention) {
    const double k = std::floor((double) n * (1.0 - retention) + 1e-9);
    return std::clamp<int64_t>((int64_t) k, 0, n);
}

void select_best(const std::vector<int64_t> & rows, const double * score, int64_t n_keep,
                 bool lower_is_better, uint8_t * keep) {
    std::vector<int64_t> order(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) order[i] = (int64_t) i;
    // rows are increasing, so a stable sort on the score alone puts lower rows first among ties.
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return lower_is_better ? score[a] < score[b] : score[a] > score[b];
    });
    for (size_t i = 0; i < order.size(); ++i) keep[rows[order[i]]] = (int64_t) i < n_keep;
}

uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double random_score(uint64_t seed, int32_t t) {
    const uint64_t h = splitmix64(splitmix64(seed) + (uint64_t) (int64_t) t);
    return (double) (h >> 11) * 0x1.0p-53;
}

} // namespace omnisift
