"""`hf-transfer demo`: the Gradio page answers as `predict` does, says what is wrong with bad input, shows the test
metrics with their intervals; the other commands never import gradio; `push --space` creates a Space that serves the
pushed model."""

import importlib.util
import socket
import subprocess
import sys

import pytest
import soundfile as sf
from fixtures import tone, write_csv
from huggingface_hub import SpaceCard
from test_targets import scored_rows, tagged_rows
from transformers import PretrainedConfig

from hf_transfer.cli import main as cli
from hf_transfer.evaluation.inference import predict
from hf_transfer.publish import merge
from hf_transfer.recipes import audio_classification, sentiment, speech_recognition

gr = pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[app]'")

from hf_transfer.publish.demo import Demo, answer_markdown, build_app, metrics_markdown, respond  # noqa: E402


@pytest.fixture(scope="module")
def audio_run(tiny_wav2vec2, tones, tmp_path_factory):
    """An audio classifier that hears 0.25 s."""
    output_dir = tmp_path_factory.mktemp("audio-demo") / "out"
    audio_classification.main({"model_name_or_path": str(tiny_wav2vec2), "output_dir": str(output_dir),
                               "train_dir": str(tones / "train"), "test_dir": str(tones / "test"),
                               "max_duration_seconds": 0.25, "validation_split_percentage": 25,
                               "per_device_train_batch_size": 8, "max_train_steps": 2, "bootstrap_resamples": 50})
    return output_dir


def test_text_page_answers_as_predict_does_with_the_saved_operating_point(demo_text_run):
    demo = Demo.load(demo_text_run)
    assert demo.model.config.decision_threshold is not None and demo.model.config.calibration_temperature != 1.0
    text = "the hotel was lovely and superb"
    [expected] = predict(demo.model, demo.processor, demo.settings, [text])

    answer, note = respond(demo, text)

    assert demo.answer(text) == (expected, "")
    assert answer.startswith(f"**{expected['label']}** ({expected['score']:.4f})")
    for label, score in expected["scores"].items():
        assert f"| {label} | {score:.4f} |" in answer
    assert note == ""


def test_image_page_answers_as_predict_does_on_the_uploaded_file(demo_image_run, images):
    demo = Demo.load(demo_image_run)
    path = str(images / "val" / "red" / "0.png")
    [expected] = predict(demo.model, demo.processor, demo.settings, [path])

    answer, note = respond(demo, {"path": path, "orig_name": "0.png"})  # gradio's raw upload

    assert demo.answer(path) == (expected, "")
    assert answer.startswith(f"**{expected['label']}** ({expected['score']:.4f})") and note == ""


@pytest.mark.parametrize("text", ["", "   \n"])
def test_an_empty_text_gets_a_message_not_an_answer(demo_text_run, text):
    assert respond(Demo.load(demo_text_run), text) == ("", "Type a text first: an empty text has nothing to classify.")


def test_an_unreadable_image_or_none_gets_a_message(demo_image_run, tmp_path):
    demo = Demo.load(demo_image_run)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")

    answer, note = respond(demo, {"path": str(broken), "orig_name": "holiday.png"})  # as gradio hands it over

    assert answer == "" and note.startswith("That image can't be used: can't read image holiday.png")
    assert str(broken) not in note  # gradio's copy means nothing to the user
    assert respond(demo, None) == ("", "Give an image first: upload a file.")


def test_audio_page_says_where_a_long_clip_was_cut_and_names_an_unreadable_file(audio_run, tmp_path):
    demo = Demo.load(audio_run)
    clip, short, broken = tmp_path / "long.wav", tmp_path / "short.wav", tmp_path / "broken.wav"
    sf.write(clip, tone(440.0, 1.0, 16000), 16000)
    sf.write(short, tone(440.0, 0.2, 16000), 16000)
    broken.write_bytes(b"RIFF not really")
    [expected] = predict(demo.model, demo.processor, demo.settings, [str(clip)])

    answer, note = respond(demo, str(clip))

    assert answer.startswith(f"**{expected['label']}** ({expected['score']:.4f})")
    assert note == ("The clip is 1.00 s long and the model hears 0.25 s: it answered on the middle, from 0.38 s to "
                    "0.62 s. The rest was cut.")
    assert respond(demo, str(short))[1] == ""
    answer, note = respond(demo, str(broken))
    assert answer == "" and note.startswith(f"That audio can't be used: can't read audio file {broken}")


