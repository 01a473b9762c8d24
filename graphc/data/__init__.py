"""Getting training data into NumPy arrays, reproducibly and with clear failures."""
from graphc.data.batches import Batches, train_val_split
from graphc.data.datasets import Dataset, load_fashion_mnist, load_mnist, noisy_sinusoids, two_moons
from graphc.data.idx import read_idx

__all__ = [
    "Batches",
    "Dataset",
    "load_fashion_mnist",
    "load_mnist",
    "noisy_sinusoids",
    "read_idx",
    "train_val_split",
    "two_moons",
]
