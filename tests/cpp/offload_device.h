// A test-only ggml device, "OffloadTest0", registered through ggml's backend API: a GPU-type device
// whose buffers are NOT host memory as far as the scheduler knows (is_host = false, its own buffer
// type, which the CPU backend does not accept), computing with the CPU backend's kernels on them.
// Under ggml's real scheduler it is placed, copied to and from exactly as a CUDA or Metal device
// would be, so a graph node that ends up on the CPU instead is visible (tests/cpp/test_placement.cpp).
// It counts the nodes it computes and the bytes written to / read from its buffers. Never part of the
// library: it needs ggml's internal backend interface (ggml-backend-impl.h of the pinned sdist).
#pragma once

#include "ggml-backend-impl.h"
#include "ggml-backend.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace offload_test {

struct counters {
    int64_t nodes_computed = 0;   // computing nodes (not views) in the graphs this device ran
    int64_t bytes_in = 0;         // written into its buffers from the host
    int64_t bytes_out = 0;        // read from its buffers into the host
};

inline counters & count() {
    static counters c;
    return c;
}

// An op the device pretends not to support (GGML_OP_COUNT: none), so that the scheduler must run it
// on the CPU: the test's negative control that such a fallback is seen.
inline ggml_op & rejected_op() {
    static ggml_op op = GGML_OP_COUNT;
    return op;
}

inline ggml_backend_t & cpu_backend() {
    static ggml_backend_t cpu = nullptr;
    return cpu;
}

inline bool computes(const ggml_tensor * t) {
    return t->op != GGML_OP_NONE && t->op != GGML_OP_VIEW && t->op != GGML_OP_RESHAPE &&
           t->op != GGML_OP_PERMUTE && t->op != GGML_OP_TRANSPOSE;
}

// --- buffer: host memory behind the scheduler's back (the CPU kernels compute on it)
inline void buf_free(ggml_backend_buffer_t b) { std::free(b->context); }
inline void * buf_base(ggml_backend_buffer_t b) { return b->context; }
inline void buf_memset(ggml_backend_buffer_t, ggml_tensor * t, uint8_t v, size_t off, size_t n) {
    std::memset((char *) t->data + off, v, n);
}
inline void buf_set(ggml_backend_buffer_t, ggml_tensor * t, const void * src, size_t off, size_t n) {
    std::memcpy((char *) t->data + off, src, n);
    count().bytes_in += (int64_t) n;
}
inline void buf_get(ggml_backend_buffer_t, const ggml_tensor * t, void * dst, size_t off, size_t n) {
    std::memcpy(dst, (const char *) t->data + off, n);
    count().bytes_out += (int64_t) n;
}
inline bool buf_cpy(ggml_backend_buffer_t, const ggml_tensor * src, ggml_tensor * dst) {
    if (!src->buffer || src->buffer->buft != dst->buffer->buft) return false;
    std::memcpy(dst->data, src->data, ggml_nbytes(src));
    return true;
}
inline void buf_clear(ggml_backend_buffer_t b, uint8_t v) { std::memset(b->context, v, b->size); }

inline ggml_backend_buffer_type_t buffer_type();

inline ggml_backend_buffer_t buft_alloc(ggml_backend_buffer_type_t buft, size_t size) {
    const size_t padded = (size + 63) / 64 * 64 + 64;
    void * mem = std::aligned_alloc(64, padded);
    if (!mem) return nullptr;
    ggml_backend_buffer_i iface = {buf_free, buf_base, nullptr, buf_memset, buf_set, buf_get, nullptr, nullptr,
                                   buf_cpy, buf_clear, nullptr};
    return ggml_backend_buffer_init(buft, iface, mem, size);
}
inline const char * buft_name(ggml_backend_buffer_type_t) { return "OffloadTest"; }
inline size_t buft_align(ggml_backend_buffer_type_t) { return 64; }
inline bool buft_is_host(ggml_backend_buffer_type_t) { return false; }

