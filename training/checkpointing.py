"""A run's checkpoints: the train state and the data position, with Orbax.

`output_dir/checkpoints/<step>/` holds `state` (params, optimizer state, step, RNG) and
`meta` (JSON: the data position). Orbax writes each checkpoint into a temporary
directory and renames it when complete, so a run killed mid-save leaves its previous
checkpoint as the latest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from training.trainer import TrainState

CHECKPOINTS_DIR = "checkpoints"


class Checkpoints:
    """Saves and restores a run's train state.

    Args:
        output_dir: the run's directory.
        keep: how many of the latest checkpoints to keep.
    """

    def __init__(self, output_dir: str | Path, keep: int) -> None:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True
        )
        directory = (Path(output_dir) / CHECKPOINTS_DIR).absolute()
        self._manager = ocp.CheckpointManager(directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the latest complete checkpoint, if any."""
        return self._manager.latest_step()

    def save(self, state: TrainState, meta: dict[str, Any]) -> None:
        """Starts saving a checkpoint at the state's step (finished in the background;
        a later save or `close` waits for it)."""
        step = int(jax.device_get(state.step))
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )

    def restore(self, abstract_state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """The latest checkpoint, laid out as `abstract_state` says.

        Args:
            abstract_state: `jax.ShapeDtypeStruct` leaves with shardings.

        Returns:
            (state, meta).
        """
        step = self._manager.latest_step()
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["meta"]

    def close(self) -> None:
        """Waits for a save in progress, then lets go of the directory."""
        self._manager.wait_until_finished()
        self._manager.close()
