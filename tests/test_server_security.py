"""The server as an attacker meets it (issue 17, items 1-3), through real HTTP on 127.0.0.1: every
attack of the issue is a regression test. A file outside the allowed folder never contributes
tokens (a 3-s secret and a 1-s decoy are told apart by their audio tokens), FFmpeg opens no playlist
or stream description and binds no socket, oversized media is refused from its header, the API key
is checked before the body is read, slow clients are cut off, and after each bad request the next
good one answers exactly as before (same text, same token counts)."""

from __future__ import annotations

import base64
import fractions
import io
import os
import socket
import struct
import time
import urllib.parse
import zlib

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from test_server import Server  # noqa: E402
from tool_clips import write_clip, write_wav  # noqa: E402

LINUX = os.path.exists("/proc/self/net/udp")


# --- a server with the connection limits of `pyomnisift serve`

@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """root/secret.wav (3 s, outside), root/media/ (allowed): clip.mp4, decoy files (1 s)."""
    root = tmp_path_factory.mktemp("sec")
    media = root / "media"
    media.mkdir()
    write_clip(media / "clip.mp4", seconds=2.0)
    write_wav(root / "secret.wav", seconds=3.0)
    (root / "secret").mkdir()
    write_wav(root / "secret" / "clip", seconds=3.0)
    write_wav(media / "..%2Fsecret.wav", seconds=1.0)     # decoded a second time, it would be ../secret.wav
    write_wav(media / "my%20song.wav", seconds=1.0)
    os.symlink(root / "secret.wav", media / "link.wav")
    return root, media


@pytest.fixture(scope="module")
def model(tiny_model, layout):
    from pyomnisift.server import ModelSettings, ServerSettings
    from pyomnisift.server.model import OmniModel

    llm, mmproj = tiny_model
    m = OmniModel(ModelSettings(model=str(llm), mmproj=str(mmproj), n_ctx=4096, n_threads=2),
                  ServerSettings(allowed_media_dir=str(layout[1])))
    yield m
    m.close()


def _settings(**kw):
    from pyomnisift.server import ServerSettings

    base = dict(max_body_bytes=8_000_000, body_timeout=3.0, header_timeout=3.0, interrupt_requests=False)
    return ServerSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def server(model, layout):
    from pyomnisift.server import create_app

    with Server(create_app(server_settings=_settings(allowed_media_dir=str(layout[1])), model=model)) as s:
        yield s


@pytest.fixture(scope="module")
def closed_server(model):
    """The same model behind a server without --allowed_media_dir."""
    from pyomnisift.server import create_app

    with Server(create_app(server_settings=_settings(), model=model)) as s:
        yield s


def data_uri(path, mime):
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def post(server, body, **kw):
    return httpx.post(server.base + "/v1/chat/completions", json=body, timeout=120, **kw)


def audio_body(data, fmt="wav"):
    return {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": fmt}},
                                                      {"type": "text", "text": "?"}]}],
            "max_tokens": 2, "temperature": 0}


def video_body(url):
    return {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                      {"type": "text", "text": "What happens?"}]}],
            "max_tokens": 8, "temperature": 0}


def error_of(r, status=400):
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    return err


def audio_tokens(r) -> int:
    assert r.status_code == 200, r.text
    return r.json()["usage"]["omnisift"]["audio"]["tokens_in"]


@pytest.fixture(scope="module")
def good(server, layout):
    """The reference answer to a clip request; `check()` asserts the server still gives exactly it."""
    body = video_body(data_uri(layout[1] / "clip.mp4", "video/mp4"))

    def answer():
        r = post(server, body)
        assert r.status_code == 200, r.text
        out = r.json()
        return out["choices"][0]["message"]["content"], out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"]
    first = answer()

    class Good:
        @staticmethod
        def check():
            assert answer() == first
    return Good


# --- item 1: one media-source policy

def test_secret_and_decoy_are_told_apart(server, layout):
    """The discriminator the tests below rely on: 3 s of audio is 75 tokens, the 1-s decoy 25."""
    root, media = layout
    assert audio_tokens(post(server, audio_body(data_uri(root / "secret.wav", "audio/wav")))) == 75
    assert audio_tokens(post(server, audio_body(data_uri(media / "my%20song.wav", "audio/wav")))) == 25


