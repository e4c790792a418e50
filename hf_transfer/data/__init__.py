"""Labelled data: reading files, folders and Hub sets into splits, label encoding, sampling orders."""
