"""Stripe's error envelope, raised by handlers and rendered by the server."""

from __future__ import annotations

from typing import Any

DOCS = "https://docs.stripe.com/error-codes"


class StripeError(Exception):
    """An error answered with Stripe's ``{"error": {...}}`` envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        headers: dict[str, str] | None = None,
        save_idempotent: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.headers = headers or {}
        #: Whether an Idempotency-Key keeps this answer (it does for errors
        #: raised once the endpoint started executing, e.g. card declines).
        self.save_idempotent = save_idempotent
        self.extra = extra

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"{DOCS}#{self.code.replace('_', '-')}"
        if self.decline_code:
            error["decline_code"] = self.decline_code
        if self.param:
            error["param"] = self.param
        error.update(self.extra)
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": error}


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    """A 400 ``invalid_request_error``."""
    return StripeError(400, message, param=param, code=code)


def missing_param(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", param=param, code="parameter_missing")


def no_such(noun: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {noun}: '{object_id}'", code="resource_missing", param=param)