def test_base64_looking_relative_path_is_never_opened(server, closed_server, layout, good, monkeypatch):
    """`secret//clip` is valid base64 (12 characters): it was opened relative to the working
    directory, with or without --allowed_media_dir. It is base64, always, and the answer is the
    same whether such a file exists or not."""
    root, _ = layout
    monkeypatch.chdir(root)
    assert os.path.isfile("secret//clip")
    answers = []
    for srv in (server, closed_server):
        err = error_of(post(srv, audio_body("secret//clip")))
        assert "decoded as audio" in err["message"] or "not a media file" in err["message"], err
        answers.append(err["message"])
    monkeypatch.chdir(root / "media")          # no secret/clip here
    assert error_of(post(server, audio_body("secret//clip")))["message"] == answers[0]
    good.check()


def test_outside_missing_and_unreadable_get_one_message(server, layout, good):
    root, media = layout
    outside = str(root / "secret.wav")
    refs = [outside, "../secret.wav", "link.wav", "file://" + outside, "file://" + str(media) + "/%2e%2e/secret.wav",
            "file://localhost" + outside, str(media / "missing.wav"), "missing.wav", str(media), "/etc/passwd",
            "/dev/zero", "nul\x00l.wav"]
    messages = set()
    for ref in refs:
        for body in (audio_body(ref if os.path.isabs(ref) or ref.startswith("file:") else "file://" + str(media / ref)),
                     video_body(ref)):
            err = error_of(post(server, body))
            assert str(root) not in err["message"] and "/etc" not in err["message"], err
            messages.add(err["message"].split(": ", 1)[1])
    assert messages == {"no readable media file of that name in the server's allowed media folder "
                        "(--allowed_media_dir)"}, messages
    good.check()


def test_no_local_files_without_an_allowed_folder(closed_server, layout):
    root, media = layout
    for body in (video_body(str(media / "clip.mp4")), video_body("file://" + str(media / "clip.mp4")),
                 video_body("clip.mp4"), audio_body(str(root / "secret.wav"))):
        err = error_of(post(closed_server, body))
        assert "local files are not accepted" in err["message"] and str(root) not in err["message"], err


def test_percent_signs_in_names_are_decoded_once(server, layout, good):
    """A file named `..%2Fsecret.wav` inside the folder was decoded a second time by the library
    and read ../secret.wav; `my%20song.wav` given as a path was not found."""
    root, media = layout
    decoy = str(media / "..%2Fsecret.wav")
    assert audio_tokens(post(server, audio_body(decoy))) == 25                     # plain path: not decoded
    assert audio_tokens(post(server, audio_body("file://" + urllib.parse.quote(decoy)))) == 25   # URL: once
    assert audio_tokens(post(server, audio_body(str(media / "my%20song.wav")))) == 25
    assert audio_tokens(post(server, audio_body("file://" + str(media) + "/my%2520song.wav"))) == 25
    error_of(post(server, audio_body("file://" + str(media) + "/my%20song.wav")))   # "my song.wav": none
    good.check()


def test_media_errors_name_files_as_the_request_did(server, layout):
    """Errors of files inside the folder name them relative to it: no absolute server paths."""
    root, media = layout
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "clip.mp4"}}]}]}
    for body, words in ((image, "clip.mp4: is not an image"),
                        (video_body(str(media / "my%20song.wav")), "my%20song.wav: has no video stream")):
        err = error_of(post(server, body))
        assert words in err["message"] and str(root) not in err["message"], err


def test_library_keeps_paths_and_decodes_urls_once(tmp_path, monkeypatch):
    """The Python API: any path of the caller's (relative ones too), a file:// URL decoded once."""
    from pyomnisift.media.source import LIBRARY, MediaPolicy, MediaSourceError, resolve_audio, resolve_url

    write_wav(tmp_path / "my%20song.wav", seconds=0.5)
    monkeypatch.chdir(tmp_path)
    assert resolve_url("my%20song.wav", "audio").path == str(tmp_path / "my%20song.wav")
    assert resolve_url("file://" + str(tmp_path) + "/my%2520song.wav", "audio", LIBRARY).path == \
        str(tmp_path / "my%20song.wav")
    with pytest.raises(FileNotFoundError, match="my song.wav"):
        resolve_url("file://" + str(tmp_path) + "/my%20song.wav", "audio")
    with pytest.raises(MediaSourceError, match="base64"):
        resolve_audio("my%20song.wav", "wav", "audio")           # relative: base64, never a file
    assert resolve_audio(str(tmp_path / "my%20song.wav"), "wav", "audio").path.endswith("my%20song.wav")
    with pytest.raises(MediaSourceError, match="allowed media folder"):
        resolve_url(str(tmp_path / "my%20song.wav"), "x", MediaPolicy.server(str(tmp_path / "sub")))


