"""File uploads (``POST /v1/files``, multipart/form-data) for dispute evidence.

The form's ``file`` part arrives decoded by the server (``_form.multipart``) as
``{"filename", "content_type", "size", "data"}`` (``data``: base64). The
content is kept with the account, out of the object; ``GET
/v1/files/{id}/contents`` gives it back. ``purpose=dispute_evidence`` takes
PDF, JPEG and PNG files of at most 5 MB, as Stripe does.
"""

from __future__ import annotations

import base64

from stripeline_sandbox._errors import StripeError, invalid, missing_param
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._routes import Endpoint, Request
from stripeline_sandbox._state import Obj

PURPOSES = (
    "account_requirement", "additional_verification", "business_icon", "business_logo",
    "customer_signature", "dispute_evidence", "identity_document", "pci_document",
    "tax_document_user_upload", "terminal_reader_splashscreen",
)  # fmt: skip
#: File types by extension, and those a purpose accepts (others: any of them).
TYPES = {"pdf": "pdf", "jpg": "jpg", "jpeg": "jpg", "png": "png", "csv": "csv", "txt": "txt"}
ACCEPTED = {"dispute_evidence": ("pdf", "jpg", "png")}
MAX_SIZE = 5 * 1024 * 1024


def _type_of(filename: str) -> str | None:
    _, dot, extension = filename.rpartition(".")
    return TYPES.get(extension.lower()) if dot else None


def create_file(request: Request) -> Obj:
    params = request.params
    purpose = params.get("purpose")
    if not purpose:
        raise missing_param("purpose")
    if purpose not in PURPOSES:
        raise invalid(f"Invalid purpose: must be one of {', '.join(PURPOSES)}", param="purpose")
    upload = params.get("file")
    if not isinstance(upload, dict) or "data" not in upload:
        raise missing_param("file")
    filename = str(upload.get("filename") or "file")
    content = base64.b64decode(str(upload["data"]))
    kind = _type_of(filename)
    accepted = ACCEPTED.get(str(purpose), tuple(set(TYPES.values())))
    if kind not in accepted:
        raise invalid(
            f"Files with purpose {purpose} must be one of these types: {', '.join(accepted)}.",
            param="file",
        )
    if len(content) > MAX_SIZE:
        raise invalid(f"The file is too large (at most {MAX_SIZE} bytes).", param="file")
    file_id = new_id("file")
    obj: Obj = {
        "id": file_id,
        "object": "file",
        "created": request.now(),
        "expires_at": None,
        "filename": filename,
        "links": None,
        "purpose": purpose,
        "size": len(content),
        "title": None,
        "type": kind,
        "url": f"{request.world.public_url}/v1/files/{file_id}/contents",
    }
    request.account.add(obj)
    request.account.hidden(file_id)["content"] = upload["data"]
    return obj


def retrieve_file(request: Request) -> Obj:
    return request.get("file", request.path_params["id"])


def list_files(request: Request) -> Obj:
    purpose = request.params.get("purpose")
    return list_object(
        request,
        request.account.all("file"),
        "/v1/files",
        lambda f: purpose in (None, f["purpose"]),
    )


def file_contents(request: Request) -> Obj:
    """The content, base64 in ``data`` (the sandbox answers JSON only)."""
    obj = request.get("file", request.path_params["id"])
    return {"id": obj["id"], "data": request.account.hidden(obj["id"]).get("content", "")}


def evidence_file(request: Request, field: str, file_id: str) -> None:
    """Refuse a file evidence field naming no ``dispute_evidence`` file."""
    obj = request.account.find("file", file_id)
    if obj is None:
        raise StripeError(
            400,
            f"No such file upload: '{file_id}'",
            code="resource_missing",
            param=f"evidence[{field}]",
        )
    if obj["purpose"] != "dispute_evidence":
        raise invalid(
            f"The file {file_id} has purpose {obj['purpose']}; evidence files need "
            "purpose dispute_evidence.",
            param=f"evidence[{field}]",
        )


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/files", create_file),
    Endpoint("GET", "/v1/files/{id}/contents", file_contents),
    Endpoint("GET", "/v1/files/{id}", retrieve_file),
    Endpoint("GET", "/v1/files", list_files),
)
