"""Are the probabilities honest? Expected calibration error, the reliability table, and temperature scaling."""

import warnings

import numpy as np
import torch

# Equal-width bins of the top-class probability over [0, 1]: 10, as small test sets leave finer bins nearly empty.
BINS = 10


def reliability_bins(probabilities: np.ndarray, references: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per non-empty bin (i/bins, (i+1)/bins]: its edges, item count, mean top-class probability and accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == references
    # ceil puts a probability on an edge into the bin below it; 0 (never the top class of a softmax) joins bin 0.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        if members.any():
            rows.append({"low": b / bins, "high": (b + 1) / bins, "count": int(members.sum()),
                         "confidence": float(confidence[members].mean()), "accuracy": float(correct[members].mean())})
    return rows


def expected_calibration_error(probabilities: np.ndarray, references: np.ndarray, bins: int = BINS) -> float:
    """Sum over bins of (share of items in the bin) x |accuracy - mean confidence| (Guo et al. 2017)."""
    rows = reliability_bins(probabilities, references, bins)
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / len(references))


def _log_probabilities(probabilities: np.ndarray) -> torch.Tensor:
    # Softmax is unchanged by a constant per row, so log-probabilities stand in for the logits.
    return torch.log(torch.as_tensor(probabilities, dtype=torch.float64).clamp_min(1e-30))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from softmax(logits): T > 1 softens over-confident scores, T < 1 sharpens them."""
    if temperature == 1.0:
        return probabilities
    return (_log_probabilities(probabilities) / temperature).softmax(-1).numpy().astype(probabilities.dtype)


# Beyond these, validation scores carry (almost) no information, or the fit chases a handful of rows.
TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(probabilities: np.ndarray, references: np.ndarray) -> float:
    """The temperature in TEMPERATURE_RANGE that minimises the negative log-likelihood of `references`.

    LBFGS over log T, then a clamp: the NLL is convex in 1 / T, so the clamped optimum is the constrained one.
    """
    logits = _log_probabilities(probabilities)
    targets = torch.as_tensor(references, dtype=torch.long)
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_temperature.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    fitted = float(log_temperature.detach().exp())
    low, high = TEMPERATURE_RANGE
    if not low <= fitted <= high:
        warnings.warn(f"--calibrate temperature: the best temperature on validation is {fitted:.3g}, kept to "
                      f"{min(max(fitted, low), high):g}; the model's validation scores barely follow the labels, "
                      "so read its probabilities with care (see the validation reliability diagram)")
    return min(max(fitted, low), high)
