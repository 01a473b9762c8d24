"""Data sets the examples, experiments and tests train on.

The image data sets are never downloaded: graphc runs on machines without
network access, so the loaders only *find* data that is already installed and,
when it is absent, say in one line where they looked and how to install it.
The first configured location is authoritative: an explicit ``data_dir``, else
the environment variable, else the system package directory.  A location the
user configured that turns out to be wrong is reported, never silently
replaced by another copy of the data.

Decoding sixty thousand images costs about a second, and a test session loads
the same data set many times, so decoded arrays are cached per set of files.
The cached arrays are marked read-only so that no caller can corrupt what the
next caller receives; copy them before modifying them in place.

The synthetic generators give experiments and tests small problems whose
answer is known, with every random draw fixed by the seed.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphc.data.idx import read_idx
from graphc.errors import DataError

__all__ = ["Dataset", "load_fashion_mnist", "load_mnist", "two_moons", "noisy_sinusoids"]

_IMAGE_SHAPE = (28, 28)
_FILE_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CACHED_SETS = 2  # a decoded image data set takes about 220 MB


@dataclass(frozen=True)
class Dataset:
    """A train/test split of flattened images with integer labels.

    ``x_*`` are read-only float32 arrays of shape ``(n, 784)`` scaled to
    ``[0, 1]``; ``y_*`` are read-only int32 arrays of shape ``(n,)`` indexing
    ``classes``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


@dataclass(frozen=True)
class _Source:
    """Where one image data set may be installed and how to tell users to get it."""

    name: str
    env_var: str
    system_dir: Path
    install_hint: str
    classes: tuple[str, ...]


_FASHION_MNIST = _Source(
    name="Fashion-MNIST",
    env_var="GRAPHC_FASHION_MNIST",
    system_dir=Path("/usr/share/datasets/fashion-mnist"),
    install_hint="install it with `apt-get install dataset-fashion-mnist`, or pass data_dir "
    "or set GRAPHC_FASHION_MNIST to a folder holding the four IDX files",
    classes=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
)

_MNIST = _Source(
    name="MNIST",
    env_var="GRAPHC_MNIST",
    system_dir=Path("/usr/share/datasets/mnist"),
    install_hint="point GRAPHC_MNIST or data_dir at a folder holding the four IDX files ("
    + ", ".join(f"{stem}[.gz]" for stem in _FILE_STEMS) + ")",
    classes=tuple(str(digit) for digit in range(10)),
)


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load Fashion-MNIST from ``data_dir``, ``$GRAPHC_FASHION_MNIST`` or the Debian package."""
    return _load(_FASHION_MNIST, data_dir)


def load_mnist(data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load MNIST from ``data_dir``, ``$GRAPHC_MNIST`` or ``/usr/share/datasets/mnist``."""
    return _load(_MNIST, data_dir)


def _load(source: _Source, data_dir: str | os.PathLike[str] | None) -> Dataset:
    paths = _locate_files(source, data_dir)
    x_train, y_train, x_test, y_test = _decode(paths, len(source.classes))
    return Dataset(x_train, y_train, x_test, y_test, source.classes)


def _locate_files(source: _Source, data_dir: str | os.PathLike[str] | None) -> tuple[Path, ...]:
    """Resolve the four IDX files of ``source`` in the first configured directory."""
    directory, origin = _choose_directory(source, data_dir)
    where = f"{directory} ({origin})"
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise DataError(f"{source.name} not found: {where} {problem}; {source.install_hint}")
    found = {stem: _find_file(directory, stem) for stem in _FILE_STEMS}
    missing = [f"{stem}[.gz]" for stem, path in found.items() if path is None]
    if missing:
        raise DataError(
            f"{source.name} not found: {where} lacks {', '.join(missing)}; {source.install_hint}"
        )
    return tuple(path.resolve() for path in found.values())


def _choose_directory(
    source: _Source, data_dir: str | os.PathLike[str] | None
) -> tuple[Path, str]:
    if data_dir is not None:
        return Path(data_dir).expanduser(), "the data_dir argument"
    from_env = os.environ.get(source.env_var)
    if from_env:
        return Path(from_env).expanduser(), f"from ${source.env_var}"
    return source.system_dir, "the default location"


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


