"""Keeping the ranks' copies of a model equal, and giving each rank its share of a batch.

Data parallelism is correct only while every rank trains the same model on
its share of the same data: before the first step the ranks compare
fingerprints of the model, the data and the options (:func:`check_agreement`),
so ranks started on other data or from another model file stop with the ranks
and what differs named, instead of calling mismatched collectives (which MPI
answers with heap corruption) or training a hybrid.  They start from rank 0's
variables (:func:`broadcast_variables`), every step applies the same averaged
update, and :func:`check_replicas` compares checksums of every variable now
and then, so a divergence (a nondeterministic reduction) stops the run with
the ranks named instead of silently training K different models.
"""
from __future__ import annotations

import zlib
from typing import Iterable, Iterator, Protocol

import numpy as np

from graphc.errors import DistributedError
from graphc.parallel.communicator import Communicator

Batch = tuple[np.ndarray, np.ndarray]


class Store(Protocol):
    """What replicas need of the runtime's :class:`~graphc.runtime.store.Store`: every variable by
    name (this package sits below the runtime and must not import it)."""

    values: dict[str, np.ndarray]

Window = tuple[int, int]  # (rows of the global batch, this share's first row)


def shards(batches: Iterable[Batch], communicator: Communicator) -> Iterator[tuple[np.ndarray, np.ndarray, Window]]:
    """This rank's share of each global batch, and where it lies in it ((total rows, first row), for
    :func:`graphc.parallel.communicator.batch_rows`): rank r takes the r-th of ``size`` contiguous
    slices whose lengths differ by at most one (the first ``len % size`` ranks take one row more;
    the train step weighs each rank's gradient by its rows).  A batch with fewer rows than ranks
    (at most the last of an epoch) is skipped, since a rank without rows has no mean loss."""
    size, rank = communicator.size, communicator.rank
    for x, y in batches:
        if len(x) < size:
            continue
        rows, extra = divmod(len(x), size)
        start = rank * rows + min(rank, extra)
        stop = start + rows + (rank < extra)
        yield x[start:stop], y[start:stop], (len(x), start)


def check_agreement(communicator: Communicator, records: dict[str, str]) -> None:
    """Raise on every rank unless every rank has the same ``records`` (what → its fingerprint text)."""
    mine = np.array([zlib.crc32(text.encode()) for text in records.values()], dtype=np.int64)
    everyone = communicator.allgather(mine)
    differ = {what: [rank for rank in range(len(everyone)) if everyone[rank, k] != everyone[0, k]]
              for k, what in enumerate(records)}
    named = [f"the {what} of rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} "
             f"differ{'' if len(ranks) > 1 else 's'} from rank 0's" for what, ranks in differ.items() if ranks]
    if named:
        raise DistributedError(f"the ranks disagree before training: {'; '.join(named)}; start every rank with "
                               f"the same model file, data and options")


def broadcast_variables(store: Store, communicator: Communicator) -> None:
    """Overwrite every variable of every rank with rank 0's, in place."""
    for name in sorted(store.values):
        value = store.values[name]
        if value.flags.c_contiguous:
            communicator.broadcast(value)
        else:
            copy = np.ascontiguousarray(value)
            communicator.broadcast(copy)
            value[...] = copy


def checksum(store: Store) -> int:
    """CRC-32 of every variable's bytes, in name order."""
    crc = 0
    for name in sorted(store.values):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(np.ascontiguousarray(store.values[name]).tobytes(), crc)
    return crc


def check_replicas(store: Store, communicator: Communicator, when: str) -> None:
    """Raise on every rank if some rank's variables differ from rank 0's."""
    sums = communicator.allgather(np.array([checksum(store)], dtype=np.int64))[:, 0]
    differ = [rank for rank, value in enumerate(sums) if value != sums[0]]
    if differ:
        raise DistributedError(f"the model's variables on rank{'s' if len(differ) > 1 else ''} "
                               f"{', '.join(map(str, differ))} differ from rank 0's {when} (checksums "
                               f"{', '.join(f'{int(s):08x}' for s in sums)}); the ranks no longer train one model")
