// omnisift.h: the C API of libomnisift, OmniSIFT token compression for omni-modal LLMs on llama.cpp.
//
// libomnisift is built against, and loaded next to, the llama.cpp that llama-cpp-python installs:
// one llama.cpp (one ggml backend registry) per process.
//
// Usage: compress one sequence of projector outputs (video grids and their audio) to a keep mask.
//
//     struct omnisift_engine_params ep = omnisift_engine_default_params();
//     omnisift_engine * eng = omnisift_engine_init(ep);             // CPU, or the GPU if there is one
//     if (!eng) { fprintf(stderr, "%s\n", omnisift_last_error()); return 1; }
//
//     struct omnisift_sift_params sp = omnisift_sift_default_params();
//     sp.video_retention = 0.25;                                     // keep a quarter of the video
//     sp.audio_retention = 0.50;
//     sp.audio_selector  = OMNISIFT_AUDIO_SELECTOR_ANCHOR;           // training-free
//
//     // embd: [n_tokens][n_embd] float rows; modality: [n_tokens]; pos: [3][n_tokens] = (t, h, w)
//     uint8_t * keep = malloc(n_tokens);
//     if (omnisift_sift(eng, embd, n_tokens, n_embd, modality, pos, &sp, keep, NULL) != 0) {
//         fprintf(stderr, "%s\n", omnisift_last_error());
//     }
//     omnisift_engine_free(eng);
//
// Conventions:
// - Functions that can fail return 0 (or a non-NULL pointer) on success and a negative status (or
//   NULL) on failure; omnisift_last_error() then describes the failure. Nothing aborts the process
//   on bad input, and a failed call leaves its outputs and the objects it was given unchanged.
// - Objects are not thread-safe; use one per thread. omnisift_last_error() is per thread.
// - Array arguments are caller-owned and only read (or written, for outputs) during the call.

#ifndef OMNISIFT_H
#define OMNISIFT_H

#include <stdint.h>

#if defined(_WIN32)
#    ifdef OMNISIFT_BUILDING_LIB
#        define OMNISIFT_API __declspec(dllexport)
#    else
#        define OMNISIFT_API __declspec(dllimport)
#    endif
#else
#    define OMNISIFT_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

//
// Library
//

// Semantic version of libomnisift, e.g. "0.1.0".
OMNISIFT_API const char * omnisift_version(void);

// Version of llama-cpp-python whose llama.cpp this library was compiled against, e.g. "0.3.36".
OMNISIFT_API const char * omnisift_llama_cpp_python_version(void);

// Description of the last failure on this thread ("" when none).
OMNISIFT_API const char * omnisift_last_error(void);

// Status codes.
enum omnisift_status {
    OMNISIFT_OK            =  0,
    OMNISIFT_ERR_ARGUMENT  = -1, // an argument is invalid (shape, range, NaN, NULL)
    OMNISIFT_ERR_FILE      = -2, // a file is missing, unreadable or not what was expected
    OMNISIFT_ERR_BACKEND   = -3, // ggml could not allocate or compute
    OMNISIFT_ERR_INTERNAL  = -4, // a bug: please report
};

//
// Engine: the ggml device and scheduler that the compression (and audio) graphs run on
//

typedef struct omnisift_engine omnisift_engine;

struct omnisift_engine_params {
    int32_t      n_threads; // CPU threads; <= 0 means all physical cores
    const char * device;    // ggml device name ("CPU", "CUDA0", "Metal", ...); NULL or "" picks the
                            // first GPU, else integrated GPU, else CPU, as llama.cpp does
};

OMNISIFT_API struct omnisift_engine_params omnisift_engine_default_params(void);
OMNISIFT_API omnisift_engine * omnisift_engine_init(struct omnisift_engine_params params);
OMNISIFT_API void              omnisift_engine_free(omnisift_engine * engine);
// Name of the ggml device the engine computes on (owned by the engine).
OMNISIFT_API const char *      omnisift_engine_device(const omnisift_engine * engine);

