"""Packaging tests: they change the machine (packages, users), so they run only when asked.

``make package-test`` (which .ci/run calls) builds the packages and sets
RUNA_PACKAGING_TEST=1; anywhere else these tests skip, saying so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pkgsupport import PlainUser


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("RUNA_PACKAGING_TEST") == "1" and os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="changes the machine as root (packages, users): run by `make "
                            "package-test` (RUNA_PACKAGING_TEST=1), which .ci/run calls")
    for item in items:
        if item.get_closest_marker("packaging") is not None:
            item.add_marker(skip)


@pytest.fixture
def plain_user_factory() -> Iterator[type[PlainUser]]:
    made: list[PlainUser] = []

    class Factory(PlainUser):
        def __init__(self, name: str, groups: tuple[str, ...] = ()) -> None:
            super().__init__(name, groups)
            made.append(self)

    yield Factory
    for user in made:
        user.remove()