def test_metrics_panel_shows_the_intervals_and_the_worst_group(demo_text_run):
    demo = Demo.load(demo_text_run)
    results = demo.results

    panel = metrics_markdown(results, demo.settings["confidence_level"])

    assert f"the test split ({results['test_samples']} items)" in panel and "| metric | score | 95% interval |" in panel
    assert (f"| accuracy | {results['test_accuracy']:.4f} | [{results['test_accuracy_ci_low']:.4f}, "
            f"{results['test_accuracy_ci_high']:.4f}] |") in panel
    assert f"**Worst group:** {results['test_worst_group']} (accuracy " in panel
    assert metrics_markdown({}, 0.95).startswith("This run has no test scores")


def test_the_page_holds_the_plots_and_test_examples(demo_text_run):
    app = build_app(Demo.load(demo_text_run))

    images = [block for block in app.blocks.values() if isinstance(block, gr.Image)]
    examples = next(block for block in app.blocks.values() if isinstance(block, gr.Dataset))
    assert {image.label for image in images} == {"Confusion matrix", "ROC curve", "Reliability diagram"}
    assert len(examples.samples) == 5 and all(sample[0] in (demo_text_run / "test_predictions.jsonl").read_text()
                                              for sample in examples.samples)


@pytest.mark.parametrize("problem_type, rows, plot", [
    ("multi_label_classification", tagged_rows, "precision_recall.png"),
    ("regression", scored_rows, "regression.png"),
])
def test_multi_label_and_regression_pages_answer_as_predict_does(tiny_bert, tmp_path, problem_type, rows, plot):
    train, test = write_csv(tmp_path / "train.csv", rows(64, 0)), write_csv(tmp_path / "test.csv", rows(16, 1))
    sentiment.main({"model_name_or_path": str(tiny_bert), "train_file": str(train), "test_file": str(test),
                    "output_dir": str(tmp_path / "out"), "problem_type": problem_type, "max_train_steps": 4,
                    "learning_rate": 5e-3, "per_device_train_batch_size": 16, "bootstrap_resamples": 50})
    demo = Demo.load(tmp_path / "out")
    text = rows(1, 5)[0]["text"]
    [expected] = predict(demo.model, demo.processor, demo.settings, [text])

    answer, note = respond(demo, text)

    assert demo.answer(text) == (expected, "") and note == ""
    if problem_type == "regression":  # the number in the training targets' units
        assert answer == f"**label: {expected['label']:.6g}**" and 20 < expected["label"] < 100
    else:
        for name, threshold in zip(expected["scores"], demo.model.config.decision_thresholds):
            on = "yes" if name in expected["labels"] else "no"
            assert f"| {name} | {expected['scores'][name]:.4f} | {threshold:.4f} | {on} |" in answer
    metric = "rmse" if problem_type == "regression" else "f1_micro"
    assert f"| {metric} | {demo.results[f'test_{metric}']:.4f} | [" in metrics_markdown(demo.results, 0.95)
    assert any(image.value and image.value["path"].endswith(plot) for image in build_app(demo).blocks.values()
               if isinstance(image, gr.Image))


def test_speech_recognition_page_gives_predicts_transcript(speech_data, tmp_path):
    speech_recognition.main({
        "model_name_or_path": str(speech_data / "tiny-wav2vec2"), "train_file": str(speech_data / "train.csv"),
        "test_file": str(speech_data / "test.csv"), "output_dir": str(tmp_path / "out"), "strategy": "full",
        "max_train_steps": 2, "per_device_train_batch_size": 8, "bootstrap_resamples": 50})
    demo = Demo.load(tmp_path / "out")
    clip = str(speech_data / "clips" / "test_0.wav")
    [expected] = predict(demo.model, demo.processor, demo.settings, [clip])

    assert demo.kind == "audio" and demo.answer(clip) == (expected, "")
    assert respond(demo, clip) == (f"**Transcript:** {expected['transcript']}", "")
    assert f"| wer | {demo.results['test_wer']:.4f} | [" in metrics_markdown(demo.results, 0.95)


def config_of(problem_type: str, labels: list[str], **extra) -> PretrainedConfig:
    return PretrainedConfig(problem_type=problem_type, id2label=dict(enumerate(labels)), **extra)


