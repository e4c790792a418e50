"""Whether a finished run learned anything: checks over its predictions, its labels and its logged training losses.

A run can finish, save a model and write a clean report while predicting one class for every input. Each check
returns a warning in words (what it saw, the likely cause, a next step) or None; `write_outputs` shows them on the
console, in the report and on the card, and keeps them in `all_results.json` under "warnings".
"""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CHECKED_SPLITS = ("validation", "test")  # the target-domain test split is another domain: its own story
LOSS_WINDOW = 0.25  # the share of the logged losses averaged at each end (at least one)
MIN_LOSS_FALL = 0.01  # a fall under 1% of the first window's loss is batch-to-batch noise, not learning
PROBE_MARGIN = 0.05  # a small validation split moves accuracy by a few points: warn only well below the probe

RATE_STEP = "try the learning rate 10x lower and 10x higher"


def one_class(split: str, predictions: np.ndarray, references: np.ndarray, names: list[str]) -> str | None:
    """Every prediction the same class, where the references hold more than one."""
    predicted = np.unique(predictions)
    if len(predicted) != 1 or len(np.unique(references)) < 2:
        return None
    return (f"Every {split} prediction is `{names[predicted[0]]}` ({len(predictions)} of {len(predictions)}): the "
            "model answers one class whatever the input. Likely cause: its head collapsed onto one class, with a "
            "learning rate too high for the strategy or too low (or too few steps) to move it off its start, or "
            f"pooled features that barely differ between inputs. Next step: {RATE_STEP}, train more epochs, use "
            "`--pooling mean` for a sentence encoder, and compare with `--strategy feature_extraction`.")


def chance_auc(roc_auc: float | None) -> str | None:
    """Validation ROC AUC at or below chance (None: undefined there, nothing to say)."""
    if roc_auc is None or roc_auc > 0.5:
        return None
    return (f"Validation ROC AUC is {roc_auc:.4f} (at most 0.5): the model's scores rank the classes no better than "
            "chance. Likely cause: training did not move the model (a learning rate too low, too few epochs, a "
            "warm-up that took most of the steps) or wrecked its pretrained features (a rate too high for the "
            f"strategy). Next step: look at learning_curve.png, {RATE_STEP}, and train more epochs.")


def below_majority(split: str, predictions: np.ndarray, references: np.ndarray, train_labels: np.ndarray,
                   names: list[str]) -> str | None:
    """Accuracy below that of always answering the training split's most frequent class."""
    majority = int(np.bincount(train_labels, minlength=len(names)).argmax())
    accuracy, baseline = float(np.mean(predictions == references)), float(np.mean(references == majority))
    if accuracy >= baseline:
        return None
    return (f"{split.capitalize()} accuracy {accuracy:.4f} is below {baseline:.4f}, that of always answering "
            f"`{names[majority]}` (the training split's most frequent class): the model does worse than no model. "
            "Likely cause: it learned little, and what it learned points away from the frequent class. Next step: "
            f"{RATE_STEP}, train more epochs, add `--class_weights auto` when the classes are unbalanced, and check "
            f"that the {split} labels mean what the training labels mean.")


def linear_probe_accuracy(fit_features: np.ndarray, fit_labels: np.ndarray, test_features: np.ndarray,
                          test_labels: np.ndarray) -> float:
    """Accuracy of L2-regularised logistic regression (C = 1) on standardised features."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float((probe.fit(fit_features, fit_labels).predict(test_features) == test_labels).mean())


def below_probe(accuracy: float, probe_accuracy: float | None) -> str | None:
    """Validation accuracy well below a logistic regression's on the same frozen features (None: not computed)."""
    if probe_accuracy is None or accuracy >= probe_accuracy - PROBE_MARGIN:
        return None
    return (f"Validation accuracy {accuracy:.4f} is more than {PROBE_MARGIN:.0%} below {probe_accuracy:.4f}, that of "
            "a logistic regression on the same frozen features: the trained head uses them worse than a linear "
            "probe does. Likely cause: too few steps for the head to converge, or a learning rate off for a head "
            f"alone. Next step: train more epochs and {RATE_STEP}.")


def loss_did_not_fall(train_losses: list[dict], head_fitted_first: bool = False) -> str | None:
    """The mean logged training loss of the last window not clearly below that of the first (one logged value:
    nothing to compare). A head fitted first (`--fit_head_first`) starts near its lowest training loss, so a flat
    curve says nothing there: only a loss that doubled counts."""
    losses = [entry["train_loss"] for entry in train_losses]
    if len(losses) < 2:
        return None
    window = max(1, int(len(losses) * LOSS_WINDOW))
    first, last = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
    if last < first * (1 - MIN_LOSS_FALL) or (head_fitted_first and last < 2 * first):
        return None
    values = "logged value" if window == 1 else f"{window} logged values"
    return (f"The training loss did not fall: {first:.4f} over the first {values}, {last:.4f} over the last {values}. "
            "Likely cause: a learning rate too low to move the model, or so high that it diverges; too few steps; "
            f"or labels the inputs do not predict. Next step: look at learning_curve.png, {RATE_STEP}, train more "
            "epochs, and read a few training rows with their labels.")


def classification_warnings(outcomes: dict[str, tuple[np.ndarray, np.ndarray]], validation_auc: float | None,
                            train_labels: np.ndarray, names: list[str], train_losses: list[dict],
                            probe_accuracy: float | None = None, head_fitted_first: bool = False) -> list[str]:
    """The warnings of a classification run. `outcomes`: each scored split's (decided predictions, references);
    `probe_accuracy`: a linear probe's validation accuracy, when the run had frozen features to fit it on."""
    found = []
    for split in CHECKED_SPLITS:
        if split in outcomes:
            found += [one_class(split, *outcomes[split], names),
                      below_majority(split, *outcomes[split], np.asarray(train_labels), names)]
    predictions, references = outcomes["validation"]
    found += [chance_auc(validation_auc), below_probe(float(np.mean(predictions == references)), probe_accuracy),
              loss_did_not_fall(train_losses, head_fitted_first)]
    return [warning for warning in found if warning]


def transcription_warnings(train_losses: list[dict]) -> list[str]:
    """The warnings of a speech recognition run: only the loss speaks to whether it learned."""
    return [warning for warning in (loss_did_not_fall(train_losses),) if warning]


def target_warnings(problem_type: str, results: dict, train_losses: list[dict],
                    head_fitted_first: bool = False) -> list[str]:
    """A multi-label or regression run: a regression no better than predicting the mean (validation r2 <= 0), a
    multi-label model that finds no label on validation, and the training loss."""
    found = [loss_did_not_fall(train_losses, head_fitted_first)]
    if problem_type == "regression" and (results.get("eval_r2") or 0.0) <= 0:
        found.append(f"validation r2 is {results.get('eval_r2') or 0.0:.3f}: the model does no better than predicting "
                     "the mean of the targets. Likely cause: too few steps or a learning rate too low for the head; "
                     "next step: more epochs, or --learning_rate 10x higher with --strategy feature_extraction.")
    if problem_type == "multi_label_classification" and results.get("eval_f1_micro", 1.0) == 0:
        found.append("no validation example got a right label (f1_micro 0): every score stays below its threshold. "
                     "Next step: --decision_threshold auto, --class_weights auto for rare labels, or more epochs.")
    return [warning for warning in found if warning]
