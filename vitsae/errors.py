"""The one base class of vitsae's own errors.

A `VitsaeError` is a mistake or a damaged input that the user can fix: the command line prints its message as
one line (`vitsae <command>: error: ...`) instead of a traceback. Its message names what is wrong and how to
repair it. Errors that are bugs in vitsae stay ordinary Python exceptions.
"""


class VitsaeError(Exception):
    """A problem the user can fix, described in one line that says how."""
