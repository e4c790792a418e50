"""`hf-transfer rank` on tiny text, image and audio models: outputs, the feature cache, pooling, early errors."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from hf_transfer.cli import main as cli
from hf_transfer.config import UsageError
from hf_transfer.models import pooling
from hf_transfer.selection import embeddings
from hf_transfer.selection.rank import main as rank
from hf_transfer.selection.rank import parse_candidate


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def forward_passes(monkeypatch):
    """The (candidate, split size) of every feature extraction that ran a model."""
    calls = []
    real = embeddings.pooled_features

    def counted(accelerator, model, loader, pooling):
        calls.append((model.config.model_type, pooling, len(loader.dataset)))
        return real(accelerator, model, loader, pooling)

    monkeypatch.setattr(embeddings, "pooled_features", counted)
    return calls


def text_flags(sentiment_files, output_dir) -> list[str]:
    return ["--train_file", str(sentiment_files["train"]), "--test_file", str(sentiment_files["test"]),
            "--output_dir", str(output_dir)]


def test_text_rank_writes_table_json_and_chart_and_reuses_cached_features(tiny_bert, sentiment_files, tmp_path,
                                                                          forward_passes, capsys):
    flags = text_flags(sentiment_files, tmp_path)
    cli(["rank", "--models", str(tiny_bert), f"random:{tiny_bert}", "--pooling", "mean", "cls", *flags])
    saved = json.loads((tmp_path / "rank.json").read_text())
    rows = saved["candidates"]
    assert len(rows) == 4 and {(r["random_init"], r["pooling"]) for r in rows} == {
        (False, "mean"), (False, "cls"), (True, "mean"), (True, "cls")}
    logme = [row["logme"] for row in rows]
    assert logme == sorted(logme, reverse=True)  # best first
    assert saved["examples"] == {"train": 160, "held_out": 40, "test": 40}
    assert set(saved["kendall_tau"]) == {"logme", "h_score", "regularized_h_score", "knn_accuracy", "probe_accuracy"}
    for row in rows:
        assert 0 <= row["knn_accuracy"] <= 1 and 0 <= row["test_probe_accuracy"] <= 1
    assert (tmp_path / "rank.png").read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out
    assert f"random:{tiny_bert}" in table and "test probe acc" in table
    assert len(forward_passes) == 8  # 2 models x 2 poolings x (train, test)

    # Again with layers, and the test file as the validation split: the first run cached every layer and the
    # test file's features, and k-NN and the probe are checked on it instead of a held-out part, so the probe's
    # two accuracies agree.
    forward_passes.clear()
    rank(["--models", str(tiny_bert), f"{tiny_bert}@1", "--layers", "all", "--pooling", "mean", *flags,
          "--validation_file", str(sentiment_files["test"])])
    saved = json.loads((tmp_path / "rank.json").read_text())
    again = saved["candidates"]
    assert forward_passes == []
    assert saved["examples"] == {"train": 160, "held_out": 40, "test": 40}
    assert all(row["probe_accuracy"] == row["test_probe_accuracy"] for row in again)
    assert sorted(row["layer"] for row in again) == [0, 1, 2, 3]  # @1 once, and the 3 layers + embeddings
    # The last layer's hidden state is BERT's final output: same features, same scores as the first run.
    final = next(r for r in rows if not r["random_init"] and r["pooling"] == "mean")
    assert next(r for r in again if r["layer"] == 3)["logme"] == pytest.approx(final["logme"], abs=1e-6)


def test_image_rank_scores_every_layer(tiny_vit, images, tmp_path, forward_passes):
    results = rank(["--models", str(tiny_vit), f"random:{tiny_vit}", "--layers", "all", "--pooling", "cls",
                    "--train_dir", str(images / "train"), "--test_dir", str(images / "val"),
                    "--validation_split_percentage", "50", "--knn_neighbours", "3", "--output_dir", str(tmp_path)])
    assert results["task"] == "image-classification"
    assert sorted((row["random_init"], row["layer"]) for row in results["candidates"]) == [
        (False, 0), (False, 1), (False, 2), (True, 0), (True, 1), (True, 2)]
    assert (tmp_path / "rank.png").is_file() and len(forward_passes) == 4


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A Whisper encoder-decoder of a few thousand weights with the pretrained 30 s window: rank keeps its encoder."""
    folder = tmp_path_factory.mktemp("tiny-whisper")
    config = WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, vocab_size=64,
                           max_target_positions=8, decoder_start_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    WhisperFeatureExtractor().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model", ["tiny_wav2vec2", "tiny_whisper"])
