// Internal: omnisift_decode_embd's body for other C API files (the prefill queue), throwing omnisift::error.
#pragma once

#include <cstdint>

struct llama_context;

namespace omnisift {

// Decodes rows embd [n_rows][n_embd] at pos [3][n_rows] as omnisift_decode_embd documents;
// returns the number of llama_decode calls it made. Adds the row bytes it copied into batches to
// *bytes_copied when given (none where rows are already in decode order, as the prefill queue keeps them).
int64_t decode_rows(llama_context * lctx, const float * embd, int64_t n_rows, int64_t n_embd, const int32_t * pos,
                    int32_t seq_id, bool logits_last, int64_t * bytes_copied = nullptr);

// omnisift_decode_tokens' body (tokens at explicit positions, t spread to h and w by llama.cpp);
// returns the number of llama_decode calls it made.
int64_t decode_tokens(llama_context * lctx, const int32_t * tokens, int64_t n_tokens, const int32_t * pos,
                      int32_t seq_id, bool logits_last);

} // namespace omnisift
