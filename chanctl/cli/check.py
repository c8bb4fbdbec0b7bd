"""``chanctl check FILE``: every problem at once, the config's policy tests, and ``--explain``.

    chanctl check app.yaml                                   problems, then the tests: list
    chanctl check app.yaml --explain --user 99 --topic room:42 [--event new_msg --payload JSON]
    chanctl check --reference                                the config reference (Markdown)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from chanctl.cli.common import DEFAULT_CONFIG, claim_value, config_argument, die, err, out, parse_claims
from chanctl.cli.exit_codes import ExitCode
from chanctl.errors import ConfigError

if TYPE_CHECKING:
    from chanctl.config.load import LoadedConfig

__all__ = ["check"]


def check(
    config: Annotated[str | None, typer.Argument(help=f"The YAML config to validate (default: ./{DEFAULT_CONFIG}).", show_default=False)] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Explain whether --user may join --topic (or send --event).")] = False,
    user: Annotated[str | None, typer.Option("--user", "-u", help="With --explain: the user id (numbers stay numbers).")] = None,
    claim: Annotated[list[str] | None, typer.Option("--claim", help="With --explain: another token claim, key=value (repeatable).")] = None,
    topic: Annotated[str | None, typer.Option("--topic", "-t", help="With --explain: the topic to join.")] = None,
    params: Annotated[str | None, typer.Option("--params", help="With --explain: the join payload, JSON.")] = None,
    event: Annotated[str | None, typer.Option("--event", "-e", help="With --explain: an event sent on --topic.")] = None,
    payload: Annotated[str | None, typer.Option("--payload", "-p", help="With --explain: the event payload, JSON.")] = None,
    reference: Annotated[bool, typer.Option("--reference", help="Print the config reference, generated from the schema, and exit.")] = False,
    json: Annotated[bool, typer.Option("--json", help="With --explain: print the explanation as one JSON object.")] = False,
) -> None:
    """Validate CONFIG (default ./chanctl.yaml): list every problem with file:line:column (exit 1), or
    summarize it and run its `tests:` (exit 1 if one fails). No such file: exit 2. With --explain,
    say why a user may or may not join or send (exit 3 when refused)."""
    if reference:
        from chanctl.config.reference import render_reference

        out(render_reference().rstrip("\n"))
        return
    path = config_argument(config)
    config = str(path)
    # Here, so other commands start without the schema; the very step serve takes, so check refuses
    # exactly what serve would.
    from chanctl.server.compile import compile_file

    try:
        compiled = compile_file(path)
    except ConfigError as exc:
        for problem in exc.problems:
            out(str(problem))
        errors = sum(1 for p in exc.problems if p.severity == "error")
        err(f"chanctl: {config}: {errors} error{'s' * (errors != 1)}")
        raise typer.Exit(int(ExitCode.ERROR)) from None
    from chanctl.explain import Explainer  # imports the server's compiled topics: only when needed

    explainer = Explainer(compiled)
    if explain:
        _explain(explainer, user, claim or [], topic, params, event, payload, json)
        return
    loaded = compiled.loaded
    for warning in loaded.warnings:
        out(str(warning))
    _summary(config, loaded)
    if loaded.config.tests:
        results = explainer.run_tests()
        failed = [r for r in results if not r.passed]
        out(f"policy tests: {len(results) - len(failed)} passed, {len(failed)} failed")
        for result in failed:
            test = result.test
            where = f"{config}:tests[{result.index}]"
            out(f"FAIL {where}: expected {test.expect}, got {result.explanation.verdict}")
            out("\n".join("  " + line for line in result.explanation.lines()))
        if failed:
            raise typer.Exit(int(ExitCode.ERROR))


def _summary(config: str, loaded: LoadedConfig) -> None:
    cfg = loaded.config
    out(f"{config}: ok — {len(cfg.topics)} topic pattern{'s' * (len(cfg.topics) != 1)}")
    for pattern, topic in cfg.topics.items():
        out(f"  {pattern}")
        if topic.join is not None:
            rule = " ".join(str(topic.join).split()) if not isinstance(topic.join, bool) else str(topic.join).lower()
            out(f"    join: {rule}")
        if topic.handler is not None:
            out(f"    handler: {topic.handler}")
        if topic.realtime:
            out("    realtime: Supabase Realtime clients (their broadcast and presence events, ?apikey= tokens)")
        for name, event in topic.events.items():
            schema = " (schema)" if event.schema_ is not None else ""
            allow = "" if event.allow is True else f" if {' '.join(str(event.allow).split())}"
            out(f"    event {name}: {event.do}{schema}{allow}")
    if cfg.cluster is not None:
        cluster = cfg.cluster
        out(f"  cluster: redis {cluster.redis_shown}, node {cluster.node or '<host-pid>'}, "
            f"prefix {cluster.prefix!r}, a silent node is down after {cluster.down_after:g}s")


def _explain(explainer: Any, user: str | None, claims: list[str], topic: str | None,
             params: str | None, event: str | None, payload: str | None, as_json: bool) -> None:
    if user is None or topic is None:
        die("--explain needs --user and --topic", ExitCode.USAGE)
    if payload is not None and event is None:
        die("--payload goes with --event", ExitCode.USAGE)
    who = {**parse_claims(claims), "id": claim_value(user)}
    join_params = _json_option("--params", params)
    if event is None:
        explanation = explainer.join(who, topic, join_params)
    else:
        explanation = explainer.event(who, topic, event, _json_option("--payload", payload), join_params)
    if as_json:
        body = {"verdict": explanation.verdict, **dataclasses.asdict(explanation)}
        out(orjson.dumps(body, default=repr, option=orjson.OPT_NON_STR_KEYS).decode())
    else:
        out("\n".join(explanation.lines()))
    if explanation.allowed is False:
        raise typer.Exit(int(ExitCode.REFUSED))


def _json_option(name: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        die(f"{name} is not JSON: {exc}", ExitCode.USAGE)
