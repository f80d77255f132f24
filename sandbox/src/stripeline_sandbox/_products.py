"""Products: create, retrieve, update, archive (``active=false``), delete, list."""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._routes import Call, Endpoint, Request, as_bool, optional_str
from stripeline_sandbox._state import Obj

NOUN = "product"
_TEXT_FIELDS = ("description", "statement_descriptor", "tax_code", "unit_label", "url")


def _apply(call: Call, product: Obj, params: dict[str, Any]) -> None:
    if "name" in params:
        if not params["name"]:
            raise invalid("The product name cannot be empty.", param="name")
        product["name"] = str(params["name"])
    for name in _TEXT_FIELDS:
        if name in params:
            product[name] = optional_str(params[name])
    if "active" in params:
        product["active"] = as_bool(params["active"], "active")
    if "shippable" in params:
        product["shippable"] = as_bool(params["shippable"], "shippable")
    if "images" in params:
        images = params["images"]
        product["images"] = [str(i) for i in images] if isinstance(images, list) else []
    if "default_price" in params:
        default = optional_str(params["default_price"])
        if default is not None:
            price = call.get("price", default, param="default_price")
            if price["product"] != product["id"]:
                raise invalid(
                    "The default price must belong to this product.", param="default_price"
                )
        product["default_price"] = default
    product["metadata"] = apply_metadata(product["metadata"], params.get("metadata"))


def create_product_op(call: Call, params: dict[str, Any]) -> Obj:
    """Store a product from create parameters (also used by ``price[product_data]``).

    Raises:
        StripeError: 400 without a ``name``.
    """
    name = params.get("name")
    if not name:
        raise invalid("Missing required param: name.", param="name")
    now = call.now()
    product: Obj = {
        "id": str(params.get("id") or new_id("prod")),
        "object": "product",
        "active": True,
        "created": now,
        "default_price": None,
        "description": None,
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": {},
        "name": str(name),
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "type": "service",
        "unit_label": None,
        "updated": now,
        "url": None,
    }
    if product["id"] in call.account.objects:
        raise invalid(f"Product already exists: {product['id']}", param="id")
    _apply(call, product, {k: v for k, v in params.items() if k != "default_price"})
    call.account.add(product)
    call.emit("product.created", product)
    return product


def create_product(request: Request) -> Obj:
    return create_product_op(request, request.params)


def retrieve_product(request: Request) -> Obj:
    object_id = request.path_params["id"]
    product = request.account.find(NOUN, object_id)
    if product is not None and product.get("deleted"):
        return {"id": object_id, "object": NOUN, "deleted": True}
    return request.get(NOUN, object_id)


def update_product(request: Request) -> Obj:
    product = request.get(NOUN, request.path_params["id"])
    before = copy(product)
    _apply(request, product, request.params)
    changed = previous_attributes(before, product)
    if changed:
        product["updated"] = request.now()
        changed["updated"] = before["updated"]
        request.emit("product.updated", product, changed)
    return product


def delete_product(request: Request) -> Obj:
    product = request.get(NOUN, request.path_params["id"])
    if any(p["product"] == product["id"] for p in request.account.all("price")):
        raise invalid(
            "This product cannot be deleted because it has one or more user-created prices.",
            code="product_has_prices",
        )
    request.emit("product.deleted", product)
    product["deleted"] = True
    return {"id": product["id"], "object": NOUN, "deleted": True}


def list_products(request: Request) -> Obj:
    params = request.params
    active = params.get("active")
    ids = params.get("ids")
    wanted = set(ids if isinstance(ids, list) else [ids]) if ids else None

    def keep(product: Obj) -> bool:
        if product.get("deleted"):
            return False
        if active is not None and product["active"] != as_bool(active, "active"):
            return False
        return wanted is None or product["id"] in wanted

    return list_object(request, request.account.all(NOUN), "/v1/products", keep)


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/products", create_product),
    Endpoint("GET", "/v1/products/{id}", retrieve_product),
    Endpoint("POST", "/v1/products/{id}", update_product),
    Endpoint("DELETE", "/v1/products/{id}", delete_product),
    Endpoint("GET", "/v1/products", list_products),
)
