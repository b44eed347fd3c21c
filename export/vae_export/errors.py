class ExportError(RuntimeError):
    """The export cannot proceed (bad checkpoint, bad option, unwritable target)."""


class ValidationError(ExportError):
    """An exported graph failed a check; nothing was written."""
