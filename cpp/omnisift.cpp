// Library-wide entry points: versions and the per-thread last error.
#include "omnisift.h"
#include "error.h"

#include <string>

namespace {
thread_local std::string g_last_error;
}

namespace omnisift {
void set_last_error(const std::string & msg) { g_last_error = msg; }
void clear_last_error() { g_last_error.clear(); }
} // namespace omnisift

extern "C" {

const char * omnisift_version(void) { return OMNISIFT_VERSION; }

const char * omnisift_llama_cpp_python_version(void) { return OMNISIFT_LLAMA_CPP_PYTHON_VERSION; }

const char * omnisift_last_error(void) { return g_last_error.c_str(); }

} // extern "C"
