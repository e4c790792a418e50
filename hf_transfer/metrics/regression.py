"""Regression metrics on a number per example, in the user's units."""

import numpy as np
from scipy import stats

REGRESSION_METRICS = ("mse", "rmse", "mae", "r2", "pearson", "spearman")
LOWER_IS_BETTER = ("mse", "rmse", "mae")


def regression_metrics(predictions: np.ndarray, references: np.ndarray) -> dict:
    """mse, rmse, mae, r2 (1 - residual / total sum of squares), and Pearson's and Spearman's correlations
    (None when either side is constant)."""
    predictions, references = np.asarray(predictions, np.float64), np.asarray(references, np.float64)
    errors = predictions - references
    mse = float(np.mean(errors ** 2))
    spread = float(np.sum((references - references.mean()) ** 2))
    varied = np.ptp(predictions) > 0 and np.ptp(references) > 0
    return {
        "mse": mse,
        "rmse": mse ** 0.5,
        "mae": float(np.mean(np.abs(errors))),
        "r2": 1 - float(np.sum(errors ** 2)) / spread if spread > 0 else None,
        "pearson": float(stats.pearsonr(predictions, references)[0]) if varied else None,
        "spearman": float(stats.spearmanr(predictions, references)[0]) if varied else None,
    }
