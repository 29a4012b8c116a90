// C API: omnisift_mmproj_write_vision_only / _audio_only, an mmproj with one of its towers for libmtmd.
#include "omnisift.h"
#include "error.h"

#include "ggml.h"
#include "gguf.h"

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

using omnisift::fail;
using omnisift::require;
using omnisift::status;

struct gguf_deleter { void operator()(gguf_context * g) const { gguf_free(g); } };
struct ggml_deleter { void operator()(ggml_context * c) const { ggml_free(c); } };
struct file_closer { void operator()(FILE * f) const { std::fclose(f); } };

bool is_audio_tensor(const char * name) {
    return std::strncmp(name, "a.", 2) == 0 || std::strncmp(name, "mm.a.", 5) == 0;
}

// keep_audio: the audio tower is kept and the vision tower dropped (else the reverse).
void write_one_tower(const std::string & src, const std::string & dst, bool keep_audio, bool & created) {
    ggml_context * meta_raw = nullptr;
    gguf_init_params ip = {/*.no_alloc =*/ true, /*.ctx =*/ &meta_raw};
    std::unique_ptr<gguf_context, gguf_deleter> in(gguf_init_from_file(src.c_str(), ip));
    if (!in) fail(status::file, src + ": not a readable GGUF file");
    std::unique_ptr<ggml_context, ggml_deleter> meta(meta_raw);
    const char * kept_key = keep_audio ? "clip.has_audio_encoder" : "clip.has_vision_encoder";
    const int64_t kv = gguf_find_key(in.get(), kept_key);
    if (kv < 0 || gguf_get_kv_type(in.get(), kv) != GGUF_TYPE_BOOL || !gguf_get_val_bool(in.get(), kv)) {
        fail(status::file, src + (keep_audio ? ": not an mmproj with an audio tower" : ": not an mmproj with a vision tower"));
    }

    std::unique_ptr<gguf_context, gguf_deleter> out(gguf_init_empty());
    gguf_set_kv(out.get(), in.get());
    gguf_set_val_bool(out.get(), keep_audio ? "clip.has_vision_encoder" : "clip.has_audio_encoder", false);
    std::vector<int64_t> kept;
    for (int64_t i = 0; i < gguf_get_n_tensors(in.get()); ++i) {
        const char * name = gguf_get_tensor_name(in.get(), i);
        if (is_audio_tensor(name) != keep_audio) continue;
        gguf_add_tensor(out.get(), ggml_get_tensor(meta.get(), name));
        kept.push_back(i);
    }

    std::unique_ptr<FILE, file_closer> fin(std::fopen(src.c_str(), "rb"));
    if (!fin) fail(status::file, src + ": cannot open");
    std::unique_ptr<FILE, file_closer> fout(std::fopen(dst.c_str(), "wb"));
    if (!fout) fail(status::file, dst + ": cannot create");
    created = true;
    if (!gguf_write_to_file_ptr(out.get(), fout.get(), /*only_meta =*/ true)) fail(status::file, dst + ": cannot write");
    // The data follow in the order the tensors were added, each padded to the alignment, at the
    // offsets gguf_add_tensor gave them.
    const size_t align = gguf_get_alignment(out.get());
    std::vector<char> buf(1 << 20);
    size_t written = 0;
    for (size_t k = 0; k < kept.size(); ++k) {
        const int64_t i = kept[k];
        require(gguf_get_tensor_offset(out.get(), (int64_t) k) == written, "internal: tensor offsets disagree");
        const size_t size = gguf_get_tensor_size(in.get(), i);
        if (std::fseek(fin.get(), (long) (gguf_get_data_offset(in.get()) + gguf_get_tensor_offset(in.get(), i)), SEEK_SET) != 0) {
            fail(status::file, src + ": cannot seek to tensor " + gguf_get_tensor_name(in.get(), i));
        }
        for (size_t left = size; left > 0;) {
            const size_t n = std::min(left, buf.size());
            if (std::fread(buf.data(), 1, n, fin.get()) != n) {
                fail(status::file, src + ": truncated at tensor " + gguf_get_tensor_name(in.get(), i));
            }
            if (std::fwrite(buf.data(), 1, n, fout.get()) != n) fail(status::file, dst + ": cannot write");
            left -= n;
        }
        const size_t padded = GGML_PAD(size, align);
        std::fill(buf.begin(), buf.begin() + (padded - size), 0);
        if (std::fwrite(buf.data(), 1, padded - size, fout.get()) != padded - size) fail(status::file, dst + ": cannot write");
        written += padded;
    }
    if (std::fflush(fout.get()) != 0) fail(status::file, dst + ": cannot write");
}

} // namespace

extern "C" {

static int32_t write_checked(const char * src, const char * dst, bool keep_audio) {
    bool created = false;
    const int32_t st = omnisift::api_call([&] {
        require(src != nullptr && *src && dst != nullptr && *dst, "src and dst must be file paths");
        require(std::strcmp(src, dst) != 0, "src and dst must be different files");
        write_one_tower(src, dst, keep_audio, created);
    });
    if (st != OMNISIFT_OK && created) std::remove(dst);
    return st;
}

int32_t omnisift_mmproj_write_vision_only(const char * src, const char * dst) { return write_checked(src, dst, false); }

int32_t omnisift_mmproj_write_audio_only(const char * src, const char * dst) { return write_checked(src, dst, true); }

} // extern "C"
