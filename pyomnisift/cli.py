"""The `pyomnisift` command (also `python -m pyomnisift`).

    pyomnisift chat -m LLM.gguf --mmproj MMPROJ.gguf --video clip.mp4 -p "What is said?"
    pyomnisift chat -m LLM.gguf --mmproj MMPROJ.gguf --video clip.mp4          # interactive
    pyomnisift serve --model LLM.gguf --mmproj MMPROJ.gguf --port 8000          # OpenAI-compatible
    pyomnisift viz -m LLM.gguf --mmproj MMPROJ.gguf --video clip.mp4 -o kept.png
    pyomnisift convert CHECKPOINT_DIR OUT_DIR [--quantize Q4_K_M]
    pyomnisift convert-head CHECKPOINT head.gguf
    pyomnisift demo

Flag names follow llama.cpp's tools where they overlap (-m, --mmproj, -p, -n, -c, -ngl, -t,
--temp, --seed, --top-k, --top-p, --min-p). Errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Optional

from ._settings import AUDIO_SELECTORS, RETENTION_MAX, RETENTION_MIN

EXIT_USAGE = 2
EXIT_ERROR = 1


class CliError(Exception):
    """A user error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block, no traceback)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- shared option groups

def _add_model_args(ap: argparse.ArgumentParser, media: bool = True) -> None:
    ap.add_argument("-m", "--model", required=True, help="the LLM GGUF (Qwen2.5-Omni thinker)")
    ap.add_argument("--mmproj", help="the mmproj GGUF holding the vision and audio towers")
    if media:
        ap.add_argument("--video", action="append", default=[], metavar="FILE",
                        help="a video (its sound track comes along); repeatable")
        ap.add_argument("--audio", action="append", default=[], metavar="FILE", help="an audio file; repeatable")
        ap.add_argument("--image", action="append", default=[], metavar="FILE", help="an image; repeatable")
    ap.add_argument("-c", "--ctx-size", type=int, default=8192, help="context size in tokens (default 8192)")
    ap.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", dest="n_gpu_layers", type=int, default=0,
                    help="layers offloaded to the GPU (-1: all; default 0)")
    ap.add_argument("--rpc", metavar="HOST:PORT,...", default=None,
                    help="ggml RPC servers to use as devices (llama.cpp's --rpc; needs a GGML_RPC build)")
    ap.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: llama.cpp's)")
    ap.add_argument("--video-fps", type=float, default=2.0, help="frames sampled per second of video (default 2)")
    ap.add_argument("--video-retention", type=float, default=None,
                    help="fraction of each frame grid's tokens kept (default: the library's, 0.33)")
    ap.add_argument("--video-pruning-rate", type=float, default=None,
                    help="vLLM's name for 1 - --video-retention: the fraction of video tokens pruned")
    ap.add_argument("--audio-retention", type=float, default=None,
                    help="fraction of each 2-s chunk's audio tokens kept (default: the library's, 0.6)")
    ap.add_argument("--image-retention", type=float, default=None,
                    help="fraction of an image's tokens kept (default 1.0)")
    ap.add_argument("--audio-selector", choices=list(AUDIO_SELECTORS), default=None,
                    help="how audio tokens are chosen (default anchor; vgas needs --sift-head)")
    ap.add_argument("--fit-context", action="store_true",
                    help="lower the video, then the audio retention just enough for the prompt to fit -c")
    ap.add_argument("--sift-head", metavar="HEAD.gguf", help="the learned selector head (pyomnisift convert-head)")
    ap.add_argument("--verbose", action="store_true", help="llama.cpp's own log on stderr")


def _check_file(path: Optional[str], what: str) -> None:
    if path is not None and not os.path.isfile(path):
        raise CliError(f"{what} not found: {path}")


