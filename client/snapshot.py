"""Named snapshots of the training state, held in host memory.

A snapshot is a deep copy of everything that decides what the next steps compute: the model's
``state_dict()`` (parameters and buffers), the optimizer's ``state_dict()``, the AMP grad scaler's, any extra
stateful objects the user adds, and the random number generators (torch CPU, every CUDA device when CUDA is
initialized, numpy's global generator, Python's ``random``). Tensors are copied to CPU, so a snapshot costs
host memory about the size of the model plus the optimizer state (Adam: three times the parameters), and
nothing on the accelerator. Restoring a snapshot and replaying the same batches reproduces the same losses
bit for bit on CPU (on CUDA as far as the kernels are deterministic).
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

log = logging.getLogger("lrtune.client")


class Stateful(Protocol):
    """Anything with ``state_dict()`` and ``load_state_dict()`` (modules, optimizers, scalers, ...)."""

    def state_dict(self) -> Any:
        """Return the object's state."""
        ...

    def load_state_dict(self, state_dict: Any, /) -> Any:
        """Load a state returned by :meth:`state_dict`."""
        ...


def to_host(tree: Any) -> Any:
    """Return a deep copy of ``tree`` with every tensor detached and copied to CPU.

    Args:
        tree: Nested dicts, lists and tuples of tensors and plain values (a ``state_dict()``).
    """
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        out = {k: to_host(v) for k, v in tree.items()}
        if type(tree) is dict:
            return out
        typed = type(tree)(out)  # an OrderedDict stays one, with the version ``_metadata`` modules read
        meta = getattr(tree, "_metadata", None)
        if meta is not None:
            setattr(typed, "_metadata", copy.deepcopy(meta))  # noqa: B010 - not a declared attribute
        return typed
    if isinstance(tree, list):
        return [to_host(v) for v in tree]
    if isinstance(tree, tuple):
        return tuple(to_host(v) for v in tree)
    return copy.deepcopy(tree)


def nbytes(tree: Any) -> int:
    """Total size in bytes of the tensors in ``tree``."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(nbytes(v) for v in tree.values())
    if isinstance(tree, list | tuple):
        return sum(nbytes(v) for v in tree)
    return 0


def capture_rng() -> dict[str, Any]:
    """Return the state of every global random number generator training may draw from."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Set every global random number generator back to ``state`` (from :func:`capture_rng`)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Snapshot:
    """One saved training state (all tensors on CPU).

    Attributes:
        model: The model's ``state_dict()``.
        optimizer: The optimizer's ``state_dict()``.
        scaler: The grad scaler's ``state_dict()``, or None.
        extra: ``state_dict()`` of each extra stateful object, by name.
        rng: Generator states from :func:`capture_rng`.
        nbytes: Bytes of tensor data held.
    """

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    extra: dict[str, Any]
    rng: dict[str, Any]
    nbytes: int


class SnapshotStore:
    """Saves, restores and frees named snapshots of one training process.

    Args:
        model: The model (a plain module, or the DDP wrapper: restore goes through the same object).
        optimizer: The optimizer.
        scaler: The AMP grad scaler, or None.
        extra: More stateful objects to save with each snapshot (an EMA model, a data sampler, ...).
    """

    def __init__(
        self,
        model: Stateful,
        optimizer: Stateful,
        scaler: Stateful | None = None,
        extra: Mapping[str, Stateful] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.extra = dict(extra or {})
        self._snaps: dict[str, Snapshot] = {}

    @property
    def names(self) -> list[str]:
        """Names of the snapshots held, oldest first."""
        return list(self._snaps)

    @property
    def nbytes(self) -> int:
        """Host memory held by all snapshots, in bytes."""
        return sum(s.nbytes for s in self._snaps.values())

    def __contains__(self, name: object) -> bool:
        return name in self._snaps

    def save(self, name: str) -> Snapshot:
        """Save the current state under ``name`` (replacing a snapshot of that name)."""
        snap = Snapshot(
            model=to_host(self.model.state_dict()),
            optimizer=to_host(self.optimizer.state_dict()),
            scaler=to_host(self.scaler.state_dict()) if self.scaler is not None else None,
            extra={k: to_host(v.state_dict()) for k, v in self.extra.items()},
            rng=to_host(capture_rng()),
            nbytes=0,
        )
        snap.nbytes = nbytes([snap.model, snap.optimizer, snap.extra])
        self._snaps[name] = snap
        return snap

    def restore(self, name: str) -> bool:
        """Set the training state back to snapshot ``name``; the snapshot stays held.

        Returns:
            False when no snapshot of that name is held (nothing changes).
        """
        snap = self._snaps.get(name)
        if snap is None:
            return False
        self.model.load_state_dict(snap.model)  # copies into the existing parameters
        # The optimizer keeps the tensors it is given (a same-device ``.to`` is a no-op), and updates them in
        # place: hand it copies so the snapshot stays intact for the next restore.
        self.optimizer.load_state_dict(to_host(snap.optimizer))
        if self.scaler is not None and snap.scaler is not None:
            self.scaler.load_state_dict(copy.deepcopy(snap.scaler))
        for key, obj in self.extra.items():
            if key in snap.extra:
                obj.load_state_dict(to_host(snap.extra[key]))
        restore_rng(to_host(snap.rng))
        return True

    def drop(self, name: str) -> None:
        """Free snapshot ``name`` (no error when it is not held)."""
        self._snaps.pop(name, None)

    def clear(self) -> None:
        """Free every snapshot."""
        self._snaps.clear()

    def state_dict(self) -> dict[str, Any]:
        """Return every snapshot as plain dicts of CPU tensors (for a checkpoint)."""
        return {
            name: {
                "model": s.model,
                "optimizer": s.optimizer,
                "scaler": s.scaler,
                "extra": s.extra,
                "rng": s.rng,
                "nbytes": s.nbytes,
            }
            for name, s in self._snaps.items()
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the held snapshots with those of :meth:`state_dict`."""
        self._snaps = {name: Snapshot(**dict(s)) for name, s in state.items()}