// --- backend: runs a graph with the CPU backend
inline const char * be_name(ggml_backend_t) { return "OffloadTest0"; }
inline void be_free(ggml_backend_t b) { delete b; }
inline ggml_status be_compute(ggml_backend_t, ggml_cgraph * gf) {
    for (int i = 0; i < ggml_graph_n_nodes(gf); ++i) count().nodes_computed += computes(ggml_graph_node(gf, i));
    return ggml_backend_graph_compute(cpu_backend(), gf);
}

// --- device and registry
inline ggml_backend_dev_t device();
inline ggml_backend_reg_t reg();

inline const char * dev_name(ggml_backend_dev_t) { return "OffloadTest0"; }
inline const char * dev_desc(ggml_backend_dev_t) { return "test device with non-host buffers (CPU kernels)"; }
inline void dev_memory(ggml_backend_dev_t, size_t * free, size_t * total) { *free = *total = (size_t) 1 << 32; }
inline enum ggml_backend_dev_type dev_type(ggml_backend_dev_t) { return GGML_BACKEND_DEVICE_TYPE_GPU; }
inline void dev_props(ggml_backend_dev_t d, ggml_backend_dev_props * p) {
    p->name = dev_name(d);
    p->description = dev_desc(d);
    dev_memory(d, &p->memory_free, &p->memory_total);
    p->type = GGML_BACKEND_DEVICE_TYPE_GPU;
    p->device_id = nullptr;
    p->caps = {false, false, false, false, false};
}
inline ggml_backend_t dev_init(ggml_backend_dev_t d, const char *) {
    static ggml_guid guid = {0x6f, 0x6d, 0x6e, 0x69, 0x73, 0x69, 0x66, 0x74, 0x2d, 0x74, 0x65, 0x73, 0x74, 0x2d, 0x30, 0x31};
    ggml_backend_i iface = {};
    iface.get_name = be_name;
    iface.free = be_free;
    iface.graph_compute = be_compute;
    return new ggml_backend{&guid, iface, d, nullptr};
}
inline ggml_backend_buffer_type_t dev_buft(ggml_backend_dev_t) { return buffer_type(); }
inline bool dev_supports_op(ggml_backend_dev_t, const ggml_tensor * op) {
    return op->op != rejected_op() && ggml_backend_dev_supports_op(ggml_backend_get_device(cpu_backend()), op);
}
inline bool dev_supports_buft(ggml_backend_dev_t, ggml_backend_buffer_type_t buft) { return buft == buffer_type(); }
inline bool dev_offload_op(ggml_backend_dev_t, const ggml_tensor *) { return false; }

inline ggml_backend_buffer_type_t buffer_type() {
    static ggml_backend_buffer_type buft = {
        {buft_name, buft_alloc, buft_align, nullptr, nullptr, buft_is_host}, device(), nullptr};
    return &buft;
}

inline ggml_backend_dev_t device() {
    static ggml_backend_device dev = {
        {dev_name, dev_desc, dev_memory, dev_type, dev_props, dev_init, dev_buft, nullptr, nullptr,
         dev_supports_op, dev_supports_buft, dev_offload_op, nullptr, nullptr, nullptr},
        reg(), nullptr};
    return &dev;
}

inline const char * reg_name(ggml_backend_reg_t) { return "OffloadTest"; }
inline size_t reg_count(ggml_backend_reg_t) { return 1; }
inline ggml_backend_dev_t reg_get(ggml_backend_reg_t, size_t) { return device(); }

inline ggml_backend_reg_t reg() {
    static ggml_backend_reg r = {GGML_BACKEND_API_VERSION, {reg_name, reg_count, reg_get, nullptr}, nullptr};
    return &r;
}

// Registers the device (once per process); the CPU backend it computes with is created here.
inline void install() {
    if (cpu_backend()) return;
    cpu_backend() = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr);
    ggml_backend_register(reg());
}

inline void uninstall() {
    if (cpu_backend()) ggml_backend_free(cpu_backend());
    cpu_backend() = nullptr;
}

} // namespace offload_test