def _check_inputs(args, media: bool = True) -> None:
    _check_file(args.model, "model file")
    _check_file(args.mmproj, "mmproj file")
    _check_file(args.sift_head, "sift head file")
    if media:
        for kind in ("video", "audio", "image"):
            for path in getattr(args, kind):
                _check_file(path, f"{kind} file")
        if (args.video or args.audio or args.image) and not args.mmproj:
            raise CliError("media (--video/--audio/--image) need --mmproj, the model's mmproj GGUF")
        _probe_media(args)
    if args.video_retention is not None and args.video_pruning_rate is not None:
        raise CliError("give --video-retention or --video-pruning-rate (1 - retention), not both")
    for name in ("video_retention", "video_pruning_rate", "audio_retention", "image_retention"):
        value = getattr(args, name)
        if value is not None and not RETENTION_MIN <= value <= RETENTION_MAX:
            raise CliError(f"--{name.replace('_', '-')} {value} is not in [{RETENTION_MIN:g}, {RETENTION_MAX:g}]")
    if not 0 < args.video_fps <= 60:
        raise CliError(f"--video-fps {args.video_fps} is not in (0, 60]")
    if args.ctx_size < 0:
        raise CliError(f"-c/--ctx-size {args.ctx_size} is negative")
    if args.threads is not None and args.threads < 1:
        raise CliError(f"-t/--threads {args.threads} is not a thread count (at least 1)")
    if args.audio_selector == "vgas" and not args.sift_head:
        raise CliError("--audio-selector vgas needs --sift-head HEAD.gguf")


def _probe_media(args) -> None:
    """Opens every media file before the model loads, so that a file that is no media fails at once."""
    from .media import decode

    for path in args.video:
        import av

        try:
            with av.open(path) as c:
                if not c.streams.video:
                    raise CliError(f"{path}: has no video stream" + ("; pass it with --audio" if c.streams.audio else ""))
        except av.error.FFmpegError:
            pass    # probe_video says what is wrong with it
        decode.probe_video(path, args.video_fps)
    for path in args.image:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.verify()
        except (UnidentifiedImageError, OSError) as e:
            raise CliError(f"{path}: cannot be read as an image ({e})") from None
    for path in args.audio:
        with decode._open(path, "audio") as c:     # FFmpeg limited to media, as every open
            if not c.streams.audio:
                raise CliError(f"{path}: has no audio stream")


def _compression_kwargs(args) -> dict:
    out = {}
    for name in ("video_retention", "video_pruning_rate", "audio_retention", "image_retention", "audio_selector"):
        value = getattr(args, name)
        if value is not None:
            out[name] = value
    if args.fit_context:
        out["fit_context"] = True
    return out


def load_model(args, progress=None):
    import pyomnisift

    kwargs = dict(n_ctx=args.ctx_size, n_gpu_layers=args.n_gpu_layers, n_threads=args.threads,
                  verbose=args.verbose, video_fps=args.video_fps, progress=progress, **_compression_kwargs(args))
    if args.sift_head:
        kwargs["sift_head"] = args.sift_head
    if args.rpc:
        kwargs["rpc_servers"] = args.rpc
    return pyomnisift.Llama(args.model, args.mmproj, **kwargs)


# The library's messages name its Python arguments; the command line names the flags that set them.
_FLAGS = {"video_retention": "--video-retention", "video_pruning_rate": "--video-pruning-rate", "audio_retention": "--audio-retention",
          "image_retention": "--image-retention", "audio_selector": "--audio-selector", "sift_head": "--sift-head",
          "video_fps": "--video-fps", "fit_context=True": "--fit-context", "fit_context": "--fit-context",
          "n_ctx": "-c/--ctx-size", "max_tokens": "-n/--n-predict", "n_threads": "-t/--threads",
          "n_gpu_layers": "-ngl/--n-gpu-layers", "as input_audio": "with --audio", "input_audio": "--audio",
          "video_url": "--video", "image_url": "--image", "capacity_bytes": "--cache-size"}
_FLAG_WORDS = re.compile("|".join(rf"(?<![\w-]){re.escape(k)}(?![\w])" for k in sorted(_FLAGS, key=len, reverse=True)))


def in_flags(message: str) -> str:
    """A library message with its Python argument names replaced by the flags that set them."""
    return _FLAG_WORDS.sub(lambda m: _FLAGS[m.group(0)], message)


def error_message(e: BaseException) -> str:
    from ._plan import ContextOverflow

    if isinstance(e, ContextOverflow):
        return e.advice(n_ctx="-c/--ctx-size", fit_context="--fit-context",
                        retention="--video-retention / --audio-retention")
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg if isinstance(e, CliError) else in_flags(msg)


def media_parts(args) -> list:
    """The --video / --audio / --image files as content parts, in that order."""
    parts = [{"type": "video_url", "video_url": {"url": os.path.abspath(p)}} for p in args.video]
    for p in args.audio:
        parts.append({"type": "input_audio", "input_audio": {"data": "file://" + os.path.abspath(p),
                                                              "format": os.path.splitext(p)[1].lstrip(".") or "wav"}})
    parts += [{"type": "image_url", "image_url": {"url": os.path.abspath(p)}} for p in args.image]
    return parts


