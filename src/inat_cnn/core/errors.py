"""The exception types for bad input, and how a caller gives a library field its own name.

Anything a user can fix (a missing folder, a corrupt archive, a wrong param) raises
``UserError`` with a message that names the file or the param and says what to do.
Stage scripts and the CLI turn it into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.

The library names its own fields (``device``, ``top_k``); the stage or command that called it
knows what the user typed (``train.device``, ``--device``) and says so with :func:`fields_named`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping


class UserError(Exception):
    """Bad input: the message alone must tell the user what is wrong and how to fix it."""


class ConfigError(UserError):
    """A params.yaml value that is missing, of the wrong type, out of range or unknown."""


class FieldError(ConfigError):
    """A bad value of one field of a library call: ``<field> = <value> <problem>``.

    ``field`` is the library's own name; :func:`fields_named` shows it under the caller's name.
    """

    def __init__(self, field: str, value: Any, problem: str, *, shown_as: str | None = None) -> None:
        self.field, self.value, self.problem = field, value, problem
        self.shown_as = shown_as or field
        super().__init__(f"{self.shown_as} = {value!r} {problem}")

    def renamed(self, name: str) -> "FieldError":
        return FieldError(self.field, self.value, self.problem, shown_as=name)


@contextmanager
def fields_named(names: str | Mapping[str, str] | Callable[[str], str]) -> Iterator[None]:
    """Re-raise a :class:`FieldError` from inside under the caller's name for the field.

    ``names``: a prefix (``"params: train."``), a mapping (``{"device": "--device"}``) or a function.
    """
    try:
        yield
    except FieldError as exc:
        if isinstance(names, str):
            shown = names + exc.field
        elif callable(names):
            shown = names(exc.field)
        else:
            shown = names.get(exc.field, exc.field)
        raise exc.renamed(shown) from exc