# --- item 2: FFmpeg limited to media

FFCONCAT = b"ffconcat version 1.0\nfile secret.wav\n"
SDP = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=attack\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
       b"m=audio 47000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
HLS = b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nsecret.wav\n#EXT-X-ENDLIST\n"


def _bound_sockets() -> set:
    """Inodes of this process's UDP sockets and listening TCP sockets."""
    table = set()
    for name in ("udp", "udp6", "tcp", "tcp6"):
        with open(f"/proc/self/net/{name}") as f:
            next(f)
            for line in f:
                cols = line.split()
                if name.startswith("udp") or cols[3] == "0A":
                    table.add(cols[9])
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            mine.add(link[8:-1])
    return mine & table


@pytest.mark.skipif(not LINUX, reason="reads /proc/self/net")
@pytest.mark.parametrize("payload,words", [(FFCONCAT, "not a media file"), (SDP, "not a media file"),
                                           (HLS, "")], ids=["ffconcat", "sdp", "hls"])
def test_playlists_and_stream_descriptions_are_refused(server, layout, good, monkeypatch, payload, words):
    """FFmpeg's concat demuxer read the playlist's file; its sdp demuxer bound UDP ports and held the
    model 20 s. (Its hls demuxer refuses data without an .m3u8 name by itself.)"""
    root, _ = layout
    monkeypatch.chdir(root)               # where the playlist's relative secret.wav is
    before = _bound_sockets()
    b64 = base64.b64encode(payload).decode()
    for body in (audio_body(b64), audio_body("data:audio/wav;base64," + b64),
                 video_body("data:video/mp4;base64," + b64)):
        t0 = time.perf_counter()
        err = error_of(post(server, body))
        assert words in err["message"], err
        print(f"refused in {1000 * (time.perf_counter() - t0):.0f} ms")
    assert _bound_sockets() == before
    good.check()


def test_every_pyav_open_is_limited_to_media(tmp_path):
    """The library itself (any caller): a playlist file given as a path is refused, not followed."""
    from pyomnisift import ModelFileError
    from pyomnisift.media import decode

    write_wav(tmp_path / "inner.wav", seconds=1.0)
    playlist = tmp_path / "list.wav"
    playlist.write_bytes(b"ffconcat version 1.0\nfile inner.wav\n")
    for read in (decode.read_audio, decode.probe_video):
        with pytest.raises(ModelFileError, match="not a media file"):
            read(playlist)
        with pytest.raises(ModelFileError, match="not a media file"):
            read(io.BytesIO(playlist.read_bytes()))
    assert len(decode.read_audio(tmp_path / "inner.wav")) == 16000     # real media still reads


# --- item 3: bounded work, refused early

def png_frame(width: int, height: int) -> bytes:
    """A black grayscale PNG, compressed row by row (never held whole)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    z = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def png_mov(width: int, height: int, frames: int = 4) -> bytes:
    """A MOV of PNG frames, muxed without decoding them (the issue's 1.5-MB, 4.7-GB-RSS attack)."""
    import av

    frame = png_frame(width, height)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mov") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = width, height, "gray"
        for i in range(frames):
            p = av.Packet(frame)
            p.stream, p.pts, p.dts, p.duration, p.time_base = s, i, i, 1, fractions.Fraction(1, 1)
            c.mux(p)
    return buf.getvalue()


def silent_flac(seconds: int, rate: int = 8000) -> bytes:
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as c:
        s = c.add_stream("flac", rate=rate, layout="mono")
        block = np.zeros((1, rate * 60), np.int16)
        for i in range(seconds // 60):
            f = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            f.sample_rate, f.pts, f.time_base = rate, i * rate * 60, fractions.Fraction(1, rate)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return buf.getvalue()


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_huge_frames_are_refused_from_the_header(server, good):
    mov = png_mov(16000, 16000)
    assert len(mov) < 2_000_000
    rss = _rss_mb()
    err = error_of(post(server, video_body("data:video/quicktime;base64," + base64.b64encode(mov).decode())))
    assert "16000x16000" in err["message"] and "max_frame_pixels" in err["message"], err
    if LINUX:
        assert _rss_mb() - rss < 300, "the frames were decoded"   # one 16000x16000 frame alone is 256 MB
    good.check()


def test_huge_image_is_refused_from_the_header(server, good):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, format="PNG")       # 81 MP, over 8K UHD's 33 MP
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}}]}],
        "max_tokens": 2}
    err = error_of(post(server, body))
    assert "9000x9000" in err["message"] and "max_frame_pixels" in err["message"], err
    good.check()