// What the engine's graphs cost in placement and transfers since it was created (or since
// omnisift_engine_reset_stats). Node counts cover the nodes that compute (not views, reshapes or
// permutes). On a non-CPU device, n_nodes_off_device > 0 means part of a graph ran elsewhere (on the
// CPU, through the scheduler's fallback); it is 0 when every node ran on the engine's device.
struct omnisift_engine_stats {
    int64_t n_graphs;            // graphs computed
    int64_t n_nodes;             // computing nodes in them
    int64_t n_nodes_off_device;  // of those, nodes the scheduler ran on another backend
    int64_t n_splits;            // scheduler splits (1 per graph when it runs on one backend)
    int64_t bytes_to_device;     // bytes written into device tensors (graph inputs, resident rows)
    int64_t bytes_from_device;   // bytes read back from device tensors (scores, audio rows)
    int64_t bytes_host_copied;   // bytes this library memcpy'd on the host to stage rows
};

OMNISIFT_API struct omnisift_engine_stats omnisift_engine_get_stats(const omnisift_engine * engine);
OMNISIFT_API void                         omnisift_engine_reset_stats(omnisift_engine * engine);

// Registers a ggml RPC server ("host:port", llama.cpp's --rpc) in the ggml that llama.cpp itself uses,
// as ggml_backend_rpc_add_server + ggml_backend_register do in llama.cpp's tools: models and engines
// created afterwards see its devices (GPU-type; the first GPU is what an engine picks). Registering an
// endpoint again adds nothing. Needs a ggml built with GGML_RPC (else OMNISIFT_ERR_BACKEND). ggml
// aborts the process when the server cannot be reached: check that it listens first.
// Returns the number of devices the server provides, or a negative status.
OMNISIFT_API int32_t omnisift_add_rpc_server(const char * endpoint);

//
// Compression: STVP video pruning and audio selection (OmniSIFT)
//

// Token modalities (the `modality` array of omnisift_sift).
enum omnisift_modality {
    OMNISIFT_MODALITY_TEXT  = 0, // always kept
    OMNISIFT_MODALITY_VIDEO = 1, // pruned by STVP
    OMNISIFT_MODALITY_AUDIO = 2, // pruned by the audio selector
    OMNISIFT_MODALITY_IMAGE = 3, // kept unless image_retention < 1 (then pruned spatially, per image)
};

// How audio tokens are chosen (per 2-second chunk, against the chunk's surviving video tokens).
enum omnisift_audio_selector {
    // Keep all audio.
    OMNISIFT_AUDIO_SELECTOR_NONE   = 0,
    // Training-free. Each visual anchor v_j (a video token of the chunk that survived STVP) spreads
    // one unit of attention over the chunk's n_a audio tokens: p_ij = softmax_i(cos(a_i, v_j) / 0.1);
    // audio token i scores its mean received mass (1/n_v) sum_j p_ij, and the highest scores are
    // kept. Why: the paper's ablation shows that raw, unprojected audio->video attention as the
    // score loses only 0.3-0.8 points against the learned head, while random selection loses 1-2:
    // the cross-modal attention pattern carries most of the signal. Without learned projections an
    // audio-query softmax normalises every audio token to the same mass, so the attention runs from
    // the anchors to the audio: audio that some surviving visual content points at is kept, audio
    // no anchor relates to goes first. Cosines make it invariant to the projector's output scale. The
    // temperature 0.1 (fixed, not tuned on data) makes each anchor vote mostly for the few audio
    // tokens closest to it while near-equal candidates still share its vote.
    OMNISIFT_AUDIO_SELECTOR_ANCHOR = 1,
    // The paper's learned VGAS head (omnisift_sift_params.head): audio tokens attend to the anchors
    // (8-head cross-attention), an MLP scores them, the highest sigmoid scores are kept.
    OMNISIFT_AUDIO_SELECTOR_VGAS   = 2,
    // The paper's baseline: an audio token with temporal position t scores u = (h >> 11) * 2^-53 with
    // h = splitmix64(splitmix64(seed) + (uint64_t) (int64_t) t) (mod 2^64), where splitmix64(x):
    // z = x + 0x9E3779B97F4A7C15; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
    // z = (z ^ z >> 27) * 0x94D049BB133111EB; return z ^ z >> 31. The highest u are kept. Keyed by
    // position, so compressing a sequence chunk by chunk draws what one call over all of it draws.
    OMNISIFT_AUDIO_SELECTOR_RANDOM = 3,
};

