"""Errors that point at the formula that caused them."""

import contextlib


@contextlib.contextmanager
def located(where: str):
    """Prefixes a NotImplementedError raised inside with ``where`` (a definition
    and its model), unless the message already names it."""
    try:
        yield
    except NotImplementedError as error:
        message = str(error)
        if where in message:
            raise
        # "definition 'y' of <pass>" where the message names the pass already.
        head, _, tail = where.partition(" of ")
        if tail and tail in message:
            where = head
        raise NotImplementedError(f"{where}: {message}") from error
