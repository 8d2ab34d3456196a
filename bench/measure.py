"""Measuring a benchmark's memory and CPU: fresh ``spawn`` children, peak RSS with its mark reset."""

from __future__ import annotations

import multiprocessing
import resource
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import torch

MIB = 2**20


def rss() -> int:
    """This process's resident set size, in bytes."""
    return psutil.Process().memory_info().rss


def reset_peak() -> str:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux); returns how the peak will be read."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "peak RSS (high-water mark reset before the region) - RSS after loading"
    except OSError:
        return "ru_maxrss since process start - RSS after loading (no peak reset on this OS)"


def peak_rss() -> int:
    """The peak RSS since the last ``reset_peak`` (or process start), in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new ``spawn`` child, so its peak RSS is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def child_setup(threads: int) -> None:
    """Children: ``threads`` torch threads; no library warnings or progress noise in the output."""
    from transformers.utils import logging

    torch.set_num_threads(threads)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    warnings.simplefilter("ignore")
