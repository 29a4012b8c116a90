// C API: omnisift_engine_*.
#include "omnisift.h"
#include "engine.h"
#include "error.h"
#include "runner.h"

omnisift_engine::omnisift_engine(const std::string & device, int n_threads)
    : runner_(std::make_unique<omnisift::graph_runner>(device, n_threads)) {}

omnisift_engine::~omnisift_engine() = default;

extern "C" {

struct omnisift_engine_params omnisift_engine_default_params(void) {
    omnisift_engine_params p;
    p.n_threads = 0;
    p.device = nullptr;
    return p;
}

omnisift_engine * omnisift_engine_init(struct omnisift_engine_params params) {
    return omnisift::api_new<omnisift_engine>([&] {
        return new omnisift_engine(params.device ? params.device : "", params.n_threads);
    });
}

void omnisift_engine_free(omnisift_engine * engine) { delete engine; }

const char * omnisift_engine_device(const omnisift_engine * engine) {
    return engine ? engine->runner().device_name().c_str() : "";
}

struct omnisift_engine_stats omnisift_engine_get_stats(const omnisift_engine * engine) {
    omnisift_engine_stats out{};
    if (engine) {
        const omnisift::runner_stats & s = engine->runner().stats();
        out = {s.n_graphs, s.n_nodes, s.n_nodes_off_device, s.n_splits, s.bytes_to_device, s.bytes_from_device,
               s.bytes_host_copied};
    }
    return out;
}

void omnisift_engine_reset_stats(omnisift_engine * engine) {
    if (engine) engine->runner().reset_stats();
}

} // extern "C"
