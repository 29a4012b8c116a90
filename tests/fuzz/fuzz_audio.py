"""Fuzz the audio path on the tiny model's mmproj: AudioTower.encode (lengths from 0 to ~3 s,
values with NaN / inf / huge, dtypes, shapes), encode_features (any frame count, width), the
streaming mel (scan + iter_window_features over arbitrary block splits) and AudioRows.take."""

from __future__ import annotations

import atheris
import numpy as np

from _common import expect, main, tiny_model

from pyomnisift import _audio, _audio_stream, _mel_stream

TOWER = _audio.AudioTower(str(tiny_model()[1]), n_threads=1)
SPECIAL = [np.nan, np.inf, -np.inf, 3e38, 1e-40, 0.0, -1.0, 1.0, 1e6]


def _pcm(fdp):
    # structure first, values last (a short input is still a well-formed call)
    n = fdp.PickValueInList([0, 1, 2, 159, 160, 400, 401, 3200, 32000, 32001, 48000]) \
        if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 50000)
    kind = fdp.ConsumeIntInRange(0, 9)
    specials = [(fdp.ConsumeIntInRange(0, max(0, n - 1)), fdp.PickValueInList(SPECIAL))
                for _ in range(fdp.ConsumeIntInRange(0, 2) if kind == 2 else 0)]
    dtype = fdp.PickValueInList([np.int16, np.float64, np.float16, np.complex64, object])
    pcm = np.resize(np.array(fdp.ConsumeFloatListInRange(32, -1.5, 1.5) or [0.1], np.float32), n)
    for i, v in specials:
        if n:
            pcm[i] = v
    if kind == 0:
        return pcm.astype(dtype)
    if kind == 1:
        return pcm.reshape(1, -1) if n else pcm.reshape(0, 2)
    return pcm


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    what = fdp.ConsumeIntInRange(0, 3)
    if what == 0:
        rate = fdp.PickValueInList([16000, 16000, 16000, 8000, 0])
        expect(TOWER.encode, _pcm(fdp), rate, return_windows=fdp.ConsumeBool())
    elif what == 1:
        frames, width = fdp.ConsumeIntInRange(0, 700), fdp.PickValueInList([128] * 6 + [80, 0, 129, 1])
        special = (fdp.ConsumeIntInRange(0, max(0, frames * width - 1)), fdp.PickValueInList(SPECIAL)) \
            if fdp.ConsumeBool() else None
        vals = np.array(fdp.ConsumeFloatListInRange(32, -50.0, 50.0) or [0.0], np.float32)
        mel = np.resize(vals, frames * width).reshape(frames, width)
        if mel.size and special:
            mel.flat[special[0]] = special[1]
        expect(TOWER.encode_features, mel)
    else:
        pcm = _pcm(fdp)
        cuts = sorted(fdp.ConsumeIntListInRange(fdp.ConsumeIntInRange(0, 6), 0, max(1, pcm.size)))
        blocks = np.split(pcm, cuts) if pcm.ndim == 1 else [pcm]
        plan = expect(_mel_stream.scan, blocks)
        if plan is None:
            return
        if what == 2:
            step = fdp.PickValueInList([1, 2, 16, 0, -1, True])
            for _ in expect(lambda: list(_mel_stream.iter_window_features(blocks, plan, step))) or ():
                pass
        else:
            rows = _audio_stream.AudioRows(TOWER, blocks, plan, fdp.ConsumeIntInRange(1, 3))
            for _ in range(fdp.ConsumeIntInRange(0, 4)):
                if expect(rows.take, fdp.ConsumeIntInRange(-2, rows.n_rows + 2),
                          fdp.ConsumeIntInRange(-2, rows.n_rows + 2)) is None:
                    break
            rows.close()


if __name__ == "__main__":
    main(test_one, seeds=[b"", bytes(range(256)), b"\x00" * 64, b"\x03\x01" * 200, b"\x02\xff" * 300])
