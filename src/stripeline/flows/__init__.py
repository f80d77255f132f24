"""The flows: customers, payments, subscriptions, disputes done right.

Each flow lives on the application object (``app.customers``,
``app.payments``, …), reads the mirror first and writes to Stripe through
``stripeline.flows.calls`` (``app.calls``): every write recorded before it
is sent, with an idempotency key derived from the business action and its
parameters, and its answer written to the mirror at once.
"""
