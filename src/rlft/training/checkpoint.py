"""Atomic checkpoints: everything needed to resume a run exactly, and nothing half-written.

Layout of ``run_dir/checkpoints/step-00000050/``::

    config.json, model.safetensors (or shards + model.safetensors.index.json), generation_config.json
    tokenizer files            -> the directory loads with plain ``from_pretrained``
                                  (LoRA: adapter_config.json + adapter_model.safetensors instead of
                                  the model files; loads with ``PeftModel.from_pretrained``)
    optimizer.pt, scheduler.pt -> ``state_dict()`` of each
    rng.pt                     -> Python, NumPy, torch CPU/CUDA RNG states and named torch.Generators
    trainer_state.json         -> step and the JSON-serializable entries of the loop's state
    extra.pt                   -> ``state['extra']`` and any non-JSON entries (only when there are some;
                                  PPO's value head is ``extra['value_head']``, its state_dict)
    COMPLETE                   -> written last; a directory without it is never a checkpoint

A checkpoint is written into ``.tmp-step-...``, fsynced, marked COMPLETE, and renamed into
place, so a crash at any point leaves either the previous checkpoints intact plus a ``.tmp-``
directory (ignored, removed by the next save) or the new checkpoint complete.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from rlft.atomic import OLD_PREFIX as _OLD, TMP_PREFIX as _TMP, remove_dir, write_dir_atomically
from rlft.errors import RlftError

COMPLETE = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_SPECIAL_KEYS = ("step", "generators", "extra")


def _remove(path: Path) -> None:
    remove_dir(path, marker=COMPLETE)


def _save_model(model: torch.nn.Module, tokenizer: Any, directory: Path, *, merged: bool = False,
                state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """``model.save_pretrained`` + the tokenizer. A LoRA ``PeftModel`` saves its adapter alone, or with
    ``merged`` the base model with the adapter merged in (plus the adapter in ``adapter/``).
    ``state_dict``: the weights to write instead of the model's own (gathered from an FSDP/DeepSpeed
    engine's shards)."""
    from transformers.utils import logging as hf_logging

    from rlft.models.loading import restore_dropout_in_saved_config
    from rlft.models.lora import is_adapter, save_adapter, save_merged

    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    # transformers >= 5 shows a "Writing model shards" bar that would break the loop's live progress bar.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        if merged and is_adapter(model):
            save_merged(model, directory)
        elif is_adapter(model):
            save_adapter(model, directory, state_dict=state_dict)
        else:
            model.save_pretrained(directory, safe_serialization=True, state_dict=state_dict)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    restore_dropout_in_saved_config(model, directory)  # the RL loop zeroed it in memory only
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


# ---------------------------------------------------------------------------------------------
# Save

def _rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        # Plain tensors and numbers only, so the file loads with torch.load(weights_only=True).
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _split_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON-serializable entries, the rest) of the loop's state, leaving out the special keys."""
    as_json, other = {}, {}
    for key, value in state.items():
        if key in _SPECIAL_KEYS:
            continue
        try:
            json.dumps(value)
            as_json[key] = value
        except (TypeError, ValueError):
            other[key] = _plain(value, key)
    return as_json, other


def _plain(value: Any, where: str) -> Any:
    """``value`` as tensors, numbers, strings and containers only, so that ``extra.pt`` loads with
    ``torch.load(weights_only=True)`` (no unpickling of arbitrary objects): NumPy values become
    tensors or numbers; any other object is an error here rather than a pickle at resume."""
    import numpy as np

    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise RlftError(f"checkpoint: state entry '{where}' is a {type(value).__name__}; store tensors, numbers, "
                    "strings, lists or dicts (a state_dict()), so that checkpoints load without unpickling")