// The selector's name: "none", "anchor", "vgas", "random" (in enum order), the names the Python API,
// the command line and the server take; NULL for a value that is no selector. Bindings list the
// selectors by asking for 0, 1, ... until NULL.
OMNISIFT_API const char * omnisift_audio_selector_name(int32_t selector);

// Every retention is a kept fraction in [OMNISIFT_RETENTION_MIN, OMNISIFT_RETENTION_MAX]: 1 keeps a
// group whole, 0 drops all of it that the counting rule below drops. omnisift_retention_range gives
// the same bounds to bindings that cannot read macros.
#define OMNISIFT_RETENTION_MIN 0.0
#define OMNISIFT_RETENTION_MAX 1.0
OMNISIFT_API void omnisift_retention_range(double * min, double * max);

// A learned audio selector head, read from a GGUF written by pyomnisift convert-head. Its
// weights live on the device of the engine it was loaded with, and it can only be used with that engine.
typedef struct omnisift_head omnisift_head;

// Loads and validates a head file. NULL on failure (missing file, not an "omnisift-head" GGUF, missing
// tensor, inconsistent shapes, non-finite weights): see omnisift_last_error().
OMNISIFT_API omnisift_head * omnisift_head_load(omnisift_engine * engine, const char * path);
OMNISIFT_API void            omnisift_head_free(omnisift_head * head);
// Embedding width D the head expects (the LLM's n_embd), and its attention width (512 in OmniSIFT-7B).
OMNISIFT_API int32_t         omnisift_head_n_embd(const omnisift_head * head);
OMNISIFT_API int32_t         omnisift_head_n_hidden(const omnisift_head * head);

struct omnisift_sift_params {
    double  video_retention;  // fraction of each video grid kept, in [0, 1]
    double  audio_retention;  // fraction of each chunk's audio kept, in [0, 1]
    double  image_retention;  // fraction of each image kept, in [0, 1]
    int32_t audio_selector;   // enum omnisift_audio_selector
    const omnisift_head * head; // required by OMNISIFT_AUDIO_SELECTOR_VGAS, ignored otherwise
    uint64_t seed;            // OMNISIFT_AUDIO_SELECTOR_RANDOM's seed
};

// Retentions 1, selector ANCHOR, no head, seed 0.
OMNISIFT_API struct omnisift_sift_params omnisift_sift_default_params(void);

// Computes which tokens of one sequence to keep (OmniSIFT: STVP on video, then audio selection).
//   embd     [n_tokens][n_embd] projector outputs, finite
//   modality [n_tokens] enum omnisift_modality
//   pos      [3][n_tokens] M-RoPE positions: pos[0..n) = t, pos[n..2n) = h, pos[2n..3n) = w
//   keep     out [n_tokens]: 1 = keep, 0 = drop
//   scores   out [n_tokens], optional (NULL): the score that ranked each token, NaN where none
//            (text, images at retention 1, audio that was not ranked). Video and image: cosine
//            similarity (the most similar are dropped); audio: the selector's score (the highest
//            are kept).
//
// Grouping (positions only; rows need not be contiguous): the distinct video t values, ascending,
// are grids (tokens in sequence order), two per chunk (the last chunk may hold one). Chunk c's audio
// is the audio with t in [t of its first grid, t of the next chunk's first grid); audio before the
// first grid and all audio of a sequence without video belong to no chunk and are kept. Each image
// is the image tokens sharing one t.
//
// Video, per chunk: grid F1 is scored by cosine to F1's mean token; grid F2 by cosine of its token i
// to token i of F1 when both have the same number of tokens, else (unequal grids) like F1, by cosine
// to its own mean. Images are scored like F1. Audio, per chunk: if the chunk has no surviving video
// token or fewer than 2 audio tokens, all its audio is kept; else it is scored by the selector.
//
// Counts: a group of n tokens (grid, image, chunk's audio) at retention r drops
// k = floor(n * (1 - r) + 1e-9), in IEEE double (the 1e-9 keeps decimal ratios exact: n = 90, r = 0.3
// drops 63, not 62), clamped to [0, n]. Video and images drop their k most similar tokens, audio
// its k lowest-scored ones. Ties between equal scores: the lower token index keeps its place.
// The selection is done on the host from the scores, so it is the same on every backend for the
// same scores.
//
// Returns 0, or a negative status (bad argument, non-finite row, head of another width or engine,
// backend failure) with keep and scores untouched.
OMNISIFT_API int32_t omnisift_sift(omnisift_engine * engine, const float * embd, int64_t n_tokens, int64_t n_embd,
                                   const int32_t * modality, const int32_t * pos,
                                   const struct omnisift_sift_params * params, uint8_t * keep, float * scores);

