"""Tests of the data layer: IDX decoding, data set discovery, batching, generators."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from graphc.data import (
    Batches,
    Dataset,
    load_fashion_mnist,
    load_mnist,
    noisy_sinusoids,
    read_idx,
    train_val_split,
    two_moons,
)
from graphc.errors import DataError, GraphcError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FILE_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, TYPE_CODES[array.dtype], array.ndim])
    sizes = struct.pack(f">{array.ndim}I", *array.shape)
    return header + sizes + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def expect_data_error(path: Path, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        read_idx(path)
    return assert_one_line(str(info.value), str(path), *fragments)


def assert_one_line(message: str, *fragments: str) -> str:
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


# --- read_idx -----------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype", list(TYPE_CODES), ids=str)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 2, 3)], ids=str)
def test_read_idx_round_trips(tmp_path, compress, dtype, shape):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=shape) * 100).astype(dtype)
    result = read_idx(write_idx(tmp_path / "data.idx", array, compress))
    assert result.dtype == dtype and result.dtype.isnative
    assert result.shape == shape
    np.testing.assert_array_equal(result, array)
    assert result.flags.writeable


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "plain.idx", array, True)), array)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "fake.gz", array)), array)


VALID = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))

CORRUPTIONS = {
    "bad magic": (b"\x01\x00" + VALID[2:], ["not an IDX file", "01 00"]),
    "unknown type code": (VALID[:2] + b"\x05" + VALID[3:], ["unknown IDX type code 0x05"]),
    "no dimensions": (b"\x00\x00\x08\x00", ["0 dimensions"]),
    "truncated prefix": (VALID[:3], ["truncated IDX header"]),
    "truncated sizes": (VALID[:10], ["truncated IDX header", "2 dimensions"]),
    "truncated data": (VALID[:-9], ["truncated IDX file", "3x4 uint8 (12 bytes)", "only 3 bytes"]),
    "trailing bytes": (VALID + b"\x00\x00", ["2 trailing bytes"]),
    "truncated gzip": (gzip.compress(VALID)[:-6], ["corrupt gzip stream"]),
    "gzip checksum": (gzip.compress(VALID)[:-8] + b"\x00" * 8, ["corrupt gzip stream"]),
    "not gzip after magic": (b"\x1f\x8b" + b"\x00" * 20, ["corrupt gzip stream"]),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_file_gives_one_line_data_error(tmp_path, corruption):
    content, fragments = CORRUPTIONS[corruption]
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(content)
    expect_data_error(path, *fragments)


def test_truncated_data_message_says_what_and_how_to_fix(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10000, 28, 28)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + b"\x00" * 123))
    message = expect_data_error(path)
    assert message == (
        f"{path}: truncated IDX file: header declares 10000x28x28 uint8 (7840000 bytes) "
        "but only 123 bytes of data follow; re-download or reinstall the data set"
    )


def test_missing_file_gives_data_error(tmp_path):
    expect_data_error(tmp_path / "absent.gz", "no such file")


def test_directory_gives_data_error(tmp_path):
    expect_data_error(tmp_path, "cannot read file")


def test_data_error_is_a_graphc_error():
    assert issubclass(DataError, GraphcError)


# --- data set loaders --------------------------------------------------------


def write_fake_set(
    directory: Path,
    n_train: int = 12,
    n_test: int = 6,
    image_shape: tuple[int, ...] = (28, 28),
    label_offset: int = 0,
) -> Path:
    """Write a tiny MNIST-like set, half the files gzipped and half raw."""
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = (
        rng.integers(0, 256, size=(n_train, *image_shape), dtype=np.uint8),
        (np.arange(n_train) % 10 + label_offset).astype(np.uint8),
        rng.integers(0, 256, size=(n_test, *image_shape), dtype=np.uint8),
        (np.arange(n_test) % 10).astype(np.uint8),
    )
    for i, (stem, array) in enumerate(zip(FILE_STEMS, arrays)):
        compress = i % 2 == 0
        write_idx(directory / (stem + ".gz" if compress else stem), array, compress)
    return directory


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("GRAPHC_FASHION_MNIST", raising=False)
    monkeypatch.delenv("GRAPHC_MNIST", raising=False)


@pytest.mark.slow
@pytest.mark.usefixtures("no_env")
@pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason=f"{FASHION_DIR} absent; install it with `apt-get install dataset-fashion-mnist`",
)
def test_fashion_mnist_real_data():
    data = load_fashion_mnist()
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.y_train.shape == (60000,) and data.y_test.shape == (10000,)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    for x in (data.x_train, data.x_test):
        assert 0.0 <= x.min() and x.max() <= 1.0
    for y in (data.y_train, data.y_test):
        np.testing.assert_array_equal(np.unique(y), np.arange(10))
    assert len(data.classes) == 10 and data.classes[0] == "T-shirt/top"


def test_env_var_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_FASHION_MNIST", str(write_fake_set(tmp_path / "fake")))
    data = load_fashion_mnist()
    assert isinstance(data, Dataset)
    assert data.x_train.shape == (12, 784) and data.x_test.shape == (6, 784)
    assert data.x_train.dtype == np.float32 and data.y_test.dtype == np.int32
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    np.testing.assert_array_equal(data.y_train, np.arange(12) % 10)


def test_argument_overrides_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_MNIST", str(tmp_path / "elsewhere"))
    data = load_mnist(write_fake_set(tmp_path / "fake", n_train=4))
    assert data.x_train.shape == (4, 784)
    assert data.classes == tuple("0123456789")


def test_loads_are_cached_and_read_only(tmp_path, no_env):
    directory = write_fake_set(tmp_path / "fake")
    first, second = load_fashion_mnist(directory), load_fashion_mnist(str(directory))
    assert first.x_train is second.x_train
    with pytest.raises(ValueError):
        first.x_train[0, 0] = 1.0
    with pytest.raises(ValueError):
        first.y_test[0] = 3


def test_missing_directory_says_how_to_get_data(tmp_path, no_env):
    absent = tmp_path / "absent"
    with pytest.raises(DataError) as info:
        load_fashion_mnist(absent)
    assert_one_line(
        str(info.value),
        str(absent),
        "does not exist",
        "apt-get install dataset-fashion-mnist",
        "GRAPHC_FASHION_MNIST",
    )


def test_missing_mnist_names_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_MNIST", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_mnist()
    assert_one_line(str(info.value), str(tmp_path), "$GRAPHC_MNIST", "train-images-idx3-ubyte[.gz]")


def test_missing_file_is_named(tmp_path, no_env):
    directory = write_fake_set(tmp_path / "fake")
    (directory / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        load_fashion_mnist(directory)
    assert_one_line(str(info.value), "lacks t10k-labels-idx1-ubyte[.gz];")


@pytest.mark.parametrize(
    ("fake_set", "fragments"),
    [
        ({"image_shape": (784,)}, ["train-images-idx3-ubyte.gz", "Nx28x28", "12x784"]),
        ({"image_shape": (28, 27)}, ["train-images-idx3-ubyte.gz", "12x28x27"]),
        ({"label_offset": 1}, ["train-labels-idx1-ubyte", "1..10", "0..9"]),
    ],
    ids=["flat images", "wrong size", "label range"],
)
def test_inconsistent_files_give_data_error(tmp_path, no_env, fake_set, fragments):
    directory = write_fake_set(tmp_path / "fake", **fake_set)
    with pytest.raises(DataError) as info:
        load_fashion_mnist(directory)
    assert_one_line(str(info.value), *fragments)


def test_count_mismatch_gives_data_error(tmp_path, no_env):
    directory = write_fake_set(tmp_path / "fake")
    write_idx(directory / "train-labels-idx1-ubyte", np.zeros(11, dtype=np.uint8))
    with pytest.raises(DataError) as info:
        load_fashion_mnist(directory)
    assert_one_line(str(info.value), "12 images", "11 labels")


# --- batching -----------------------------------------------------------------


def make_xy(n: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n)
    return np.stack([y * 10, y * 10 + 1], axis=1).astype(np.float32), y


def collect(batches: Batches, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(batches.epoch(epoch))


def epoch_labels(batches: Batches, epoch: int) -> np.ndarray:
    return np.concatenate([yb for _, yb in batches.epoch(epoch)])


def test_each_example_once_per_epoch_with_rows_aligned():
    x, y = make_xy(103)
    batches = Batches(x, y, batch_size=10, seed=3)
    pairs = collect(batches, 0)
    assert len(pairs) == len(batches) == 11
    np.testing.assert_array_equal(np.sort(epoch_labels(batches, 0)), y)
    for xb, yb in pairs:
        assert xb.flags.c_contiguous and yb.flags.c_contiguous
        np.testing.assert_array_equal(xb[:, 0], yb * 10)


def test_epoch_order_depends_only_on_seed_and_epoch():
    x, y = make_xy(50)
    original = Batches(x, y, batch_size=8, seed=7)
    for epoch in range(3):
        collect(original, epoch)
    resumed = Batches(x, y, batch_size=8, seed=7)
    third, replayed = collect(original, 3), collect(resumed, 3)
    for (xa, ya), (xb, yb) in zip(third, replayed, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_epochs_and_seeds_differ():
    x, y = make_xy(50)
    batches = Batches(x, y, batch_size=8, seed=7)
    assert not np.array_equal(epoch_labels(batches, 0), epoch_labels(batches, 1))
    assert not np.array_equal(epoch_labels(batches, 0), epoch_labels(Batches(x, y, 8, seed=8), 0))


def test_no_shuffle_keeps_order():
    x, y = make_xy(10)
    np.testing.assert_array_equal(epoch_labels(Batches(x, y, 4, seed=0, shuffle=False), 5), y)


@pytest.mark.parametrize(("drop_last", "sizes"), [(False, [3, 3, 3, 1]), (True, [3, 3, 3])])
def test_drop_last(drop_last, sizes):
    x, y = make_xy(10)
    batches = Batches(x, y, batch_size=3, seed=0, drop_last=drop_last)
    pairs = collect(batches, 0)
    assert len(batches) == len(sizes)
    assert [len(yb) for _, yb in pairs] == sizes
    assert len(np.unique(epoch_labels(batches, 0))) == sum(sizes)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros(3), np.zeros(3), 0), "batch_size"),
        ((np.zeros(3), np.zeros(4), 2), "same number of examples"),
        ((np.zeros(0), np.zeros(0), 2), "at least one example"),
    ],
)
def test_batches_validates_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        Batches(*args, seed=0)


def test_negative_epoch_is_rejected():
    with pytest.raises(ValueError, match="epoch index"):
        next(Batches(*make_xy(4), batch_size=2, seed=0).epoch(-1))


def test_train_val_split_is_disjoint_complete_and_deterministic():
    x, y = make_xy(100)
    x_train, y_train, x_val, y_val = train_val_split(x, y, val_fraction=0.2, seed=5)
    assert len(y_val) == 20 and len(y_train) == 80
    assert not set(y_train) & set(y_val)
    np.testing.assert_array_equal(np.sort(np.concatenate([y_train, y_val])), y)
    np.testing.assert_array_equal(x_val[:, 0], y_val * 10)
    np.testing.assert_array_equal(train_val_split(x, y, 0.2, seed=5)[3], y_val)
    assert not np.array_equal(train_val_split(x, y, 0.2, seed=6)[3], y_val)


def test_train_val_split_with_zero_fraction_gives_empty_validation():
    x, y = make_xy(10)
    x_train, y_train, x_val, y_val = train_val_split(x, y, 0.0, seed=0)
    assert len(y_train) == 10 and x_val.shape == (0, 2) and y_val.shape == (0,)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_train_val_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(*make_xy(10), fraction, seed=0)


# --- synthetic generators ----------------------------------------------------


def test_two_moons_shapes_and_determinism():
    x, y = two_moons(200, noise=0.1, seed=0)
    assert x.shape == (200, 2) and x.dtype == np.float32
    assert y.shape == (200,) and y.dtype == np.int32
    assert np.bincount(y).tolist() == [100, 100]
    again = two_moons(200, noise=0.1, seed=0)
    np.testing.assert_array_equal(x, again[0])
    np.testing.assert_array_equal(y, again[1])
    assert not np.array_equal(x, two_moons(200, noise=0.1, seed=1)[0])


def test_noisy_sinusoids_shapes_and_determinism():
    inputs, targets = noisy_sinusoids(64, window=24, horizon=4, seed=0)
    assert inputs.shape == (64, 24) and inputs.dtype == np.float32
    assert targets.shape == (64, 4) and targets.dtype == np.float32
    again = noisy_sinusoids(64, window=24, horizon=4, seed=0)
    np.testing.assert_array_equal(inputs, again[0])
    np.testing.assert_array_equal(targets, again[1])
    assert not np.array_equal(inputs, noisy_sinusoids(64, 24, 4, seed=1)[0])


def test_noisy_sinusoids_noise_is_only_on_inputs():
    clean_inputs, clean_targets = noisy_sinusoids(500, 16, 3, seed=2, noise=0.0)
    noisy_inputs, noisy_targets = noisy_sinusoids(500, 16, 3, seed=2, noise=0.5)
    np.testing.assert_array_equal(clean_targets, noisy_targets)
    assert np.std(noisy_inputs - clean_inputs) == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize(
    "call",
    [
        lambda: two_moons(0, 0.1, 0),
        lambda: two_moons(10, -1.0, 0),
        lambda: noisy_sinusoids(10, 0, 2, 0),
        lambda: noisy_sinusoids(10, 4, 0, 0),
    ],
)
def test_generators_validate_arguments(call):
    with pytest.raises(ValueError, match="needs"):
        call()
