// Internal error handling: C++ code throws omnisift::error (ggml_ext/status.h); every C API entry
// point runs its body through api_call(), which turns exceptions into a status code and the
// thread's last-error text, so no exception (and no abort) crosses into Python.
#pragma once

#include "omnisift.h"
#include "status.h"

#include <new>
#include <string>

namespace omnisift {

void set_last_error(const std::string & msg);
void clear_last_error();

// The C API's code for an internal status.
inline omnisift_status to_c(status s) {
    switch (s) {
        case status::argument: return OMNISIFT_ERR_ARGUMENT;
        case status::file:     return OMNISIFT_ERR_FILE;
        case status::backend:  return OMNISIFT_ERR_BACKEND;
        case status::internal: return OMNISIFT_ERR_INTERNAL;
    }
    return OMNISIFT_ERR_INTERNAL;
}

// Runs fn, mapping exceptions to a status code (and the message to omnisift_last_error()).
template <typename Fn>
int32_t api_call(Fn && fn) noexcept {
    clear_last_error();
    try {
        fn();
        return OMNISIFT_OK;
    } catch (const error & e) {
        set_last_error(e.what());
        return to_c(e.code());
    } catch (const std::bad_alloc &) {
        set_last_error("out of host memory");
        return OMNISIFT_ERR_BACKEND;
    } catch (const std::exception & e) {
        set_last_error(std::string("internal error: ") + e.what());
        return OMNISIFT_ERR_INTERNAL;
    } catch (...) {
        set_last_error("internal error: unknown exception");
        return OMNISIFT_ERR_INTERNAL;
    }
}

// Same, for constructors returning an owned pointer (NULL on failure).
template <typename T, typename Fn>
T * api_new(Fn && fn) noexcept {
    T * out = nullptr;
    api_call([&] { out = fn(); });
    return out;
}

} // namespace omnisift
