"""Files of a Hugging Face repository, found as llama-cpp-python's ``from_pretrained`` finds them
(a file name, or a glob matched against the repository's files) and fetched into the Hub's cache
(or ``local_dir``) by huggingface_hub, which serves them from there next time. In offline mode
(``HF_HUB_OFFLINE=1``) names and globs are resolved in the cached snapshot and nothing is fetched."""

from __future__ import annotations

import fnmatch
import glob
import inspect
import posixpath
from pathlib import Path
from typing import Optional


def _hub():
    try:
        import huggingface_hub
        import huggingface_hub.constants  # noqa: F401 - a lazily loaded submodule, read below
    except ImportError:
        raise ImportError("from_pretrained needs huggingface-hub: pip install huggingface-hub (or pyomnisift[hub])") from None
    return huggingface_hub


def _repo_files(repo_id: str, cache_dir, local_dir) -> list:
    hub = _hub()
    if hub.constants.HF_HUB_OFFLINE:
        root = Path(local_dir) if local_dir is not None else Path(
            hub.snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return hub.list_repo_files(repo_id)


def resolve(repo_id: str, pattern: str, cache_dir=None, local_dir=None) -> str:
    """The one file of the repository that `pattern` (a path or a glob) names."""
    if not glob.has_magic(pattern):
        return pattern
    files = _repo_files(repo_id, cache_dir, local_dir)
    matches = [f for f in files if fnmatch.fnmatch(f, pattern)]
    if len(matches) != 1:
        found = "no file" if not matches else f"{len(matches)} files ({', '.join(matches)})"
        raise ValueError(f"{found} in {repo_id} match {pattern!r}; its files: {', '.join(files)}")
    return matches[0]


def fetch(repo_id: str, pattern: str, cache_dir=None, local_dir=None,
          local_dir_use_symlinks: Optional[object] = "auto") -> str:
    """The local path of the file `pattern` names, fetched if it is not there yet."""
    hub = _hub()
    name = resolve(repo_id, pattern, cache_dir, local_dir)
    subfolder, filename = posixpath.split(name)
    kwargs = dict(subfolder=subfolder or None, cache_dir=cache_dir, local_dir=local_dir)
    # llama-cpp-python passes it; huggingface_hub 1.0 dropped it
    if "local_dir_use_symlinks" in inspect.signature(hub.hf_hub_download).parameters:
        kwargs["local_dir_use_symlinks"] = local_dir_use_symlinks
    return hub.hf_hub_download(repo_id=repo_id, filename=filename, **kwargs)
