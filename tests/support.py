"""Helpers shared by test modules (pytest puts this folder on the import path)."""
from __future__ import annotations

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
