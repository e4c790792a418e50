"""What a run shows a person: its own lines. The libraries' warnings, load reports and progress bars only with
`--verbose`."""

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import datasets
import transformers


@contextmanager
def library_output(verbose: bool) -> Iterator[None]:
    """Inside, unless `verbose`: transformers, datasets and accelerate log errors only (no LOAD REPORT table),
    FutureWarnings are hidden and the libraries' progress bars are off. Restored on the way out, so a notebook
    kernel keeps its own settings."""
    if verbose:
        yield
        return
    accelerate_logger = logging.getLogger("accelerate")
    saved = (transformers.logging.get_verbosity(), transformers.utils.logging.is_progress_bar_enabled(),
             datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled(), accelerate_logger.level)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    accelerate_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        transformers.logging.set_verbosity(saved[0])
        if saved[1]:
            transformers.utils.logging.enable_progress_bar()
        datasets.logging.set_verbosity(saved[2])
        if saved[3]:
            datasets.enable_progress_bars()
        accelerate_logger.setLevel(saved[4])
