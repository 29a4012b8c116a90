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
//     sp.audio_selector  = OMNISIFT_AUDIO_ANCHOR;                    // training-free
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

//
// Compression: STVP video pruning and audio selection (OmniSIFT)
//

// @@compression-api@@ (replace this marker with the compression declarations)

//
// Audio tower: the Qwen2.5-Omni audio encoder on 2-second windows
//

// @@audio-api@@ (replace this marker with the audio tower declarations)

#ifdef __cplusplus
}
#endif

#endif // OMNISIFT_H
