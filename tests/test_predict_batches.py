"""`predict` batches inputs by size for speed, and still answers in the inputs' order with per-input scores."""

import pytest
import torch

from hf_transfer.cli import main as cli
from hf_transfer.config import UsageError
from hf_transfer.evaluation.inference import evaluate_folder, load_trained, predict
from recipes import sentiment

TEXTS = ["great", "an awful, broken and very long review of a film that nobody should watch again", "fine film",
         "bad", "a lovely, warm and funny story", "it was not good at all, sadly", "ok"]


@pytest.fixture(scope="module")
def trained(tiny_bert, sentiment_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    sentiment.main({"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
                    "test_file": str(sentiment_files["test"]), "output_dir": str(folder), "strategy": "full",
                    "learning_rate": 5e-3, "max_train_steps": 8})
    return folder


def test_sorted_batches_answer_in_input_order_with_each_inputs_scores(trained):
    model, tokenizer, settings = load_trained(trained)
    batched = predict(model, tokenizer, {**settings, "per_device_eval_batch_size": 3}, TEXTS)
    assert [p["text"] for p in batched] == TEXTS
    for text, prediction in zip(TEXTS, batched):
        alone = predict(model, tokenizer, settings, [text])[0]
        assert prediction["label"] == alone["label"]
        for label, score in alone["scores"].items():
            assert prediction["scores"][label] == pytest.approx(score, abs=1e-5)
    assert not torch.is_inference_mode_enabled()  # predict's inference mode ends with it


def test_throughput_is_reported(trained, sentiment_files, tmp_path, capsys):
    results = evaluate_folder(trained, str(sentiment_files["test"]), tmp_path)
    assert results["test_samples_per_second"] > 0 and results["test_samples"] == 40
    cli(["predict", str(trained), *TEXTS[:2]])
    assert "2 predictions, " in capsys.readouterr().err
    cli(["predict", str(trained), TEXTS[0]])
    assert "\n1 prediction, " in capsys.readouterr().err


def test_evaluate_shows_its_progress_on_stderr(trained, sentiment_files, tmp_path, capsys):
    cli(["evaluate", str(trained), "--test_file", str(sentiment_files["test"]), "--report_dir", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert "Predicting: 100%" in captured.err and "40/40" in captured.err
    assert "Predicting" not in captured.out


@pytest.mark.parametrize("given", ["photos/cat.JPG", "clip.wav", "EXISTING"])
def test_a_text_model_refuses_a_file_path_it_would_classify_as_text(trained, given, tmp_path):
    existing = tmp_path / "review.txt"
    existing.write_text("a great film")
    given = str(existing) if given == "EXISTING" else given
    model, tokenizer, settings = load_trained(trained)
    with pytest.raises(UsageError, match=f"{given!r}.*a text model classifies the text itself"):
        predict(model, tokenizer, settings, ["a fine film", given])
    assert len(predict(model, tokenizer, settings, ["great" * 60])) == 1  # too long for a file name: still a text