@pytest.mark.parametrize("prediction, config, expected", [
    ({"text": "x", "labels": ["b"], "scores": {"a": 0.2, "b": 0.7}},
     config_of("multi_label_classification", ["a", "b"], decision_thresholds=[0.3, 0.6]),
     "**Labels: b**\n\n| label | score | threshold | on |\n|---|---|---|---|\n| a | 0.2000 | 0.3000 | no |\n"
     "| b | 0.7000 | 0.6000 | yes |"),
    ({"text": "x", "price": 1234.5}, config_of("regression", ["price"]), "**price: 1234.5**"),
    ({"audio": "x.wav", "transcript": "a b"}, PretrainedConfig(), "**Transcript:** a b"),
])
def test_answers_follow_the_target(prediction, config, expected):
    assert answer_markdown(prediction, config) == expected


def test_the_other_commands_never_import_gradio(demo_text_run):
    script = ("import sys\nfrom hf_transfer.cli import main\n"
              f"main(['predict', {str(demo_text_run)!r}, 'the film was great'])\n"
              "assert 'gradio' not in sys.modules, 'gradio was imported'\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"label"' in done.stdout


def test_demo_without_gradio_says_how_to_install_it(demo_text_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed: importing it fails
    monkeypatch.delitem(sys.modules, "hf_transfer.publish.demo")

    with pytest.raises(SystemExit) as exit:
        cli(["demo", str(demo_text_run)])

    assert exit.value.code == "error: `hf-transfer demo` needs Gradio: pip install 'hf-transfer-kit[app]'"


def test_demo_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(SystemExit, match=f"no such folder: {tmp_path / 'nope'}"):
        cli(["demo", str(tmp_path / "nope")])


# The colours and the length a Space's front matter allows (huggingface.co/docs/hub/spaces-config-reference).
SPACE_COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def test_push_with_space_creates_a_space_that_loads_the_pushed_model(fake_hub, demo_text_run, tmp_path, monkeypatch,
                                                                     capsys):
    repo, space_id = "user/tiny-sentiment", "user/tiny-sentiment-demo"
    cli(["push", str(demo_text_run), "--repo_id", repo, "--space", space_id])

    space = fake_hub.files(f"spaces/{space_id}")
    assert set(space) == {"app.py", "requirements.txt", "README.md"}
    assert capsys.readouterr().out.split() == [f"{fake_hub.url}/{repo}", f"{fake_hub.url}/spaces/{space_id}"]
    card = SpaceCard(space["README.md"].decode())
    assert card.data.sdk == "gradio" and card.data.app_file in space and card.data.models == [repo]
    assert card.data.colorFrom in SPACE_COLOURS and card.data.colorTo in SPACE_COLOURS
    assert len(card.data.short_description) <= 60 and card.data.sdk_version.startswith("6.")
    assert f"(https://huggingface.co/{repo})" in card.text  # the Space links to the model card, and back:
    assert f"(https://huggingface.co/spaces/{space_id})" in fake_hub.files(repo)["README.md"].decode()
    assert space["requirements.txt"].decode().startswith("hf-transfer-kit[app]==")

    def snapshot_download(repo_id):  # the fake Hub serves no downloads: read what it holds
        folder = tmp_path / "snapshot"
        for name, data in fake_hub.files(repo_id).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        return str(folder)

    monkeypatch.setattr(merge, "snapshot_download", snapshot_download)
    (tmp_path / "app.py").write_bytes(space["app.py"])
    spec = importlib.util.spec_from_file_location("space_app", tmp_path / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)  # what the Space runs, less launch()
    assert isinstance(app.demo, gr.Blocks) and app.demo.title == f"hf-transfer demo: {repo}"
    pushed, local = Demo.load(repo), Demo.load(demo_text_run)
    assert pushed.answer("the film was great") == local.answer("the film was great")
    assert pushed.results == local.results


def test_space_needs_the_main_branch(demo_text_run):
    with pytest.raises(SystemExit, match="--space demos the model on its main branch: push it without --revision"):
        cli(["push", str(demo_text_run), "--repo_id", "user/m", "--revision", "v1", "--space", "user/m-demo"])


def test_a_taken_port_is_named_before_the_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=f"--port {port}: 127.0.0.1:{port} is taken .*; pick another port"):
            cli(["demo", str(tmp_path / "never-read"), "--port", str(port)])
