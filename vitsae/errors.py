"""The one base class of vitsae's own errors, and the few general kinds every stage raises.

A `VitsaeError` is a mistake or a damaged input that the user can fix: the command line prints its message as
one line (`vitsae <command>: error: ...`) instead of a traceback. Its message names what is wrong and how to
repair it. Errors that are bugs in vitsae stay ordinary Python exceptions.

The kinds below also subclass the built-in exception that was raised before they existed, so code that
catches `ValueError`, `FileNotFoundError` or `KeyError` keeps working. Each stage adds its own kinds where a
caller needs to tell them apart (`StoreError`, `BadImageError`, `CheckpointMismatch`, `TrainingDiverged`,
`DamagedFile`).
"""


class VitsaeError(Exception):
    """A problem the user can fix, described in one line that says how."""


class InvalidValue(VitsaeError, ValueError):
    """An option, spec or file content with a value vitsae cannot use (out of range, unknown, wrong shape)."""


class MissingFile(VitsaeError, FileNotFoundError):
    """A file or folder vitsae was pointed at does not exist or is not what was asked for."""


class DamagedFile(InvalidValue):
    """A file vitsae wrote earlier that cannot be parsed (truncated, overwritten, bit rot): the message names
    it, says what is wrong and how to make it again (rerun harvest, retrain, recompute)."""


class MissingKey(VitsaeError, KeyError):
    """A named entry (a tensor in a file, a hook in a store) is not there; the message lists what is."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
