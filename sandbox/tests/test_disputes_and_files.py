"""Dispute evidence with uploaded files, the response deadline, and early
fraud warnings, through the official SDK."""

from __future__ import annotations

import io

import pytest
import stripe

from stripeline_sandbox import Sandbox

from .conftest import Receiver, control


@pytest.fixture
def files_client(
    sandbox: Sandbox, key: str, http_client: stripe.RequestsClient
) -> stripe.StripeClient:
    """The SDK sends uploads to its ``files`` address: the sandbox too."""
    return stripe.StripeClient(
        key,
        base_addresses={"api": sandbox.url, "files": sandbox.url},
        http_client=http_client,
        max_network_retries=0,
    )


def upload(client: stripe.StripeClient, name: str, content: bytes, purpose: str) -> stripe.File:
    body = io.BytesIO(content)
    body.name = name
    return client.v1.files.create({"purpose": purpose, "file": body})


def disputed(client: stripe.StripeClient) -> stripe.Dispute:
    intent = client.v1.payment_intents.create(
        {"amount": 5000, "currency": "usd", "payment_method": "pm_card_createDispute",
         "confirm": True}
    )  # fmt: skip
    return client.v1.disputes.list({"payment_intent": intent.id}).data[0]


def test_a_file_is_uploaded_and_listed(files_client: stripe.StripeClient) -> None:
    made = upload(files_client, "receipt.pdf", b"%PDF-1.4 receipt", "dispute_evidence")
    assert (made.object, made.purpose, made.type, made.size) == (
        "file",
        "dispute_evidence",
        "pdf",
        16,
    )
    assert made.filename == "receipt.pdf" and made.id.startswith("file_")
    assert files_client.v1.files.retrieve(made.id).size == 16
    assert [f.id for f in files_client.v1.files.list({"purpose": "dispute_evidence"}).data] == [
        made.id
    ]
    with pytest.raises(stripe.InvalidRequestError, match="pdf, jpg, png"):
        upload(files_client, "tool.exe", b"MZ", "dispute_evidence")
    with pytest.raises(stripe.InvalidRequestError, match="purpose"):
        upload(files_client, "a.pdf", b"%PDF", "holiday_photos")


def test_file_evidence_names_a_dispute_evidence_file(files_client: stripe.StripeClient) -> None:
    dispute = disputed(files_client)
    receipt = upload(files_client, "receipt.png", b"\x89PNG....", "dispute_evidence")
    other = upload(files_client, "logo.png", b"\x89PNG....", "business_logo")
    with pytest.raises(stripe.InvalidRequestError, match="No such file upload") as missing:
        files_client.v1.disputes.update(dispute.id, {"evidence": {"receipt": "file_nope"}})
    assert missing.value.param == "evidence[receipt]"
    with pytest.raises(stripe.InvalidRequestError, match="purpose dispute_evidence"):
        files_client.v1.disputes.update(dispute.id, {"evidence": {"receipt": other.id}})
    # Nothing of a refused update was kept.
    assert files_client.v1.disputes.retrieve(dispute.id).evidence.receipt is None
    saved = files_client.v1.disputes.update(
        dispute.id, {"evidence": {"receipt": receipt.id}, "submit": True}
    )
    assert saved.evidence.receipt == receipt.id and saved.status == "under_review"


def test_evidence_after_the_deadline_is_refused(
    sandbox: Sandbox, client: stripe.StripeClient
) -> None:
    dispute = disputed(client)
    due_by = dispute.evidence_details.due_by
    assert due_by is not None
    sandbox.advance_clock(due_by - sandbox.clock.now() + 1)
    with pytest.raises(stripe.InvalidRequestError, match="deadline") as refused:
        client.v1.disputes.update(dispute.id, {"evidence": {"customer_name": "Ada"}})
    assert refused.value.http_status == 400
    after = client.v1.disputes.retrieve(dispute.id)
    assert after.evidence_details.past_due and after.evidence_details.submission_count == 0
    assert after.evidence.customer_name is None and after.status == "needs_response"


def test_an_early_fraud_warning_is_raised_on_a_charge(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    intent = client.v1.payment_intents.create(
        {"amount": 1200, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    charge = str(intent.latest_charge)
    warning = control(
        sandbox, key, "POST", f"/_sandbox/charges/{charge}/early_fraud_warning",
        fraud_type="made_with_stolen_card",
    )  # fmt: skip
    assert (warning["object"], warning["charge"], warning["payment_intent"]) == (
        "radar.early_fraud_warning",
        charge,
        intent.id,
    )
    assert warning["actionable"] and warning["fraud_type"] == "made_with_stolen_card"
    fetched = client.v1.radar.early_fraud_warnings.retrieve(warning["id"])
    assert fetched.charge == charge
    listed = client.v1.radar.early_fraud_warnings.list({"charge": charge}).data
    assert [w.id for w in listed] == [warning["id"]]
    (event,) = receiver.wait_for_type("radar.early_fraud_warning.created")
    assert event["data"]["object"]["id"] == warning["id"]
