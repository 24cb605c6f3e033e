"""Frozen slots dataclasses built fast: each field stored by its slot's own setter.

The ``__init__`` that ``@dataclass(frozen=True)`` writes stores every field through
``object.__setattr__`` (the class's own ``__setattr__`` refuses, which is what makes it
frozen). A value is built for every reading, and a reset builds a dozen, so that cost shows.
:func:`fast_init` gives such a class an ``__init__`` with the same signature, defaults and
``__post_init__`` that stores each field through its slot's member descriptor instead. No
library does this (attrs and the standard library both write the ``object.__setattr__``
form for frozen classes); ``tests/test_model_init.py`` compares every class that uses it
with what ``@dataclass`` builds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, TypeVar

__all__ = ["fast_init"]

_C = TypeVar("_C", bound=type)


def fast_init(cls: _C) -> _C:
    """Give the frozen slots dataclass ``cls`` the fast ``__init__`` (a class decorator,
    above ``@dataclass``); returns ``cls``."""
    setattr(cls, "__init__", _slot_init(cls))  # noqa: B010 - a class attribute, set once
    return cls


def _slot_init(cls: type[Any]) -> Callable[..., None]:
    """An ``__init__`` for the frozen slots dataclass ``cls`` that sets each slot directly.

    The one ``@dataclass`` writes sets every field through ``object.__setattr__`` (the
    class's own ``__setattr__`` refuses): about 1,400 machine instructions a field on CPython
    3.11, so a 17-field :class:`~weightstream.model.Result` costs some 4 us, and a reset
    builds a dozen such values. The slot's own setter (its member descriptor's ``__set__``)
    does the same store in about half. Same signature, defaults and ``__post_init__``; the
    stored values are the very objects passed.
    """
    names: dict[str, Any] = {}
    params: list[str] = []
    body: list[str] = []
    for f in fields(cls):
        if not f.init or f.kw_only or f.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain init fields are supported")
        name = f.name
        names[f"_set_{name}"] = cls.__dict__[name].__set__
        if f.default is not MISSING:
            names[f"_default_{name}"] = f.default
            params.append(f"{name}=_default_{name}")
        else:
            params.append(name)
        body.append(f"    _set_{name}(self, {name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n"
    exec(source, names)  # noqa: S102 - generated from the class's own fields, as dataclasses does
    init: Callable[..., None] = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = dict(cls.__init__.__annotations__)
    init.__doc__ = cls.__init__.__doc__
    return init
