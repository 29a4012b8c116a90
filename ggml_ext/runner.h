// graph_runner: owns a ggml device (GPU if there is one, else CPU) and a backend scheduler, and
// runs graphs built from built-in ggml ops on it. Every graph in ggml_ext goes through this class,
// so the same graph code runs on the CPU, CUDA and Metal backends, with the scheduler falling back
// to the CPU for any op a device cannot run.
#pragma once

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"

#include <cstdint>
#include <string>
#include <vector>

namespace omnisift {

class graph_runner {
public:
    // device: a ggml device name, or empty for the first GPU, else integrated GPU, else CPU.
    // n_threads <= 0: all physical cores (std::thread::hardware_concurrency halved, at least 1).
    graph_runner(const std::string & device, int n_threads);
    ~graph_runner();
    graph_runner(const graph_runner &) = delete;
    graph_runner & operator=(const graph_runner &) = delete;

    const std::string & device_name() const { return device_name_; }
    ggml_backend_t backend() const { return backend_; }   // the main device's backend (weights live here)

    // A graph under construction. Tensors are metadata until run(); inputs point at host memory that
    // must stay valid until run() returns.
    class graph {
    public:
        ggml_context * ctx() const { return ctx_; }
        ggml_tensor * input(ggml_type type, const void * data, int64_t ne0, int64_t ne1 = 1,
                            int64_t ne2 = 1, int64_t ne3 = 1);
        // Marks t as a result: after run(), read it with graph_runner::read().
        void output(ggml_tensor * t);
        ~graph();
        graph(graph && other) noexcept;
        graph(const graph &) = delete;
    private:
        friend class graph_runner;
        explicit graph(size_t max_nodes);
        struct pending_input { ggml_tensor * t; const void * data; };
        ggml_context * ctx_ = nullptr;
        ggml_cgraph * gf_ = nullptr;
        std::vector<pending_input> inputs_;
    };

    graph new_graph(size_t max_nodes = 4096) const;
    // Allocates, uploads the inputs and computes. Throws omnisift::error on failure.
    void run(graph & g);
    // Copies a computed tensor (contiguous) to host memory of ggml_nbytes(t) bytes.
    static void read(const ggml_tensor * t, void * dst);

private:
    std::string device_name_;
    ggml_backend_t backend_ = nullptr;       // chosen device
    ggml_backend_t cpu_backend_ = nullptr;   // fallback for unsupported ops (== backend_ on CPU)
    ggml_backend_sched_t sched_ = nullptr;
};

} // namespace omnisift
