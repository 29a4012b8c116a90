"""`pyomnisift convert CHECKPOINT_DIR OUT_DIR [--quantize Q4_K_M]`: a Hugging Face Qwen2.5-Omni /
OmniSIFT checkpoint to the files pyomnisift loads.

- the thinker LLM GGUF and the mmproj (vision + audio towers), by llama.cpp's own
  convert_hf_to_gguf.py from the pinned llama-cpp-python sdist (the converter of the llama.cpp the
  installed libraries were built from; it needs torch and transformers installed). OmniSIFT's selector
  tensors (`thinker.compressor.*`) are hidden from it (it does not know them);
- the learned audio selector (VGAS) head, from those `thinker.compressor.*` tensors (as `convert-head`),
  when the checkpoint has them;
- with --quantize, the LLM quantized by llama.cpp (`llama_model_quantize`): Q4_K_M, Q5_K_M, Q8_0, ...
  (the mmproj and the head stay f16 / f32, as llama.cpp's multimodal tools expect).

Output names: OUT_DIR/<name>-<outtype>.gguf, mmproj-<name>-<outtype>.gguf, <name>-sift-head.gguf and
<name>-<quant>.gguf, with <name> the checkpoint directory's name in lower case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

# Runs the converter with OmniSIFT's selector tensors filtered out of the LLM's tensor list (the
# mmproj class already keeps only visual.* / audio_tower.*). argv: converter path, then its arguments.
# The converter's conversion/ and gguf-py/ reach the child through PYTHONPATH (_converter_env).
_WRAPPER = r"""
import runpy, sys
script = sys.argv[1]
sys.argv = [script] + sys.argv[2:]
import conversion.qwenvl as q
_orig = q.Qwen2VLModel.filter_tensors.__func__
def _filter(cls, item):
    if item[0].startswith(('thinker.compressor.', 'compressor.')):
        return None
    return _orig(cls, item)
q.Qwen2VLModel.filter_tensors = classmethod(_filter)
runpy.run_path(script, run_name='__main__')
"""

QUANT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M",
               "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_XS", "F16", "BF16")


class ConvertError(ValueError):
    pass


def _run_converter(converter: Path, checkpoint: Path, outfile: Path, outtype: str, mmproj: bool,
                   log=None) -> None:
    tmp = outfile.with_name(outfile.name + ".partial")
    cmd = [sys.executable, "-c", _WRAPPER, str(converter), str(checkpoint), "--outtype", outtype,
           "--outfile", str(tmp)]
    if mmproj:
        cmd.append("--mmproj")
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=_converter_env(converter))
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = "\n".join(done.stdout.strip().splitlines()[-15:])
        raise ConvertError(f"llama.cpp's converter failed on {checkpoint} ({'mmproj' if mmproj else 'LLM'}):\n{tail}")
    os.replace(tmp, outfile)


def _converter_env(converter: Path) -> dict:
    """The environment in which the converter's own packages import first, as when it runs as a script:
    its directory (conversion/) and, unless NO_LOCAL_GGUF is set, its gguf-py/ (the one it was written
    against, not an installed gguf of another version)."""
    here = converter.resolve().parent
    paths = [str(here)] + ([] if "NO_LOCAL_GGUF" in os.environ else [str(here / "gguf-py")])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def quantize(src: Path, dst: Path, qtype: str, n_threads: int = 0) -> None:
    """The LLM GGUF `src` quantized to `qtype` (a llama.cpp ftype name such as Q4_K_M) into `dst`."""
    import llama_cpp

    name = qtype.upper()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}", None)
    if ftype is None or name not in QUANT_TYPES:
        raise ConvertError(f"unknown quantization {qtype!r} (one of {', '.join(QUANT_TYPES)})")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = n_threads
    tmp = dst.with_name(dst.name + ".partial")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise ConvertError(f"llama_model_quantize({src.name} -> {name}) failed with status {rc}")
    os.replace(tmp, dst)


def has_selector(checkpoint: Path) -> bool:
    """Whether the checkpoint holds OmniSIFT's `thinker.compressor.*` tensors."""
    from .convert_head import ConversionError, read_head

    try:
        read_head(checkpoint)
        return True
    except ConversionError as e:
        if "missing selector tensors" in str(e):
            return False
        raise


