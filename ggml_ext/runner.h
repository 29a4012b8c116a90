// graph_runner: owns a ggml device (GPU if there is one, else CPU) and a backend scheduler, and
// runs graphs built from built-in ggml ops on it. Every graph in ggml_ext goes through this class,
// so the same graph code runs on the CPU, CUDA and Metal backends, with the scheduler falling back
// to the CPU for any op a device cannot run.
//
// Placement: ggml's scheduler puts a graph input that no weight pins on its LAST backend (the CPU),
// and a graph whose inputs all sit on the CPU then runs there node by node. So every input is pinned
// to the device here, rows read by several graphs are uploaded once (resident), and weights are
// marked as such: every node of our graphs runs on the engine's device (tests/cpp/test_placement.cpp
// checks it on a device whose buffers are not host memory). stats() counts what it cost.
#pragma once

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"

#include <cstdint>
#include <string>
#include <vector>

namespace omnisift {

// What the graphs cost in placement and transfers (the engine hands it out as the C API's
// omnisift_engine_stats; kept here so that ggml_ext/ needs nothing from cpp/).
struct runner_stats {
    int64_t n_graphs = 0;
    int64_t n_nodes = 0;
    int64_t n_nodes_off_device = 0;
    int64_t n_splits = 0;
    int64_t bytes_to_device = 0;
    int64_t bytes_from_device = 0;
    int64_t bytes_host_copied = 0;
};

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

    // Rows in a device buffer of their own, kept across several graphs (as weights are): uploaded
    // once however many graphs read them. On a CPU device the host memory is wrapped, not copied,
    // and must then stay valid while the resident lives.
    class resident {
    public:
        ggml_tensor * tensor() const { return t_; }
        ~resident();
        resident(resident && other) noexcept;
        resident(const resident &) = delete;
        resident & operator=(const resident &) = delete;
    private:
        friend class graph_runner;
        resident() = default;
        ggml_context * ctx_ = nullptr;
        ggml_backend_buffer_t buf_ = nullptr;
        ggml_tensor * t_ = nullptr;
    };
    resident upload(ggml_type type, const void * data, int64_t ne0, int64_t ne1);

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
    void read(const ggml_tensor * t, void * dst);

    const runner_stats & stats() const { return stats_; }
    void reset_stats() { stats_ = {}; }
    // Host-side staging copies made by the graphs' callers (counted, not performed, here).
    void note_host_copy(size_t bytes) { stats_.bytes_host_copied += (int64_t) bytes; }

private:
    std::string device_name_;
    ggml_backend_t backend_ = nullptr;       // chosen device
    ggml_backend_t cpu_backend_ = nullptr;   // fallback for unsupported ops (== backend_ on CPU)
    ggml_backend_sched_t sched_ = nullptr;
    runner_stats stats_{};
};

} // namespace omnisift
