"""`hf-transfer demo`: a Gradio page where anyone with a browser tries a finished run on their own sentence, image or
recording, beside what says how far to trust the answer: the test metrics with their intervals, the run's plots and
its worst group.

Answers come from `evaluation.inference.predict`, the code behind `hf-transfer predict`, so that the page and the
command agree to the last digit (the saved temperature, threshold and per-label thresholds included). Gradio is
imported by this module only: no other command loads it (`pip install 'hf-transfer-kit[app]'`).
"""

import json
import math
import socket
from dataclasses import dataclass
from functools import partial
from itertools import zip_longest
from pathlib import Path

import gradio as gr
import soundfile as sf

from hf_transfer.config import UsageError
from hf_transfer.evaluation.inference import load_trained, predict
from hf_transfer.publish.merge import trained_folder
from hf_transfer.targets import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from hf_transfer.tasks import task_for

# The plots a run folder may hold (single-label, multi-label, regression), with their tabs' names on the page (each
# plot names its split).
PLOTS = {"confusion_matrix.png": "Confusion matrix", "roc_curve.png": "ROC curve",
         "reliability_diagram.png": "Reliability diagram", "precision_recall.png": "Precision-recall per label",
         "regression.png": "Predicted against true"}
EXAMPLES = 5  # inputs of the test split offered as examples
SHOWN_CLASSES = 10  # the answer lists this many classes, best first
ANSWER_ID, NOTE_ID, METRICS_ID = "answer", "note", "metrics"  # elem_ids the browser test reads


@dataclass(frozen=True)
class Demo:
    """A loaded run: the model and what the page shows about it."""

    name: str  # the Hub repo, or the run folder's name
    folder: Path
    model: object
    processor: object
    settings: dict
    results: dict  # all_results.json, or {} when the folder has none

    @classmethod
    def load(cls, output_dir: str | Path) -> "Demo":
        """A finished run folder, or the Hub repo (`user/name`) it was pushed to, downloaded first."""
        folder = trained_folder(output_dir)
        downloaded = folder != Path(output_dir)
        model, processor, settings = load_trained(folder, require_finished=not downloaded)
        if settings.get("text_pair_column"):
            raise UsageError(f"{output_dir} classifies text pairs ({settings['text_column']}, "
                             f"{settings['text_pair_column']}): score a file of them with `hf-transfer evaluate`")
        results_file = folder / "all_results.json"
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        name = str(output_dir) if downloaded else folder.resolve().name
        return cls(name, folder, model, processor, settings, results)

    @property
    def kind(self) -> str:
        """"text", "image" or "audio": what the page asks for."""
        return task_for(self.settings["task"], self.model.config).input_kind

    def answer(self, value: str | None, shown_as: str | None = None) -> tuple[dict | None, str]:
        """(`predict`'s answer for one text or file path, a note for the page); (None, what is wrong) for input the
        model can't take. `shown_as`: the name the user knows an uploaded file by (gradio stores it elsewhere)."""
        if self.kind == "text" and not (value or "").strip():
            return None, "Type a text first: an empty text has nothing to classify."
        if self.kind != "text" and not value:
            return None, f"Give an {self.kind} first: upload a file" + (" or record one." if self.kind == "audio"
                                                                         else ".")
        try:
            [prediction] = predict(self.model, self.processor, self.settings, [value])
        except UsageError as error:  # an unreadable or empty file
            return None, f"That {self.kind} can't be used: {str(error).replace(value, shown_as or value)}"
        return prediction, self._cut_note(value)

    def _cut_note(self, path: str) -> str:
        """For an audio classifier: where a clip longer than the model's window was cut (the centre is kept, as in
        `modalities.audio.crop`)."""
        window = self.settings.get("max_duration_seconds")
        if self.settings["task"] != "audio-classification" or not window:
            return ""
        info = sf.info(path)  # predict read it already
        rate = self.processor.sampling_rate
        length, kept = math.ceil(info.frames * rate / info.samplerate), round(window * rate)
        if length <= kept:
            return ""
        start = (length - kept) // 2
        return (f"The clip is {length / rate:.2f} s long and the model hears {window:g} s: it answered on the middle, "
                f"from {start / rate:.2f} s to {(start + kept) / rate:.2f} s. The rest was cut.")


def answer_markdown(prediction: dict, model_config) -> str:
    """The answer as the page shows it: label, scores and thresholds, or the number, or the transcript."""
    if "transcript" in prediction:
        return f"**Transcript:** {prediction['transcript']}"
    problem_type = model_config.problem_type or SINGLE_LABEL
    if problem_type == REGRESSION:
        name = model_config.id2label[0]
        return f"**{name}: {prediction[name]:.6g}**"
    if problem_type == MULTI_LABEL:
        thresholds = model_config.decision_thresholds
        rows = [f"| {name} | {score:.4f} | {thresholds[i]:.4f} | {'yes' if name in prediction['labels'] else 'no'} |"
                for i, (name, score) in enumerate(prediction["scores"].items())]
        found = ", ".join(prediction["labels"]) or "none"
        return "\n".join([f"**Labels: {found}**", "", "| label | score | threshold | on |", "|---|---|---|---|",
                          *rows])
    best = sorted(prediction["scores"].items(), key=lambda item: -item[1])[:SHOWN_CLASSES]
    rows = [f"| {name} | {score:.4f} |" for name, score in best]
    return "\n".join([f"**{prediction['label']}** ({prediction['score']:.4f})", "", "| class | score |", "|---|---|",
                      *rows])


