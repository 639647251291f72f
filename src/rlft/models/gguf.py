"""GGUF files (llama.cpp's single-file format) as a model source.

transformers reads a GGUF (``from_pretrained(dir, gguf_file=...)``) and dequantizes its tensors, but
the model it returns carries a GGUF "quantizer" that refuses ``save_pretrained`` and reports itself
untrainable. :func:`load_gguf` therefore builds a plain model from the same config and copies the
dequantized weights in: the result trains, checkpoints and saves like any safetensors model.
The tokenizer (vocabulary, merges, special tokens, chat template) comes from the file's metadata.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import torch

from rlft.errors import RlftError

SUFFIX = ".gguf"


def gguf_source(name_or_path: str, gguf_file: str | None, *, field: str = "model.name_or_path") -> tuple[Path, str] | None:
    """``(directory, file name)`` when the settings name a GGUF file, else None.

    Either ``name_or_path`` is the ``.gguf`` file itself, or it is a directory and ``gguf_file``
    names the file in it (transformers' own two-argument form).
    """
    if gguf_file:
        directory = Path(name_or_path).expanduser()
        if not (directory / gguf_file).is_file():
            raise RlftError(f"model.gguf_file: no file '{gguf_file}' in '{name_or_path}' "
                            "(model.name_or_path must be the directory holding it)")
        return directory, gguf_file
    if name_or_path.lower().endswith(SUFFIX):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise RlftError(f"{field}: '{name_or_path}' does not exist (no such .gguf file)")
        return path.parent, path.name
    return None


def require_gguf_support() -> None:
    """transformers needs the ``gguf`` (reader) and ``accelerate`` packages for GGUF files."""
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise RlftError(f"model.name_or_path: loading a GGUF file needs {' and '.join(missing)}: "
                        f"pip install {' '.join(missing)}")


def load_gguf(directory: str | Path, file: str, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from ``directory/file``: a plain causal LM in ``dtype`` and its tokenizer."""
    require_gguf_support()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # per-key "not parsed" notes and the tensor progress bar
    hf_logging.disable_progress_bar()
    try:
        # fp32 first whatever `dtype` is: the dequantized blocks are fp32, cast once below.
        loaded = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=file, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=file)
    finally:
        hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):  # the marker that makes save_pretrained refuse
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    # Tied embeddings appear under both names in the state dict; loading sets the one tensor twice.
    model.load_state_dict(loaded.state_dict())
    model.generation_config = copy.deepcopy(loaded.generation_config)
    del loaded
    return model.to(dtype).eval(), tokenizer


def convert_gguf(directory: str | Path, file: str, out_dir: Path) -> None:
    """Write ``directory/file`` to ``out_dir`` as a safetensors checkpoint + tokenizer (fp32)."""
    model, tokenizer = load_gguf(directory, file)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
