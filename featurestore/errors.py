"""The errors the feature store raises on purpose; each names the set, image and layer involved."""

from __future__ import annotations


class FeatureStoreError(Exception):
    """Base of every error the feature store raises on purpose (print it without a traceback)."""


class NotFound(FeatureStoreError, KeyError):
    """A feature set, an image or a layer that is not in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AlreadyExists(FeatureStoreError):
    """A writer was asked for a feature set that is already complete: skip the extraction."""


class WriterBusy(FeatureStoreError):
    """Another live writer holds the feature set's temporary folder."""


class WriteFailed(FeatureStoreError):
    """The disk refused a write (full, a file-size limit, an I/O error); nothing was published."""


class IncompatibleFeatureSet(FeatureStoreError):
    """Data that does not match the set: other layers or dims, a bad shape, another format."""


class ChecksumError(FeatureStoreError):
    """A stored value whose bytes no longer match their checksum."""

    def __init__(self, set_id: str, image_id: str, layer: str, expected: int, actual: int) -> None:
        self.set_id = set_id
        self.image_id = image_id
        self.layer = layer
        super().__init__(
            f"feature set {set_id}: image {image_id!r} layer {layer!r}: checksum mismatch "
            f"(stored {expected:08x}, computed {actual:08x}); the value is corrupt: "
            f"re-extract the set or remove it with `mlt features gc`"
        )
