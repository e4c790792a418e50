"""`evaluate.Metric` modules for classification, combined with `evaluate.combine`.

`evaluate.load("accuracy")` fetches its script from the Hub; these subclasses work offline.
"""

import datasets
import evaluate
import numpy as np
from sklearn import metrics as sk

LABEL_FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="Fraction of predictions equal to the reference.", citation="",
                                   inputs_description="predictions, references: class ids", features=LABEL_FEATURES)

    def _compute(self, predictions, references, labels=None, pos_label=None):
        return {"accuracy": float(sk.accuracy_score(references, predictions))}


class _Averaged(evaluate.Metric):
    """Macro and weighted averages over `labels`, plus the positive class's score for binary tasks."""

    name = ""
    score = None

    def _info(self):
        return evaluate.MetricInfo(description=f"{self.name}: macro, weighted and (binary) positive-class.",
                                   citation="", inputs_description="predictions, references: class ids; "
                                   "labels: all class ids; pos_label: positive class id for binary tasks",
                                   features=LABEL_FEATURES)

    def _compute(self, predictions, references, labels=None, pos_label=None):
        score = type(self).score
        results = {f"{self.name}_{average}": float(score(references, predictions, labels=labels, average=average,
                                                         zero_division=0))
                   for average in ("macro", "weighted")}
        if pos_label is not None:
            results[self.name] = float(score(references, predictions, pos_label=pos_label, average="binary",
                                             zero_division=0))
        return results


class Precision(_Averaged):
    name, score = "precision", staticmethod(sk.precision_score)


class Recall(_Averaged):
    name, score = "recall", staticmethod(sk.recall_score)


class F1(_Averaged):
    name, score = "f1", staticmethod(sk.f1_score)


class RocAuc(evaluate.Metric):
    """Binary AUC from the positive class's probability; macro one-vs-rest AUC for more classes."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Area under the ROC curve.", citation="",
            inputs_description="prediction_scores: class probabilities per example; references: class ids",
            features=datasets.Features({"prediction_scores": datasets.Sequence(datasets.Value("float32")),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, prediction_scores, references):
        scores, references = np.asarray(prediction_scores), np.asarray(references)
        if len(np.unique(references)) < scores.shape[1]:
            return {"roc_auc": None}  # undefined when a class never occurs in the references
        if scores.shape[1] == 2:
            return {"roc_auc": float(sk.roc_auc_score(references, scores[:, 1]))}
        return {"roc_auc": float(sk.roc_auc_score(references, scores, multi_class="ovr", average="macro"))}


def classification_metrics(probabilities: np.ndarray, references: np.ndarray,
                           predictions: np.ndarray | None = None) -> dict[str, float | None]:
    """Accuracy, precision/recall/F1 (macro, weighted, binary positive class) and ROC AUC.

    `predictions` default to the top class; pass them when a decision threshold chose them.
    """
    num_labels = probabilities.shape[1]
    predictions = probabilities.argmax(axis=1) if predictions is None else predictions
    label_metrics = evaluate.combine([Accuracy(keep_in_memory=True), Precision(keep_in_memory=True),
                                      Recall(keep_in_memory=True), F1(keep_in_memory=True)])
    results = label_metrics.compute(predictions=predictions, references=references, labels=list(range(num_labels)),
                                    pos_label=1 if num_labels == 2 else None)
    results.update(RocAuc(keep_in_memory=True).compute(prediction_scores=probabilities, references=references))
    return results


def classification_metric_names(label_names: list[str], labels: list[int], source: str) -> dict[str, str | None]:
    """Each metric `classification_metrics` gives for these classes, mapped to None, or to why it is undefined on
    the split `source` whose label ids are `labels` (ROC AUC when a class has no example there)."""
    num_labels = len(label_names)
    names = dict.fromkeys(classification_metrics(np.eye(num_labels), np.arange(num_labels)))
    present = set(labels)
    absent = [name for i, name in enumerate(label_names) if i not in present]
    if absent:
        names["roc_auc"] = (f"ROC AUC is undefined on {source}: class(es) "
                            f"{', '.join(map(repr, absent[:5]))} have no example there")
    return names