def test_audio_rank_scores_every_layer(model, tones, tmp_path, request):
    folder = request.getfixturevalue(model)
    results = rank(["--models", str(folder), "--layers", "all", "--train_dir", str(tones / "train"),
                    "--validation_split_percentage", "50", "--knn_neighbours", "3", "--output_dir", str(tmp_path)])
    assert results["task"] == "audio-classification"
    assert [row["layer"] for row in sorted(results["candidates"], key=lambda r: r["layer"])] == [0, 1, 2]
    assert all(np.isfinite(row["logme"]) for row in results["candidates"])


def test_whisper_is_scored_in_the_short_window(tiny_whisper, tones, tmp_path, monkeypatch):
    """Rank crops Whisper's 30 s window to --max_duration_seconds (whole seconds), as the audio recipe does."""
    seen, pooled = [], embeddings.pooled_features

    def spy(accelerator, model, loader, pooling):
        seen.append((next(iter(loader))["input_features"].shape[-1], model.embed_positions.num_embeddings))
        return pooled(accelerator, model, loader, pooling)

    monkeypatch.setattr(embeddings, "pooled_features", spy)
    rank(["--models", str(tiny_whisper), "--train_dir", str(tones / "train"), "--max_duration_seconds", "1.5",
          "--validation_split_percentage", "50", "--knn_neighbours", "3", "--output_dir", str(tmp_path)])
    assert seen and set(seen) == {(200, 100)}  # 2 s: 200 mel frames, 100 encoder positions


def test_audio_mean_pooling_keeps_to_the_real_frames(tiny_whisper):
    """Whisper pads every clip to 30 s: the mean must cover the clip's frames (2 mel frames each), not the silence."""
    model = embeddings.load_backbone(str(tiny_whisper), random_init=False, seed=0)
    hidden = torch.arange(1500, dtype=torch.float32).reshape(1, 1500, 1)
    mask = pooling.position_mask(model, torch.tensor([[1] * 100 + [0] * 2900]), 1500)
    assert mask.sum() == 50
    assert pooling.pool(hidden, mask, "mean").item() == pytest.approx(24.5)  # mean of 0..49


