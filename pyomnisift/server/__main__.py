"""`python -m pyomnisift.server --model M --mmproj P [--host H] [--port N] [--n_ctx C] [--api_key K]
[--allowed_media_dir DIR] [--max_body_bytes N] [--config_file F] ...` (also `pyomnisift serve ...`):
flags generated from the settings by llama_cpp.server's own helper, as `python -m llama_cpp.server`
does; `--config_file` (or CONFIG_FILE) reads them from a JSON / YAML file in its format."""

from __future__ import annotations

import argparse
import os
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None, prog: str = "python -m pyomnisift.server") -> int:
    try:
        import uvicorn
        from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
        from pydantic import ValidationError

        from .app import create_app
        from .limits import uvicorn_options
        from .settings import ModelSettings, ServerSettings, Settings, load_config_file
    except ImportError as e:
        print(f"{prog}: error: the server needs the [server] extra ({e.name} is missing): "
              "pip install 'pyomnisift[server]'", file=sys.stderr)
        return 1
    ap = _Parser(prog=prog, description="pyomnisift's OpenAI-compatible server (video, audio, images).")
    add_args_from_model(ap, Settings)
    ap.add_argument("--config_file", type=str, help="A JSON or YAML file of settings, as llama_cpp.server's "
                    "(server settings at the top level, the model's in `models: [ {...} ]`); flags given "
                    "here override it. Also the CONFIG_FILE environment variable.")
    args = ap.parse_args(argv)
    config_file = args.config_file or os.environ.get("CONFIG_FILE")
    try:
        if config_file:
            given = {k: v for k, v in vars(args).items() if v is not None and k in Settings.model_fields}
            server_settings, model_settings = load_config_file(config_file, given)
        else:
            server_settings = parse_model_from_args(ServerSettings, args)
            model_settings = parse_model_from_args(ModelSettings, args)
    except ValidationError as e:      # before ValueError: pydantic's is one
        err = e.errors()[0]
        print(f"{prog}: error: --{'.'.join(map(str, err['loc']))}: {err['msg']}", file=sys.stderr)
        return 2
    except ValueError as e:           # the config file
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    for what, path in (("model", model_settings.model), ("mmproj", model_settings.mmproj),
                       ("sift head", model_settings.sift_head)):
        if path is not None and not os.path.isfile(path):
            print(f"{prog}: error: {what} file not found: {path}", file=sys.stderr)
            return 1
    if server_settings.allowed_media_dir is not None and not os.path.isdir(server_settings.allowed_media_dir):
        print(f"{prog}: error: --allowed_media_dir is not a directory: {server_settings.allowed_media_dir}",
              file=sys.stderr)
        return 1
    try:
        app = create_app(server_settings=server_settings, model_settings=model_settings)
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        print(f"{prog}: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
              file=sys.stderr)
        return 1
    print(f"serving {app.state.model.alias} on http://{server_settings.host}:{server_settings.port}/v1",
          file=sys.stderr)
    uvicorn.run(app, host=os.getenv("HOST", server_settings.host), port=int(os.getenv("PORT", server_settings.port)),
                ssl_keyfile=server_settings.ssl_keyfile, ssl_certfile=server_settings.ssl_certfile,
                log_level="info" if model_settings.verbose else "warning", **uvicorn_options(server_settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
