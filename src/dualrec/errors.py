"""dualrec's user-facing errors, in a module of their own so that importing them is free (the CLI
defines its error handling before it imports torch)."""

from __future__ import annotations

from typing import Sequence


class DualrecError(Exception):
    """A user-facing error: the CLI prints its message without a stack trace."""


class UnknownProductError(DualrecError, KeyError):
    """One or more product ids are not in the graph."""

    def __init__(self, missing: Sequence[str]):
        self.missing = list(missing)
        shown = ", ".join(repr(m) for m in self.missing[:5])
        more = f" (and {len(self.missing) - 5} more)" if len(self.missing) > 5 else ""
        super().__init__(f"unknown product id(s): {shown}{more}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ModelBusyError(DualrecError):
    """Another writer holds the model folder's lock."""


__all__ = ["DualrecError", "UnknownProductError", "ModelBusyError"]
