"""The variable store: parameter and state values that outlive a step.

Values are keyed by variable name, which is what a checkpoint records and what
two compiled functions (a train step and an inference step) share.  Parameters
a train step updates together live in one flat arena, so the optimizer can
update them with a few whole-vector operations; each parameter's array is a
view into it.  Re-packing bumps ``version``, telling compiled steps to rebind.
Every write of variable values (a load, a step that updates variables) advances
``generation``, so a step that keeps copies of the variables elsewhere (on a
GPU) knows when its copies are stale.

A device step leaves the variables it updates on the device (``ahead``): a
train step then costs the copy of its loss alone.  The host arrays are brought
up to date only when someone reads them: ``values``, ``store[name]``, a load,
a re-pack, another compiled function (:mod:`graphc.runtime.step`).
"""
from __future__ import annotations

import threading
import zlib
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from graphc.errors import CheckpointError
from graphc.ir.node import Node
from graphc.ir.shapes import fmt, is_static


def zeros(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.zeros(shape, dtype)


class Store:
    def __init__(self, seed: int = 0):
        self.seed = seed
        self._values: dict[str, np.ndarray] = {}  # possibly stale while ``ahead`` is set
        self.arenas: dict[tuple[str, ...], np.ndarray] = {}
        self.version = 0
        self.generation = 0
        self.rng = np.random.default_rng([seed, 1])
        self.lock = threading.Lock()  # held by compiled functions while they read or write the values
        # A device step that holds newer values than these arrays (graphc.backends.cuda.binding.DeviceStep);
        # catch_up() brings them here.
        self.ahead: Optional[Any] = None
        # The step counter of a device's counter-based random stream (Philox): saved in checkpoints
        # beside ``rng``, so a resumed run draws what the uninterrupted one would.
        self.device_counter: Optional[np.ndarray] = None

    def counter(self) -> np.ndarray:
        """The device's random stream counter (one uint64), started from ``rng`` on first use."""
        if self.device_counter is None:
            self.device_counter = np.array([self.rng.integers(0, 2**63, dtype=np.uint64)], np.uint64)
        return self.device_counter

    def catch_up(self) -> None:
        """Make the arrays hold the newest values, if a device step holds newer ones."""
        ahead = self.ahead
        if ahead is not None:
            ahead.fetch_variables()

    @property
    def values(self) -> dict[str, np.ndarray]:
        """Every variable's value by name, up to date: reading them fetches what a device step holds."""
        self.catch_up()
        return self._values

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def init_rng(self, name: str) -> np.random.Generator:
        """A generator that depends only on the store's seed and the variable's name,
        so adding a layer does not change the initial weights of the others."""
        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])

    def ensure(self, var: Node) -> np.ndarray:
        """The variable's value, made by its initializer on first use."""
        if not is_static(var.shape):
            raise CheckpointError(f"{var.op} '{var.name}' needs a static shape, got {fmt(var.shape)}")
        shape = tuple(int(d) for d in var.shape)
        value = self._values.get(var.name)
        if value is None:
            init = var.meta.get("init") or zeros
            value = np.array(init(self.init_rng(var.name), shape, var.dtype), dtype=var.dtype, order="C")
            if value.shape != shape:
                raise CheckpointError(f"the initializer of '{var.name}' made shape {value.shape}, expected {shape}")
            self._values[var.name] = value
        elif value.shape != shape or value.dtype.name != var.dtype:
            raise CheckpointError(f"{var.op} '{var.name}' is {var.dtype}{fmt(var.shape)} in the graph but "
                                  f"{value.dtype.name}{list(value.shape)} in the store")
        return value

    def pack(self, variables: Sequence[Node]) -> np.ndarray:
        """One contiguous arena holding ``variables`` back to back, in order."""
        names = tuple(v.name for v in variables)
        if names in self.arenas:
            return self.arenas[names]
        self.catch_up()  # the new arena starts from the newest values
        current = [self.ensure(v) for v in variables]
        arena = np.empty(sum(a.size for a in current), dtype=variables[0].dtype)
        offset = 0
        for var, value in zip(variables, current):
            view = arena[offset:offset + value.size].reshape(value.shape)
            view[...] = value
            self._values[var.name] = view
            offset += value.size
        self.arenas = {k: a for k, a in self.arenas.items() if not set(k) & set(names)}
        self.arenas[names] = arena
        self.version += 1
        return arena

    def load(self, values: dict[str, np.ndarray], names: Optional[Iterable[str]] = None) -> None:
        """Overwrite values in place (arenas keep their identity), checking shapes.  A device step's
        newer values are fetched first: the names not loaded keep them."""
        self.catch_up()
        self.generation += 1
        for name in names if names is not None else values:
            target = self._values.get(name)
            new = np.asarray(values[name])
            new = new.astype(new.dtype.newbyteorder("="), copy=False)  # compiled loops read native bytes
            if target is None:
                self._values[name] = np.array(new)
                self.version += 1
            elif target.shape != new.shape or target.dtype != new.dtype:
                raise CheckpointError(f"'{name}' is {target.dtype}{list(target.shape)} in the model but "
                                      f"{new.dtype}{list(new.shape)} in the checkpoint")
            else:
                target[...] = new
