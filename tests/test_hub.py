"""`push_folder` and `hf-transfer push` against the fake Hub (tests/hub_server.py): what lands, and what never does."""

import hashlib
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_transfer import cli
from hf_transfer.config import UsageError
from hf_transfer.publish.hub import push_folder
from hf_transfer.recipes import sentiment

REPO = "user/tiny-sentiment"
# The least a LoRA push must hold: adapter + config with the labels, tokenizer, card, report, metrics, settings.
LORA_FILES = {"adapter_model.safetensors", "adapter_config.json", "config.json", "tokenizer.json",
              "tokenizer_config.json", "README.md", "eval_report.md", "all_results.json", "run_config.yaml",
              "confusion_matrix.png", "roc_curve.png"}


def train(output_dir: Path, tiny_bert, sentiment_files, **settings) -> Path:
    """The sentiment recipe with LoRA for 6 steps on the tiny model; `base_model_id` gives the card a base_model."""
    sentiment.main({"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
                    "test_file": str(sentiment_files["test"]), "strategy": "lora", "max_train_steps": 6,
                    "per_device_train_batch_size": 16, "learning_rate": 5e-3, "save_steps": 3,
                    "base_model_id": "google-bert/bert-base-uncased", "output_dir": str(output_dir), **settings})
    return output_dir


@pytest.fixture(scope="module")
def lora_output(tmp_path_factory, tiny_bert, sentiment_files):
    """A real output folder (trained once per file), with what a push must leave behind next to it."""
    output_dir = train(tmp_path_factory.mktemp("lora") / "out", tiny_bert, sentiment_files)
    assert list((output_dir / "checkpoints").rglob("*.safetensors")), "save_steps should have left checkpoints"
    for junk in ("evaluation/eval_report.md", "runs/events.out.tfevents.1", ".partial-x1/model.safetensors",
                 ".all_results.json.tmp"):
        (output_dir / junk).parent.mkdir(parents=True, exist_ok=True)
        (output_dir / junk).write_text("not for the Hub")
    return output_dir


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def shareable_files(folder: Path) -> set[str]:
    """Every file at the top of the folder that is not hidden, less the card's render inputs and the per-item
    predictions (they quote the user's data): what a push uploads."""
    return {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
            and p.name != "card_context.json" and not p.name.endswith("_predictions.jsonl")}


def test_push_uploads_the_output_byte_for_byte_in_one_commit(fake_hub, lora_output):
    url = push_folder(lora_output, REPO)

    files = fake_hub.files(REPO)
    assert url == f"{fake_hub.url}/{REPO}"
    assert LORA_FILES <= set(files) == shareable_files(lora_output)
    assert all(files[name] == (lora_output / name).read_bytes() for name in files if name != "README.md")
    assert not any("/" in name for name in files)  # nothing from checkpoints/, evaluation/, runs/, .partial-*/
    assert len(fake_hub.commits) == 1


def test_a_card_rendered_before_the_push_is_retargeted_at_the_repo(fake_hub, lora_output):
    """Trained without --hub_model_id, pushed later: the card must name the repo, not the local folder."""
    push_folder(lora_output, REPO)

    local, pushed = (lora_output / "README.md").read_text(), fake_hub.files(REPO)["README.md"].decode()
    assert str(lora_output) in local
    assert str(lora_output) not in pushed
    assert f'PeftModel.from_pretrained(base, "{REPO}")' in pushed
    assert ModelCard(pushed).data.eval_results[0].metric_value == ModelCard(local).data.eval_results[0].metric_value


def test_the_pushed_card_names_the_base_model_and_the_metrics(fake_hub, lora_output):
    push_folder(lora_output, REPO)

    card = ModelCard(fake_hub.files(REPO)["README.md"].decode())
    assert card.data.base_model == "google-bert/bert-base-uncased"
    assert card.data.library_name == "peft"
    metrics = {(r.dataset_split, r.metric_type) for r in card.data.eval_results if r.metric_config is None}
    assert {("validation", "accuracy"), ("test", "accuracy"), ("test", "roc_auc")} <= metrics


def test_pushing_again_to_the_existing_repo_works(fake_hub, lora_output):
    push_folder(lora_output, REPO)
    push_folder(lora_output, REPO)  # the repo exists now; no file changed, so huggingface_hub skips the commit

    assert len(fake_hub.commits) == 1
    assert set(fake_hub.files(REPO)) == shareable_files(lora_output)


