"""``stripeline.mirror`` exports what its users need, and only that
(after httpx's ``tests/test_exported_members.py``)."""

from __future__ import annotations

import types

import stripeline.mirror


def test_mirror_exported_members() -> None:
    exported = stripeline.mirror.__all__
    assert exported == sorted(exported, key=lambda name: (not name.isupper(), name))
    assert len(set(exported)) == len(exported)
    for name in exported:
        assert hasattr(stripeline.mirror, name), name
    public = {
        name
        for name, value in vars(stripeline.mirror).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - {"annotations"} == set(exported)


def test_mirror_exports_the_reader_records_and_links() -> None:
    assert {
        "Mirror",
        "MirrorRecord",
        "Customer",
        "Subscription",
        "Invoice",
        "InvoiceLine",
        "CustomerLink",
        "CustomerLinkConflict",
        "ACTIVE_STATUSES",
        "to_major",
        "currency_exponent",
    } <= set(stripeline.mirror.__all__)
