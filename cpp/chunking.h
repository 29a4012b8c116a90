// Host-side bookkeeping of omnisift_sift: grouping tokens into grids and 2-second chunks from their
// positions, the retention -> drop-count rule, the deterministic top-k with its tie rule, and the
// seeded hash of the random selector. Everything here is exact integer/double logic, so the keep
// decision depends on the backend only through the float scores the graphs return.
#pragma once

#include <cstdint>
#include <vector>

namespace omnisift {

// One token grid: rows (sequence indices, increasing) sharing a temporal position.
struct grid {
    int32_t t;
    std::vector<int64_t> rows;
};

// One 2-second chunk: one or two consecutive video grids and the audio rows with t in
// [t of its first grid, t of the next chunk's first grid).
struct chunk {
    int64_t first_grid;              // index into sift_plan::video
    int64_t n_grids;                 // 1 (a tail) or 2
    std::vector<int64_t> audio;
};

struct sift_plan {
    std::vector<grid> video;         // distinct video t values, ascending
    std::vector<grid> images;        // distinct image t values, ascending
    std::vector<chunk> chunks;
};

// Groups the sequence as the method note specifies. modality must already be validated.
sift_plan make_plan(int64_t n_tokens, const int32_t * modality, const int32_t * pos_t);

// Number of the n tokens to drop at retention r: floor(n * (1 - r) + 1e-9), clamped to [0, n],
// evaluated in IEEE double exactly as written (this is the definition; the numpy reference uses the
// same expression). The 1e-9 absorbs binary rounding of decimal ratios: 1 - 0.3 is slightly below
// 0.7, so 90 * (1 - 0.3) = 62.99999999999999 would otherwise drop 62 tokens instead of 63. For
// ratios with at most 8 decimals and n < 10^6 it equals the exact decimal floor.
int64_t drop_count(int64_t n, double retention);

// Marks keep[row] = 1 for the n_keep best of rows (and 0 for the others). lower_is_better ranks
// by ascending score (video: least redundant first), else descending (audio: highest score first).
// Ties: the lower row index ranks first, so it keeps its place.
void select_best(const std::vector<int64_t> & rows, const double * score, int64_t n_keep,
                 bool lower_is_better, uint8_t * keep);

// splitmix64 (Steele, Lea, Flood 2014), the mixing function of the random selector.
uint64_t splitmix64(uint64_t x);

// Score of an audio token with temporal position t under the random selector:
// h = splitmix64(splitmix64(seed) + (uint64_t) (int64_t) t) (mod 2^64), score = (h >> 11) * 2^-53.
// Keyed by the absolute position, not by a chunk or token counter, so that compressing a sequence
// chunk by chunk (streaming) draws exactly what compressing it in one call draws.
double random_score(uint64_t seed, int32_t t);

} // namespace omnisift
