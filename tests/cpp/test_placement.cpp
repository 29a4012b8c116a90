// Where our graphs run: on a non-CPU device (OffloadTest0, tests/cpp/offload_device.h: non-host
// buffers under ggml's real scheduler), every computing node of the STVP, anchor, learned-head and
// audio-tower graphs must run on the device: none may fall back to the CPU, every graph is one split,
// and the device itself must have computed exactly those nodes. The results must equal the CPU
// engine's (same keep masks; scores and audio rows within float rounding).
#include "omnisift.h"
#include "check.h"
#include "head_file.h"
#include "offload_device.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct sequence {
    int64_t n = 0, d = 64;
    std::vector<float> embd;
    std::vector<int32_t> mod, pos;   // pos: [3][n]
};

// Text, four 2-s chunks (two 16-token grids and 8 audio tokens each, the last with one grid), then an
// image. interleaved = false puts all audio after all video and text (the layout llama.cpp's own mtmd
// uses), which the library stages differently (packed rows instead of one range).
sequence make_sequence(bool interleaved) {
    sequence s;
    struct row { int32_t m, t, h, w; };
    std::vector<row> rows = {{0, 0, 0, 0}};
    std::vector<row> audio;
    for (int c = 0; c < 4; ++c) {
        const int n_grids = c == 3 ? 1 : 2;
        for (int gi = 0; gi < n_grids; ++gi) {
            for (int k = 0; k < 16; ++k) rows.push_back({1, 1 + 50 * c + 25 * gi, k / 4, k % 4});
        }
        std::vector<row> & dst = interleaved ? rows : audio;
        for (int k = 0; k < 8; ++k) dst.push_back({2, 1 + 50 * c + 3 * k, 0, 0});
    }
    if (!interleaved) rows.insert(rows.end(), 300, row{0, 260, 260, 260});   // a prompt between the blocks
    rows.insert(rows.end(), audio.begin(), audio.end());
    for (int k = 0; k < 12; ++k) rows.push_back({3, 300, k / 4, k % 4});
    s.n = (int64_t) rows.size();
    s.mod.resize(s.n);
    s.pos.resize(3 * s.n);
    for (int64_t i = 0; i < s.n; ++i) {
        s.mod[i] = rows[i].m;
        s.pos[i] = rows[i].t;
        s.pos[s.n + i] = rows[i].h;
        s.pos[2 * s.n + i] = rows[i].w;
    }
    uint64_t x = 0x9e3779b97f4a7c15ull;
    s.embd.resize(s.n * s.d);
    for (float & v : s.embd) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        v = (float) ((double) (x >> 11) / 9007199254740992.0 - 0.5);
    }
    return s;
}

omnisift_engine * engine_on(const char * device) {
    omnisift_engine_params p = omnisift_engine_default_params();
    p.device = device;
    p.n_threads = 2;
    omnisift_engine * e = omnisift_engine_init(p);
    if (!e) std::fprintf(stderr, "engine on %s: %s\n", device ? device : "auto", omnisift_last_error());
    return e;
}

// Checks that what ran since the last reset ran on the device, node for node.
void check_placed(omnisift_engine * dev, int64_t device_nodes_before, const char * what) {
    const omnisift_engine_stats s = omnisift_engine_get_stats(dev);
    const int64_t ran_on_device = offload_test::count().nodes_computed - device_nodes_before;
    std::printf("%-22s graphs %3lld  nodes %5lld  off device %lld  splits %3lld  to device %8lld B  from device %7lld B  host copies %lld B\n",
                what, (long long) s.n_graphs, (long long) s.n_nodes, (long long) s.n_nodes_off_device,
                (long long) s.n_splits, (long long) s.bytes_to_device, (long long) s.bytes_from_device,
                (long long) s.bytes_host_copied);
    CHECK(s.n_graphs > 0);
    CHECK(s.n_nodes > 0);
    CHECK(s.n_nodes_off_device == 0);
    CHECK(s.n_splits == s.n_graphs);
    CHECK(ran_on_device == s.n_nodes);
}

// p_cpu: the same settings for the CPU engine (a learned head is loaded per engine).
void check_sift(omnisift_engine * dev, omnisift_engine * cpu, const sequence & s, const omnisift_sift_params & p,
                const omnisift_sift_params & p_cpu, const char * what) {
    std::vector<uint8_t> keep_dev(s.n), keep_cpu(s.n);
    std::vector<float> sc_dev(s.n), sc_cpu(s.n);
    omnisift_engine_reset_stats(dev);
    const int64_t before = offload_test::count().nodes_computed;
    CHECK(omnisift_sift(dev, s.embd.data(), s.n, s.d, s.mod.data(), s.pos.data(), &p, keep_dev.data(), sc_dev.data()) == 0);
    check_placed(dev, before, what);
    CHECK(omnisift_sift(cpu, s.embd.data(), s.n, s.d, s.mod.data(), s.pos.data(), &p_cpu, keep_cpu.data(), sc_cpu.data()) == 0);
    CHECK(keep_dev == keep_cpu);
    int64_t kept = 0;
    for (int64_t i = 0; i < s.n; ++i) {
        kept += keep_dev[i];
        if (std::isnan(sc_cpu[i])) CHECK(std::isnan(sc_dev[i]));
        else CHECK(std::fabs(sc_dev[i] - sc_cpu[i]) <= 1e-6f);
    }
    CHECK(kept == omnisift_sift_n_kept(s.mod.data(), s.pos.data(), s.n, &p));
    CHECK(kept < s.n);
}

} // namespace

