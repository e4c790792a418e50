"""How well a frozen backbone's features suit a labelled task, from the features alone: no fine-tuning.

Every score takes pooled features (n examples x d dimensions) and integer labels; higher is better for all.
- LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021):
  the log marginal evidence per example of a Bayesian linear model from the features to each class's one-hot
  target, with the prior and noise precisions (alpha, beta) set by MacKay's fixed-point evidence maximisation
  on the SVD of the features; averaged over classes.
- H-score (Bao et al., "An Information-Theoretic Approach to Transferability in Task Transfer Learning",
  ICIP 2019): tr(cov(f)^-1 cov(E[f | y])), how much of the feature variance the class means explain.
- The regularised H-score (Ibrahim et al., "Newer is not always better: Rethinking transferability metrics,
  their peculiarities, stability and performance", ECML-PKDD 2022): the same with a Ledoit-Wolf shrinkage
  estimate of cov(f), whose plain inverse is noise when there are fewer examples per class than dimensions.
- k-NN and linear-probe (logistic regression) accuracy on a seeded, stratified held-out part.
"""

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

from hf_transfer.evaluation.sanity import linear_probe_accuracy  # the same probe that checks a trained head

# The fixed point usually settles in 2-3 steps; the LogME paper stops when alpha/beta moves by under 0.1 %.
LOGME_MAX_STEPS = 100
LOGME_TOLERANCE = 1e-3


def _class_evidence(u: np.ndarray, sigma: np.ndarray, target: np.ndarray, dims: int) -> float:
    """LogME's evidence per example for one target column, given the thin SVD F = U diag(s) V^T, sigma = s^2.

    With x = U^T y and t = alpha / beta, everything the evidence needs is a sum over the k = min(n, d)
    singular directions; the n - k directions outside U's span only add to the residual.
    """
    n = len(target)
    if not len(sigma):  # features that are all zero: y is noise alone, and alpha drops out of the evidence
        beta = n / float(target @ target)
        return (np.log(beta) - 1 - np.log(2 * np.pi)) / 2
    x2 = (u.T @ target) ** 2
    outside = float(target @ target - x2.sum())  # |y|^2 not reachable by any weight vector
    alpha, beta = 1.0, 1.0
    for _ in range(LOGME_MAX_STEPS):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())  # effective number of well-determined weights
        m_norm2 = float((sigma * x2 / (sigma + t) ** 2).sum())  # |m|^2 for the posterior mean m
        residual2 = float((x2 * (t / (sigma + t)) ** 2).sum() + outside)  # |F m - y|^2
        alpha, beta = gamma / m_norm2, (n - gamma) / residual2
        if abs(alpha / beta - t) / t < LOGME_TOLERANCE:
            break
    # Recompute m and the residual at the final alpha and beta, so the evidence is taken at the fixed point.
    t = alpha / beta
    m_norm2 = float((sigma * x2 / (sigma + t) ** 2).sum())
    residual2 = float((x2 * (t / (sigma + t)) ** 2).sum() + outside)
    # log |alpha I + beta F^T F|: the d - k directions with zero singular value contribute log(alpha) each.
    log_det = float(np.log(alpha + beta * sigma).sum() + (dims - len(sigma)) * np.log(alpha))
    evidence = (dims / 2 * np.log(alpha) + n / 2 * np.log(beta) - log_det / 2 - beta / 2 * residual2
                - alpha / 2 * m_norm2 - n / 2 * np.log(2 * np.pi))
    return evidence / n


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME: the mean over classes of the log evidence per example (higher is better)."""
    features = np.asarray(features, dtype=np.float64)
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    keep = s > s.max() * max(features.shape) * np.finfo(np.float64).eps  # drop numerically zero directions
    u, sigma = u[:, keep], s[keep] ** 2
    return float(np.mean([_class_evidence(u, sigma, (labels == c).astype(np.float64), features.shape[1])
                          for c in np.unique(labels)]))


def _class_mean_features(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each example's features replaced by its class's mean: samples of E[f | y]."""
    means = np.zeros_like(features)
    for c in np.unique(labels):
        means[labels == c] = features[labels == c].mean(axis=0)
    return means


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score: tr(cov(f)^+ cov(E[f | y])) with sample covariances (a pseudo-inverse where cov(f) is singular)."""
    features = np.asarray(features, dtype=np.float64)
    cov_f = np.cov(features, rowvar=False)
    cov_g = np.cov(_class_mean_features(features, labels), rowvar=False)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g))


def regularized_h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score with cov(f) shrunk towards a scaled identity by Ledoit-Wolf, as Ibrahim et al. define it:
    tr(cov_shrunk^-1 (1 - shrinkage) cov(E[f | y]))."""
    features = np.asarray(features, dtype=np.float64)
    features = features - features.mean(axis=0)
    estimate = LedoitWolf(assume_centered=False).fit(features)
    cov_g = np.cov(_class_mean_features(features, labels), rowvar=False)
    return float(np.trace(np.linalg.pinv(estimate.covariance_, rcond=1e-15)
                          @ ((1 - estimate.shrinkage_) * cov_g)))


def held_out_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, held out): a seeded split that keeps each class's share in both parts."""
    indices = np.arange(len(labels))
    fit, held_out = train_test_split(indices, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(fit), np.sort(held_out)


def knn_accuracy(fit_features: np.ndarray, fit_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, neighbours: int) -> float:
    """Accuracy of a majority vote among the `neighbours` nearest fit examples by cosine distance."""
    knn = KNeighborsClassifier(n_neighbors=min(neighbours, len(fit_labels)), metric="cosine")
    return float((knn.fit(fit_features, fit_labels).predict(test_features) == test_labels).mean())


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """2 (1 - 2 eps), eps the held-out error of a linear classifier telling `source` features from `target` ones
    (Ben-David et al. 2007): 0 when it can't tell them apart, 2 when it always can.

    A held-out accuracy below chance (noise, on small samples of alike domains) would give a distance below 0,
    which has no meaning: it is 0, "can't tell them apart"."""
    features = np.concatenate([source, target])
    domains = np.concatenate([np.ones(len(source), dtype=int), np.zeros(len(target), dtype=int)])
    fit, held_out = held_out_split(domains, 0.5, seed)
    accuracy = linear_probe_accuracy(features[fit], domains[fit], features[held_out], domains[held_out])
    return max(0.0, 2 * (1 - 2 * (1 - accuracy)))
