"""Registries of named parts (backbones, stages, model architectures), imported on first use.

A registry line is a name and the `module:attribute` that implements it, so listing the names
(command-line choices, `--help`, config checks) imports nothing heavy; the part's module is
imported when the part is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from cp_dist.errors import UserError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind, self._entries = kind, dict(entries)

    def __getitem__(self, name: str) -> T:
        module, _, attribute = self._entries[name].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, name: str, setting: str) -> T:
        """The part called `name`; an unknown name is a UserError that names the setting."""
        if name not in self._entries:
            raise UserError(f"{setting} {name!r}: unknown {self.kind}; expected one of {', '.join(self._entries)}")
        return self[name]
