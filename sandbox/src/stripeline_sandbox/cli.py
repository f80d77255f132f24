"""``stripeline-sandbox`` (also ``stripeline sandbox``): run the sandbox standalone until interrupted."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--port", default=12111, show_default=True, help="Port to listen on (0: any free one)."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; the sandbox has no real security, keep it local.",
)
@click.option(
    "--webhook-url", default=None, help="Send every event here, signed with the printed secret."
)
@click.option(
    "--secret-key",
    default=None,
    help="The sk_test_… key to print (any sk_test_ key with 8 or more letters, digits or _ works).",
)
@click.option(
    "--state-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Keep the key, webhook secret and every object in this file across restarts.",
)
def sandbox(
    port: int, host: str, webhook_url: str | None, secret_key: str | None, state_file: str | None
) -> None:
    """Run the offline Stripe sandbox (test mode; state in memory, or kept in --state-file)."""
    from stripeline_sandbox import Sandbox, StateFileError

    try:
        server = Sandbox(
            host=host,
            port=port,
            secret_key=secret_key,
            webhook_url=webhook_url,
            state_file=state_file,
        )
    except StateFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"stripeline sandbox listening on {server.url}")
    if state_file:
        kept = "state read from" if server.restored else "state kept in"
        click.echo(f"  {kept} {state_file}")
    click.echo(
        f"  secret key      {server.secret_key}  (any sk_test_… key works; each is an account)"
    )
    click.echo(
        f"  publishable key {server.publishable_key}  (Stripe.js; paired with the secret key)"
    )
    click.echo(f"  webhook secret  {server.webhook_secret}")
    if webhook_url:
        click.echo(f"  forwarding all events to {webhook_url}")
    click.echo('  SDK: stripe.StripeClient(key, base_addresses={"api": "' + server.url + '"})')
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
