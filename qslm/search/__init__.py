"""The search: engine, strategies, objective, journal. ``qslm.search(...)`` is ``qslm.search.api.search``.

This package and the function share the name ``qslm.search``; whichever Python binds there (the package,
once any of its modules is imported), calling it runs the search.
"""
from __future__ import annotations

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
