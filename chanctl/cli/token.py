"""``chanctl token``: mint a socket token; ``chanctl token verify TOKEN``: explain one."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Annotated

import orjson
import typer

from chanctl.cli.common import claim_value, die, err, find_config, load_or_die, out, parse_claims
from chanctl.cli.exit_codes import ExitCode
from chanctl.durations import format_duration, parse_duration
from chanctl.errors import TokenError
from chanctl.tokens import DEFAULT_ADMIN_CLAIM, DEFAULT_SALT, TokenSigner

__all__ = ["app", "auth_from", "signer_from"]

app = typer.Typer(help="Mint and verify signed socket tokens.", no_args_is_help=False)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Config file holding auth.secret.")]


def auth_from(config: str | None) -> tuple[TokenSigner, str]:
    """The signer and admin claim of ``--config``, else ``./chanctl.yaml``, else ``CHANCTL_SECRET``; exit 2 if none."""
    path = find_config(config)
    if path is not None:
        auth = load_or_die(path).config.auth
        return TokenSigner(auth.secret, salt=auth.salt, max_age=auth.max_age), auth.admin_claim
    secret = os.environ.get("CHANCTL_SECRET")
    if secret:
        return TokenSigner(secret, salt=os.environ.get("CHANCTL_SALT", DEFAULT_SALT)), DEFAULT_ADMIN_CLAIM
    die("no token secret found: pass --config FILE, create ./chanctl.yaml, or set CHANCTL_SECRET", ExitCode.USAGE)


def signer_from(config: str | None) -> TokenSigner:
    """The signer of ``--config``, else ``./chanctl.yaml``, else ``CHANCTL_SECRET``; exit 2 if none."""
    return auth_from(config)[0]


@app.callback(invoke_without_command=True)
def mint(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", "-u", help="User id (numbers stay numbers).")] = None,
    claim: Annotated[list[str] | None, typer.Option("--claim", help="Extra claim key=value; repeatable.")] = None,
    ttl: Annotated[str | None, typer.Option("--ttl", help="Lifetime up to auth.max_age: 90s, 15m, 2h, 14d.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Add the admin claim (auth.admin_claim): may join chanctl:admin.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Print a signed socket token for --user; only the token goes to stdout."""
    if ctx.invoked_subcommand is not None:
        return
    if user is None:
        die("missing --user: e.g. `chanctl token --user 42`", ExitCode.USAGE)
    claims = parse_claims(claim or [])
    seconds = None
    if ttl is not None:
        try:
            seconds = parse_duration(ttl)
        except ValueError as exc:
            die(f"--ttl: {exc}", ExitCode.USAGE)
    signer, admin_claim = auth_from(config)
    if seconds is not None and seconds > signer.max_age:
        # The server would refuse the token once it is older than max_age anyway: a longer --ttl
        # only promises what the server will not keep.
        die(f"--ttl {ttl} is longer than auth.max_age ({format_duration(signer.max_age)}); "
            "the server refuses tokens older than that", ExitCode.USAGE)
    if admin:
        if admin_claim in claims and claims[admin_claim] is not True:
            die(f"--admin sets the claim {admin_claim}=true, but --claim {admin_claim}={orjson.dumps(claims[admin_claim]).decode()} "
                "says otherwise: pass one of them", ExitCode.USAGE)
        claims[admin_claim] = True
    out(signer.mint(claim_value(user), claims, ttl=seconds))


@app.command()
def verify(
    token: Annotated[str, typer.Argument(help="The token to check; - reads it from stdin.")],
    config: ConfigOpt = None,
    json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Print the token's claims and age, or why it is invalid or expired (exit 1)."""
    if token == "-":  # `chanctl token --user 42 | chanctl token verify -`: one token, surrounding blanks ignored
        token = sys.stdin.read().strip()
    signer = signer_from(config)
    try:
        verified = signer.verify(token)
    except TokenError as exc:
        if json:
            out(orjson.dumps({"valid": False, "reason": exc.reason, "detail": exc.detail}).decode())
        err(f"chanctl: {exc}")
        raise typer.Exit(int(ExitCode.ERROR)) from None
    signed = datetime.fromtimestamp(verified.signed_at, UTC).isoformat().replace("+00:00", "Z")
    if json:
        out(orjson.dumps({
            "valid": True, "claims": verified.claims, "signed_at": signed,
            "age": verified.age, "expires_in": verified.max_age - verified.age,
        }).decode())
        return
    out("valid token")
    out(f"  claims:     {orjson.dumps(verified.claims).decode()}")
    out(f"  signed at:  {signed}")
    out(f"  age:        {format_duration(verified.age)}")
    out(f"  expires in: {format_duration(verified.max_age - verified.age)}")