def test_revision_pushes_to_a_new_branch(fake_hub, lora_output):
    url = push_folder(lora_output, REPO, revision="experiment-1")

    assert url == f"{fake_hub.url}/{REPO}/tree/experiment-1"
    assert set(fake_hub.files(REPO, "experiment-1")) == shareable_files(lora_output)
    assert fake_hub.files(REPO, "main") == {}


def test_a_failed_push_explains_how_to_retry_and_leaves_the_folder_alone(fake_hub, lora_output):
    before = folder_hash(lora_output)
    fake_hub.fail_with = 500
    with pytest.raises(UsageError, match="HTTP 500") as failure:
        push_folder(lora_output, REPO, revision="exp", token=fake_hub.token)
    assert f"hf-transfer push {lora_output} --repo_id {REPO} --revision exp" in str(failure.value)
    assert fake_hub.token not in str(failure.value)
    assert folder_hash(lora_output) == before

    fake_hub.fail_with = None
    push_folder(lora_output, REPO, revision="exp")
    assert set(fake_hub.files(REPO, "exp")) == shareable_files(lora_output)
    assert folder_hash(lora_output) == before


def test_an_unreachable_hub_is_a_usage_error(fake_hub, lora_output):
    fake_hub.stop()
    with pytest.raises(UsageError, match="could not reach"):
        push_folder(lora_output, REPO)


def test_a_wrong_token_says_to_check_it(fake_hub, lora_output):
    with pytest.raises(UsageError, match="HTTP 401.*check that your token"):
        push_folder(lora_output, REPO, token="hf_wrong")


@pytest.mark.parametrize("repo_id, folder, message", [
    ("not a repo id", None, "not a valid repo id"),
    (REPO, "missing", "no such folder: .*missing"),
])
def test_bad_input_is_a_usage_error(fake_hub, lora_output, tmp_path, repo_id, folder, message):
    with pytest.raises(UsageError, match=message):
        push_folder(tmp_path / folder if folder else lora_output, repo_id)


def test_push_from_the_command_line(fake_hub, lora_output, capsys):
    cli.main(["push", str(lora_output), "--repo_id", REPO, "--private"])

    assert capsys.readouterr().out.strip() == f"{fake_hub.url}/{REPO}"
    assert fake_hub.repos[REPO]["private"]
    assert set(fake_hub.files(REPO)) == shareable_files(lora_output)


def test_merge_adapter_pushes_a_plain_transformers_model(fake_hub, lora_output):
    push_folder(lora_output, REPO, merge_adapter=True)

    files = fake_hub.files(REPO)
    assert {"model.safetensors", "config.json", "tokenizer.json", "eval_report.md", "roc_curve.png"} <= set(files)
    assert not {"adapter_model.safetensors", "adapter_config.json"} & set(files)
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "transformers"
    assert card.data.base_model == "google-bert/bert-base-uncased"
    assert f'pipeline("text-classification", model="{REPO}")' in card.text  # loads without peft


def test_training_with_push_to_hub_pushes_and_never_writes_the_token(fake_hub, tmp_path, tiny_bert, sentiment_files,
                                                                     monkeypatch):
    monkeypatch.delenv("HF_TOKEN")  # only the flag can authenticate, so a pushed repo proves it was used
    output_dir = train(tmp_path / "out", tiny_bert, sentiment_files, push_to_hub=True, hub_model_id=REPO,
                       hub_revision="run-2", hub_token=fake_hub.token)

    files = fake_hub.files(REPO, "run-2")
    assert set(files) == shareable_files(output_dir)
    token = fake_hub.token.encode()
    assert not [name for name, data in files.items() if token in data]
    assert not [p for p in output_dir.rglob("*") if p.is_file() and token in p.read_bytes()]


@pytest.mark.parametrize("token, message", [
    ("hf_wrong", "--push_to_hub: the Hub refused the token .*HTTP 401"),
    (None, "--push_to_hub: no Hub token found"),
])
def test_push_to_hub_checks_the_token_before_training(fake_hub, tmp_path, tiny_bert, sentiment_files, monkeypatch,
                                                      token, message):
    """Not after hours of training: the push's token is checked first."""
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no login either
    with pytest.raises(UsageError, match=message):
        train(tmp_path / "out", tiny_bert, sentiment_files, push_to_hub=True, hub_model_id=REPO, hub_token=token)
    assert not (tmp_path / "out" / "train_log.json").exists() and not (tmp_path / "out" / "checkpoints").exists()
