/* LD_PRELOAD shim for tests: the Linux permission request for AMX tile data fails, so ggml's CPU
 * backend offers no AMX buffer type (ggml_amx_init). llama.cpp's own load then shows what it does on a
 * CPU without AMX, the reference of the AMX-safe load (tests/test_chat_api.py), also on a CPU with
 * AMX, where llama.cpp 0.3.36's AMX path crashes on the first decode. Every other syscall passes. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/syscall.h>

#define ARCH_REQ_XCOMP_PERM 0x1023

long syscall(long number, ...) {
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; ++i) a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_arch_prctl && a[0] == ARCH_REQ_XCOMP_PERM) {
        errno = EPERM;
        return -1;
    }
    long (*next)(long, ...) = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return next(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
