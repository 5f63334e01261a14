"""Doctests of the package modules that ``pytest.ini`` lists in ``testpaths``.

``--doctest-modules`` is not used: it would also import every file under ``tests/`` as a doctest
module, which clashes on the several ``conftest.py`` files. Instead, every ``.py`` file inside a
``testpaths`` entry that lies in the ``dlum`` package is collected for its ``>>>`` examples, so
``make test`` runs them, and so does ``pytest dlum/stats/roc.py``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.doctest import DoctestModule

PACKAGE = Path(__file__).resolve().parent / "dlum"
_ROOTS = pytest.StashKey[list]()


def _doctest_roots(config: pytest.Config) -> list[Path]:
    roots = [(config.rootpath / entry).resolve() for entry in config.getini("testpaths")]
    return [root for root in roots if root == PACKAGE or PACKAGE in root.parents]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ROOTS] = _doctest_roots(config)



def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    config = parent.config
    if file_path.suffix != ".py" or file_path.name == "__main__.py":
        return None
    if config.option.doctestmodules:  # pytest's own doctest collection already covers it
        return None
    path = file_path.resolve()
    if any(path == root or root in path.parents for root in config.stash.get(_ROOTS, [])):
        return DoctestModule.from_parent(parent, path=file_path)
    return None
