"""The shop's tests, run by Django's test runner (``manage.py test shop``).

The test database is made by ``migrate``, so stripeline's tables are in it.
``TransactionTestCase``: the worker commits (and rolls back) for real, as in
production. (Django empties only the tables of managed models between tests:
stripeline's rows stay, so each test looks at its own events.)
"""

from __future__ import annotations

import io
import threading
from typing import Any

from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import Error as DatabaseError
from django.db import NotSupportedError, connection
from django.test import TransactionTestCase, override_settings

from shop.models import Access
from stripeline import ReceivedEvent, Stripeline
from stripeline.contrib.django import conf, get_app
from stripeline.contrib.django.models import Event, Subscription
from stripeline.testing import make_event, sign_event
from stripeline.worker import Worker

SECRET = "whsec_shop_tests_0123456789"
STRIPELINE = {"app": "shop.billing:app", "stripe_webhook_secret": SECRET}
WEBHOOK = "/stripe/webhooks/stripe"


#: An application whose handler writes, then hangs past the handler timeout.
hanging_app = Stripeline()
hung: dict[str, Any] = {}
let_go = threading.Event()
finished = threading.Event()


@hanging_app.on("customer.subscription.created")
def write_then_hang(event: ReceivedEvent) -> None:
    customer = event.object["customer"]
    Access.objects.create(customer=customer, subscription="sub", status="x", event_id=event.id)
    let_go.wait(20)  # the worker gives up on it meanwhile
    try:
        Access.objects.create(customer=f"{customer}-late", subscription="sub", status="x")
    except Exception as exc:
        hung["late_write"] = exc
    finished.set()


def subscription_event(customer: str, **fields: Any) -> dict[str, Any]:
    return make_event(
        "customer.subscription.created",
        {"customer": customer, "status": "active", "metadata": {}, **fields},
    )


