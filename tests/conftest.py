"""Fixtures shared by the tests: tiny models, small data sets, a fake Hub."""

import os

# Every test runs as on a machine without the Hub; huggingface_hub reads these at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# fp32 unless a test asks otherwise, as `accelerate launch --mixed_precision no` would pin it: the tests score saved
# models again in fp32 and compare with training's scores, which bf16 (training.precision's pick on a CPU with
# AVX512-BF16 or AMX) would shift.
os.environ.setdefault("ACCELERATE_MIXED_PRECISION", "no")

import pytest  # noqa: E402
from fixtures import (  # noqa: E402
    make_tiny_efficientnet,
    make_tiny_model,
    make_tiny_vit,
    make_tiny_wav2vec2,
    make_tiny_whisper,
    sentences,
    write_csv,
    write_image_folders,
    write_speech_data,
    write_tone_folders,
)
from hub_server import FakeHub  # noqa: E402

from hf_transfer.recipes import image_classification, sentiment  # noqa: E402


@pytest.fixture
def fake_hub(monkeypatch):
    """A started FakeHub (tests/hub_server.py) that huggingface_hub talks to instead of huggingface.co.

    `HfApi(endpoint=fake_hub.url, token=fake_hub.token)` works without this patching; it is here so that
    code creating a plain `HfApi()` (or calling `huggingface_hub.upload_folder(...)` etc.) hits the fake too.
    """
    from huggingface_hub import constants, hf_api

    with FakeHub() as hub:
        # huggingface_hub reads HF_ENDPOINT once, at import, into constants.ENDPOINT; HfApi() reads that
        # constant when constructed, and the module-level `huggingface_hub.create_repo/upload_folder/...`
        # are bound to an HfApi built at import time => patch the constants and that instance. The env var is
        # for subprocesses, which import huggingface_hub afresh.
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(hf_api.api, "endpoint", hub.url)
        # With hf_xet installed, huggingface_hub 2.4 uploads every LFS file through Xet storage whatever the
        # server says; the fake only speaks classic LFS. is_xet_available() reads this constant at call time.
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        # Token for a plain HfApi(); read from the environment on every call (it beats ~/.cache/huggingface/token).
        monkeypatch.setenv("HF_TOKEN", hub.token)
        # HF_HUB_OFFLINE=1 (also read at import) would block every request, the loopback ones included.
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield hub


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory):
    """train.csv (160 rows) and test.csv (40 rows) of two-class reviews."""
    folder = tmp_path_factory.mktemp("sentiment")
    return {"train": write_csv(folder / "train.csv", sentences(160, seed=0)),
            "test": write_csv(folder / "test.csv", sentences(40, seed=1))}


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    return make_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """train/ and val/ class folders of red and blue squares (16 and 8 per colour), and train.csv / val.csv."""
    return write_image_folders(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def tiny_efficientnet(tmp_path_factory):
    return make_tiny_efficientnet(tmp_path_factory.mktemp("tiny-efficientnet"))


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory):
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("tiny-wav2vec2"))


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory):
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="session")
def tones(tmp_path_factory):
    """train/ and test/ class folders of low and high tones (12 and 4 per class), and train.csv / test.csv."""
    return write_tone_folders(tmp_path_factory.mktemp("tones"))


@pytest.fixture(scope="session")
def speech_data(tmp_path_factory):
    """clips, train.csv / test.csv of path,transcript, and the tiny CTC model in tiny-wav2vec2/."""
    return write_speech_data(tmp_path_factory.mktemp("speech"))


def with_sites(rows: list[dict], sites: tuple[str, ...]) -> list[dict]:
    """`rows`, each tagged with a site in turn."""
    return [{**row, "site": sites[i % len(sites)]} for i, row in enumerate(rows)]


@pytest.fixture(scope="session")
def demo_text_run(tiny_bert, tmp_path_factory):
    """For `hf-transfer demo`'s tests: a tiny text classifier with a calibrated temperature, a threshold chosen on
    validation and per-site scores (test sites apart from training's)."""
    folder = tmp_path_factory.mktemp("text-demo")
    train = write_csv(folder / "train.csv", with_sites(sentences(160), ("east", "west", "centre")))
    test = write_csv(folder / "test.csv", with_sites(sentences(40, seed=1), ("north", "south")))
    sentiment.main({"model_name_or_path": str(tiny_bert), "train_file": str(train), "test_file": str(test),
                    "output_dir": str(folder / "tiny-sentiment"), "strategy": "full", "learning_rate": 5e-3,
                    "max_train_steps": 12, "per_device_train_batch_size": 16, "group_column": "site",
                    "decision_threshold": "auto", "calibrate": "temperature", "bootstrap_resamples": 50})
    return folder / "tiny-sentiment"


@pytest.fixture(scope="session")
def demo_image_run(tiny_vit, images, tmp_path_factory):
    """For `hf-transfer demo`'s tests: a tiny image classifier."""
    output_dir = tmp_path_factory.mktemp("image-demo") / "tiny-colours"
    image_classification.main({"model_name_or_path": str(tiny_vit), "output_dir": str(output_dir),
                               "train_dir": str(images / "train"), "validation_dir": str(images / "val"),
                               "test_dir": str(images / "val"), "learning_rate": 5e-3,
                               "per_device_train_batch_size": 8, "max_train_steps": 2, "bootstrap_resamples": 50})
    return output_dir