def operating_point_markdown(model_config) -> str:
    """How scores become a decision, when validation chose it: the temperature, the threshold(s)."""
    lines = []
    temperature = getattr(model_config, "calibration_temperature", None)
    if temperature not in (None, 1.0):
        lines.append(f"Scores are calibrated (temperature {temperature:.4f}, fitted on validation).")
    threshold = getattr(model_config, "decision_threshold", None)
    if threshold is not None:
        lines.append(f"The answer is **{model_config.id2label[1]}** when its score is at least {threshold:.4f} "
                     f"(chosen on validation), else **{model_config.id2label[0]}**.")
    if getattr(model_config, "decision_thresholds", None):
        lines.append("Each label is on when its score reaches its own threshold (chosen on validation).")
    return "\n\n".join(lines)


def metrics_markdown(results: dict, confidence_level: float) -> str:
    """The test metrics with their bootstrap intervals, and the worst group when the run scored groups."""
    if not results.get("test_samples"):
        return "This run has no test scores: nothing says yet how far to trust its answers."
    level = f"{confidence_level:.0%}"
    rows = [f"| {key[5:]} | {value:.4f} | [{results[key + '_ci_low']:.4f}, {results[key + '_ci_high']:.4f}] |"
            for key, value in results.items() if key.startswith("test_") and f"{key}_ci_low" in results]
    lines = [f"### How far to trust it: the test split ({results['test_samples']} items)", "",
             f"| metric | score | {level} interval |", "|---|---|---|", *rows]
    if "test_worst_group" in results:
        metric = next(key[len("test_worst_group_"):] for key in results if key.startswith("test_worst_group_"))
        lines += ["", f"**Worst group:** {results['test_worst_group']} ({metric} "
                      f"{results[f'test_worst_group_{metric}']:.4f}, against {results[f'test_best_group_{metric}']:.4f}"
                      " for the best)"]
    return "\n".join(lines)


def examples_from_test_split(folder: Path, kind: str) -> list[str]:
    """A few inputs of the run's test split (test_predictions.jsonl), one of each reference in turn so that the
    examples show several classes; files only where they are still there."""
    path = folder / "test_predictions.jsonl"
    if not path.is_file():
        return []
    by_reference = {}
    for row in map(json.loads, filter(str.strip, path.read_text().splitlines())):
        if kind == "text" or Path(row["input"]).is_file():
            by_reference.setdefault(str(row["reference"]), []).append(row["input"])
    in_turn = [value for values in zip_longest(*by_reference.values()) for value in values if value is not None]
    return list(dict.fromkeys(in_turn))[:EXAMPLES]


def respond(demo: Demo, value: str | dict | None) -> tuple[str, str]:
    """The page's prediction function: (the answer, a note) for a text, a file path, or the raw upload gradio hands
    over when its own preprocessing is off ({"path": ...})."""
    upload = value if isinstance(value, dict) else {"path": value}
    prediction, note = demo.answer(upload["path"], upload.get("orig_name"))
    return ("" if prediction is None else answer_markdown(prediction, demo.model.config)), note


def input_component(kind: str):
    if kind == "text":
        return gr.Textbox(label="Text", lines=3, placeholder="Type a sentence")
    if kind == "image":
        return gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=240)
    return gr.Audio(label="Audio", type="filepath", sources=["upload", "microphone"])


def build_app(demo: Demo) -> gr.Blocks:
    """The page: input, answer and a note on the left; metrics, operating point and plots on the right."""
    # No analytics: nothing leaves the machine unless --share asks for a public link.
    with gr.Blocks(title=f"hf-transfer demo: {demo.name}", analytics_enabled=False) as app:
        gr.Markdown(f"# {demo.name}\n{demo.settings['task']} trained with hf_transfer "
                    f"({demo.settings['strategy']}). Its answers are those of `hf-transfer predict`.")
        with gr.Row():
            with gr.Column():
                source = input_component(demo.kind)
                button = gr.Button("Predict", variant="primary")
                answer = gr.Markdown(elem_id=ANSWER_ID)
                note = gr.Markdown(elem_id=NOTE_ID)
                examples = examples_from_test_split(demo.folder, demo.kind)
                if examples:
                    gr.Examples([[value] for value in examples], [source], label="From the test split")
            with gr.Column():
                gr.Markdown(metrics_markdown(demo.results, demo.settings.get("confidence_level", 0.95)),
                            elem_id=METRICS_ID)
                gr.Markdown(operating_point_markdown(demo.model.config))
                with gr.Tabs():
                    for name, caption in PLOTS.items():
                        if (demo.folder / name).is_file():
                            with gr.Tab(caption):
                                gr.Image(str(demo.folder / name), label=caption, show_label=False,
                                         interactive=False)
        # preprocess=False: gradio's own image preprocessing opens the file and fails with its own message on an
        # unreadable one; `predict`'s loader names the problem instead.
        events = [button.click] + ([source.submit] if demo.kind == "text" else [])
        gr.on(events, partial(respond, demo), inputs=source, outputs=[answer, note], preprocess=False)
    return app


def check_port(port: int) -> None:
    """A taken port is named at once, not after the model has loaded (gradio would fail with a traceback)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            message = f"--port {port}: 127.0.0.1:{port} is taken ({error.strerror}); pick another port"
            raise UsageError(message) from None


def serve(output_dir: str | Path, port: int, share: bool) -> None:
    """Serve the page on 127.0.0.1:`port` (a public gradio.live link too with `share`) until interrupted."""
    check_port(port)
    app = build_app(Demo.load(output_dir))
    app.launch(server_name="127.0.0.1", server_port=port, share=share, show_error=True)
