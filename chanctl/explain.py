"""Why a user may or may not join a topic or send an event: the authorization explainer.

It takes the same compiled config the server runs (:func:`~chanctl.server.compile.compile_config`)
and asks the same decision functions the server asks (``CompiledTopic.authorize_join`` for a join,
``CompiledTopic.check_event`` for an event: declared, schema, ``allow``), then records what decided
and the value of every path the deciding rule read. ``chanctl check --explain``
prints it; the config's ``tests:`` run through it, so a policy test and the server cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from chanctl.config.model import PolicyTest
from chanctl.errors import RuleInputTooLarge
from chanctl.protocol.router import Router
from chanctl.rules import Rule, syntax
from chanctl.server.admin import ADMIN_EVENTS, ADMIN_TOPIC
from chanctl.server.behaviours import CompiledTopic
from chanctl.server.compile import CompiledConfig
from chanctl.server.realtime import BROADCAST

__all__ = ["Explanation", "Explainer", "PolicyResult"]


@dataclass
class Explanation:
    """The decision for one join or event, and what it rested on."""

    allowed: bool | None
    """True or False; None when a Python handler decides at run time."""
    action: str
    """``join room:42`` or ``new_msg on room:42``."""
    pattern: str | None = None
    decided_by: str = ""
    """The key that decided, e.g. ``topics.room:{id}.join``, or what did (``no pattern matches``)."""
    rule: str = ""
    """The deciding rule's source, when a rule decided."""
    values: list[dict[str, Any]] = field(default_factory=list)
    """``{"path": ..., "value": ...}`` (or ``"error"`` instead of ``"value"``) for each variable path
    the rule read, in the order it reads them."""
    note: str = ""
    before: str = ""
    """What had to pass first, e.g. the join before an event."""

    @property
    def verdict(self) -> str:
        return {True: "allow", False: "deny", None: "handler decides"}[self.allowed]

    def lines(self) -> list[str]:
        """The explanation as ``chanctl check --explain`` prints it."""
        out = [f"{self.verdict}: {self.action}"]
        if self.before:
            out.append(f"  after: {self.before}")
        if self.pattern is not None:
            out.append(f"  pattern: {self.pattern}")
        if self.decided_by:
            out.append(f"  decided by: {self.decided_by}")
        if self.rule:
            out.append(f"  rule: {' '.join(self.rule.split())}")
        if self.values:
            out.append("  the rule saw:")
            out.extend(f"    {v['path']} = " + (f"<error: {v['error']}>" if "error" in v else _json(v["value"])) for v in self.values)
        if self.note:
            out.append(f"  {self.note}")
        return out


@dataclass
class PolicyResult:
    """One policy test and its outcome."""

    index: int
    test: PolicyTest
    explanation: Explanation

    @property
    def passed(self) -> bool:
        return self.explanation.verdict == self.test.expect


