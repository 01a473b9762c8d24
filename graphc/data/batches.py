"""Splitting and mini-batching that can be replayed exactly.

Every random choice here is a pure function of a seed (and, for batches, of
the epoch number) rather than of a generator that advances as training runs.
That is what lets a trainer resumed from a checkpoint at epoch ``k`` see
exactly the batches an uninterrupted run would have seen, and lets two runs
that differ only in the model be compared on identical data.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["Batches", "train_val_split"]


def train_val_split(
    x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle and split into ``(x_train, y_train, x_val, y_val)``.

    The validation set holds ``floor(len(x) * val_fraction)`` examples, so a
    fraction of 0 gives an empty one and the training set is never empty.
    """
    _check_pair(x, y)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(len(x) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    return _take(x, train), _take(y, train), _take(x, val), _take(y, val)


class Batches:
    """Mini-batches over ``(x, y)`` whose order depends only on ``(seed, epoch)``.

    Each epoch visits every example once (the last, smaller batch is dropped
    when ``drop_last``); every yielded array is a fresh contiguous copy.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        _check_pair(x, y)
        if len(x) == 0:
            raise ValueError("Batches needs at least one example, got an empty x")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x = np.asarray(x)
        self.y = np.asarray(y)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last

    def __len__(self) -> int:
        full, rest = divmod(len(self.x), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def epoch(self, index: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the ``(xb, yb)`` batches of epoch ``index`` (counted from 0)."""
        if index < 0:
            raise ValueError(f"epoch index must be >= 0, got {index}")
        order = self._order(index)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = order[start : start + self.batch_size]
            yield _take(self.x, rows), _take(self.y, rows)

    def _order(self, index: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, index]).permutation(len(self.x))


def _check_pair(x: np.ndarray, y: np.ndarray) -> None:
    if len(x) != len(y):
        raise ValueError(
            f"x and y must hold the same number of examples, got {len(x)} and {len(y)}"
        )


def _take(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.take(a, rows, axis=0)
