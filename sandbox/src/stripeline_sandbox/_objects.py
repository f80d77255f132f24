"""Helpers every resource uses: metadata rules, diffs for updates, expansion."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from stripeline_sandbox._errors import invalid
from stripeline_sandbox._state import Account, Obj

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500


def copy(value: Any) -> Any:
    """A deep copy of JSON data (faster than ``copy.deepcopy`` for it)."""
    return json.loads(json.dumps(value))


def apply_metadata(current: dict[str, str], given: Any) -> dict[str, str]:
    """Stripe's metadata update: keys merge, ``""`` unsets a key or clears all.

    Raises:
        StripeError: 400 when a limit is exceeded (50 keys, 40-char keys,
        500-char values) or the value is not a hash.
    """
    if given is None:
        return current
    if given == "":
        return {}
    if not isinstance(given, dict):
        raise invalid("Invalid hash", param="metadata")
    merged = dict(current)
    for key, value in given.items():
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise invalid(
                f"Metadata keys can have up to {MAX_METADATA_KEY_LENGTH} characters; "
                f"key '{key}' has {len(key)}.",
                param=f"metadata[{key}]",
            )
        if not isinstance(value, str):
            raise invalid("Metadata values must be strings.", param=f"metadata[{key}]")
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            raise invalid(
                f"Metadata values can have up to {MAX_METADATA_VALUE_LENGTH} characters, "
                f"but you passed in a value that is {len(value)} characters.",
                param=f"metadata[{key}]",
            )
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_METADATA_KEYS:
        raise invalid(
            f"Metadata can have up to {MAX_METADATA_KEYS} keys; you passed {len(merged)}.",
            param="metadata",
        )
    return merged


def previous_attributes(before: Obj, after: Obj) -> Obj:
    """``data.previous_attributes``: the old value of each changed field.

    Nested hashes (``metadata``, ``invoice_settings``) keep only their changed
    keys, a key that did not exist before reads ``""`` (as Stripe shows added
    metadata keys); arrays are whole (Stripe's rule since 2017-04-06).
    """
    previous: Obj = {}
    for key in after.keys() | before.keys():
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            nested = previous_attributes(old, new)
            for name in nested:
                if name not in old:
                    nested[name] = "" if key == "metadata" else None
            previous[key] = nested
        else:
            previous[key] = old
    return previous


#: How many items of an included list (``expand[]=sources``) are shown, as on Stripe.
INCLUDED_LIST_LIMIT = 10

#: Fields Stripe leaves out of an object unless ``expand[]`` names them (a
#: Customer's ``sources``): object type -> field -> the field's items and the
#: URL listing them, from the account and the object. Resource modules fill it.
INCLUDABLE: dict[str, dict[str, Callable[[Account, Obj], tuple[list[Obj], str]]]] = {}


def includable(
    kind: str, name: str
) -> Callable[
    [Callable[[Account, Obj], tuple[list[Obj], str]]],
    Callable[[Account, Obj], tuple[list[Obj], str]],
]:
    """Register a function as the source of ``kind``'s includable list field ``name``."""

    def register(
        function: Callable[[Account, Obj], tuple[list[Obj], str]],
    ) -> Callable[[Account, Obj], tuple[list[Obj], str]]:
        INCLUDABLE.setdefault(kind, {})[name] = function
        return function

    return register


def _included(
    account: Account, value: Obj, head: str, render: Callable[[Any], Any] | None
) -> Obj | None:
    """The list object of ``value``'s includable field ``head``, or None if it has none."""
    produce = INCLUDABLE.get(str(value.get("object")), {}).get(head)
    if produce is None or value.get("deleted"):
        return None
    items, url = produce(account, value)
    data = [copy(item) for item in items[:INCLUDED_LIST_LIMIT]]
    if render is not None:
        data = [render(item) for item in data]
    return {
        "object": "list",
        "data": data,
        "has_more": len(items) > INCLUDED_LIST_LIMIT,
        "url": url,
    }


def expand(
    account: Account,
    value: Any,
    paths: list[str],
    render: Callable[[Any], Any] | None = None,
) -> Any:
    """Replace ids by their objects along each dotted path of ``expand[]``.

    ``value`` must be a copy: it is changed in place. Each object brought in
    goes through ``render`` (an older API version's shapes). A field Stripe
    only includes when asked (``INCLUDABLE``) is added as a list object. A
    path naming a field the object does not have is refused, as on Stripe; a
    null field, or an id the sandbox does not keep, stays as it is.

    Raises:
        StripeError: 400 ``This property cannot be expanded``.
    """
    for path in paths:
        value = _expand_path(account, value, str(path).split("."), str(path), render)
    return value


def _expand_path(
    account: Account,
    value: Any,
    parts: list[str],
    path: str,
    render: Callable[[Any], Any] | None,
) -> Any:
    if isinstance(value, list):
        return [_expand_path(account, item, parts, path, render) for item in value]
    if not parts or not isinstance(value, dict):
        return value
    head, rest = parts[0], parts[1:]
    if head not in value:
        included = _included(account, value, head, render)
        if included is None:
            raise invalid(f"This property cannot be expanded ({path}).", param="expand")
        value[head] = included
    child = value[head]
    if isinstance(child, str) and child in account.objects:
        child = copy(account.objects[child])
        if render is not None:
            child = render(child)
    if rest:
        child = _expand_path(account, child, rest, path, render)
    value[head] = child
    return value