def test_mean_pooling_ignores_padding(tiny_bert):
    """A sentence's features are the same alone and batched beside a longer one."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    short, long = "the film was great", "the film was great and lovely and superb and wonderful to the end"

    def features(texts):
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        return pooling.pool(hidden, batch["attention_mask"], "mean")

    alone, batched = features([short]), features([short, long])
    assert batched.shape == (2, 32)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)
    # Hand check of the masked mean: positions 2 and 3 are padding.
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0], [100.0, 100.0]]])
    assert pooling.pool(hidden, torch.tensor([[1, 1, 0, 0]]), "mean").tolist() == [[2.0, 3.0]]
    assert pooling.pool(hidden, torch.tensor([[1, 1, 0, 0]]), "cls").tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize("spelled, expected", [
    ("builtin:all-MiniLM-L6-v2", ("builtin:all-MiniLM-L6-v2", False, None)),
    ("random:org/model@4", ("org/model", True, 4)),
    ("./folder@0", ("./folder", False, 0)),
])
def test_candidate_spelling(spelled, expected):
    assert parse_candidate(spelled) == expected


@pytest.mark.parametrize("models, extra, message", [
    (["builtin:no-such-model"], [], r"unknown built-in model 'builtin:no-such-model'"),
    (["{bert}@top"], [], r"the part after @ must be a layer number, got 'top'"),
    (["{bert}@9"], [], r"has layers 0 \(embeddings\) to 3; got 9"),
    (["{bert}"], ["--text_column", "review"], r"no text column 'review'; columns are text, label$"),
    (["{bert}"], ["--label_column", "stars"], r"no label column 'stars'; columns are text, label"),
    (["{bert}"], ["--pooling", "max"], r"--pooling must be one of mean, cls; got 'max'"),
    (["{bert}", "{vit}"], [], r"the candidates read different inputs"),
    (["/no/such/model"], [], r"--models /no/such/model: no such folder"),
    (["random:./no-model@2"], [], r"--models ./no-model: no such folder"),
])
def test_bad_input_fails_before_any_forward_pass(tiny_bert, tiny_vit, sentiment_files, tmp_path, forward_passes,
                                                 models, extra, message):
    models = [m.format(bert=tiny_bert, vit=tiny_vit) for m in models]
    with pytest.raises(UsageError, match=message):
        rank(["--models", *models, *text_flags(sentiment_files, tmp_path), *extra])
    assert forward_passes == []


def test_fingerprint_takes_texts_longer_than_a_file_name(tmp_path):
    """A news article is no file name: longer than the system allows (255 bytes), it is hashed as text, no OSError."""
    article = "word " * 200
    assert embeddings.data_fingerprint([article]) != embeddings.data_fingerprint([article + "more"])
    # A file's size is still part of its fingerprint.
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"ab")
    before = embeddings.data_fingerprint([str(clip)])
    clip.write_bytes(b"abc")
    assert embeddings.data_fingerprint([str(clip)]) != before


def scored_rows(logme: list[float], h_score: list[float]) -> list[dict]:
    return [{"candidate": f"model-{i}", "pooling": "mean", "random_init": False, "logme": value, "h_score": h,
             "regularized_h_score": 0.1 * i, "knn_accuracy": 0.5 + 0.1 * i, "probe_accuracy": 0.6 + 0.1 * i}
            for i, (value, h) in enumerate(zip(logme, h_score))]


def test_a_score_with_one_value_for_every_candidate_is_said_to_rank_nothing():
    from hf_transfer.selection.rank import constant_score_notes

    assert constant_score_notes(scored_rows([-0.4, -0.9], [1.0, 1.0]), num_classes=2) == [
        "H is 1.0000 for every candidate: it does not tell them apart here (its ceiling, classes - 1, which H-score "
        "reaches when the features have as many dimensions as there are training examples, or more; reg. H shrinks the "
        "covariance and still ranks them)."]
    assert constant_score_notes(scored_rows([-0.4, -0.4], [0.3, 0.7]), num_classes=3) == [
        "LogME is -0.4000 for every candidate: it does not tell them apart here."]
    assert constant_score_notes(scored_rows([-0.4, -0.9], [0.3, 0.7]), num_classes=2) == []
    assert constant_score_notes(scored_rows([-0.4], [1.0]), num_classes=2) == []  # one candidate: nothing to rank


def test_negative_scores_are_drawn_as_dots_within_their_range(tmp_path, monkeypatch):
    """Bars from 0 would make the worst (most negative) LogME the longest bar."""
    from hf_transfer.selection import rank as rank_module

    figures = []
    monkeypatch.setattr(rank_module, "save_figure", lambda figure, path: figures.append(figure))
    rank_module.plot_scores(scored_rows([-0.4, -0.9, -1.3], [1.0, 1.0, 1.0]), tmp_path / "rank.png")
    logme = figures[0].axes[0]
    assert logme.get_title() == "LogME" and not logme.patches
    low, high = logme.get_xlim()
    assert low < -1.3 and -0.4 < high < 0
    [dots] = logme.collections
    assert dots.get_offsets()[:, 0].tolist() == [-0.4, -0.9, -1.3]
