"""Helpers shared by test modules (pytest puts this folder on the import path)."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from graphc.data import load_fashion_mnist
from graphc.errors import DataError


def fashion_mnist_installed() -> bool:
    try:
        load_fashion_mnist()
    except DataError:
        return False
    return True


needs_fashion_mnist = pytest.mark.skipif(not fashion_mnist_installed(), reason="Fashion-MNIST is not installed")


IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def tiny_fashion_mnist(folder: Path, train: int = 40, test: int = 20) -> Path:
    """A Fashion-MNIST-shaped data set of random images in ``folder`` (for ``--data``): quick to train on."""
    rng = np.random.default_rng(0)
    for stem, count in zip(IDX_STEMS, (train, train, test, test)):
        images = "images" in stem
        array = rng.integers(0, 256 if images else 10, (count, 28, 28) if images else (count,)).astype(np.uint8)
        header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        (folder / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))
    return folder


def steps_match_the_interpreter(step, batches) -> None:  # type: ignore[no-untyped-def]
    """Run a compiled train step on each ``(x, y)`` batch in turn, each call checked against the
    interpreter's run of the unoptimized program from the same variables: loss and every update."""
    for xb, yb in batches:
        want_loss, want_updates = step.reference(x=xb, y=yb)
        np.testing.assert_allclose(step(x=xb, y=yb), want_loss, rtol=1e-6)
        for name, value in want_updates.items():
            np.testing.assert_allclose(step.state.values[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
