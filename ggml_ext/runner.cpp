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

graph_runner::resident::~resident() {
    if (buf_) ggml_backend_buffer_free(buf_);
    if (ctx_) ggml_free(ctx_);
}

graph_runner::resident::resident(resident && other) noexcept : ctx_(other.ctx_), buf_(other.buf_), t_(other.t_) {
    other.ctx_ = nullptr;
    other.buf_ = nullptr;
    other.t_ = nullptr;
}

graph_runner::resident graph_runner::upload(ggml_type type, const void * data, int64_t ne0, int64_t ne1) {
    resident r;
    ggml_init_params params = {/*.mem_size =*/ ggml_tensor_overhead(), /*.mem_buffer =*/ nullptr, /*.no_alloc =*/ true};
    r.ctx_ = ggml_init(params);
    if (!r.ctx_) fail(status::backend, "cannot allocate a ggml context");
    r.t_ = ggml_new_tensor_2d(r.ctx_, type, ne0, ne1);
    const size_t size = ggml_nbytes(r.t_);
    ggml_backend_dev_t dev = ggml_backend_get_device(backend_);
    ggml_backend_dev_props props;
    ggml_backend_dev_get_props(dev, &props);
    if (backend_ == cpu_backend_ && props.caps.buffer_from_host_ptr) {
        // The CPU computes on the caller's memory: no copy; the graphs only read it. The buffer must
        // start aligned, so it starts at the aligned address at or below data (bytes never read).
        const size_t align = ggml_backend_buft_get_alignment(ggml_backend_dev_buffer_type(dev));
        char * start = static_cast<char *>(const_cast<void *>(data));
        char * base = start - reinterpret_cast<uintptr_t>(start) % align;
        r.buf_ = ggml_backend_dev_buffer_from_host_ptr(dev, base, size + (size_t) (start - base), size);
        if (r.buf_ && ggml_backend_tensor_alloc(r.buf_, r.t_, start) != GGML_STATUS_SUCCESS) {
            fail(status::backend, "cannot place rows in a host buffer");
        }
    }
    if (!r.buf_) {
        r.buf_ = ggml_backend_alloc_ctx_tensors(r.ctx_, backend_);
        if (!r.buf_) fail(status::backend, "cannot allocate " + std::to_string(size) + " bytes on " + device_name_);
        ggml_backend_tensor_set(r.t_, data, 0, size);
        stats_.bytes_to_device += (int64_t) size;
    }
    // Ops that read these rows then run where they live (the scheduler's rule for weights).
    ggml_backend_buffer_set_usage(r.buf_, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    return r;
}

namespace {

// Nodes that compute something (views, reshapes and permutes only relabel memory).
bool computes(const ggml_tensor * t) {
    switch (t->op) {
        case GGML_OP_NONE: case GGML_OP_VIEW: case GGML_OP_RESHAPE: case GGML_OP_PERMUTE: case GGML_OP_TRANSPOSE:
            return false;
        default:
            return true;
    }
}

} // namespace

void graph_runner::run(graph & g) {
    ggml_backend_sched_reset(sched_);
    // Inputs go to the device; left to the scheduler they would sit on the CPU, and so would every
    // node of a graph without weights.
    for (const auto & in : g.inputs_) ggml_backend_sched_set_tensor_backend(sched_, in.t, backend_);
    if (!ggml_backend_sched_alloc_graph(sched_, g.gf_)) {
        fail(status::backend, "cannot allocate a compute graph on " + device_name_ + " (out of memory?)");
    }
    for (const auto & in : g.inputs_) {
        ggml_backend_tensor_set(in.t, in.data, 0, ggml_nbytes(in.t));
        stats_.bytes_to_device += (int64_t) ggml_nbytes(in.t);
    }
    if (ggml_backend_sched_graph_compute(sched_, g.gf_) != GGML_STATUS_SUCCESS) {
        fail(status::backend, "ggml graph computation failed on " + device_name_);
    }
    stats_.n_graphs += 1;
    stats_.n_splits += ggml_backend_sched_get_n_splits(sched_);
    for (int i = 0; i < ggml_graph_n_nodes(g.gf_); ++i) {
        ggml_tensor * node = ggml_graph_node(g.gf_, i);
        if (!computes(node)) continue;
        stats_.n_nodes += 1;
        if (ggml_backend_sched_get_tensor_backend(sched_, node) != backend_) stats_.n_nodes_off_device += 1;
    }
}

void graph_runner::read(const ggml_tensor * t, void * dst) {
    ggml_backend_tensor_get(t, dst, 0, ggml_nbytes(t));
    stats_.bytes_from_device += (int64_t) ggml_nbytes(t);
}

} // namespace omnisift
