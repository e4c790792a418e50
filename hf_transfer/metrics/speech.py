"""Word and character error rates as `evaluate.Metric` modules (jiwer does the alignment maths)."""

import datasets
import evaluate
import jiwer

TEXT_FEATURES = datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")})


class WordErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="Word edits (substitutions, deletions, insertions) per reference word.",
                                   citation="", inputs_description="predictions, references: transcripts",
                                   features=TEXT_FEATURES)

    def _compute(self, predictions, references):
        return {"wer": float(jiwer.wer(list(references), list(predictions)))}


class CharacterErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="Character edits per reference character.", citation="",
                                   inputs_description="predictions, references: transcripts", features=TEXT_FEATURES)

    def _compute(self, predictions, references):
        return {"cer": float(jiwer.cer(list(references), list(predictions)))}


def transcription_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """WER and CER over a whole split (errors summed over utterances, not averaged per utterance)."""
    combined = evaluate.combine([WordErrorRate(keep_in_memory=True), CharacterErrorRate(keep_in_memory=True)])
    return combined.compute(predictions=predictions, references=references)


def transcription_metric_names() -> dict[str, None]:
    """The metrics `transcription_metrics` gives, none of them ever undefined."""
    return dict.fromkeys(transcription_metrics(["a"], ["a"]))