def test_hour_long_audio_is_refused_from_the_header(server, good):
    flac = silent_flac(3600)
    t0 = time.perf_counter()
    err = error_of(post(server, audio_body(base64.b64encode(flac).decode(), "flac")))
    assert "s (from its packets), over the limit of 1800 s" in err["message"], err     # demuxed, not decoded
    assert err["message"].startswith("messages[0].content[0].input_audio.data (base64 flac"), err
    print(f"1-hour FLAC refused in {1000 * (time.perf_counter() - t0):.0f} ms")
    good.check()


def test_video_pixel_budget(tiny_model, tmp_path):
    """max_video_pixels: refused before decoding when the sampled frames alone exceed it, and
    decoding stops once the frames actually decoded (every one, not only the sampled) exceed it."""
    import pyomnisift

    clip = write_clip(tmp_path / "clip.mp4", seconds=2.0, fps=10)     # 20 frames of 112x84 = 9408 px
    msgs = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(clip)}}]}]
    llm, mmproj = tiny_model
    for budget, match in ((30_000, "need 37,632 decoded pixels"), (100_000, "decoding stopped after")):
        with pyomnisift.Llama(str(llm), str(mmproj), n_ctx=4096, n_threads=2,
                              media_limits=pyomnisift.MediaLimits(max_video_pixels=budget)) as m:
            with pytest.raises(pyomnisift.ModelFileError, match=match):
                m.create_chat_completion(msgs, max_tokens=1)
    with pyomnisift.Llama(str(llm), str(mmproj), n_ctx=4096, n_threads=2,
                          media_limits=pyomnisift.MediaLimits(max_video_pixels=200_000)) as m:
        assert m.create_chat_completion(msgs, max_tokens=1)["usage"]["omnisift"]["video"]["tokens_in"] > 0


def test_message_count_parts_and_text_are_bounded(server, good):
    many = {"messages": [{"role": "user", "content": "hi"}] * 50_000, "max_tokens": 1}
    err = error_of(post(server, many))
    assert "50000 messages" in err["message"] and "--max_messages" in err["message"], err
    parts = [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}] * 17
    err = error_of(post(server, {"messages": [{"role": "user", "content": parts}]}))
    assert "--max_media_parts" in err["message"], err
    long = {"messages": [{"role": "user", "content": "x" * 600_000}, {"role": "user", "content": "y" * 600_000}]}
    err = error_of(post(server, long))
    assert "--max_text_chars" in err["message"] and err["param"] == "messages[1]", err
    good.check()


