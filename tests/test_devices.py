"""Devices beyond the CPU from Python: registering RPC servers (argument checks, refusals that name
the problem instead of ggml aborting the process) and the engine's placement / transfer counters."""

from __future__ import annotations

import pathlib
import socket

import llama_cpp
import numpy as np
import pytest

import pyomnisift
from pyomnisift import omnisift_cpp as C

from test_sift import Seq

RPC_BUILD = any(pathlib.Path(llama_cpp.__file__).parent.joinpath("lib").glob("libggml-rpc*"))


@pytest.mark.parametrize("bad", ["localhost", ":50052", "host:port", "host:0", "host:70000", ""])
def test_endpoint_must_be_host_port(bad):
    with pytest.raises(ValueError, match="host:port|no RPC server"):
        pyomnisift.add_rpc_servers(bad)


def test_endpoint_items_must_be_strings():
    with pytest.raises(TypeError, match="host:port"):
        pyomnisift.add_rpc_servers([("127.0.0.1", 50052)])


def test_unreachable_server_is_refused_before_ggml_connects():
    with socket.socket() as s:     # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(pyomnisift.OmniSiftError, match=f"127.0.0.1:{port} is not reachable"):
        pyomnisift.add_rpc_servers(f"127.0.0.1:{port}")


@pytest.mark.skipif(RPC_BUILD, reason="this llama-cpp-python has ggml's RPC backend (the device leg tests it)")
def test_a_build_without_rpc_says_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(pyomnisift.OmniSiftError, match="without ggml's RPC backend.*GGML_RPC=on"):
            pyomnisift.add_rpc_servers(f"127.0.0.1:{s.getsockname()[1]}")


def test_c_api_refuses_an_empty_endpoint():
    assert C.omnisift_add_rpc_server(b"") == C.OMNISIFT_ERR_ARGUMENT
    assert b"endpoint" in C.omnisift_last_error()


def _two_chunks(d: int = 16) -> tuple:
    rng = np.random.default_rng(5)
    s = Seq(d)
    for c in range(2):
        s.grid(rng, 1, 50 * c, 4, 4)
        s.grid(rng, 1, 50 * c + 25, 4, 4)
        s.add(2, range(50 * c, 50 * c + 10), range(50 * c, 50 * c + 10), range(50 * c, 50 * c + 10),
              rng.standard_normal((10, d)))
    return s.arrays()


def test_engine_counts_graphs_and_reads_rows_in_place_on_the_cpu():
    with pyomnisift.Engine(n_threads=1, device="CPU") as engine:
        emb, mod, pos = _two_chunks()
        engine.reset_stats()
        pyomnisift.sift(emb, mod, pos, video_retention=0.5, audio_retention=0.5, engine=engine)
        st = engine.stats()
        assert st["n_graphs"] == 2 and st["n_splits"] == 2      # one span: visual, then audio
        assert st["n_nodes"] > 0 and st["n_nodes_off_device"] == 0
        assert st["bytes_host_copied"] == 0                      # dense rows: used where they are
        assert 0 < st["bytes_to_device"] < emb.nbytes            # indices and masks only
        assert st["bytes_from_device"] > 0
        # The same rows laid out with a long text in between are packed (each needed row once).
        gap = np.zeros((200, emb.shape[1]), np.float32)
        n_video = int((mod == 1).sum())
        order = np.r_[np.flatnonzero(mod == 1), np.flatnonzero(mod == 2)]
        emb2 = np.concatenate([emb[order[:n_video]], gap, emb[order[n_video:]]])
        mod2 = np.r_[mod[order[:n_video]], np.zeros(200, np.int32), mod[order[n_video:]]]
        pos2 = np.concatenate([pos[:, order[:n_video]], np.full((3, 200), 500, np.int32), pos[:, order[n_video:]]], axis=1)
        engine.reset_stats()
        keep2 = pyomnisift.sift(emb2, mod2, pos2, video_retention=0.5, audio_retention=0.5, engine=engine)
        assert engine.stats()["bytes_host_copied"] == (mod2 != 0).sum() * emb.shape[1] * 4
        keep = pyomnisift.sift(emb, mod, pos, video_retention=0.5, audio_retention=0.5, engine=engine)
        np.testing.assert_array_equal(keep2[mod2 != 0], keep[order])   # the layout changes nothing
