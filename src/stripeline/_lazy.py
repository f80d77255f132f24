"""Names a package loads on first use (PEP 562), so that importing it stays cheap.

``import stripeline`` must not load SQLAlchemy, pydantic or the SDK, and
``stripeline.gateway`` must not load the SDK before a read is made; each
lists where its lazy names live and gets a module ``__getattr__`` and
``__dir__`` from here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_names(
    package: str, where: Mapping[str, str], exported: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``where`` maps a name to the
    module that defines it; a loaded name is cached in the package."""
    names = dict(where)
    public = set(exported)

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | public)

    return __getattr__, __dir__


__all__ = ["lazy_names"]