// How many tokens omnisift_sift keeps for this modality / pos layout and these params, without
// the embeddings: the count depends on the grouping and the retentions only (the scores decide which
// tokens, never how many). Lets a caller size a prompt (context checks, positions, KV cells) before
// anything is encoded. Returns the count (>= 0), or a negative status for a bad argument.
OMNISIFT_API int64_t omnisift_sift_n_kept(const int32_t * modality, const int32_t * pos, int64_t n_tokens,
                                          const struct omnisift_sift_params * params);

// The chunk of every token as omnisift_sift groups them (the grouping above): chunk[i] = c for the
// tokens of video grids 2c and 2c + 1 and the audio of chunk c, -1 for tokens in no chunk (text,
// images, audio before the first grid or in a sequence without video). Chunks are the units a caller
// may compress one call at a time: the masks are those of one call over the whole sequence.
// Returns the number of chunks (>= 0), or a negative status for a bad argument (chunk untouched).
OMNISIFT_API int64_t omnisift_sift_chunks(const int32_t * modality, const int32_t * pos, int64_t n_tokens,
                                          int64_t * chunk);

//
// Audio tower: the Qwen2.5-Omni audio encoder on 2-second windows
//

// llama.cpp encodes Qwen2.5-Omni audio as Whisper does: every clip padded to 30 s, attention over
// 1500 frames. The model was trained on 2-second windows (200 mel frames: convolutions, positions
// and attention per window) and this tower computes that function, on the engine's device, with
// the weights of the mmproj that llama.cpp's converter writes (projector type "qwen2.5o").
// Towers whose audio really is Whisper-style (Qwen2-Audio, Ultravox, Voxtral) are refused: encode
// them with libmtmd.
//
//     omnisift_audio_tower * tower = omnisift_audio_tower_init(eng, "mmproj.gguf");
//     int64_t n_tok = omnisift_audio_n_tokens(n_frames);               // 25 per second
//     float * rows = malloc(n_tok * omnisift_audio_tower_n_embd(tower) * sizeof(float));
//     omnisift_audio_tower_encode(tower, mel, n_frames, rows, n_tok);   // mel: [n_frames][128]
//     omnisift_audio_tower_free(tower);

typedef struct omnisift_audio_tower omnisift_audio_tower;

// Mel frames per window (2 s at 100 frames per second).
#define OMNISIFT_AUDIO_WINDOW_FRAMES 200

// Loads the audio tower of a Qwen2.5-Omni mmproj onto the engine's device. The engine must
// outlive the tower. NULL on failure: a missing or unreadable file, an mmproj without an audio
// tower, or one whose audio projector type is not "qwen2.5o".
OMNISIFT_API omnisift_audio_tower * omnisift_audio_tower_init(omnisift_engine * engine, const char * mmproj_path);
OMNISIFT_API void                   omnisift_audio_tower_free(omnisift_audio_tower * tower);

// Width of the output rows (the LLM embedding width the projector maps to).
OMNISIFT_API int32_t omnisift_audio_tower_n_embd(const omnisift_audio_tower * tower);
// Mel bins per input frame (128 for Qwen2.5-Omni).
OMNISIFT_API int32_t omnisift_audio_tower_n_mel(const omnisift_audio_tower * tower);

