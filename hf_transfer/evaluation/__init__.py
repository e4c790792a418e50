"""Evaluation: scoring splits, reports and plots, operating points, loading trained folders, comparing runs."""
