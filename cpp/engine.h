// The engine behind the C API's omnisift_engine: one graph_runner (ggml_ext/runner.h) shared by every
// graph (compression, learned head, audio tower) that a caller runs. Only its declaration is here,
// so that this header does not pull ggml_ext/ into the files that include it.
#pragma once

#include <memory>
#include <string>

namespace omnisift { class graph_runner; }

struct omnisift_engine {
    omnisift_engine(const std::string & device, int n_threads);
    ~omnisift_engine();
    omnisift::graph_runner & runner() const { return *runner_; }
private:
    std::unique_ptr<omnisift::graph_runner> runner_;
};
