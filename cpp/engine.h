// The engine behind the C API's omnisift_engine: one graph_runner shared by every graph (compression,
// learned head, audio tower) that a caller runs.
#pragma once

#include "runner.h"

struct omnisift_engine {
    omnisift_engine(const std::string & device, int n_threads) : runner(device, n_threads) {}
    omnisift::graph_runner runner;
};
