#include "runner.h"

#include "status.h"

#include <algorithm>
#include <thread>

namespace omnisift {

namespace {

ggml_backend_dev_t pick_device(const std::string & name) {
    if (!name.empty()) {
        ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.c_str());
        if (!dev) {
            std::string known;
            for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
                known += (i ? ", " : "") + std::string(ggml_backend_dev_name(ggml_backend_dev_get(i)));
            }
            fail(status::argument, "unknown ggml device '" + name + "' (available: " + known + ")");
        }
        return dev;
    }
    for (auto type : {GGML_BACKEND_DEVICE_TYPE_GPU, GGML_BACKEND_DEVICE_TYPE_IGPU, GGML_BACKEND_DEVICE_TYPE_CPU}) {
        if (ggml_backend_dev_t dev = ggml_backend_dev_by_type(type)) return dev;
    }
    fail(status::backend, "no ggml device is registered");
}

void set_threads(ggml_backend_t backend, int n_threads) {
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(backend));
    auto fn = reinterpret_cast<ggml_backend_set_n_threads_t>(
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads"));
    if (fn) fn(backend, n_threads);
}

} // namespace

graph_runner::graph_runner(const std::string & device, int n_threads) {
    ggml_backend_dev_t dev = pick_device(device);
    device_name_ = ggml_backend_dev_name(dev);
    backend_ = ggml_backend_dev_init(dev, nullptr);
    if (!backend_) fail(status::backend, "cannot initialise ggml device " + device_name_);

    if (n_threads <= 0) n_threads = std::max(1u, std::thread::hardware_concurrency() / 2);
    if (ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU) {
        cpu_backend_ = backend_;
    } else {
        cpu_backend_ = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr);
        if (!cpu_backend_) {
            ggml_backend_free(backend_);
            fail(status::backend, "cannot initialise the ggml CPU backend");
        }
    }
    set_threads(cpu_backend_, n_threads);

    std::vector<ggml_backend_t> backends = {backend_};
    if (cpu_backend_ != backend_) backends.push_back(cpu_backend_);
    sched_ = ggml_backend_sched_new(backends.data(), nullptr, (int) backends.size(),
                                    GGML_DEFAULT_GRAPH_SIZE * 4, false, true);
    if (!sched_) {
        if (cpu_backend_ != backend_) ggml_backend_free(cpu_backend_);
        ggml_backend_free(backend_);
        fail(status::backend, "cannot create a ggml scheduler on " + device_name_);
    }
}

graph_runner::~graph_runner() {
    ggml_backend_sched_free(sched_);
    if (cpu_backend_ != backend_) ggml_backend_free(cpu_backend_);
    ggml_backend_free(backend_);
}

graph_runner::graph::graph(size_t max_nodes) {
    ggml_init_params params = {
        /*.mem_size   =*/ ggml_tensor_overhead() * max_nodes + ggml_graph_overhead_custom(max_nodes, false),
        /*.mem_buffer =*/ nullptr,
        /*.no_alloc   =*/ true,
    };
    ctx_ = ggml_init(params);
    if (!ctx_) fail(status::backend, "cannot allocate a ggml context");
    gf_ = ggml_new_graph_custom(ctx_, max_nodes, false);
}

graph_runner::graph::graph(graph && other) noexcept
    : ctx_(other.ctx_), gf_(other.gf_), inputs_(std::move(other.inputs_)) {
    other.ctx_ = nullptr;
    other.gf_ = nullptr;
}

graph_runner::graph::~graph() {
    if (ctx_) ggml_free(ctx_);
}

ggml_tensor * graph_runner::graph::input(ggml_type type, const void * data, int64_t ne0, int64_t ne1,
                                         int64_t ne2, int64_t ne3) {
    ggml_tensor * t = ggml_new_tensor_4d(ctx_, type, ne0, ne1, ne2, ne3);
    ggml_set_input(t);
    inputs_.push_back({t, data});
    return t;
}

void graph_runner::graph::output(ggml_tensor * t) {
    ggml_set_output(t);
    ggml_build_forward_expand(gf_, t);
}

graph_runner::graph graph_runner::new_graph(size_t max_nodes) const { return graph(max_nodes); }

void graph_runner::run(graph & g) {
    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, g.gf_)) {
        fail(status::backend, "cannot allocate a compute graph on " + device_name_ + " (out of memory?)");
    }
    for (const auto & in : g.inputs_) {
        ggml_backend_tensor_set(in.t, in.data, 0, ggml_nbytes(in.t));
    }
    if (ggml_backend_sched_graph_compute(sched_, g.gf_) != GGML_STATUS_SUCCESS) {
        fail(status::backend, "ggml graph computation failed on " + device_name_);
    }
}

void graph_runner::read(const ggml_tensor * t, void * dst) {
    ggml_backend_tensor_get(t, dst, 0, ggml_nbytes(t));
}

} // namespace omnisift
