// C API: omnisift_audio_tower_*.
#include "omnisift.h"
#include "audio_tower.h"
#include "engine.h"
#include "error.h"

#include <cmath>
#include <memory>

static_assert(OMNISIFT_AUDIO_WINDOW_FRAMES == omnisift::audio_tower::window_frames, "window size mismatch");

struct omnisift_audio_tower {
    omnisift_audio_tower(omnisift_engine & engine, const std::string & path)
        : engine(engine), tower(path, engine.runner()) {}
    omnisift_engine & engine;
    omnisift::audio_tower tower;
};

extern "C" {

omnisift_audio_tower * omnisift_audio_tower_init(omnisift_engine * engine, const char * mmproj_path) {
    return omnisift::api_new<omnisift_audio_tower>([&] {
        omnisift::require(engine != nullptr, "engine is NULL");
        omnisift::require(mmproj_path != nullptr && *mmproj_path, "mmproj_path is empty");
        return new omnisift_audio_tower(*engine, mmproj_path);
    });
}

void omnisift_audio_tower_free(omnisift_audio_tower * tower) { delete tower; }

int32_t omnisift_audio_tower_n_embd(const omnisift_audio_tower * tower) {
    return tower ? (int32_t) tower->tower.hparams().n_proj : 0;
}

int32_t omnisift_audio_tower_n_mel(const omnisift_audio_tower * tower) {
    return tower ? (int32_t) tower->tower.hparams().n_mel : 0;
}

int64_t omnisift_audio_n_tokens(int64_t n_frames) { return omnisift::audio_tower::n_tokens(n_frames); }

int32_t omnisift_audio_tower_encode(omnisift_audio_tower * tower, const float * mel, int64_t n_frames,
                                    float * out, int64_t n_out_rows) {
    return omnisift::api_call([&] {
        omnisift::require(tower != nullptr, "audio tower is NULL");
        omnisift::require(n_frames > 0, "no mel frames (empty audio)");
        omnisift::require(mel != nullptr && out != nullptr, "mel or out is NULL");
        const int64_t n_tokens = omnisift::audio_tower::n_tokens(n_frames);
        omnisift::require(n_out_rows >= n_tokens, "output buffer holds " + std::to_string(n_out_rows) +
                          " rows, " + std::to_string(n_tokens) + " needed");
        const int64_t n_values = n_frames * tower->tower.hparams().n_mel;
        for (int64_t i = 0; i < n_values; ++i) {
            omnisift::require(std::isfinite(mel[i]), "mel features contain NaN or infinity");
        }
        tower->tower.encode(tower->engine.runner(), mel, n_frames, out);
    });
}

} // extern "C"
