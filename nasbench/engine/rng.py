"""Random generators: seeding, per-rank streams, and their state as plain data for weights_only checkpoints."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from nasbench.engine import distributed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as plain data for a weights_only checkpoint."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": python_state_to_plain(random.getstate()),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(python_state_from_plain(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_rank(seed: int, d: distributed.Dist, salt: int = 0) -> None:
    """Distributed: give each rank its own random stream (augmentation, dropout, drop-path) once the
    weights and architecture parameters are drawn (DDP and the trainer take those from rank 0)."""
    if d.enabled:
        seed_everything(distributed.rank_seed(seed, d.rank, salt))


def restore_rank_rng(state: dict[str, Any], d: distributed.Dist, seed: int) -> None:
    """The random state of a checkpoint: each rank's own when the number of processes is unchanged,
    otherwise rank 0's for one process and fresh per-rank streams for several."""
    rngs = state.get("rng_ranks")
    if not d.enabled:
        set_rng_state(state["rng"])
    elif rngs and len(rngs) == d.world:
        set_rng_state(rngs[d.rank])
    else:
        seed_rank(seed, d, salt=1 + int(state.get("global_epoch", state.get("epoch", 0))))


def python_state_to_plain(st: tuple) -> dict[str, Any]:
    version, internal, gauss = st
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def python_state_from_plain(d: dict[str, Any]) -> tuple:
    return (d["version"], tuple(int(v) for v in d["internal"].tolist()), d["gauss"])
