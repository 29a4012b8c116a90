// Internal: omnisift_sift's body for other C API files (the prefill queue), throwing omnisift::error.
#pragma once

#include "omnisift.h"

namespace omnisift {

// Validates the arguments as omnisift_sift does, then computes keep (and scores when not NULL).
void sift_checked(omnisift_engine * engine, const float * embd, int64_t n_tokens, int64_t n_embd,
                  const int32_t * modality, const int32_t * pos, const omnisift_sift_params * params,
                  uint8_t * keep, float * scores);

} // namespace omnisift