@override_settings(STRIPELINE=STRIPELINE)
class ShopTests(TransactionTestCase):
    def setUp(self) -> None:
        conf.reset()

    def tearDown(self) -> None:
        conf.reset()

    def post(self, event: dict[str, Any], secret: str = SECRET) -> Any:
        body, headers = sign_event(event, secret)
        return self.client.post(
            WEBHOOK,
            body,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=headers["Stripe-Signature"],
        )

    def process(self) -> int:
        return Worker(get_app(), listen=False).drain(timeout=30)

    def test_migrate_made_stripeline_tables_in_the_test_database(self) -> None:
        tables = connection.introspection.table_names()
        self.assertIn("stripeline_events", tables)
        self.assertIn("stripeline_subscriptions", tables)

    def test_a_webhook_is_stored_and_the_handlers_orm_write_commits_with_it(self) -> None:
        event = subscription_event("cus_shop_ok")
        answer = self.post(event)
        self.assertEqual(answer.status_code, 200, answer.content)
        self.assertEqual(answer.json()["id"], event["id"])
        self.assertEqual(Event.objects.get(id=event["id"]).status, "pending")

        self.assertEqual(self.process(), 1)

        self.assertEqual(Event.objects.get(id=event["id"]).status, "processed")
        access = Access.objects.get(customer="cus_shop_ok")
        self.assertTrue(access.active)
        self.assertEqual(access.event_id, event["id"])
        mirrored = Subscription.objects.get(id=event["data"]["object"]["id"])
        self.assertEqual(mirrored.status, "active")
        answer = self.client.get("/access/cus_shop_ok")
        self.assertEqual(answer.json()["access"], True)

    def test_a_handler_that_raises_after_its_orm_write_leaves_no_row_and_is_retried(self) -> None:
        event = subscription_event("cus_shop_fail", metadata={"fail_after_write": "yes"})
        self.assertEqual(self.post(event).status_code, 200)

        self.process()

        stored = Event.objects.get(id=event["id"])
        self.assertEqual(stored.status, "failed")  # retried later, with backoff
        self.assertEqual(stored.attempts, 1)
        self.assertIn("the handler failed after its write", stored.last_error or "")
        self.assertFalse(Access.objects.filter(customer="cus_shop_fail").exists())
        self.assertFalse(Subscription.objects.filter(id=event["data"]["object"]["id"]).exists())

    async def test_a_webhook_through_djangos_asgi_handler(self) -> None:
        event = subscription_event("cus_shop_asgi")
        body, headers = sign_event(event, SECRET)
        answer = await self.async_client.post(
            WEBHOOK,
            body,
            content_type="application/json",
            headers={"Stripe-Signature": headers["Stripe-Signature"]},
        )
        self.assertEqual(answer.status_code, 200, answer.content)
        self.assertTrue(await Event.objects.filter(id=event["id"], status="pending").aexists())

    @override_settings(
        STRIPELINE={**STRIPELINE, "app": "shop.tests:hanging_app", "handler_timeout": 0.5}
    )
    def test_a_handler_given_up_past_its_timeout_commits_nothing_and_cannot_write_later(
        self,
    ) -> None:
        conf.reset()
        event = subscription_event("cus_shop_hang")
        self.assertEqual(self.post(event).status_code, 200)

        self.process()  # returns once the worker gave the handler up

        stored = Event.objects.get(id=event["id"])
        self.assertEqual(stored.status, "failed")
        self.assertIn("HandlerTimeout", stored.last_error or "")
        self.assertFalse(Access.objects.filter(customer="cus_shop_hang").exists())
        let_go.set()
        self.assertTrue(finished.wait(20))
        # Its connection was closed under it: the late write failed, not committed alone.
        self.assertIsInstance(hung.get("late_write"), DatabaseError)
        self.assertFalse(Access.objects.filter(customer="cus_shop_hang-late").exists())

    def test_refusals(self) -> None:
        event = subscription_event("cus_shop_bad")
        self.assertEqual(self.post(event, secret="whsec_not_the_right_one_01").status_code, 400)
        self.assertEqual(self.client.get(WEBHOOK).status_code, 405)
        too_large = self.client.post(
            WEBHOOK, b"x", content_type="application/json", CONTENT_LENGTH=str(3 * 1024 * 1024)
        )
        self.assertEqual(too_large.status_code, 413)
        self.assertEqual(
            self.client.post(
                WEBHOOK + "/connect", b"{}", content_type="application/json"
            ).status_code,
            404,
        )
        self.assertFalse(Event.objects.filter(id=event["id"]).exists())

    def test_health_and_readiness(self) -> None:
        self.assertEqual(self.client.get("/stripe/healthz").json(), {"status": "ok"})
        ready = self.client.get("/stripe/readyz")
        self.assertEqual(ready.status_code, 200, ready.content)
        self.assertEqual(ready.json()["status"], "ready")

    def test_admin_pages_and_the_retry_action(self) -> None:
        event = subscription_event("cus_shop_admin", metadata={"fail_after_write": "yes"})
        self.post(event)
        self.process()
        User.objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.login(username="admin", password="pw")
        for page in ("event", "customer", "subscription", "invoice", "paymentintent", "dispute"):
            answer = self.client.get(f"/admin/stripeline/{page}/")
            self.assertEqual(answer.status_code, 200, page)
        detail = self.client.get(f"/admin/stripeline/event/{event['id']}/change/")
        self.assertContains(detail, event["id"])
        self.assertNotContains(detail, 'name="_save"')  # viewed, never saved from here
        with self.assertRaises(NotSupportedError):
            Event.objects.get(id=event["id"]).save()
        self.assertEqual(self.client.get("/admin/stripeline/event/add/").status_code, 403)
        answer = self.client.post(
            "/admin/stripeline/event/",
            {"action": "retry", "_selected_action": [event["id"]]},
            follow=True,
        )
        self.assertContains(answer, "1 of 1 events scheduled again")
        stored = Event.objects.get(id=event["id"])
        self.assertEqual((stored.status, stored.attempts), ("pending", 0))

    def test_manage_py_stripeline_lists_the_events(self) -> None:
        event = subscription_event("cus_shop_cli")
        self.post(event)
        out = io.StringIO()
        call_command("stripeline", "events", "list", stdout=out)
        self.assertIn(event["id"], out.getvalue())
