"""Pure logic: no I/O, no environment, no Stripe SDK, no database."""