def save_checkpoint(run_dir: str | Path, step: int, *, model: torch.nn.Module, tokenizer: Any,
                    optimizer: torch.optim.Optimizer | None, scheduler: Any, state: dict[str, Any]) -> Path:
    """Write ``run_dir/checkpoints/step-{step:08d}/`` atomically and return its path.

    ``state`` holds the loop's own state: JSON-serializable entries go to ``trainer_state.json``;
    ``state['generators']`` (name -> torch.Generator) to ``rng.pt``; ``state['extra']`` and any
    entry JSON cannot hold (tensors, NumPy values) to ``extra.pt``. :func:`load_checkpoint`
    returns the same entries back. Saving a step that exists already replaces it.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():  # left behind by a crash during an earlier save
        if entry.name.startswith((_TMP, _OLD)) and entry.is_dir():
            _remove(entry)
    generators = state.get("generators") or {}
    as_json, other = _split_state(state)

    def write(d: Path) -> None:
        _save_model(model, tokenizer, d)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), d / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), d / "scheduler.pt")
        torch.save(_rng_state(generators), d / "rng.pt")
        if state.get("extra") is not None or other:
            torch.save({"extra": _plain(state.get("extra"), "extra"), "other": other}, d / "extra.pt")
        text = json.dumps({"step": int(step), **as_json}, indent=2, ensure_ascii=False)
        (d / "trainer_state.json").write_text(text + "\n", encoding="utf-8")

    return write_dir_atomically(root / f"step-{int(step):08d}", write, marker=COMPLETE)


def export_final(run_dir: str | Path, model: torch.nn.Module, tokenizer: Any, *, name: str = "final",
                 value_head: torch.nn.Module | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write model + tokenizer to ``run_dir/{name}/`` atomically (a plain ``from_pretrained`` directory;
    for a LoRA adapter the merged model, with the adapter alone in ``{name}/adapter/``; PPO's value
    head in ``{name}/value_head.safetensors``, which ``from_pretrained`` leaves alone)."""
    from rlft.models.value_head import save_value_head

    def write(d: Path) -> None:
        _save_model(model, tokenizer, d, merged=True, state_dict=state_dict)
        if value_head is not None:
            save_value_head(value_head, d)

    return write_dir_atomically(Path(run_dir) / name, write)


# ---------------------------------------------------------------------------------------------
# Find and prune

def _complete_steps(run_dir: str | Path) -> list[tuple[int, Path]]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and (entry / COMPLETE).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None when there is none."""
    steps = _complete_steps(run_dir)
    return steps[-1][1] if steps else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete step checkpoints; return the deleted paths."""
    if keep < 0:
        raise RlftError(f"config: run.keep_checkpoints must be >= 0, got {keep}")
    steps = _complete_steps(run_dir)
    doomed = [path for _, path in steps[: max(0, len(steps) - keep)]]
    for path in doomed:
        _remove(path)
    return doomed


# ---------------------------------------------------------------------------------------------
# Load