class Explainer:
    """Decisions against one compiled config."""

    def __init__(self, compiled: CompiledConfig):
        self.compiled = compiled
        self.router: Router[CompiledTopic] = compiled.router()

    def join(self, user: dict[str, Any], topic: str, params: Any = None) -> Explanation:
        """May ``user`` (token claims with ``id``) join ``topic`` with ``params``?"""
        params = {} if params is None else params
        action = f"join {topic}"
        if topic == ADMIN_TOPIC:
            return self._admin_join(user, action)
        route = self.router.match(topic)
        if route is None:
            return Explanation(False, action, decided_by="no topic pattern matches (the reply is 'unmatched topic')")
        spec = route.target
        where = f"topics.{spec.pattern}.join"
        variables = spec.variables(user, topic, route.captures, params)
        if spec.join_rule is None:
            return Explanation(None, action, spec.pattern, f"topics.{spec.pattern}.handler",
                               note=f"{self._handler(spec)}.join decides at run time")
        explanation = self._rule(spec.join_rule, variables, action, spec.pattern, where)
        # The verdict is the server's own decision; the rule's trace above says why.
        explanation.allowed = spec.authorize_join(user, topic, route.captures, params) is None
        if explanation.allowed and spec.handler is not None:
            explanation.note = f"then {self._handler(spec)}.join runs, and may still refuse"
        return explanation

    def event(self, user: dict[str, Any], topic: str, event: str, payload: Any = None, params: Any = None) -> Explanation:
        """May ``user`` send ``event`` with ``payload`` on ``topic`` (joined with ``params``)?"""
        joined = self.join(user, topic, params)
        if joined.allowed is False:
            joined.note = f"so {event} on {topic} is denied: the join is"
            return joined
        if topic == ADMIN_TOPIC:
            before = f"join {topic}: allow ({joined.decided_by})"
            if event in ADMIN_EVENTS:
                return Explanation(True, f"{event} on {topic}", ADMIN_TOPIC, "the admin plane",
                                   note=f"the admin command {event} runs", before=before)
            return Explanation(False, f"{event} on {topic}", ADMIN_TOPIC, "the admin plane",
                               note=f"{event!r} is no admin command ({', '.join(ADMIN_EVENTS)}); the reply is 'unknown event'",
                               before=before)
        route = self.router.match(topic)
        assert route is not None
        spec = route.target
        action = f"{event} on {topic}"
        before = f"join {topic}: {joined.verdict} ({joined.decided_by})"
        if spec.handler is not None:
            return Explanation(None, action, spec.pattern, f"topics.{spec.pattern}.handler",
                               note=f"{self._handler(spec)}.handle_in decides at run time", before=before)
        payload = {} if payload is None else payload
        if spec.realtime and event == BROADCAST and isinstance(payload, dict) and isinstance(payload.get("event"), str):
            # A Supabase broadcast envelope is decided as the event it names (chanctl.server.realtime).
            event, payload = payload["event"], payload.get("payload", {})
            action = f"{event} (in a Supabase broadcast) on {topic}"
        variables = spec.variables(user, topic, route.captures, params or {}, payload)
        check = spec.check_event(event, payload, lambda: variables)  # handle_in's own decision
        compiled = check.event
        if compiled is None:
            declared = ", ".join(spec.events) or "none"
            return Explanation(False, action, spec.pattern, f"topics.{spec.pattern}.events",
                               note=f"{event!r} is not declared (declared: {declared}); the reply is 'unknown event'", before=before)
        where = f"topics.{spec.pattern}.events.{event}"
        if check.step == "schema":
            assert check.refused is not None
            return Explanation(False, action, spec.pattern, where + ".schema",
                               note=f"the payload is invalid: {_json(check.refused.response['errors'])}", before=before)
        explanation = self._rule(compiled.allow, variables, action, spec.pattern, where + ".allow")
        explanation.allowed = check.refused is None
        explanation.before = before
        if explanation.allowed:
            explanation.note = f"then: do {compiled.config.do}"
        return explanation

    def run_tests(self) -> list[PolicyResult]:
        """Every ``tests:`` case of the config."""
        results = []
        for index, test in enumerate(self.compiled.config.tests):
            user = {**test.claims, "id": test.user}
            if test.join is not None:
                explanation = self.join(user, test.join, test.params)
            else:
                assert test.topic is not None and test.event is not None
                explanation = self.event(user, test.topic, test.event, test.payload, test.params)
            results.append(PolicyResult(index, test, explanation))
        return results

    def _admin_join(self, user: dict[str, Any], action: str) -> Explanation:
        """``chanctl:admin`` is the server's own topic, matched before any pattern: the token's
        admin claim decides, as :class:`~chanctl.server.admin.AdminChannel` does."""
        claim = self.compiled.loaded.config.auth.admin_claim
        seen = {"path": f"user.{claim}", **({"value": user[claim]} if claim in user else {"error": "not in the token"})}
        allowed = user.get(claim) is True
        note = "" if allowed else (f"an admin token (claim {claim!r} = true) is required: "
                                   f"`chanctl token --admin`; the reply is 'unauthorized'")
        return Explanation(allowed, action, ADMIN_TOPIC, f"the admin plane: auth.admin_claim ({claim!r}) must be true",
                           values=[seen], note=note)

    def _rule(self, rule: Rule, variables: dict[str, Any], action: str, pattern: str, where: str) -> Explanation:
        try:
            allowed, why = rule.decide(variables)
        except RuleInputTooLarge as exc:  # the server refuses such a message with its own reply
            allowed, why = False, str(exc)
        values: list[dict[str, Any]] = []
        if rule.expression is not None and rule.expression.tree is not None:
            source = rule.expression.source
            seen = set()
            for node in syntax.paths(rule.expression.tree):
                path = source[node.start : node.end]
                if path not in seen:
                    seen.add(path)
                    values.append({"path": " ".join(path.split()), **_value_of(path, variables)})
        elif rule.user_ids is not None:
            values.append({"path": "user.id", "value": variables["user"].get("id")})
        explanation = Explanation(allowed, action, pattern, where, rule.source, values)
        if why:
            explanation.note = f"the rule failed ({why}), and a failing rule denies"
        return explanation

    @staticmethod
    def _handler(spec: CompiledTopic) -> str:
        assert spec.handler is not None
        return f"{spec.handler.__module__}:{spec.handler.__qualname__}"


def _value_of(path: str, variables: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"value": syntax.cel_compile(path).execute(variables)}
    except Exception as exc:  # a missing key is exactly what an explanation should show
        return {"error": f"{type(exc).__name__}: {exc}"}


def _json(value: Any, limit: int = 160) -> str:
    text = orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"