@functools.lru_cache(maxsize=_CACHED_SETS)
def _decode(paths: tuple[Path, ...], num_classes: int) -> tuple[np.ndarray, ...]:
    train_images, train_labels, test_images, test_labels = paths
    return (
        *_decode_split(train_images, train_labels, num_classes),
        *_decode_split(test_images, test_labels, num_classes),
    )


def _decode_split(
    images_path: Path, labels_path: Path, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    _check_images(images_path, images)
    _check_labels(labels_path, labels, num_classes)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path}: holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the files belong to different data sets, reinstall them"
        )
    x = images.reshape(len(images), -1).astype(np.float32)
    x /= 255.0
    y = labels.astype(np.int32)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _check_images(path: Path, images: np.ndarray) -> None:
    if images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
        shape = "x".join(map(str, images.shape))
        raise DataError(
            f"{path}: expected images of shape Nx28x28 but found {shape}; "
            "is this an image file of the right data set?"
        )
    if images.dtype != np.uint8:
        raise DataError(
            f"{path}: expected unsigned byte pixels (IDX type 0x08) but found {images.dtype}; "
            "is this an image file of the right data set?"
        )


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        shape = "x".join(map(str, labels.shape))
        raise DataError(
            f"{path}: expected a 1-D integer label file but found {shape} {labels.dtype}; "
            "is this a label file of the right data set?"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels range over {labels.min()}..{labels.max()} but must lie in "
            f"0..{num_classes - 1}; is this a label file of the right data set?"
        )


def two_moons(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles: a 2-D binary problem no linear model solves.

    Returns ``x`` float32 ``(n, 2)`` and ``y`` int32 ``(n,)`` in shuffled order;
    ``noise`` is the standard deviation of Gaussian jitter added to each point.
    """
    _require(n >= 1, f"two_moons needs n >= 1, got {n}")
    _require(noise >= 0, f"two_moons needs noise >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    angle = rng.uniform(0.0, np.pi, size=n)
    upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    lower = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
    x = np.where(y[:, None] == 0, upper, lower) + rng.normal(0.0, noise, size=(n, 2))
    return x.astype(np.float32), y.astype(np.int32)


_SINE_FREQUENCY_RANGE = (0.02, 0.25)  # cycles per sample: periods of 4 to 50 samples
_SINE_AMPLITUDE_RANGE = (0.2, 1.0)
_MAX_SINES = 3


def noisy_sinusoids(
    n_samples: int, window: int, horizon: int, seed: int, noise: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Forecasting task: predict the next ``horizon`` samples of a sum of sinusoids.

    Each example mixes 2 or 3 sinusoids of random frequency, amplitude and
    phase.  ``inputs`` (float32 ``(n_samples, window)``) carry Gaussian noise of
    standard deviation ``noise``; ``targets`` (float32 ``(n_samples, horizon)``)
    are the noise-free continuation, so the best achievable loss is zero and a
    model is scored on recovering the underlying signal.
    """
    _require(n_samples >= 1, f"noisy_sinusoids needs n_samples >= 1, got {n_samples}")
    _require(window >= 1, f"noisy_sinusoids needs window >= 1, got {window}")
    _require(horizon >= 1, f"noisy_sinusoids needs horizon >= 1, got {horizon}")
    _require(noise >= 0, f"noisy_sinusoids needs noise >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    shape = (n_samples, _MAX_SINES, 1)
    frequency = rng.uniform(*_SINE_FREQUENCY_RANGE, size=shape)
    amplitude = rng.uniform(*_SINE_AMPLITUDE_RANGE, size=shape)
    phase = rng.uniform(0.0, 2 * np.pi, size=shape)
    amplitude[:, -1] *= rng.integers(0, 2, size=(n_samples, 1))  # drop the third sine in about half
    t = np.arange(window + horizon)
    signal = (amplitude * np.sin(2 * np.pi * frequency * t + phase)).sum(axis=1)
    inputs = signal[:, :window] + rng.normal(0.0, noise, size=(n_samples, window))
    return inputs.astype(np.float32), signal[:, window:].astype(np.float32)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
