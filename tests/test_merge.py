"""`merge_adapter`: a trained LoRA folder folded into a plain transformers model that gives the same logits."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, pipeline

from hf_transfer import cli
from hf_transfer.config import UsageError
from hf_transfer.evaluation.inference import load_trained, predict
from hf_transfer.publish.merge import merge_adapter
from hf_transfer.recipes import sentiment
from hf_transfer.training.run_folder import RUN_RECORD

TEXTS = ["the film was great and lovely", "this phone was awful and broken", "our meal was superb"]


@pytest.fixture(scope="module")
def lora_output(tmp_path_factory, tiny_bert, sentiment_files):
    """A real LoRA output folder: the sentiment recipe for 6 steps on the tiny model (trained once per file)."""
    output_dir = tmp_path_factory.mktemp("lora") / "out"
    sentiment.main({"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
                    "test_file": str(sentiment_files["test"]), "strategy": "lora", "max_train_steps": 6,
                    "per_device_train_batch_size": 16, "learning_rate": 5e-3, "output_dir": str(output_dir)})
    return output_dir


@pytest.fixture(scope="module")
def merged(lora_output, tmp_path_factory):
    return merge_adapter(lora_output, tmp_path_factory.mktemp("merged") / "model")


def test_merged_logits_match_the_adapter(lora_output, merged):
    adapter, tokenizer, _ = load_trained(lora_output)
    plain = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected, got = adapter(**batch).logits, plain(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert not (merged / "adapter_config.json").exists()


def test_merged_folder_runs_in_a_plain_pipeline(merged):
    classifier = pipeline("text-classification", model=str(merged))
    labels = {prediction["label"] for prediction in classifier(TEXTS)}
    assert labels <= {"negative", "positive"}


def test_merge_from_the_command_line(lora_output, tmp_path, capsys):
    cli.main(["merge", str(lora_output), "--out", str(tmp_path / "merged")])
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert "Merged model:" in capsys.readouterr().out


def test_a_folder_without_an_adapter_is_refused(tiny_bert, tmp_path):
    with pytest.raises(UsageError, match="no LoRA adapter"):
        merge_adapter(tiny_bert, tmp_path / "merged")


def test_merging_into_a_run_folder_is_refused(lora_output, tmp_path):
    with pytest.raises(UsageError, match="--out .* holds a training run"):
        merge_adapter(lora_output, lora_output)
    other = tmp_path / "other_run"  # another run, finished or not: the merged files would replace its own
    other.mkdir()
    (other / RUN_RECORD).write_text('{"complete": false}')
    with pytest.raises(UsageError, match=f"--out {other} holds a training run"):
        merge_adapter(lora_output, other)
    assert [p.name for p in other.iterdir()] == [RUN_RECORD]


def test_merge_takes_the_hub_repo_the_card_names(lora_output, fake_hub, tmp_path, monkeypatch):
    """The adapter card says `hf-transfer merge <repo_id>`: the pushed files are downloaded, then merged."""
    from hf_transfer.publish import merge
    from hf_transfer.publish.hub import push_folder

    push_folder(lora_output, "user/tiny-lora")
    downloaded = []

    def snapshot_download(repo_id):  # the fake Hub stores uploads but serves no downloads: read what it holds
        downloaded.append(repo_id)
        for name, data in fake_hub.files(repo_id).items():
            (tmp_path / "snapshot" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "snapshot" / name).write_bytes(data)
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(merge, "snapshot_download", snapshot_download)
    cli.main(["merge", "user/tiny-lora", "--out", str(tmp_path / "merged")])
    assert downloaded == ["user/tiny-lora"]
    local = merge_adapter(lora_output, tmp_path / "merged-locally")
    for name, tensor in load_file(str(local / "model.safetensors")).items():
        torch.testing.assert_close(load_file(str(tmp_path / "merged" / "model.safetensors"))[name], tensor)


def test_a_repo_that_can_not_be_downloaded_is_named(tmp_path):
    with pytest.raises(UsageError, match="nobody/nothing is not a folder here, and downloading it as a Hub repo"):
        merge_adapter("nobody/nothing", tmp_path / "merged")


@pytest.fixture(scope="module")
def mean_pooled_output(tmp_path_factory, tiny_bert, sentiment_files):
    """A LoRA output whose classifier reads mean-pooled features (`--pooling mean`): a head transformers lacks."""
    output_dir = tmp_path_factory.mktemp("lora-mean") / "out"
    sentiment.main({"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
                    "test_file": str(sentiment_files["test"]), "strategy": "lora", "pooling": "mean",
                    "max_train_steps": 6, "per_device_train_batch_size": 16, "learning_rate": 5e-3,
                    "output_dir": str(output_dir)})
    return output_dir


def test_a_merged_mean_pooled_model_predicts_as_before_in_predict_and_pipeline(mean_pooled_output, tmp_path):
    merged = merge_adapter(mean_pooled_output, tmp_path / "merged")
    before = predict(*load_trained(mean_pooled_output), TEXTS)
    after = predict(*load_trained(merged), TEXTS)
    for was, now in zip(before, after):
        assert now["scores"] == pytest.approx(was["scores"], abs=1e-5)
    classifier = pipeline("text-classification", model=str(merged), trust_remote_code=True, top_k=None)
    for was, now in zip(before, classifier(TEXTS)):
        assert {score["label"]: score["score"] for score in now} == pytest.approx(was["scores"], abs=1e-5)


def test_a_pushed_merged_mean_pooled_model_carries_its_head_code_and_says_how_to_load_it(mean_pooled_output,
                                                                                         fake_hub):
    from hf_transfer.publish.hub import push_folder

    push_folder(mean_pooled_output, "user/tiny-mean", merge_adapter=True)
    files = fake_hub.files("user/tiny-mean")
    assert {"heads.safetensors", "heads.json", "pooled_head_model.py"} <= set(files)
    card = files["README.md"].decode()
    assert 'pipeline("text-classification", model="user/tiny-mean", trust_remote_code=True)' in card
    assert "does not build that head" not in card
