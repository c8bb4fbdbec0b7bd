"""Authorization rules: ``true``, ``false``, a list of user ids, or a CEL expression.

CEL (Common Expression Language) is compiled once at load by the ``common-expression-language``
package (Rust core), so a typo is a load error, not a surprise at the first join; the checks the
library lacks (unknown captures, rules that cannot be boolean) run on :mod:`chanctl.rules.syntax`'s
tree. At run time a rule that fails (a missing key, a type mismatch) denies and logs why; it never
crashes a channel. Rules in the common subset of CEL run as generated Python functions
(:mod:`chanctl.rules.compiled`), which leave every error and every doubtful case to the library; the
library sees only the parts of the variables a rule reads (:class:`~chanctl.rules.prune.Pruner`). A rule also remembers
its recent decisions (:class:`Rule`).

Variables a rule may read: ``user`` (token claims; ``user.id`` is always set), ``topic`` (the
pattern's captures plus ``topic.name``), ``params`` (the join payload), ``payload`` (an event's
payload) and ``data`` (the config's static data).
"""


from chanctl.rules.rule import (
    EVENT_VARIABLES,
    JOIN_VARIABLES,
    RULE_VARIABLES,
    Expression,
    Rule,
    RuleError,
    compile_expression,
    compile_rule,
)

__all__ = ["EVENT_VARIABLES", "JOIN_VARIABLES", "RULE_VARIABLES", "Expression", "Rule", "RuleError", "compile_expression", "compile_rule"]
