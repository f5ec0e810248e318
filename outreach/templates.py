"""Message templates: strict, sandboxed Jinja2 rendering and the checks ``config check`` runs.

Templates live in ``templates/`` beside the cadence file: ``NAME.email.j2`` (first line
``Subject: ...``), ``NAME.sms.j2`` and ``NAME.task.j2`` (first line ``Title: ...``).
Rendering is strict: a missing variable raises :class:`TemplateRenderError` naming it,
and nothing is sent. Values from the CRM are data: they are inserted as text, never
parsed as template code.

Example::

    store = TemplateStore(Path("config/templates"))
    message = store.render("interview_thanks", "email", context)
    message.subject, message.body
"""

from __future__ import annotations

import threading
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.bccache
import jinja2.filters
import jinja2.meta
import jinja2.tests
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, modifies_known_mutable
from jinja2.utils import missing

from outreach.errors import ConfigError
from outreach.segments import count_segments
from outreach.template_reads import EVERYTHING, TemplateReads, template_reads

__all__ = [
    "RenderedMessage",
    "TemplateRenderError",
    "TemplateStore",
    "Vars",
    "check_templates",
    "sample_context",
]

_KIND_BY_CHANNEL = {
    "email": "email",
    "sms": "sms",
    "linkedin": "task",
    "call": "task",
    "x": "task",
    "facebook": "task",
}


class Vars(dict):
    """A mapping of template variables that knows its own name, for error messages.

    Keys whose value is ``None`` or an empty string are left out, so that a value missing
    in the CRM is *undefined* in the template (an error unless the template says
    ``| default(...)``), never the text ``None``. Slotted (no instance ``__dict__``), so
    the sandbox knows every attribute a ``Vars`` has from its type alone and looks a
    template's ``candidate.first_name`` up as an item without trying an attribute first.
    """

    __slots__ = ("hints", "label")

    def __init__(
        self,
        label: str,
        values: Mapping[str, Any] | None = None,
        hints: Mapping[str, str] | None = None,
    ) -> None:
        if values:
            for key, value in values.items():
                # A string is kept when it is not empty (the common case, tested first).
                if value if type(value) is str else value is not None and value != "":
                    self[key] = value
        self.label = label
        #: why a key may be missing and how to fix it, added to the undefined error
        self.hints: Mapping[str, str] = (
            _NO_HINTS if not hints else hints if type(hints) is _ReadOnly else dict(hints)
        )


_ReadOnly = types.MappingProxyType
#: the hints of a ``Vars`` without any: one read-only mapping shared by all of them (a
#: read-only mapping given as hints is shared too, not copied)
_NO_HINTS: Mapping[str, str] = _ReadOnly({})


class _AnyCustom(Vars):
    """Sample custom fields for ``config check``: every name has a plausible value."""

    __slots__ = ()

    def __missing__(self, key: str) -> str:
        return f"sample {key}"


class _StrictUndefined(jinja2.StrictUndefined):
    """StrictUndefined whose message names the full variable (``candidate.frist_name``)."""

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        if self._undefined_obj is missing:
            return f"variable {self._undefined_name!r} is undefined"
        label = getattr(self._undefined_obj, "label", None)
        if label:
            hint = getattr(self._undefined_obj, "hints", {}).get(self._undefined_name)
            message = f"variable '{label}.{self._undefined_name}' is undefined"
            return f"{message}: {hint}" if hint else message
        return super()._undefined_message


#: what a ``default`` filter or a ``defined`` test sees for an item a ``Vars`` lacks (the
#: sandbox would make a new undefined value naming it; either answers "undefined", and the
#: filter and the test use nothing else of it)
_ABSENT_ITEM = _StrictUndefined(name="absent item")

#: a type whose attribute names the sandbox has not looked at yet
_UNPLANNED = object()


def _attribute_names(cls: type) -> frozenset[str] | None:
    """Every attribute an instance of ``cls`` can have, when its type alone says so.

    That holds for a ``dict`` (or a slotted subclass) without ``__getattr__`` or a
    ``__getattribute__`` of its own: ``getattr`` finds exactly the names of its class and
    bases. For anything else (an instance ``__dict__``, custom lookups) ``None``.
    """
    if not issubclass(cls, dict) or cls.__dictoffset__ != 0:
        return None
    if cls.__getattribute__ is not dict.__getattribute__ or hasattr(cls, "__getattr__"):
        return None
    return frozenset(dir(cls))