// Output rows for n_frames mel frames, as transformers counts them: each full window gives 50,
// a last partial window of r frames gives ((r - 1) / 2 + 1) / 2.
OMNISIFT_API int64_t omnisift_audio_n_tokens(int64_t n_frames);

// Encodes mel features [n_frames][n_mel] (Whisper log-mel, frame-major) to rows
// [omnisift_audio_n_tokens(n_frames)][n_embd]; n_out_rows is the capacity of out in rows and must
// be at least that. Window w (0-based) yields rows [50 w, min(50 (w + 1), n_tokens)). Fails with
// OMNISIFT_ERR_ARGUMENT for n_frames <= 0, non-finite features or a short output buffer.
OMNISIFT_API int32_t omnisift_audio_tower_encode(omnisift_audio_tower * tower, const float * mel, int64_t n_frames,
                                                 float * out, int64_t n_out_rows);

//
// mmproj: one audio tower in memory
//
// libmtmd loads every tower of an mmproj, and nothing in its parameters skips one; with this
// library's audio tower in use, libmtmd's copy of the audio weights would be a second one in memory
// (0.6 GB for Qwen2.5-Omni-3B's tower in q8_0, 1.2 GB in f16). This writes the file libmtmd is
// then given: the same GGUF without the audio tower (every key and tensor of the source except the
// audio tensors "a.*" and "mm.a.*", clip.has_audio_encoder false; tensor bytes copied unchanged).

// Writes the vision-only copy of the mmproj at src to dst (replaced if it exists; written whole or
// not at all: a failure removes dst). Fails for a file that is not an mmproj with a vision tower.
OMNISIFT_API int32_t omnisift_mmproj_write_vision_only(const char * src, const char * dst);

// The audio-only copy (every key and tensor except the vision ones, clip.has_vision_encoder false),
// for Qwen3-Omni: libmtmd 0.3.36 refuses its mmproj with both towers, whose vision rows are
// n_embd x (1 + deepstack layers) wide and audio rows n_embd wide ("mismatch between vision and
// audio mmproj"). Fails for a file that is not an mmproj with an audio tower.
OMNISIFT_API int32_t omnisift_mmproj_write_audio_only(const char * src, const char * dst);

//
// Decoding: rows and tokens into a llama context at explicit positions
//
// llama-cpp-python's own eval numbers positions by token count, which is wrong for M-RoPE models
// once media has been decoded (positions jump forward) and for a compressed sequence (kept rows keep
// their original positions). These two calls decode at the positions given.
//
// Under M-RoPE (Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni, Qwen3-VL) llama.cpp's causal mask is decided by
// positions, not by the order rows arrive in, and llama.cpp requires t to be non-decreasing within
// a batch and across calls. The Omni sequence is not (a chunk's audio restarts at the chunk's first
// t after its second video grid), so rows are decoded in stable t order: same attention, valid
// batches. A new batch also starts wherever (t, h, w) goes down, so that rows decoded before it
// cannot see that later row (the reference's sequence-order mask; the remaining difference is
// measured in tests/test_parity_transformers.py). Models with ordinary RoPE use pos[0] only; their
// positions must be contiguous.
//
// On failure the rows this call decoded past the cache's previous end are removed again; callers
// that need the exact previous state clear the sequence (pyomnisift.Llama clears its context).

struct llama_context;

// Rows: embd [n_rows][n_embd] with n_embd = llama_model_n_embd_inp(model); pos [3][n_rows] (t, h, w).
// logits_last != 0 asks for the logits of the row decoded last.
OMNISIFT_API int32_t omnisift_decode_embd(struct llama_context * lctx, const float * embd, int64_t n_rows,
                                          int64_t n_embd, const int32_t * pos, int32_t seq_id,
                                          int32_t logits_last);

