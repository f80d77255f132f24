"""The public API is exactly what ``__all__`` lists, and all of it exists."""

from __future__ import annotations

import stripeline


def test_all_names_exist_and_are_sorted() -> None:
    for name in stripeline.__all__:
        assert hasattr(stripeline, name), name
    assert stripeline.__all__ == sorted(stripeline.__all__)


def test_public_members_are_listed() -> None:
    public = {
        name
        for name, value in vars(stripeline).items()
        if not name.startswith("_")
        and not isinstance(value, type(stripeline))
        and name != "annotations"  # from __future__ import annotations
    }
    assert public == set(stripeline.__all__) - {"__version__"}


def test_every_error_derives_from_the_root() -> None:
    for name in stripeline.__all__:
        value = getattr(stripeline, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, stripeline.StripelineError), name