# --- progress bars (a TTY only)

class TqdmProgress:
    """`progress(stage, done, total)` for pyomnisift.Llama and create_chat_completion: one tqdm bar
    per stage (load, plan, encode, prefill, generate); `skip` names stages not drawn."""

    UNITS = {"load": "%", "plan": "media", "encode": "chunks", "prefill": "positions", "generate": "tokens"}

    def __init__(self, stream=None, skip=()):
        self.stream = stream or sys.stderr
        self.skip = set(skip)
        self.bars = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage in self.skip:
            return
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=" " + self.UNITS.get(stage, "units"),
                                          file=self.stream, leave=False)
        if total and bar.total != total:
            bar.total = total
        bar.update(max(0, done - bar.n))
        if total and done >= total:
            bar.close()
            del self.bars[stage]

    def close(self, keep=()) -> None:
        for stage in [s for s in self.bars if s not in keep]:
            self.bars.pop(stage).close()


def progress_for(out) -> Optional[TqdmProgress]:
    """Bars on stderr when it is a terminal, else None. They write to a copy of stderr's descriptor:
    llama.cpp's loaders point descriptor 2 at /dev/null while they run (verbose off). The answer
    streamed to a terminal is the progress of "generate": that bar is drawn only when `out` is not one."""
    try:
        if not sys.stderr.isatty():
            return None
        stream = open(os.dup(sys.stderr.fileno()), "w", buffering=1, closefd=True)
        return TqdmProgress(stream, skip=("generate",) if out.isatty() else ())
    except (AttributeError, ValueError, OSError):
        return None


# --- chat

def _add_chat_args(ap: argparse.ArgumentParser) -> None:
    _add_model_args(ap)
    ap.add_argument("-p", "--prompt", help="one question, answered and exit (default: an interactive chat)")
    ap.add_argument("-sys", "--system-prompt", dest="system", help="a system message")
    ap.add_argument("-n", "--n-predict", type=int, default=-1, help="tokens to predict (-1: until the end; default -1)")
    ap.add_argument("--temp", type=float, default=0.8, help="temperature (0: greedy; default 0.8)")
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--min-p", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    ap.add_argument("--stats", action="store_true", help="print token counts and timings after each answer")
    ap.add_argument("--cache-dir", metavar="DIR", default=None,
                    help="the media cache: states of prompts up to each video / audio / image kept in DIR, so "
                         "that asking about the same media again (in another run) skips the encoders")
    ap.add_argument("--cache-size", type=int, default=None, metavar="BYTES",
                    help="the media cache's budget in bytes (default 2 GiB; least recently used go first)")


def _stream_answer(llm, messages, args, out, progress) -> str:
    kwargs = dict(stream=True, max_tokens=None if args.n_predict < 0 else args.n_predict,
                  temperature=args.temp, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p, seed=args.seed)
    if progress is not None:
        kwargs["progress"] = progress
    text, usage = [], None
    try:
        for chunk in llm.create_chat_completion(messages, **kwargs):
            delta = chunk["choices"][0].get("delta", {}) if chunk.get("choices") else {}
            piece = delta.get("content")
            if piece:
                text.append(piece)
                out.write(piece)
                out.flush()
            if progress is not None:
                progress.close(keep=("generate",))   # a chunk: planning, encoding and prefill are over
            usage = chunk.get("usage") or usage
    finally:
        if progress is not None:
            progress.close()
    out.write("\n")
    out.flush()
    if args.stats and usage:
        print(format_usage(usage), file=sys.stderr)
    return "".join(text)


def format_usage(usage: dict) -> str:
    parts = [f"prompt {usage.get('prompt_tokens')} tokens, completion {usage.get('completion_tokens')}"]
    st = usage.get("omnisift") or {}
    for kind in ("video", "audio", "image"):
        c = st.get(kind)
        if isinstance(c, dict) and c.get("tokens_in"):
            parts.append(f"{kind} {c['tokens_in']}->{c['tokens_kept']}")
    if st.get("media_restored"):
        parts.append(f"{st['media_restored']} media from the cache")
    t = st.get("timings_ms") or {}
    if "ttft" in t:
        parts.append(f"TTFT {t['ttft']:.0f} ms")
    return "[" + ", ".join(parts) + "]"


