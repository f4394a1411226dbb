"""Checkpoint files written so that a kill at any moment leaves the previous one intact."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.plugins.io import TorchCheckpointIO

from noise2map.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint beside its path, then renames it into place."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        with atomic_path(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
