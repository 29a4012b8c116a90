// The engine and error conventions of the C API: constructors fail with NULL plus a message, never
// an abort, and the message names the problem.
#include "omnisift.h"
#include "check.h"

#include <cstdio>
#include <cstring>


int main() {
    CHECK(std::strcmp(omnisift_version(), "") != 0);
    CHECK(std::strcmp(omnisift_last_error(), "") == 0);

    omnisift_engine_params p = omnisift_engine_default_params();
    p.device = "NoSuchDevice";
    CHECK(omnisift_engine_init(p) == nullptr);
    CHECK(std::strstr(omnisift_last_error(), "NoSuchDevice") != nullptr);
    CHECK(std::strstr(omnisift_last_error(), "CPU") != nullptr); // lists what exists

    p = omnisift_engine_default_params();
    p.n_threads = 1;
    omnisift_engine * eng = omnisift_engine_init(p);
    CHECK(eng != nullptr);
    CHECK(std::strcmp(omnisift_last_error(), "") == 0);
    if (eng) {
        CHECK(std::strlen(omnisift_engine_device(eng)) > 0);
        omnisift_engine_free(eng);
    }
    omnisift_engine_free(nullptr); // like free(): a no-op
    CHECK(std::strcmp(omnisift_engine_device(nullptr), "") == 0);

    return test_result("test_engine");
}