def cmd_chat(args) -> int:
    _check_inputs(args)
    out = sys.stdout
    progress = progress_for(out)
    if args.cache_size is not None and args.cache_dir is None:
        raise CliError("--cache-size needs --cache-dir")
    cache = None
    if args.cache_dir is not None:
        import pyomnisift

        cache = pyomnisift.MediaDiskCache(args.cache_dir, *([args.cache_size] if args.cache_size is not None else []))
    llm = load_model(args, progress)
    if cache is not None:
        llm.set_cache(cache)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    media = media_parts(args)

    def user_turn(text: str) -> dict:
        nonlocal media
        content = media + [{"type": "text", "text": text}] if media else text
        media = []      # the media go with the first question; later turns keep them in the history
        return {"role": "user", "content": content}

    if args.prompt is not None:
        messages.append(user_turn(args.prompt))
        _stream_answer(llm, messages, args, out, progress)
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print("pyomnisift chat: type a question; /reset clears the conversation, /exit (or Ctrl-D) quits.",
              file=sys.stderr)
    first_media = list(media)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            messages = [m for m in messages if m["role"] == "system"]
            media = list(first_media)
            continue
        messages.append(user_turn(line))
        try:
            answer = _stream_answer(llm, messages, args, out, progress)
        except KeyboardInterrupt:
            out.write("\n")
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": answer})
    return 0


# --- viz

def _add_viz_args(ap: argparse.ArgumentParser) -> None:
    _add_model_args(ap)
    ap.add_argument("-o", "--output", required=True, metavar="OUT.png", help="the picture to write")
    ap.add_argument("-p", "--prompt", default="Describe this.", help="the question the media go with")
    ap.add_argument("--max-pairs", type=int, default=16, help="frame pairs shown at most (sampled evenly; default 16)")


def cmd_viz(args) -> int:
    _check_inputs(args)
    n_media = len(args.video) + len(args.audio) + len(args.image)
    if n_media != 1:
        raise CliError("viz takes exactly one of --video, --audio or --image")
    if args.max_pairs < 1:
        raise CliError(f"--max-pairs {args.max_pairs} is not a count (at least 1)")
    from . import viz

    progress = progress_for(sys.stdout)
    llm = load_model(args, progress)
    kind, path = next((k, getattr(args, k)[0]) for k in ("video", "audio", "image") if getattr(args, k))
    try:
        result = viz.visualize(llm, path, kind=kind, output=args.output, prompt=args.prompt, video_fps=args.video_fps,
                               max_pairs=args.max_pairs, progress=progress, **_compression_kwargs(args))
    finally:
        if progress is not None:
            progress.close()
    print(f"wrote {args.output} ({result.image.width}x{result.image.height}): {result.summary()}")
    return 0


# --- dispatch

def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = _Parser(prog="pyomnisift", description="OmniSIFT token compression for Qwen2.5-Omni on llama.cpp.",
                 epilog="`pyomnisift COMMAND --help` for a command's options.")
    ap.add_argument("--version", action="version", version=f"pyomnisift {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_chat_args(sub.add_parser("chat", help="ask about video, audio and images (one-shot -p, or interactive)"))
    sub.add_parser("serve", help="the OpenAI-compatible server (pyomnisift serve --help)", add_help=False)
    _add_viz_args(sub.add_parser("viz", help="a picture of what OmniSIFT kept"))
    from . import convert, convert_head, demo

    convert.add_arguments(sub.add_parser("convert", help="an OmniSIFT / Qwen2.5-Omni checkpoint -> GGUF files"))
    convert_head.add_arguments(sub.add_parser("convert-head", help="the learned audio selector -> head GGUF"))
    demo.add_arguments(sub.add_parser("demo", help="the main job on a 10-s clip with the tiny model (make demo)"))
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        from .server.__main__ import main as serve_main

        return serve_main(argv[1:], prog="pyomnisift serve")
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.command is None:
        ap.print_help()
        return EXIT_USAGE
    from . import convert, convert_head, demo
    from ._errors import OmniSiftError

    handlers = {"chat": cmd_chat, "viz": cmd_viz, "convert": convert.run, "convert-head": convert_head.run,
                "demo": demo.run}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CliError, OmniSiftError, ValueError, TypeError, OSError, NotImplementedError) as e:
        print(f"pyomnisift {args.command}: error: {error_message(e)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
