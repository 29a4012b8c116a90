// A minimal CHECK for the C++ tests: reports the failed condition and counts it, so one run shows
// every failure; main() returns test_result().
#pragma once

#include <cstdio>

inline int & test_failures() {
    static int n = 0;
    return n;
}

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            std::fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);  \
            ++test_failures();                                                              \
        }                                                                                   \
    } while (0)

inline int test_result(const char * name) {
    if (test_failures() == 0) std::printf("%s: all checks passed\n", name);
    return test_failures() == 0 ? 0 : 1;
}