def convert(checkpoint_dir, out_dir, quantize_type: Optional[str] = None, outtype: str = "f16",
            n_head: int = 8, converter: Optional[str] = None, name: Optional[str] = None,
            log=print) -> dict:
    """Returns {"llm", "mmproj", "sift_head" (or None), "quantized" (or None)}: the paths written."""
    from . import _converter, convert_head

    ckpt = Path(checkpoint_dir)
    if not ckpt.is_dir():
        raise ConvertError(f"checkpoint directory not found: {ckpt}")
    config = ckpt / "config.json"
    if not config.is_file():
        raise ConvertError(f"{ckpt} has no config.json (a Hugging Face checkpoint directory is expected)")
    archs = json.loads(config.read_text()).get("architectures") or []
    if "Qwen2_5OmniModel" not in archs:
        raise ConvertError(f"{config}: architectures {archs}; this converter takes Qwen2.5-Omni checkpoints "
                           "(architectures [\"Qwen2_5OmniModel\"], as released)")
    if quantize_type is not None and quantize_type.upper() not in QUANT_TYPES:
        raise ConvertError(f"unknown quantization {quantize_type!r} (one of {', '.join(QUANT_TYPES)})")
    for module in ("torch", "transformers"):
        try:
            __import__(module)
        except ImportError:
            raise ConvertError(f"llama.cpp's converter needs {module}: pip install torch transformers") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or ckpt.resolve().name.lower()
    script = Path(converter) if converter else _converter.ensure_converter()
    if not script.is_file():
        raise ConvertError(f"converter not found: {script}")
    paths = {"llm": out / f"{name}-{outtype}.gguf", "mmproj": out / f"mmproj-{name}-{outtype}.gguf",
             "sift_head": None, "quantized": None}
    log(f"converting the thinker LLM -> {paths['llm']}")
    _run_converter(script, ckpt, paths["llm"], outtype, mmproj=False)
    log(f"converting the vision and audio towers -> {paths['mmproj']}")
    _run_converter(script, ckpt, paths["mmproj"], outtype, mmproj=True)
    if has_selector(ckpt):
        paths["sift_head"] = out / f"{name}-sift-head.gguf"
        dims = convert_head.convert(ckpt, paths["sift_head"], n_head)
        log(f"selector head -> {paths['sift_head']} ({', '.join(f'{k} = {v}' for k, v in dims.items())})")
    else:
        log("no thinker.compressor.* tensors: a plain Qwen2.5-Omni checkpoint (no VGAS head; use the "
            "anchor selector)")
    if quantize_type:
        paths["quantized"] = out / f"{name}-{quantize_type.lower()}.gguf"
        log(f"quantizing {paths['llm'].name} to {quantize_type.upper()} -> {paths['quantized']}")
        quantize(paths["llm"], paths["quantized"], quantize_type)
    return paths


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="a Hugging Face Qwen2.5-Omni / OmniSIFT checkpoint directory")
    ap.add_argument("out_dir", metavar="OUT_DIR", help="where the GGUF files go")
    ap.add_argument("--quantize", metavar="TYPE", help=f"also write the LLM quantized ({', '.join(QUANT_TYPES[:11])}, ...)")
    ap.add_argument("--outtype", default="f16", choices=["f32", "f16", "bf16", "q8_0", "auto"],
                    help="type of the converted LLM and mmproj (default f16)")
    ap.add_argument("--n-head", type=int, default=8, help="attention heads of the selector head (8 in OmniSIFT)")
    ap.add_argument("--converter", help="a convert_hf_to_gguf.py to use (default: the pinned sdist's)")


def run(args) -> int:
    from .convert_head import ConversionError

    try:
        paths = convert(args.checkpoint, args.out_dir, args.quantize, args.outtype, args.n_head, args.converter)
    except (ConvertError, ConversionError) as e:
        print(f"pyomnisift convert: error: {e}", file=sys.stderr)
        return 1
    for key, path in paths.items():
        if path is not None:
            print(f"{key}\t{path}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pyomnisift convert", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