def _tie_groups(model: torch.nn.Module) -> dict[str, set[str]]:
    """state_dict key -> every key naming the same tensor (tied weights, e.g. lm_head = embeddings)."""
    by_tensor: dict[int, set[str]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        by_tensor.setdefault(id(tensor), set()).add(key)
    return {key: keys for keys in by_tensor.values() for key in keys}


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [path / name for name in sorted(set(weight_map.values()))]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise RlftError(f"{path}: no model.safetensors or model.safetensors.index.json in the checkpoint")


def _load_weights(path: Path, model: torch.nn.Module) -> None:
    """Copy the saved weights into ``model`` in place (its optimizer keeps pointing at the same tensors)."""
    from safetensors.torch import load_file

    model = getattr(model, "_orig_mod", model)
    loaded, unexpected = set(), set()
    for file in _weight_files(path):  # one shard at a time, to hold at most one shard in memory
        tensors = load_file(str(file), device="cpu")
        try:
            result = model.load_state_dict(tensors, strict=False)
        except RuntimeError as err:  # shape mismatch: raised even with strict=False
            detail = str(err).strip().splitlines()[-1].strip()
            raise RlftError(f"{file}: checkpoint weights do not fit the model ({detail})") from None
        unexpected.update(result.unexpected_keys)
        loaded.update(set(tensors) - set(result.unexpected_keys))
        del tensors
    groups = _tie_groups(model)
    missing = [k for k in groups if k not in loaded and not (groups[k] & loaded)]
    if not missing and not unexpected:
        return
    # Some architectures are saved under their original (Hub) key names and converted on load
    # (transformers >= 5 weight conversions); from_pretrained knows the mapping, so let it read
    # the files and copy its tensors over.
    fresh, info = type(model).from_pretrained(path, output_loading_info=True)
    if info.get("missing_keys") or info.get("mismatched_keys"):
        keys = sorted(info.get("missing_keys") or info.get("mismatched_keys"))
        raise RlftError(f"{path}: checkpoint weights do not fit the model (missing: {', '.join(map(str, keys[:5]))})")
    model.load_state_dict(fresh.state_dict(), strict=True)


def _keep_implementation(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Keep the kernel choice of the optimizer built for this machine, not the saved one.

    ``Optimizer.load_state_dict`` copies every saved hyperparameter, ``fused`` included, so a run
    saved on a GPU with the fused kernel and resumed where it is unsupported would fail at the
    first step. Editing the saved groups before loading also lets torch place the ``step``
    counters where the kept kernel wants them.
    """
    for saved_group, group in zip(saved.get("param_groups", []), optimizer.param_groups):
        for key in ("fused", "foreach", "capturable"):
            if key in group:
                saved_group[key] = group[key]


def _restore_rng(rng: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    import numpy as np

    random.setstate(rng["python"])
    name, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        states = rng["cuda"][: torch.cuda.device_count()]
        for index, cuda_state in enumerate(states):
            torch.cuda.set_rng_state(cuda_state, index)
    for gen_name, generator in generators.items():
        if gen_name in rng["generators"]:
            generator.set_state(rng["generators"][gen_name])
        else:
            warnings.warn(f"checkpoint has no state for generator {gen_name!r}; it keeps its current state",
                          RuntimeWarning, stacklevel=3)


def load_checkpoint(path: str | Path, *, model: torch.nn.Module | None, optimizer: torch.optim.Optimizer | None,
                    scheduler: Any, generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint` into already-built objects.

    Loads the weights, the optimizer and scheduler states (each skipped when None), and the RNG
    states (Python, NumPy, torch, CUDA and the named ``generators``). Returns the saved state:
    ``step``, the JSON entries, non-JSON entries, and ``extra`` when one was saved.
    """
    path = Path(path)
    if not (path / COMPLETE).is_file():
        hint = "; pass latest_checkpoint(run_dir) for a run directory" if (path / "checkpoints").is_dir() else ""
        raise RlftError(f"{path}: not a complete checkpoint (no {COMPLETE} marker){hint}")
    if model is not None:
        from rlft.models.lora import is_adapter, load_adapter_weights

        if is_adapter(model):
            load_adapter_weights(model, path)
        else:
            _load_weights(path, model)
    # weights_only=True: these files hold tensors, numbers and containers only.
    for obj, name in ((optimizer, "optimizer.pt"), (scheduler, "scheduler.pt")):
        if obj is None:
            continue
        if not (path / name).is_file():
            raise RlftError(f"{path / name}: missing from the checkpoint")
        saved = torch.load(path / name, map_location="cpu", weights_only=True)
        if isinstance(obj, torch.optim.Optimizer):
            _keep_implementation(obj, saved)
        try:
            obj.load_state_dict(saved)
        except (ValueError, KeyError) as err:
            raise RlftError(f"{path / name}: does not match this run's {name[:-3]} ({err})") from None
    _restore_rng(torch.load(path / "rng.pt", map_location="cpu", weights_only=True), generators or {})
    state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    if (path / "extra.pt").is_file():
        # Tensors, numbers and containers only (see _plain): no arbitrary unpickling on resume.
        try:
            saved = torch.load(path / "extra.pt", map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise RlftError(f"{path / 'extra.pt'}: holds objects other than tensors, numbers and "
                            f"containers; refusing to unpickle them ({str(err).splitlines()[0]})") from None
        state.update(saved.get("other") or {})
        if saved.get("extra") is not None:
            state["extra"] = saved["extra"]
    return state


def resume_latest(run_dir: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                  generators: dict[str, torch.Generator], state: dict[str, Any],
                  stateful: dict[str, Any] | None = None) -> int | None:
    """Continue a run from its newest complete checkpoint: the step to go on after, or None if there is none.

    Restores the weights, optimizer, scheduler and RNG states (``generators`` included) in place,
    merges the loop state saved as ``state['state']`` into ``state``, and loads each
    ``stateful[name]`` (an object with ``load_state_dict``) from the ``extra[name]`` that
    ``save_checkpoint`` wrote. One routine for the RL and SFT loops, so their resumes cannot drift.
    """
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return None
    loaded = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, generators=generators)
    state.update(loaded.get("state", {}))
    for name, obj in (stateful or {}).items():
        if name in loaded["extra"]:
            obj.load_state_dict(loaded["extra"][name])
        else:  # a checkpoint written before this part of the state existed
            warnings.warn(f"{ckpt}: no saved state for '{name}'; it starts fresh on resume", stacklevel=2)
    return loaded["step"]
