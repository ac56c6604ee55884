"""The error the checkpoint converters raise."""


class CheckpointConversionError(ValueError):
    """A checkpoint that does not fit the model (unmatched keys or shapes, unknown layout)."""
