// How the graphs in ggml_ext/ report failure: omnisift::error with a status of their own, so that
// ggml_ext/ knows nothing of the C API above it. cpp/error.h maps the status to omnisift.h's codes
// at the API boundary.
#pragma once

#include <stdexcept>
#include <string>

namespace omnisift {

enum class status {
    argument, // an argument is invalid (shape, range, NaN, NULL)
    file,     // a file is missing, unreadable or not what was expected
    backend,  // ggml could not allocate or compute
    internal, // a bug
};

class error : public std::runtime_error {
public:
    error(status s, const std::string & msg) : std::runtime_error(msg), status_(s) {}
    status code() const { return status_; }
private:
    status status_;
};

[[noreturn]] inline void fail(status s, const std::string & msg) { throw error(s, msg); }

inline void require(bool ok, const std::string & msg) {
    if (!ok) fail(status::argument, msg);
}

} // namespace omnisift
