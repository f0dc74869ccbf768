"""Macros that read nothing of the recipient, rendered once per mail instead of per recipient.

A layout's `facts()` and `program()` read only the event: with the babel date filters and
the sandbox's checks on every attribute, they were ~40 % of a mail's rendering, the same
for each of its 5,000 recipients (issue 18). When a template is compiled, each macro of its
top level is judged from its syntax tree (`mail_level_macros`); the macros judged
mail-level are marked, and while a `MailCache` is in use, a call to one with the same
arguments returns what the first call rendered.

A macro is mail-level when all it reads is its arguments, its own local names, `event`,
`mail`, `lang` and `changes` (the same for every recipient of one mail in one language:
render.build_context), constants set earlier at the template's top level, and globals that
only build new values; and it includes, imports, calls back (`caller`) and defines nothing.
Anything else (`recipient`, `subject`, another macro, `lipsum` or the `random` filter, a
name set from an expression) keeps it rendered per call. The cache is keyed by the
compiled code of the macro, so an edited template, compiled again, is never answered from
its old version; and by the arguments, only when they are plain values (a str, a number, a
date...): an object compared by identity could be a new one at a reused address.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, time
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, MacroRef
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

# What render.build_context gives every recipient of one mail in one language alike.
MAIL_LEVEL_NAMES = frozenset({"event", "mail", "lang", "changes"})
# Jinja's globals that return a new value each call (`lipsum` is random: not here).
FRESH_GLOBALS = frozenset({"range", "dict", "namespace", "cycler", "joiner"})
# Inside a macro, these see the whole context (an include, `import ... with context`, a
# block) or code that is the caller's: the macro is not judged further.
_OPAQUE = (
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.CallBlock,
    nodes.Macro,
    nodes.Block,
    nodes.Extends,
)
# Argument types whose equality is their value: safe in a cache key.
_VALUES = frozenset({str, Markup, int, float, bool, type(None), date, datetime, time})
# Renders kept per mail: a macro called with each recipient's name would otherwise keep
# one entry per recipient.
MAX_ENTRIES = 256
_JINJA_ONLY = frozenset({"_block_vars", "_loop_vars"})


def mail_level_macros(template: nodes.Template) -> set[nodes.Macro]:
    """The macros at the template's top level whose output is the same for every recipient
    of one mail, given the same arguments (see the module docstring)."""
    stored = _top_level_names(template)
    outer = set(stored) | {m.name for m in template.find_all(nodes.Macro)}
    constants: set[str] = set()
    found: set[nodes.Macro] = set()
    for node in template.body:
        if (
            isinstance(node, nodes.Assign)
            and isinstance(node.target, nodes.Name)
            and stored.count(node.target.name) == 1
            and _is_constant(node.node, constants)
        ):
            constants.add(node.target.name)
        elif isinstance(node, nodes.Macro) and _reads_mail_only(node, constants, outer):
            found.add(node)
    return found


def _top_level_names(node: nodes.Node) -> list[str]:
    """Every name the template binds outside its macros and blocks, once per binding."""
    names: list[str] = []
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.Macro | nodes.Block | nodes.CallBlock):
            continue
        if isinstance(child, nodes.Name) and child.ctx == "store":
            names.append(child.name)
        elif isinstance(child, nodes.Import):
            names.append(child.target)
        elif isinstance(child, nodes.FromImport):
            names += [name if isinstance(name, str) else name[-1] for name in child.names]
        names += _top_level_names(child)
    return names


def _is_constant(expression: nodes.Node, constants: set[str]) -> bool:
    """A literal, or literals and earlier constants joined by `~` or `+`."""
    if isinstance(expression, nodes.Const | nodes.TemplateData):
        return True
    if isinstance(expression, nodes.Name):
        return expression.name in constants
    if isinstance(expression, nodes.Concat):
        return all(_is_constant(part, constants) for part in expression.nodes)
    if isinstance(expression, nodes.Add):
        return _is_constant(expression.left, constants) and _is_constant(
            expression.right, constants
        )
    return False


def _reads_mail_only(macro: nodes.Macro, constants: set[str], outer: set[str]) -> bool:
    if any(True for _ in macro.find_all(_OPAQUE)):
        return False
    if any(f.name == "random" for f in macro.find_all(nodes.Filter)):
        return False
    names = list(macro.find_all(nodes.Name))
    local = {n.name for n in names if n.ctx in ("store", "param")}
    if local & (outer | {"recipient", "subject"}) - {a.name for a in macro.args}:
        return False  # a local that shadows a name of the template: not worth the doubt
    allowed = MAIL_LEVEL_NAMES | FRESH_GLOBALS | constants | local | {"loop"}
    return all(n.name in allowed for n in names if n.ctx == "load")


class MarkingGenerator(CodeGenerator):
    """Jinja's code generator, writing each mail-level macro as `environment.mark(Macro(...))`."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        try:
            self._mail_level = {id(macro) for macro in mail_level_macros(node)}
        except Exception:  # a tree this judge cannot read: rendered per recipient, as before
            self._mail_level = set()
        super().visit_Template(node, frame)

    def macro_def(self, macro_ref: MacroRef, frame: Frame) -> None:
        is_marked = id(macro_ref.node) in getattr(self, "_mail_level", ())
        if is_marked:
            self.write("environment.mark(")
        super().macro_def(macro_ref, frame)
        if is_marked:
            self.write(")")


MailCache = dict[tuple[Any, ...], Any]
# The cache of the mail being rendered; not an attribute of the environment, which threads
# (`check`'s readers) may share.
_MAIL_CACHE: ContextVar[MailCache | None] = ContextVar("mail_cache", default=None)


class MailSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, answering a mail-level macro from `cache` while one is in use."""

    code_generator_class = MarkingGenerator

    @contextmanager
    def caching(self, cache: MailCache) -> Iterator[None]:
        """Render with `cache`: the renders of one mail in one language, and no other (in
        this thread or task only: another may be rendering another mail meanwhile)."""
        token = _MAIL_CACHE.set(cache)
        try:
            yield
        finally:
            _MAIL_CACHE.reset(token)

    def mark(self, macro: Macro) -> Macro:
        """Called by compiled templates (MarkingGenerator) on each mail-level macro."""
        macro.is_mail_level = True  # type: ignore[attr-defined]
        return macro

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        cache = _MAIL_CACHE.get()
        if cache is None or not getattr(__obj, "is_mail_level", False):
            return super().call(__context, __obj, *args, **kwargs)
        key = _key(__obj, __context, args, kwargs)
        if key is None:
            return super().call(__context, __obj, *args, **kwargs)
        if key not in cache:
            rendered = super().call(__context, __obj, *args, **kwargs)
            if len(cache) >= MAX_ENTRIES:
                return rendered
            cache[key] = rendered
        return cache[key]


def _key(
    macro: Macro, context: Context, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...] | None:
    """The macro's compiled code, whether the caller escapes (the macro renders as its
    caller does), and the arguments with their types (Markup("a") == "a"); None if an
    argument is not a plain value."""
    # What Jinja passes along for functions that take the context; a macro never sees it.
    named = {k: v for k, v in kwargs.items() if k not in _JINJA_ONLY}
    if not all(type(value) in _VALUES for value in (*args, *named.values())):
        return None
    typed = tuple((type(v), v) for v in args)
    typed_named = tuple(sorted((k, type(v), v) for k, v in named.items()))
    return (macro._func.__code__, context.eval_ctx.autoescape, typed, typed_named)
