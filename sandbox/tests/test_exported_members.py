"""stripeline_sandbox's public API is exactly what ``__all__`` lists, and it stands alone."""

from __future__ import annotations

import stripeline_sandbox
from stripeline_sandbox import Sandbox

EXPORTED = [
    "API_VERSION",
    "Attempt",
    "DeliveryMode",
    "Fault",
    "Sandbox",
    "SandboxClock",
    "StateFileError",
]


def test_exported_members() -> None:
    assert stripeline_sandbox.__all__ == EXPORTED
    for name in EXPORTED:
        assert getattr(stripeline_sandbox, name) is not None, name
    public = {
        name
        for name, value in vars(stripeline_sandbox).items()
        if not name.startswith("_")
        and name != "annotations"
        and not hasattr(value, "__path__")
        and type(value).__name__ != "module"
    }
    assert public == set(EXPORTED)


def test_each_sandbox_has_its_own_routes_and_state() -> None:
    """Nothing is registered on import: two sandboxes share no router or account."""
    with Sandbox() as first, Sandbox() as second:
        assert first._server.router is not second._server.router
        assert first.world is not second.world
        assert first.world.payment_outcome_handlers == second.world.payment_outcome_handlers
        assert first.event_ids() == [] and second.event_ids() == []