// Text tokens at positions pos [n_tokens] (t = h = w under M-RoPE). Positions may repeat: the
// reference gives <|vision_bos|><|audio_bos|> of a video with sound one position.
OMNISIFT_API int32_t omnisift_decode_tokens(struct llama_context * lctx, const int32_t * tokens, int64_t n_tokens,
                                            const int32_t * pos, int32_t seq_id, int32_t logits_last);

//
// Context: one call per compression unit encodes, sifts and queues it; several units per llama_decode
//
// A compression unit is what OmniSIFT compresses together (omnisift_sift's grouping): two
// consecutive frame grids of a video with the audio whose t falls in their chunk, an image, or a
// stretch of audio without video. omnisift_context_add takes one unit's frames (RGB) and its audio's
// new mel windows, runs libmtmd's vision encoder and the audio tower on them, sifts the unit as
// omnisift_sift does, queues its kept rows and decodes the queue (as omnisift_decode_embd does)
// when the next unit would not fit beside it, so that one llama_decode takes the kept rows of
// several units. The rows stay here: a caller that wants them (a picture of what was kept) reads
// the last unit's with omnisift_context_unit_rows. A row is copied twice on its way from the
// encoder's output to llama_decode: into the unit (sequence order, what the sift reads) and into the
// queue (kept rows only, already in decode order, so a flush decodes them where they are). Audio rows of a window that two units share are
// moved once more, to the front of the audio stream, before the next window is appended.
//
// The units of one media item come in sequence order (t ranges ascending) between
// omnisift_context_begin, which sets the item's compression and forgets the previous item's audio
// stream and frames, and omnisift_context_end, which decodes what is queued. Nothing else may be
// decoded into the sequence in between. After a failed call, begin the item again (and, when a
// decode failed, clear the sequence: see omnisift_decode_embd).
//
//     omnisift_context * oc = omnisift_context_init(lctx, mctx, eng, tower, omnisift_context_default_params());
//     omnisift_context_begin(oc, &sp);            // sp NULL: every row kept
//     for (each unit) omnisift_context_add(oc, &unit, keep);
//     omnisift_context_end(oc, 0);
//     omnisift_context_free(oc);

typedef struct omnisift_context omnisift_context;
struct mtmd_context;

struct omnisift_context_params {
    int32_t seq_id;           // sequence the rows are decoded into
    int64_t max_rows;         // rows per flush of the queue; <= 0 means the context's n_batch
    int32_t reuse_identical;  // a grid whose frames are byte-identical to the previous grid's (within
                              // the item) takes its rows without encoding (the encoder is deterministic)
};

// One compression unit. Rows are in sequence order; each has a modality (video, audio or image),
// a source and its position:
// - video: source = the frame grid's index within the item; a grid's rows are its tokens in
//   row-major order. Image: source = 0. Their rows come from frames: the unit's grids (distinct
//   sources, ascending) take frames_per_grid consecutive frames each (2 for a video grid: a temporal
//   pair; 1 for an image), n_frames in all, each [height][width][3] RGB, width and height multiples
//   of the vision tower's patch merge as the layout assumed (the encoder's token count is checked).
// - audio: source = the row's index in the item's audio stream (ascending within the unit; units
//   ask for rows at or after those of the units before). Before the unit's rows are taken the
//   stream grows by the audio tower's rows of mel [n_mel_frames][n_mel] (the next whole 2-s windows
//   of the item's features, the last possibly partial), or by audio_rows [n_audio_rows][n_embd]
//   encoded elsewhere (libmtmd's Whisper-style towers).
// - embd (optional): all the unit's rows [n_rows][n_embd] given; then frames and audio are not read.
struct omnisift_unit {
    int64_t         n_rows;
    const int32_t * modality;        // [n_rows] enum omnisift_modality
    const int32_t * source;          // [n_rows]
    const int32_t * pos;             // [3][n_rows] (t, h, w)
    int32_t         renumber_from;   // >= 0 (models with ordinary RoPE): kept rows decode at
                                     // renumber_from, renumber_from + 1, ... in sequence order

    const uint8_t * const * frames;  // [n_frames] RGB frames
    int32_t         n_frames;
    int32_t         frames_per_grid;
    int32_t         width, height;

