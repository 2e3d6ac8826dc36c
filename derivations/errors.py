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
        raise NotImplementedError(f"{where}: {message}") from error
