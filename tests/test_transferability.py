"""Transferability scores against hand-computed cases and a reference written straight from the papers' equations."""

import numpy as np
import pytest

from hf_transfer.selection.transferability import (
    LOGME_MAX_STEPS,
    LOGME_TOLERANCE,
    h_score,
    held_out_split,
    knn_accuracy,
    linear_probe_accuracy,
    logme,
    proxy_a_distance,
    regularized_h_score,
)


def test_h_score_of_a_2d_example_computed_by_hand():
    # x = (-2, 0, 1, 1), y = (1, -1, 1, -1), both of mean 0: cov(f) = [[2, -2/3], [-2/3, 4/3]] (n - 1 = 3),
    # det = 20/9. Class means (-1, 0) and (1, 0): cov(E[f|y]) = [[4/3, 0], [0, 0]].
    # H = (cov(f)^-1)_00 * 4/3 = (4/3) / (20/9) * 4/3 = 4/5.
    features = np.array([[-2, 1], [0, -1], [1, 1], [1, -1]], dtype=float)
    assert h_score(features, np.array([0, 0, 1, 1])) == pytest.approx(0.8)


def reference_logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME from You et al. 2021, eqs. (2)-(5), with the d x d matrices written out (no SVD tricks).

    Evidence: log p(y | F, alpha, beta) = d/2 log alpha + n/2 log beta - n/2 log 2pi - beta/2 |F m - y|^2
    - alpha/2 m^T m - 1/2 log |A|, with A = alpha I + beta F^T F and m = beta A^-1 F^T y; alpha and beta follow
    MacKay's updates gamma = sum beta s_i / (alpha + beta s_i) (s_i the eigenvalues of F^T F),
    alpha = gamma / m^T m, beta = (n - gamma) / |F m - y|^2.
    """
    n, d = features.shape
    eigenvalues = np.linalg.eigvalsh(features.T @ features)
    evidences = []
    for c in np.unique(labels):
        y = (labels == c).astype(float)

        def posterior(alpha, beta):
            a = alpha * np.eye(d) + beta * features.T @ features
            m = beta * np.linalg.solve(a, features.T @ y)
            return a, m, float(np.sum((features @ m - y) ** 2))

        alpha, beta = 1.0, 1.0
        for _ in range(LOGME_MAX_STEPS):
            _, m, residual2 = posterior(alpha, beta)
            gamma = float(np.sum(beta * eigenvalues / (alpha + beta * eigenvalues)))
            previous = alpha / beta
            alpha, beta = gamma / float(m @ m), (n - gamma) / residual2
            if abs(alpha / beta - previous) / previous < LOGME_TOLERANCE:
                break
        a, m, residual2 = posterior(alpha, beta)
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
                    - beta / 2 * residual2 - alpha / 2 * float(m @ m) - np.linalg.slogdet(a)[1] / 2)
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def blobs(per_class: int, classes: int, dims: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters of unit spread around class centres `separation` apart."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dims)) * separation
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + rng.standard_normal((len(labels), dims)), labels


@pytest.mark.parametrize("per_class, classes, dims", [(40, 3, 5), (6, 2, 20)])  # more examples than dims, fewer
def test_logme_matches_the_reference_from_the_paper(per_class, classes, dims):
    features, labels = blobs(per_class, classes, dims, separation=1.0, seed=0)
    assert logme(features, labels) == pytest.approx(reference_logme(features, labels), rel=1e-8)


def test_better_separated_features_score_higher():
    scores = {}
    for separation in (0.0, 0.5, 2.0):
        features, labels = blobs(50, 3, 8, separation, seed=1)
        scores[separation] = {"logme": logme(features, labels), "h": h_score(features, labels),
                              "rh": regularized_h_score(features, labels)}
    for score in ("logme", "h", "rh"):
        assert scores[0.0][score] < scores[0.5][score] < scores[2.0][score], score


def test_shrinkage_tells_features_apart_where_the_plain_h_score_cannot():
    # 8 examples per class in 64 dimensions: cov(f) has rank 15, and its pseudo-inverse makes the plain H-score
    # C - 1 = 1 for informative and random features alike.
    informative, labels = blobs(8, 2, 64, separation=1.0, seed=2)
    noise = np.random.default_rng(3).standard_normal(informative.shape)
    assert h_score(informative, labels) == pytest.approx(1.0)
    assert h_score(noise, labels) == pytest.approx(1.0)
    assert regularized_h_score(informative, labels) > 2 * regularized_h_score(noise, labels)


def test_held_out_split_is_seeded_and_stratified():
    labels = np.array([0] * 30 + [1] * 10)
    fit, held_out = held_out_split(labels, 0.25, seed=0)
    assert sorted(np.concatenate([fit, held_out]).tolist()) == list(range(40))
    assert np.bincount(labels[held_out]).tolist() == [8, 2]  # a quarter of each class, rounded
    assert np.array_equal(held_out, held_out_split(labels, 0.25, seed=0)[1])
    assert not np.array_equal(held_out, held_out_split(labels, 0.25, seed=1)[1])


def test_knn_and_probe_accuracies():
    features, labels = blobs(30, 2, 4, separation=5.0, seed=4)
    fit, held_out = held_out_split(labels, 0.5, seed=0)
    assert knn_accuracy(features[fit], labels[fit], features[held_out], labels[held_out], 5) == 1.0
    assert linear_probe_accuracy(features[fit], labels[fit], features[held_out], labels[held_out]) == 1.0
    # Labels that ignore the features: no better than a coin (30 held-out examples).
    shuffled = np.random.default_rng(5).permutation(labels)
    fit, held_out = held_out_split(shuffled, 0.5, seed=0)
    assert linear_probe_accuracy(features[fit], shuffled[fit], features[held_out], shuffled[held_out]) < 0.75


def test_a_domain_classifier_below_chance_gives_a_proxy_a_distance_of_0_not_below():
    rng = np.random.default_rng(3)  # two samples of one distribution; its held-out accuracy here is 0.325
    assert proxy_a_distance(rng.normal(size=(40, 5)), rng.normal(size=(40, 5))) == 0.0


def test_features_too_small_for_float32_are_scored_as_their_scaled_up_twins():
    """A random-init EfficientNet's deep features shrink to a few float32 subnormals, spread less than the smallest
    one: standardising them in float32 divided by zero."""
    from hf_transfer.selection.rank import score_features

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    steps = (rng.random((60, 8)) < 0.05 + 0.15 * labels[:, None]).astype(np.float32)
    tiny = steps * np.finfo(np.float32).smallest_subnormal
    held_out = held_out_split(labels, 0.25, 0)
    scaled_up = score_features({"train": steps}, {"train": labels}, held_out, 5)
    assert score_features({"train": tiny}, {"train": labels}, held_out, 5)["probe_accuracy"] == \
        scaled_up["probe_accuracy"] > 0.5


def test_all_zero_features_have_the_evidence_of_noise_alone():
    """A random-init EfficientNet's top layers give exact zeros: LogME divided by zero there."""
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    # Per class c with n_c positives: beta = n / n_c, evidence per example = (log beta - 1 - log 2 pi) / 2.
    expected = np.mean([(np.log(60 / count) - 1 - np.log(2 * np.pi)) / 2 for count in (10, 20, 30)])
    assert logme(np.zeros((60, 5)), labels) == pytest.approx(expected)
    informative = np.eye(3)[labels] + np.random.default_rng(0).normal(scale=0.1, size=(60, 3))
    assert logme(informative, labels) > expected