def _raw(port: int, head: bytes, body: bytes = b"", timeout: float = 20.0) -> bytes:
    """Sends a request head (and body bytes) on a raw socket; what the server answers until it
    closes, or until `timeout`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head + body)
        out = b""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                out += data
                if b"\r\n\r\n" in out and out.split(b"\r\n\r\n", 1)[1]:
                    break
        except socket.timeout:
            pass
    return out


def test_api_key_is_checked_before_the_body(model):
    from pyomnisift.server import create_app

    with Server(create_app(server_settings=_settings(api_key="sekrit", body_timeout=1.0), model=model)) as s:
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 93000000\r\n")
        out = _raw(s.port, head + b"\r\n", b'{"messages": [')       # 93 MB announced, 14 bytes sent
        assert out.startswith(b"HTTP/1.1 401"), out[:200]        # not 408: the body was not awaited
        out = _raw(s.port, head + b"Authorization: Bearer wrong\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 401"), out[:200]
        # with the key, a body declared over --max_body_bytes is refused before it is read
        out = _raw(s.port, head + b"Authorization: Bearer sekrit\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 413"), out[:200]              # a key, but over --max_body_bytes
        # with the key, the body is awaited, but only for --body_timeout (a client that trickles)
        out = _raw(s.port, head.replace(b"93000000", b"1000") + b"Authorization: Bearer sekrit\r\n\r\n",
                   b'{"messages": [')
        assert out.startswith(b"HTTP/1.1 408") and b"--body_timeout" in out, out[:300]
        assert httpx.get(s.base + "/health").status_code == 200          # no key needed
        r = httpx.post(s.base + "/v1/chat/completions", headers={"Authorization": "Bearer sekrit"}, timeout=60,
                       json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
        assert r.status_code == 200, r.text


def test_inflight_bodies_and_connections_are_capped(model):
    from pyomnisift.server import create_app

    settings = _settings(max_body_bytes=600_000, max_inflight_body_bytes=900_000, body_timeout=5.0,
                         limit_concurrency=4)
    with Server(create_app(server_settings=settings, model=model)) as s:
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 500000\r\n\r\n")
        with socket.create_connection(("127.0.0.1", s.port)) as first:
            first.sendall(head)                # holds 500 kB of the 1 MB in flight while it trickles
            time.sleep(0.3)
            second = _raw(s.port, head)
            assert second.startswith(b"HTTP/1.1 503") and b"--max_inflight_body_bytes" in second, second[:300]
            assert b"Retry-After" in second or b"retry-after" in second
        conns = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(4)]
        try:
            time.sleep(0.3)
            assert httpx.get(s.base + "/health").status_code == 503             # limit_concurrency
        finally:
            for c in conns:
                c.close()
        deadline = time.time() + 10
        while httpx.get(s.base + "/health").status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        assert httpx.get(s.base + "/health").status_code == 200


def test_slow_request_head_is_cut_off(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")     # and never the rest
        assert s.recv(1024) == b""              # closed by the server (header_timeout 3 s), no answer


class _LongLlama:
    """Generates until should_stop() says the client left (polled per token, as pyomnisift.Llama)."""

    def __init__(self):
        self.stopped, self.n_tokens = [], 0

    def create_chat_completion(self, messages, stream=False, should_stop=None, **kw):
        assert not stream and should_stop is not None
        start = time.time()
        while not should_stop() and time.time() - start < 60:
            time.sleep(0.005)
        self.stopped.append(time.time() - start)
        return {"object": "chat.completion", "choices": [], "usage": {}}

    def create_completion(self, prompt, stream=False, stopping_criteria=None, **kw):
        """/v1/completions' path: llama-cpp-python asks the stopping criteria after each token."""
        assert not stream and stopping_criteria is not None
        start = time.time()
        while not stopping_criteria([], None) and time.time() - start < 60:
            self.sample()
            time.sleep(0.005)
        self.stopped.append(time.time() - start)
        return {"object": "text_completion", "choices": [], "usage": {}}

    def sample(self, *args, **kwargs):
        return 0

    def close(self):
        pass


@pytest.mark.parametrize("route,body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "long"}], "max_tokens": 100000}),
    ("/v1/completions", {"prompt": "long", "max_tokens": 100000})])
def test_non_streaming_generation_stops_when_its_client_leaves(route, body, monkeypatch):
    import asyncio

    from pyomnisift.server import create_app
    from pyomnisift.server.model import OmniModel

    model = OmniModel.__new__(OmniModel)
    model.llama, model.alias, model.lock, model.waiting, model.streams = _LongLlama(), "fake", asyncio.Lock(), 0, []
    # the token counter reads llama.cpp's vocabulary, which the stand-in has none of
    monkeypatch.setattr("llama_cpp.llama_vocab_is_eog", lambda vocab, token: False)
    model.llama._model = type("M", (), {"vocab": None})()
    with Server(create_app(server_settings=_settings(), model=model)) as s:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(s.base + route, timeout=1.0, json=body)
        deadline = time.time() + 20
        while not model.llama.stopped and time.time() < deadline:
            time.sleep(0.05)
        assert model.llama.stopped and model.llama.stopped[0] < 5, model.llama.stopped
        deadline = time.time() + 5
        while model.lock.locked() and time.time() < deadline:
            time.sleep(0.05)
        assert not model.lock.locked()