_VARS_ATTRIBUTES = _attribute_names(Vars)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with the commonest expressions written inline.

    A template reads its variables through a Python call each: ``environment.getattr``
    for ``candidate.first_name``, the ``default`` filter, the ``defined`` test. For the
    cases below the generated code does the same thing in the template's own frame, and
    everything else is generated as Jinja generates it:

    * ``x.name``, when ``name`` is not an attribute of :class:`Vars`: if ``x`` is a
      ``Vars`` (exactly) holding ``name``, that item; else the sandbox's ``getattr``, as
      before (attributes, checks, undefined);
    * ``value | default`` and ``value | default(other)`` (Jinja's own filter, without its
      ``boolean`` argument): ``other`` when the value is undefined, else the value;
    * ``value is defined`` (Jinja's own test): whether the value is not undefined.
    * ``x.name | default(...)`` and ``x.name is defined``, when ``x`` is a ``Vars`` without
      ``name``: one shared undefined value, not a new one through the sandbox's lookup.

    * ``a ~ b`` (no autoescape): the pieces as strings, joined, as ``str_join`` does.

    Every value is evaluated once and in the same order; a default that is not a constant
    is evaluated even when unused, as the filter's argument is.
    """

    #: the ``Getattr`` node being compiled for a ``default`` filter or a ``defined`` test,
    #: whose only question is whether the value is undefined (see :meth:`_lenient_visit`)
    _lenient: nodes.Node | None = None

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        """The template module, which also imports :class:`Vars` for the inline lookups."""
        self.writeline(
            f"from {__name__} import Vars as {_VARS_NAME}, _ABSENT_ITEM as {_ABSENT_NAME}"
        )
        super().visit_Template(node, frame)

    def _lenient_visit(self, node: nodes.Node, frame: Frame) -> None:
        """Compile ``node``, whose value is only tested for being undefined (``default``,
        ``defined``): a ``Vars`` without the item gives one shared undefined value instead
        of a new one through the sandbox (which would give an undefined all the same)."""
        self._lenient = node if isinstance(node, nodes.Getattr) else None
        try:
            self.visit(node, frame)
        finally:
            self._lenient = None

    @optimizeconst
    def visit_Getattr(self, node: nodes.Getattr, frame: Frame) -> None:
        """``x.name``: the item of a ``Vars`` inline, anything else as Jinja does it."""
        if self.environment.is_async or node.attr in _VARS_ATTRIBUTES:
            super().visit_Getattr(node, frame)
            return
        name = repr(node.attr)
        if node is self._lenient:
            self._lenient = None
            self.write(
                f"(({_VALUE}[{name}] if {name} in {_VALUE} else {_ABSENT_NAME}) "
                f"if type({_VALUE} := "
            )
            self.visit(node.node, frame)
            self.write(f") is {_VARS_NAME} else environment.getattr({_VALUE}, {name}))")
            return
        self.write(f"({_VALUE}[{name}] if type({_VALUE} := ")
        self.visit(node.node, frame)
        self.write(
            f") is {_VARS_NAME} and {name} in {_VALUE} else environment.getattr({_VALUE}, {name}))"
        )

    @optimizeconst
    def visit_Filter(self, node: nodes.Filter, frame: Frame) -> None:
        """``value | default(constant)`` inline; every other filter as Jinja does it."""
        if (
            node.name != "default"
            or self.environment.is_async
            or self.environment.filters.get("default") is not jinja2.filters.do_default
            or node.node is None
            or node.kwargs
            or node.dyn_args is not None
            or node.dyn_kwargs is not None
            or len(node.args) > 1
        ):
            super().visit_Filter(node, frame)
            return
        if node.args and not isinstance(node.args[0], nodes.Const):
            # The filter gets its argument evaluated (an undefined one raises): so here.
            self.write(f"({_PAIR}[1] if isinstance(({_PAIR} := (")
            self._lenient_visit(node.node, frame)
            self.write(", ")
            self.visit(node.args[0], frame)
            self.write(f"))[0], Undefined) else {_PAIR}[0])")
            return
        self.write("(")
        if node.args:
            self.visit(node.args[0], frame)
        else:
            self.write("''")
        self.write(f" if isinstance({_VALUE} := ")
        self._lenient_visit(node.node, frame)
        self.write(f", Undefined) else {_VALUE})")

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        """``a ~ b``: what Jinja's ``str_join`` does, without calling it."""
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super().visit_Concat(node, frame)
            return
        self.write("''.join(map(str, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")

    @optimizeconst
    def visit_Test(self, node: nodes.Test, frame: Frame) -> None:
        """``value is defined`` inline; every other test as Jinja does it."""
        if (
            node.name != "defined"
            or self.environment.is_async
            or self.environment.tests.get("defined") is not jinja2.tests.test_defined
            or node.args
            or node.kwargs
            or node.dyn_args is not None
            or node.dyn_kwargs is not None
        ):
            super().visit_Test(node, frame)
            return
        self.write("(not isinstance(")
        self._lenient_visit(node.node, frame)
        self.write(", Undefined))")


#: names in generated template code: no template variable compiles to them (Jinja
#: prefixes those with ``l_``), and Jinja's own names look different
_VARS_NAME = "_outreach_vars_type"
_VALUE = "_outreach_value"
_PAIR = "_outreach_pair"
_ABSENT_NAME = "_outreach_absent"


class _Sandbox(SandboxedEnvironment):
    """The sandbox, with the same answers and fewer questions per attribute.

    Its templates are compiled by :class:`_CodeGenerator`.

    Jinja's sandbox resolves ``candidate.first_name`` by trying the *attribute* first
    (an ``AttributeError`` raised and caught for every variable of a mapping), then the
    item; a found attribute is checked with :meth:`is_safe_attribute`. Two shortcuts give
    the very same result:

    * for a mapping whose attributes its type fully describes (see
      :func:`_attribute_names`), a name that is not one of them cannot be an attribute,
      so it goes straight to the item (or undefined); any other name (``items``,
      ``__class__``, ``label``) takes the sandbox's own path and its checks;
    * whether an attribute is safe depends only on the object's type and the name (see
      ``jinja2.sandbox.is_internal_attribute``), so the decision is kept per pair.
    """

    code_generator_class = _CodeGenerator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._attribute_names: dict[type, frozenset[str] | None] = {}
        self._safe: dict[tuple[type, str], bool] = {}

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj.attribute`` from a template: item first where that cannot differ."""
        cls = type(obj)
        if cls is Vars:  # nearly every lookup: the template variables themselves
            names = _VARS_ATTRIBUTES
        else:
            names = self._attribute_names.get(cls, _UNPLANNED)
            if names is _UNPLANNED:
                names = self._attribute_names[cls] = _attribute_names(cls)
        if names is not None and attribute not in names:  # type: ignore[operator]
            try:
                return obj[attribute]
            except (TypeError, LookupError):
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """The sandbox's decision, remembered per (type, name): it depends on nothing else.

        One more refusal: a template cannot change its variables (``candidate.update``,
        ``job.pop``: the methods ``ImmutableSandboxedEnvironment`` refuses, for ``Vars``
        alone), so variables that many touches share stay as they were built.
        """
        key = (type(obj), attr)
        safe = self._safe.get(key)
        if safe is None:
            safe = super().is_safe_attribute(obj, attr, value) and not (
                isinstance(obj, Vars) and modifies_known_mutable(obj, attr)
            )
            self._safe[key] = safe
        return safe


class _CompiledTemplates(jinja2.BytecodeCache):
    """Compiled templates kept in memory for the process, across template stores.

    A tick makes its own :class:`TemplateStore`; this cache spares it compiling the same
    sources again. Jinja keys each entry by the template's name and file and checks it
    against a checksum of the source it just read, so an edited template is compiled
    afresh by the next store, never served stale.
    """

    #: entries kept (oldest dropped first): many more than a template folder holds
    MAX_ENTRIES = 2048

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        """Fill ``bucket`` with the code stored under its key, if any."""
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        """Keep ``bucket``'s freshly compiled code."""
        code = bucket.bytecode_to_string()
        with self._lock:
            self._code.pop(bucket.key, None)
            while len(self._code) >= self.MAX_ENTRIES:
                del self._code[next(iter(self._code))]
            self._code[bucket.key] = code


_COMPILED = _CompiledTemplates()
#: per (file, source, global names): whether the template reads only its variables, and
#: what it reads of them
_ANALYSED: dict[tuple[str, str, frozenset[str]], tuple[bool, TemplateReads]] = {}


class TemplateRenderError(Exception):
    """A template could not be rendered for one person (missing variable, bad syntax)."""

    def __init__(self, template: str, reason: str, line: int | None = None) -> None:
        self.template = template
        self.reason = reason
        self.line = line
        where = f"{template}:{line}" if line else template
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class RenderedMessage:
    """A rendered template: ``subject`` for email, ``title`` for tasks, always ``body``."""

    template: str
    kind: str
    body: str
    subject: str | None = None
    title: str | None = None
    #: the variables as plain JSON data, for a provider-side template (SendGrid dynamic)
    data: dict[str, Any] | None = None


def plain_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The template variables as plain JSON-ready data (for a SendGrid dynamic template).

    Missing values stay missing, as in local templates, so a Handlebars ``{{#if}}`` or
    default works the same way.
    """
    return _plain(context)


#: value types :func:`_plain` keeps as they are, looked up by exact type before the
#: slower ``isinstance`` checks (a subclass still gets them, with the same answer)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@dataclass(frozen=True)
class _Compiled:
    """A template as one store renders it: compiled once, its globals flattened once."""

    filename: str
    template: jinja2.Template
    #: the template's globals (a ``ChainMap`` over the environment's) as one plain dict,
    #: what ``Template.new_context`` copies for every render; the store never changes them
    globals: dict[str, Any]
    #: their names, which a render context carries (Jinja only reads them)
    globals_keys: set[str]
    #: the template's autoescape setting, as ``EvalContext`` works it out
    autoescape: Any
    #: the template reads no global (``range``, ``namespace``, ...) and includes, imports
    #: or extends no other template: its context's parent can be the variables themselves
    #: (Jinja never writes to a parent), not a copy merged with the globals
    variables_only: bool
    #: the attributes it reads of each variable (see :mod:`outreach.template_reads`)
    reads: TemplateReads

    def context(self, env: jinja2.Environment, variables: Mapping[str, Any]) -> Context:
        """The render context ``Template.new_context(variables)`` makes, made directly.

        The same fields with the same values (a test compares them): a fresh parent of
        globals and variables (the variables themselves for a template that reads no
        global), fresh locals, exports, block lists and evaluation context.
        Jinja's constructors recompute the per-template parts each time; here they are
        worked out once, which matters when a template is rendered for every touch.
        """
        eval_ctx = _new_object(EvalContext)
        eval_ctx.__dict__ = {"environment": env, "autoescape": self.autoescape, "volatile": False}
        blocks = self.template.blocks
        context = _new_object(env.context_class)
        context.__dict__ = {
            "parent": variables
            if self.variables_only and type(variables) is dict
            else {**self.globals, **variables},
            "vars": {},
            "environment": env,
            "eval_ctx": eval_ctx,
            "exported_vars": set(),
            "name": self.template.name,
            "globals_keys": self.globals_keys,
            "blocks": {name: [block] for name, block in blocks.items()} if blocks else {},
        }
        return context


class TemplateStore:
    """The template folder and a sandboxed, strict Jinja2 environment over it.

    ``dynamic`` (an :class:`outreach.dynamic_templates.DynamicTemplateCheck`) makes a step
    with a SendGrid dynamic template as strict as a local one: its data is checked against
    the variables of the template's active version before the touch can be sent.
    """

    def __init__(self, directory: Path, dynamic: Any | None = None) -> None:
        self.directory = Path(directory)
        self.dynamic = dynamic
        self.env = _Sandbox(
            loader=jinja2.FileSystemLoader(str(self.directory)),
            undefined=_StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            bytecode_cache=_COMPILED,
        )
        #: templates loaded by this store, by (name, kind): read from disk once per store
        self._compiled: dict[tuple[str, str], _Compiled] = {}
        self._exists: dict[tuple[str, str], bool] = {}

    @staticmethod
    def kind_for(channel: str) -> str:
        """The template kind a channel uses: email, sms or task."""
        return _KIND_BY_CHANNEL[channel]

    def filename(self, name: str, kind: str) -> str:
        """The file name of template ``name`` for ``kind``."""
        return f"{name}.{kind}.j2"

    def path_for(self, name: str, kind: str) -> Path:
        """Where template ``name`` for ``kind`` lives."""
        return self.directory / self.filename(name, kind)

    def exists(self, name: str, kind: str) -> bool:
        """Whether the template file exists.

        Asked once per store: a store (one tick) sees the folder as it first found it, as
        it renders each template as it first read it.
        """
        found = self._exists.get((name, kind))
        if found is None:
            found = (name, kind) in self._compiled or self.path_for(name, kind).is_file()
            self._exists[(name, kind)] = found
        return found

    def render_for_step(
        self, name: str, kind: str, context: Mapping[str, Any], provider_template: str | None
    ) -> RenderedMessage:
        """Render for a channel; a step with a SendGrid dynamic template also carries its data.

        With ``provider_template`` set for an email, the local template is optional: when it
        exists it still gives the subject for the ledger and the CRM note. With a ``dynamic``
        check, data lacking a variable of the provider's template raises
        :class:`TemplateRenderError` (and a template that cannot be read, its subclass
        ``TemplateUnavailable``).
        """
        if kind != "email" or not provider_template:
            compiled = self._compiled.get((name, kind)) or self._load(name, kind)
            return _split(compiled.filename, kind, self._text(compiled, context))
        data = plain_context(context)
        if self.dynamic is not None:
            self.dynamic.check(provider_template, data)
        if self.exists(name, kind):
            rendered = self.render(name, kind, context)
            return RenderedMessage(
                rendered.template, kind, rendered.body, rendered.subject, data=data
            )
        return RenderedMessage(self.filename(name, kind), kind, "", None, data=data)

    def reads(self, name: str, kind: str) -> TemplateReads:
        """What template ``name`` for ``kind`` reads of its variables (see
        :mod:`outreach.template_reads`); a template that cannot be loaded reads everything
        (rendering it then raises as it always did)."""
        compiled = self._compiled.get((name, kind))
        if compiled is None:
            try:
                compiled = self._load(name, kind)
            except TemplateRenderError:
                return EVERYTHING
        return compiled.reads

    def render(self, name: str, kind: str, context: Mapping[str, Any]) -> RenderedMessage:
        """Render template ``name`` for ``kind`` with ``context``.

        Raises :class:`TemplateRenderError` naming the template, the line and the
        missing variable; a partial message is never returned.
        """
        compiled = self._compiled.get((name, kind)) or self._load(name, kind)
        return _split(compiled.filename, kind, self._text(compiled, context))

    def render_many(
        self, name: str, kind: str, contexts: Iterable[Mapping[str, Any]]
    ) -> list[RenderedMessage | TemplateRenderError]:
        """Render one template for many contexts: the message or the error, item by item.

        The same result as :meth:`render` for each context, in order, with the template
        looked up once. An error belongs to its item alone (DESIGN.md invariant 7): it is
        returned in that item's place, and the others are rendered.
        """
        try:
            compiled = self._compiled.get((name, kind)) or self._load(name, kind)
        except TemplateRenderError as exc:
            return [TemplateRenderError(exc.template, exc.reason, exc.line) for _ in contexts]
        render = self._render
        results: list[RenderedMessage | TemplateRenderError] = []
        for context in contexts:
            try:
                results.append(render(compiled, kind, context))
            except TemplateRenderError as exc:
                results.append(exc)
        return results

    def _load(self, name: str, kind: str) -> _Compiled:
        """Load and compile template ``name`` for ``kind`` (raises ``TemplateRenderError``)."""
        filename = self.filename(name, kind)
        try:
            template = self.env.get_template(filename)
        except jinja2.TemplateNotFound:
            raise TemplateRenderError(filename, f"template not found in {self.directory}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateRenderError(
                filename, f"syntax error: {exc.message}", exc.lineno
            ) from None
        except UnicodeDecodeError as exc:
            raise TemplateRenderError(
                filename, f"not UTF-8 text (byte {exc.start}); save the file as UTF-8"
            ) from None
        except OSError as exc:
            raise TemplateRenderError(filename, f"cannot be read: {exc.strerror or exc}") from None
        autoescape = self.env.autoescape
        globals_ = dict(template.globals)
        compiled = _Compiled(
            filename,
            template,
            globals_,
            set(globals_),
            autoescape(template.name) if callable(autoescape) else autoescape,
            *self._analyse(filename, globals_),
        )
        self._compiled[(name, kind)] = compiled
        return compiled

    def _analyse(self, filename: str, globals_: Mapping[str, Any]) -> tuple[bool, TemplateReads]:
        """Whether the template reads no global and uses no other template (see
        ``_Compiled.variables_only``), and what it reads of its variables; worked out
        once per source text in the process."""
        source = self.env.loader.get_source(self.env, filename)[0]  # type: ignore[union-attr]
        key = (filename, source, frozenset(globals_))
        found = _ANALYSED.get(key)
        if found is None:
            tree = self.env.parse(source, filename)
            # Every name the template mentions (meta.find_undeclared_variables leaves the
            # environment's globals out, so it cannot tell), and any template it uses.
            names = {node.name for node in tree.find_all(nodes.Name)}
            variables_only = not (
                names & globals_.keys() or list(jinja2.meta.find_referenced_templates(tree))
            )
            found = (variables_only, template_reads(tree, _VARS_ATTRIBUTES or frozenset()))
            if len(_ANALYSED) >= _CompiledTemplates.MAX_ENTRIES:
                _ANALYSED.clear()
            _ANALYSED[key] = found
        return found

    def _render(
        self, compiled: _Compiled, kind: str, context: Mapping[str, Any]
    ) -> RenderedMessage:
        """Render ``compiled`` with ``context`` and split off the subject or title."""
        return _split(compiled.filename, kind, self._text(compiled, context))

    def _text(self, compiled: _Compiled, context: Mapping[str, Any]) -> str:
        """What ``Template.render`` returns, without re-reading the template's globals."""
        template = compiled.template
        env = self.env
        try:
            try:
                ctx = compiled.context(env, context)
                text = "".join(template.root_render_func(ctx))
            except Exception:
                # Jinja rewrites the traceback so template frames carry the template's line.
                env.handle_exception()
        except jinja2.UndefinedError as exc:
            raise TemplateRenderError(
                compiled.filename, exc.message or str(exc), _line(exc, template)
            ) from None
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(compiled.filename, str(exc), _line(exc, template)) from None
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise TemplateRenderError(
                compiled.filename, f"{type(exc).__name__}: {exc}", _line(exc, template)
            ) from None
        except RecursionError:
            raise TemplateRenderError(
                compiled.filename, "recursion too deep (a macro or include that calls itself)"
            ) from None
        return text


def _line(exc: BaseException, template: jinja2.Template) -> int | None:
    # Jinja rewrites tracebacks so that template frames carry the template's own line.
    tb: types.TracebackType | None = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == template.filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_new_object = object.__new__


def _message(
    template: str,
    kind: str,
    body: str,
    subject: str | None = None,
    title: str | None = None,
    data: dict[str, Any] | None = None,
) -> RenderedMessage:
    """``RenderedMessage(...)`` without the frozen dataclass's per-field ``__setattr__``."""
    message = _new_object(RenderedMessage)
    _set_attribute(
        message,
        "__dict__",
        {
            "template": template,
            "kind": kind,
            "body": body,
            "subject": subject,
            "title": title,
            "data": data,
        },
    )
    return message


_set_attribute = object.__setattr__


def _split(filename: str, kind: str, text: str) -> RenderedMessage:
    text = text.strip("\n")
    if kind == "email":
        first, _, rest = text.partition("\n")
        if not first.startswith("Subject:"):
            raise TemplateRenderError(
                filename, "an email template must start with a 'Subject: ...' line", 1
            )
        subject = first[len("Subject:") :].strip()
        if not subject:
            raise TemplateRenderError(filename, "the subject line is empty", 1)
        return _message(filename, kind, rest.strip(), subject=subject)
    if kind == "task":
        first, _, rest = text.partition("\n")
        if first.startswith("Title:"):
            return _message(filename, kind, rest.strip(), title=first[len("Title:") :].strip())
        return _message(filename, kind, text.strip(), title=None)
    return _message(filename, kind, text.strip())


#: why ``touch.rating_urls`` can be missing, said wherever a template needs it
NO_PUBLIC_URL = (
    "OUTREACH_PUBLIC_URL is not set, so there are no rating links; set it to where "
    "`outreach serve` is reached (the step is skipped until then, never sent with a "
    "broken link)"
)
#: the base of the sample rating links ``config check`` renders with, when none is set
SAMPLE_PUBLIC_URL = "https://outreach.example.com"


def touch_vars(cadence: str, step: str, variant: str, rating_urls: list[str] | None = None) -> Vars:
    """The ``touch`` variables: cadence, step, variant and, when known, ``rating_urls``
    (five one-click links, ``touch.rating_urls[0]`` scores 1, ``[4]`` scores 5).

    The part without links is made once per (cadence, step, variant) and shared when
    there are no links (templates cannot change their variables); with links, a touch
    gets a copy with its own.
    """
    key = (cadence, step, variant)
    part = _TOUCH_PARTS.get(key)
    if part is None:
        part = Vars("touch", {"cadence": cadence, "step": step, "variant": variant}, _TOUCH_HINTS)
        if _TEXT.issuperset(map(type, key)):
            if len(_TOUCH_PARTS) >= 10_000:
                _TOUCH_PARTS.clear()
            _TOUCH_PARTS[key] = part
    if rating_urls is None or (type(rating_urls) is str and not rating_urls):
        return part
    made = _new_dict(Vars)
    _dict_update(made, part)
    made.label = "touch"
    made.hints = _TOUCH_HINTS
    if rating_urls != "":
        made["rating_urls"] = rating_urls
    return made


_TOUCH_PARTS: dict[tuple[Any, ...], Vars] = {}
_TEXT = frozenset({str, type(None)})
_new_dict = dict.__new__
_dict_update = dict.update
_TOUCH_HINTS: Mapping[str, str] = _ReadOnly({"rating_urls": NO_PUBLIC_URL})


def sample_context(company_name: str, public_url: str | None = SAMPLE_PUBLIC_URL) -> dict[str, Any]:
    """A realistic, long-ish context for checking templates (and SMS length).

    ``public_url=None`` leaves ``touch.rating_urls`` out, as a run without
    ``OUTREACH_PUBLIC_URL`` does.
    """
    from outreach.ratings import rating_urls

    # as long as a real token (token_urlsafe(16)), so SMS length checks are honest
    links = rating_urls(public_url, "S" * 22) if public_url else None
    return {
        "candidate": Vars(
            "candidate",
            {
                "first_name": "Alexandra",
                "last_name": "Montgomery",
                "email": "alexandra.montgomery@example.com",
                "phone": "+14155550142",
                "linkedin_url": "https://www.linkedin.com/in/alexandra-montgomery",
                "x_url": "https://x.com/alexandra_codes",
                "facebook_url": "https://www.facebook.com/alexandra.montgomery",
                "source": "greenhouse",
                "stage": "interview",
                "tags": ["backend", "referral"],
                "custom": _AnyCustom("candidate.custom"),
            },
        ),
        "job": Vars("job", {"title": "Senior Software Engineer", "department": "Engineering"}),
        "recruiter": Vars(
            "recruiter",
            {"name": "Jordan Smith", "email": "jordan.smith@example.com", "phone": "+12125550187"},
        ),
        "company": Vars("company", {"name": company_name}),
        "touch": touch_vars("sample-cadence", "sample-step", "a", links),
    }


@dataclass(frozen=True)
class TemplateReport:
    """What ``config check`` found in the templates: errors fail, warnings inform."""

    errors: list[str]
    warnings: list[str]
    checked: int


def check_templates(config: Any, public_url: str | None = SAMPLE_PUBLIC_URL) -> TemplateReport:
    """Compile and sample-render every template a cadence may use.

    ``config`` is a :class:`outreach.cadence.CadenceConfig`. Errors: syntax, missing
    ``Subject:`` line, unknown variables (``candidate.frist_name``). Warnings: an SMS body
    longer than one segment with realistic values; with ``public_url=None`` (no
    ``OUTREACH_PUBLIC_URL``), each template that cannot render without rating links,
    naming the steps that will be skipped until it is set.
    """
    store = TemplateStore(config.template_dir)
    errors: list[str] = []
    warnings: list[str] = []
    seen: set[tuple[str, str]] = set()
    context = sample_context(config.company.name, public_url or SAMPLE_PUBLIC_URL)
    bare = None if public_url else sample_context(config.company.name, None)
    needs_url: dict[Path, list[str]] = {}
    for cadence in config.cadences:
        for step in cadence.steps:
            kinds = {TemplateStore.kind_for(ch) for ch in config.channels_for(step)}
            if step.on_late == "task":
                kinds.add("task")
            for name in step.templates:
                for kind in sorted(kinds):
                    path = store.path_for(name, kind)
                    if path in needs_url:
                        needs_url[path].append(f"{cadence.id}.{step.id}")
                    if (name, kind) in seen or not store.exists(name, kind):
                        continue  # a missing file is reported by the cadence cross-check
                    seen.add((name, kind))
                    try:
                        message = store.render(name, kind, context)
                    except TemplateRenderError as exc:
                        where = f"{path}:{exc.line}" if exc.line else str(path)
                        errors.append(f"{where}: {exc.reason}")
                        continue
                    if bare is not None and _needs_rating_urls(store, name, kind, bare):
                        needs_url[path] = [f"{cadence.id}.{step.id}"]
                    if kind == "sms":
                        info = count_segments(message.body)
                        if info.segments > 1:
                            detail = f"{info.units} {info.encoding} units" + (
                                f", non-GSM characters {info.non_gsm!r}" if info.non_gsm else ""
                            )
                            warnings.append(
                                f"{path}: SMS body takes {info.segments} segments with sample "
                                f"values ({detail}); one segment is 160 GSM-7 characters "
                                "(70 if any character is outside GSM-7)"
                            )
    for path, steps in needs_url.items():
        warnings.append(
            f"{path}: uses touch.rating_urls, but {NO_PUBLIC_URL}; steps: {', '.join(steps)}"
        )
    return TemplateReport(errors=errors, warnings=warnings, checked=len(seen))


def steps_needing_public_url(config: Any) -> list[str]:
    """The steps (``cadence.step``) whose templates cannot render without rating links,
    so that a run without ``OUTREACH_PUBLIC_URL`` can say which steps it will skip."""
    store = TemplateStore(config.template_dir)
    bare = sample_context(config.company.name, None)
    steps: list[str] = []
    for cadence in config.cadences:
        for step in cadence.steps:
            kinds = {TemplateStore.kind_for(ch) for ch in config.channels_for(step)}
            if any(
                store.exists(name, kind) and _needs_rating_urls(store, name, kind, bare)
                for name in step.templates
                for kind in sorted(kinds)
            ):
                steps.append(f"{cadence.id}.{step.id}")
    return steps


def _needs_rating_urls(store: TemplateStore, name: str, kind: str, bare: dict[str, Any]) -> bool:
    """Whether the template fails to render for want of ``touch.rating_urls`` alone."""
    try:
        store.render(name, kind, bare)
    except TemplateRenderError as exc:
        return "touch.rating_urls" in exc.reason
    return False


def raise_for_report(report: TemplateReport) -> None:
    """Turn template errors into a :class:`ConfigError` (warnings are not errors)."""
    if report.errors:
        raise ConfigError(f"{len(report.errors)} problem(s) in templates", report.errors)