    const float *   mel;             // [n_mel_frames][n_mel] or NULL
    int64_t         n_mel_frames;
    const float *   audio_rows;      // [n_audio_rows][n_embd] or NULL
    int64_t         n_audio_rows;

    const float *   embd;            // [n_rows][n_embd] or NULL

    // Text inside the item, decoded in position order among the unit's kept rows (Qwen3-VL writes
    // each frame grid's timestamp and wrappers as text before it): tokens [n_text] at positions
    // text_pos [n_text] (t = h = w), ascending. The queue is decoded before them, so a row never
    // follows a text token of a larger position. M-RoPE units only (renumber_from < 0). NULL / 0: none.
    const int32_t * text;
    const int32_t * text_pos;
    int64_t         n_text;
};

struct omnisift_context_stats {
    int64_t n_rows_in;       // rows of the units added
    int64_t n_rows_kept;     // of those, kept (and queued)
    int64_t n_flushes;       // queue decodes
    int64_t n_decode_calls;  // llama_decode calls they made
    int64_t n_vision_calls;  // grids (or images) encoded
    int64_t n_grids_reused;  // grids that took the previous grid's rows (identical frames)
    int64_t n_audio_calls;   // audio tower calls (one per unit that brought mel windows)
    double  t_vision_ms;     // time in the vision encoder
    double  t_audio_ms;      // time in the audio tower
    double  t_sift_ms;       // time in the compression
    double  t_decode_ms;     // time in llama_decode (and the batch copies)
    int64_t bytes_host_copied; // row bytes copied on the host: into the queue, and into batches where
                               // the queue's order is not the decode order
};

// Seq 0, max_rows 0 (n_batch), reuse_identical 1.
OMNISIFT_API struct omnisift_context_params omnisift_context_default_params(void);
// Over a llama context and, each optional (NULL) when no unit needs it: the mtmd context of its
// mmproj (vision), the engine (compression; required when sift params are given) and the audio tower
// (mel input). They must outlive the context. NULL on failure (NULL llama context, bad params, a
// tower or mtmd context whose row width is not the model's input embedding width). Rows are
// llama_model_n_embd_inp wide; for a model that takes deepstack features (Qwen3-VL's tower: rows of
// n_embd x (1 + deepstack layers)) the compression scores the first llama_model_n_embd columns,
// the main embedding, and keeps or drops whole rows.
OMNISIFT_API omnisift_context * omnisift_context_init(struct llama_context * lctx, struct mtmd_context * mctx,
                                                      omnisift_engine * engine, omnisift_audio_tower * tower,
                                                      struct omnisift_context_params params);
OMNISIFT_API void omnisift_context_free(omnisift_context * ctx);

// Starts a media item compressed with params (copied; NULL: every row kept). Fails while rows of
// the previous item are still queued (end it first).
OMNISIFT_API int32_t omnisift_context_begin(omnisift_context * ctx, const struct omnisift_sift_params * params);
// Encodes, sifts and queues one unit, decoding the queue when it is full. keep (optional, [n_rows])
// receives the mask. On failure keep is untouched and nothing of the unit is queued.
OMNISIFT_API int32_t omnisift_context_add(omnisift_context * ctx, const struct omnisift_unit * unit, uint8_t * keep);
// Ends the item: decodes what is queued (nothing is not an error); logits_last asks for the last
// row's logits.
OMNISIFT_API int32_t omnisift_context_end(omnisift_context * ctx, int32_t logits_last);
// The rows of the unit added last, [n_rows][n_embd] in its sequence order (NULL when there is
// none); owned by the context, valid until its next call. *n_rows and *n_embd receive the shape.
OMNISIFT_API const float * omnisift_context_unit_rows(const omnisift_context * ctx, int64_t * n_rows, int64_t * n_embd);
// Rows queued and not yet decoded.
OMNISIFT_API int64_t omnisift_context_n_queued(const omnisift_context * ctx);
// Counters since init.
OMNISIFT_API struct omnisift_context_stats omnisift_context_get_stats(const omnisift_context * ctx);

#ifdef __cplusplus
}
#endif

#endif // OMNISIFT_H
