"""nionswift-emedge core: the science, with no Swift import.

Data flows one way: instrument -> frames -> scalars -> model -> next position.
"""
__version__ = "0.1.0"


class EmedgeError(Exception):
    """A user-facing error: bad input, a missing file, a wrong shape.

    The CLI prints its message as one line and exits non-zero; nothing else is
    caught that way, so real bugs still show their traceback.
    """
