"""Reading images inside Spark tasks: how many at once, how many per task, and one image's fate.

Each task reads its own images (local files or S3) in a small thread pool so object-store
latency overlaps, and decodes them with Pillow; image bytes never travel to the driver.
An image that cannot be read or decoded becomes a problem ``(reason, message)`` for its
result row, never a failed task. Pure Python: importing this needs neither Spark nor
TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from captioning.data.images import DecodeConfig, ImageDecodeError, decode_image
from captioning.store import storage

UNREADABLE = "unreadable"  # reason code of an object that could not be read


@dataclass(frozen=True)
class ImageReading:
    io_threads: int = 8  # concurrent reads + decodes per task (S3 latency hides behind them)
    images_per_partition: int = 256  # task size: small enough to balance, large enough to batch
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def partitions_for(self, count: int, parallelism: int) -> int:
        """Spark partitions for ``count`` objects: at least one per core, at most this many objects each."""
        return max(parallelism, -(-count // self.images_per_partition)) if count else 1


def load_image(uri: str, size: tuple[int, int], decode: DecodeConfig) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """(pixels (H, W, 3) uint8, None) or (None, (reason, message)) for one image."""
    try:
        data = storage.read_bytes(uri)
    except storage.StorageError as error:
        return None, (UNREADABLE, str(error))
    try:
        return decode_image(data, size, decode), None
    except ImageDecodeError as error:
        return None, (error.reason, str(error))