int main() {
    const char * mmproj = std::getenv("OMNISIFT_TINY_MMPROJ");
    if (!mmproj) {
        std::fprintf(stderr, "OMNISIFT_TINY_MMPROJ is not set (the tiny model's mmproj): skipped\n");
        return 77;
    }
    offload_test::install();
    omnisift_engine * dev = engine_on(nullptr);   // the first GPU-type device: the test device
    omnisift_engine * cpu = engine_on("CPU");
    CHECK(dev && cpu);
    if (!dev || !cpu) return test_result("test_placement");
    CHECK(std::strcmp(omnisift_engine_device(dev), "OffloadTest0") == 0);

    omnisift_sift_params p = omnisift_sift_default_params();
    p.video_retention = 0.33;
    p.audio_retention = 0.5;
    p.image_retention = 0.5;
    for (bool interleaved : {true, false}) {
        const sequence s = make_sequence(interleaved);
        p.audio_selector = OMNISIFT_AUDIO_SELECTOR_ANCHOR;
        check_sift(dev, cpu, s, p, p, interleaved ? "stvp+anchor" : "stvp+anchor (packed)");
        p.audio_selector = OMNISIFT_AUDIO_SELECTOR_NONE;
        check_sift(dev, cpu, s, p, p, "stvp");

        const std::string head_path = write_head(interleaved ? "placement_a" : "placement_b", s.d);
        omnisift_head * head_dev = omnisift_head_load(dev, head_path.c_str());
        omnisift_head * head_cpu = omnisift_head_load(cpu, head_path.c_str());
        CHECK(head_dev && head_cpu);
        if (head_dev && head_cpu) {
            p.audio_selector = OMNISIFT_AUDIO_SELECTOR_VGAS;
            p.head = head_dev;
            omnisift_sift_params pc = p;
            pc.head = head_cpu;
            check_sift(dev, cpu, s, p, pc, "stvp+vgas head");
            p.head = nullptr;
        }
        omnisift_head_free(head_dev);
        omnisift_head_free(head_cpu);
        std::remove(head_path.c_str());
    }

    // Negative control: a device that cannot run SUM_ROWS (STVP's temporal step) makes the scheduler
    // run those nodes on the CPU, and the counts above must show it.
    {
        const sequence s = make_sequence(true);
        p.audio_selector = OMNISIFT_AUDIO_SELECTOR_NONE;
        offload_test::rejected_op() = GGML_OP_SUM_ROWS;
        omnisift_engine_reset_stats(dev);
        const int64_t before = offload_test::count().nodes_computed;
        std::vector<uint8_t> keep_dev(s.n), keep_cpu(s.n);
        CHECK(omnisift_sift(dev, s.embd.data(), s.n, s.d, s.mod.data(), s.pos.data(), &p, keep_dev.data(), nullptr) == 0);
        CHECK(omnisift_sift(cpu, s.embd.data(), s.n, s.d, s.mod.data(), s.pos.data(), &p, keep_cpu.data(), nullptr) == 0);
        const omnisift_engine_stats st = omnisift_engine_get_stats(dev);
        CHECK(st.n_nodes_off_device > 0);
        CHECK(st.n_splits > st.n_graphs);
        CHECK(offload_test::count().nodes_computed - before == st.n_nodes - st.n_nodes_off_device);
        CHECK(keep_dev == keep_cpu);
        offload_test::rejected_op() = GGML_OP_COUNT;
    }

    // The audio tower: two full 2-s windows and a partial one.
    omnisift_audio_tower * tower_dev = omnisift_audio_tower_init(dev, mmproj);
    omnisift_audio_tower * tower_cpu = omnisift_audio_tower_init(cpu, mmproj);
    CHECK(tower_dev && tower_cpu);
    if (tower_dev && tower_cpu) {
        const int64_t n_frames = 450, n_mel = omnisift_audio_tower_n_mel(tower_dev);
        const int64_t n_tok = omnisift_audio_n_tokens(n_frames), width = omnisift_audio_tower_n_embd(tower_dev);
        std::vector<float> mel(n_frames * n_mel);
        for (size_t i = 0; i < mel.size(); ++i) mel[i] = (float) std::sin(0.013 * (double) i) * 0.8f;
        std::vector<float> out_dev(n_tok * width), out_cpu(n_tok * width);
        omnisift_engine_reset_stats(dev);
        const int64_t before = offload_test::count().nodes_computed;
        CHECK(omnisift_audio_tower_encode(tower_dev, mel.data(), n_frames, out_dev.data(), n_tok) == 0);
        check_placed(dev, before, "audio tower");
        CHECK(omnisift_audio_tower_encode(tower_cpu, mel.data(), n_frames, out_cpu.data(), n_tok) == 0);
        float worst = 0.0f;
        for (size_t i = 0; i < out_dev.size(); ++i) worst = std::max(worst, std::fabs(out_dev[i] - out_cpu[i]));
        CHECK(worst <= 1e-5f);
    }
    omnisift_audio_tower_free(tower_dev);
    omnisift_audio_tower_free(tower_cpu);

    omnisift_engine_free(dev);
    omnisift_engine_free(cpu);
    offload_test::uninstall();
    return test_result("test_placement");
}
