// C API: omnisift_add_rpc_server. Done here, not from Python through llama_cpp's ctypes handle on
// libggml: llama-cpp-python loads libggml.so by path while libllama loads libggml.so.0 (a copy of the
// same file, not a link), so that handle is a second ggml with a registry llama.cpp never reads.
// libomnisift links the libggml.so.0 that libllama uses.
#include "omnisift.h"
#include "error.h"

#include "ggml-backend.h"

#include <string>

extern "C" {

int32_t omnisift_add_rpc_server(const char * endpoint) {
    int32_t n = 0;
    const int32_t status = omnisift::api_call([&] {
        omnisift::require(endpoint && *endpoint, "endpoint is NULL or empty");
        ggml_backend_reg_t rpc = ggml_backend_reg_by_name("RPC");
        if (!rpc) {
            omnisift::fail(omnisift::status::backend, "llama-cpp-python was built without ggml's RPC backend "
                                                 "(rebuild it with CMAKE_ARGS=-DGGML_RPC=on)");
        }
        using add_server_t = ggml_backend_reg_t (*)(const char *);
        auto add_server = (add_server_t) ggml_backend_reg_get_proc_address(rpc, "ggml_backend_rpc_add_server");
        if (!add_server) omnisift::fail(omnisift::status::backend, "ggml's RPC backend has no ggml_backend_rpc_add_server");
        ggml_backend_reg_t reg = add_server(endpoint);
        if (!reg) omnisift::fail(omnisift::status::backend, std::string("cannot connect to the RPC server ") + endpoint);
        ggml_backend_register(reg);   // a no-op for a registry already registered
        n = (int32_t) ggml_backend_reg_dev_count(reg);
    });
    return status == OMNISIFT_OK ? n : status;
}

} // extern "C"
