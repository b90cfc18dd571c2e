"""The checker's walk over the (normalised) libcst tree: one visit that records what the later
judgement needs (scopes, bindings, call sites, assignments to attributes) and applies every rule
that the structure alone decides (imports, references to refused names, dunder attributes,
strings, class definitions, annotations). sandbox/check_judge.py decides the rest once the
whole file has been seen.

Every Name node is counted as it is visited (`names`): sandbox/check.py compares the counts with
the interpreter's own parse, so a name this walk never sees is itself a rejection.
"""
from __future__ import annotations

import ast
import dataclasses
from collections import Counter
from dataclasses import dataclass

import libcst as cst

from sandbox.check_flow import Binding, Flow, Function, Scope
from sandbox.check_policy import (DATA_MARKERS, DATA_PATH_COMPONENTS, DIRECT_ONLY_BUILTINS, DUNDER_ATTRS_ALLOWED,
                                  DUNDER_NAMES_REFUSED, DUNDER_STRINGS_ALLOWED, DYNAMIC_BUILTINS, MUTATING_METHODS,
                                  PREPARE_FUNCTIONS, PREPARE_MODULE, TORCH_OVERRIDE_DUNDERS, WRITE_METHODS, Baseline,
                                  dotted_name, module_problem, reference_problem)
from sandbox.check_text import libcst_statements
from sandbox.check_values import as_text, constant_string, fstring_text, literal

# Attributes that lead from ordinary objects to frames and code, whatever the object.
FRAME_ATTRS = frozenset({"f_globals", "f_locals", "f_back", "f_builtins", "f_code", "gi_frame", "cr_frame",
                         "ag_frame", "tb_frame", "gi_code", "cr_code", "ag_code", "co_code", "co_consts"})
# Attributes that register Python kernels for torch operators (OpOverload.py_impl, ...).
OPERATOR_OVERRIDE_ATTRS = frozenset({"py_impl", "py_kernels", "register_kernel", "register_fake",
                                     "register_autograd", "register_torch_dispatch", "register_vmap"})
# Module paths `from X import Y` can bind as a module (used to know that `F` in
# `from torch.nn import functional as F` is a module, not a function).
KNOWN_MODULES = frozenset({
    "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.nn.utils", "torch.optim", "torch.optim.lr_scheduler",
    "torch.utils", "torch.utils.data", "torch.utils.checkpoint", "torch.cuda", "torch.cuda.amp", "torch.amp",
    "torch.backends", "torch.backends.cuda", "torch.backends.cudnn", "torch.backends.mps", "torch.jit", "torch.fx",
    "torch.autograd", "torch.export", "torch.onnx", "torch.profiler", "torch.func", "torch.special", "torch.linalg",
    "torch.fft", "torch.compiler", "torch._dynamo", "torch._inductor", "torch._dynamo.config",
    "torch._inductor.config", "torch.serialization", "torch.random", "torch.distributions", "torch.nested",
    "torch.sparse", "torch.testing", "torch.nn.modules", "torch.nn.parameter", "torch.nn.attention",
    "numpy.random", "numpy.linalg", "numpy.fft", "numpy.lib", "numpy.ma", "numpy.polynomial", "numpy.testing",
    "os.path", "concurrent.futures", "logging.handlers", "collections.abc", "importlib.util", "xml.etree",
    "multiprocessing.pool", "unittest.mock", "urllib.request", "http.client", "email.mime", "json.decoder",
})
_SMALL = (cst.Assign, cst.AnnAssign, cst.AugAssign, cst.Expr, cst.Return, cst.Raise, cst.Assert, cst.Del, cst.Pass,
          cst.Break, cst.Continue, cst.Global, cst.Nonlocal, cst.Import, cst.ImportFrom)
_COMPOUND = (cst.FunctionDef, cst.ClassDef, cst.If, cst.For, cst.While, cst.Try, cst.TryStar, cst.With, cst.Match)
STATEMENTS = frozenset(_SMALL + _COMPOUND)
_UNSEEN = object()
_SYNTAX_FIELDS = frozenset({"leading_lines", "lines_after_decorators", "lpar", "rpar", "comma", "equal", "dot",
                            "semicolon", "header", "footer", "trailing_whitespace", "lbracket", "rbracket", "lbrace",
                            "rbrace", "colon", "indent", "operator", "asynchronous", "star", "start", "end",
                            "encoding", "default_indent", "default_newline", "has_trailing_newline", "relative",
                            "posonly_ind", "conversion", "newline", "type_parameters"})


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str
    statement: cst.CSTNode | None


@dataclass(frozen=True)
class Site:
    """A node the judgement looks at after the walk, with where it was seen."""
    node: cst.CSTNode
    scope: Scope
    statement: cst.CSTNode | None
    top: int              # index of the module-level statement it is in (for the order of bindings)
    how: str = ""         # mutations: assign | aug | del; names: call | value | ok


def import_aliases(module: cst.Module) -> tuple[dict[str, str], set[str]]:
    """Every name an import binds anywhere in the file -> the dotted name it stands for, and the
    dotted names that are modules. A cheap pre-filter: whether a use of the name really is the
    import is decided per scope after the walk (a loop variable `p` is not `import prepare as p`)."""
    aliases: dict[str, str] = {}
    modules: set[str] = set(KNOWN_MODULES)
    for node in libcst_statements(module.body):
        if isinstance(node, cst.Import):
            for a in node.names:
                name = a.evaluated_name
                if a.asname:
                    aliases[a.evaluated_alias] = name
                else:
                    aliases[name.split(".")[0]] = name.split(".")[0]
                parts = name.split(".")
                modules.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, cst.ImportFrom) and node.module is not None and not node.relative \
                and not isinstance(node.names, cst.ImportStar):
            base = dotted_name(node.module)
            for a in node.names:
                aliases[a.evaluated_alias or a.evaluated_name] = f"{base}.{a.evaluated_name}"
    return aliases, modules


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _chain_names(node: cst.CSTNode):
    while isinstance(node, cst.Attribute):
        yield node.attr
        node = node.value
    if isinstance(node, cst.Name):
        yield node


def _target_names(node: cst.CSTNode, path: tuple[int, ...] = ()):
    """(Name, index path) for each name an assignment target binds; other targets with path None."""
    if isinstance(node, (cst.Tuple, cst.List)):
        for i, element in enumerate(node.elements):
            yield from _target_names(element.value, path + (i,) if path is not None else None)
    elif isinstance(node, cst.StarredElement):
        yield from _target_names(node.value, None)
    else:
        yield node, path


class Walker:
    def __init__(self, module: cst.Module, baseline: Baseline):
        self.module = module
        self.baseline = baseline
        self.protected = baseline.allowed_prepare_names
        self.aliases, self.modules = import_aliases(module)
        self.flow = Flow(module)
        self.scope: Scope = self.flow.module_scope
        self.found: list[Finding] = []
        self.names: Counter = Counter()
        self.statements: list[cst.CSTNode] = []
        self.top = -1
        # contexts set by a parent before its children are visited
        self.not_refs: set[int] = set()       # Names that are not references (attribute names, keywords, ...)
        self.stores: dict[int, str] = {}      # assignment/del targets -> "store" | "del"
        self.called: set[int] = set()         # nodes that are the function of a call
        self.value_ok: set[int] = set()       # module/callable references allowed as values here
        self.inner: set[int] = set()          # inner links of an attribute chain judged as a whole
        self.docstrings: set[int] = set()
        # what the judgement looks at after the walk
        self.calls: list[Site] = []
        self.mutations: list[Site] = []
        self.builtin_uses: list[Site] = []
        self.chains: list[Site] = []          # Name/attribute chains that may be rooted at an import
        self.classes: list[Site] = []
        self.subscripts: list[Site] = []
        self.containers: list[Site] = []      # containers changed in place (append, item assignment)
        self.method_values: list[Site] = []   # write methods taken as values (w = path.write_text)
        self.match_subjects: list[cst.CSTNode] = []
        self.instance_dicts: list[Site] = []
        self.operator_registrations: list[Site] = []
        self.lambda_names: dict[int, str] = {}
        # evaluation reachability: names each def/class (None: module level) refers to
        self.def_scope: cst.CSTNode | None = None
        self.refs: dict[cst.CSTNode | None, set[str]] = {None: set()}
        self.evaluating: set[cst.CSTNode | None] = set()
        self.evaluate_calls: list[tuple[cst.CSTNode | None, bool]] = []   # (statement, inside a loop)
        self.loops = 0
        self.definitions: dict[str, list[cst.CSTNode]] = {}
        self.methods: dict[cst.CSTNode, list[cst.CSTNode]] = {}

    # ------------------------------------------------------------------ traversal machinery
    # libcst's own visit() rebuilds every node it passes (a visitor may replace children), which
    # costs more than the parse. The walk only reads: it follows each node type's dataclass fields
    # (whitespace, brackets and operators skipped) and dispatches to visit_X through a per-type cache.
    _dispatch: dict[type, object] = {}
    _fields: dict[type, tuple[str, ...]] = {}

    def walk(self, node: cst.CSTNode) -> None:
        if self.on_visit(node):
            kind = type(node)
            fields = self._fields.get(kind)
            if fields is None:
                fields = self._fields[kind] = tuple(f.name for f in dataclasses.fields(kind)
                                                    if f.name not in _SYNTAX_FIELDS
                                                    and not f.name.startswith("whitespace"))
            for name in fields:
                value = getattr(node, name)
                if isinstance(value, cst.CSTNode):
                    self.walk(value)
                elif isinstance(value, (tuple, list)):
                    for item in value:
                        if isinstance(item, cst.CSTNode):
                            self.walk(item)
        self.on_leave(node)

    def on_visit(self, node: cst.CSTNode) -> bool:
        kind = type(node)
        if kind is cst.Name:
            self.names[node.value] += 1
        elif kind in STATEMENTS:
            if not self.statements:
                self.top += 1
            self.statements.append(node)
        method = self._dispatch.get(kind, _UNSEEN)
        if method is _UNSEEN:
            method = self._dispatch[kind] = getattr(Walker, f"visit_{kind.__name__}", None)
        return method is None or method(self, node) is not False

    def on_leave(self, node: cst.CSTNode) -> None:
        kind = type(node)
        if kind in STATEMENTS:
            self.statements.pop()
            if kind is cst.For or kind is cst.While:
                self.loops -= 1

    # ------------------------------------------------------------------ helpers
    @property
    def statement(self) -> cst.CSTNode | None:
        return self.statements[-1] if self.statements else None

    @property
    def top_level(self) -> bool:
        """Is the statement being visited directly in the module body (runs unconditionally)?"""
        return len(self.statements) == 1

    def flag(self, rule: str, message: str) -> None:
        self.found.append(Finding(rule, message, self.statement))

    def site(self, node: cst.CSTNode, how: str = "") -> Site:
        return Site(node, self.scope, self.statement, self.top, how)

    def code(self, node: cst.CSTNode) -> str:
        """The node's source text on one line (for messages)."""
        text = " ".join(line.strip() for line in self.module.code_for_node(node).strip().splitlines())
        return text if len(text) <= 70 else text[:67] + "..."

    def bind(self, name: cst.Name, kind: str, node: cst.CSTNode | None, extra: object = None,
             scope: Scope | None = None) -> None:
        scope = scope or self.scope
        unconditional = self.top if (self.top_level and scope.kind == "module") else -1
        self.flow.bind(scope, name.value, Binding(kind, node, self.scope if kind != "param" else scope, extra,
                                                  unconditional))

    def _protect(self, name: cst.Name, how: str) -> None:
        if name.value in self.protected:
            self.flag("prepare-rebind", f"{how} '{name.value}' shadows prepare's {name.value}")

    def _mark(self, target: cst.BaseExpression, how: str) -> None:
        for node, _ in _target_names(target):
            self.stores[id(node)] = how
            if isinstance(node, (cst.Attribute, cst.Subscript)):
                self.mutations.append(self.site(node, how))

    def _bind_target(self, target: cst.BaseExpression, value: cst.BaseExpression | None, kind: str = "value") -> None:
        """Bindings of an assignment target: element-wise for `a, b = x, y`, else unknown parts."""
        if isinstance(target, cst.Name):
            self.bind(target, kind, value)
            return
        values = None
        if isinstance(target, (cst.Tuple, cst.List)) and isinstance(value, (cst.Tuple, cst.List)) \
                and len(target.elements) == len(value.elements) \
                and not any(isinstance(e, cst.StarredElement) for e in (*target.elements, *value.elements)):
            values = [e.value for e in value.elements]
        if values is not None:
            for element, item in zip(target.elements, values):
                self._bind_target(element.value, item, kind)
            return
        for node, path in _target_names(target):
            if isinstance(node, cst.Name):   # a, b = f(): a part of the value (unknown to most questions)
                self.bind(node, "unpack" if path is not None and value is not None else "unknown", value, path)

    def _bind_iteration(self, target: cst.BaseExpression, iterable: cst.BaseExpression) -> None:
        for node, path in _target_names(target):
            if isinstance(node, cst.Name):
                self.bind(node, "iter" if path is not None else "unknown", iterable, path)

    # ------------------------------------------------------------------ imports
    def _import_names(self, node: cst.CSTNode) -> None:
        for name in _chain_names(node):
            self.not_refs.add(id(name))
        current = node
        while isinstance(current, cst.Attribute):
            self.inner.add(id(current))
            current = current.value

    def visit_Import(self, node: cst.Import) -> None:
        for a in node.names:
            self._import_names(a.name)
            if a.asname is not None:
                self._import_names(a.asname.name)
            name, bound = a.evaluated_name, a.evaluated_alias or a.evaluated_name.split(".")[0]
            top = name.split(".")[0]
            bound_node = a.asname.name if a.asname is not None else _root(a.name)
            if isinstance(bound_node, cst.Name):
                self.bind(bound_node, "import", None, name if a.asname else top)
            if top == PREPARE_MODULE:
                self.flag("prepare-names", f"'import {name}' gives access to all of prepare; use "
                          f"'from prepare import {', '.join(sorted(self.baseline.prepare_names or self.protected))}'")
                continue
            why = module_problem(top, self.baseline)
            refusal = reference_problem(name, self.baseline) if why is None else None
            if why or refusal:
                self.flag("import-not-allowed", f"import {name}: {why or refusal.why}")
            if bound in self.protected:
                self.flag("prepare-rebind", f"'import {name} as {bound}' shadows prepare's {bound}")

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.module is not None:
            self._import_names(node.module)
        module = dotted_name(node.module) or ""
        top = module.split(".")[0]
        star = isinstance(node.names, cst.ImportStar)
        names = () if star else node.names
        for a in names:
            self._import_names(a.name)
            if a.asname is not None:
                self._import_names(a.asname.name)
            bound_node = a.asname.name if a.asname is not None else a.name
            if isinstance(bound_node, cst.Name):
                self.bind(bound_node, "import", None, f"{module}.{a.evaluated_name}")
        if node.relative:
            if top == PREPARE_MODULE or any(a.evaluated_name == PREPARE_MODULE for a in names):
                self.flag("prepare-names", "relative import of prepare; use 'from prepare import ...'")
            else:
                self.flag("import-not-allowed", f"relative import 'from {'.' * len(node.relative)}{module}': "
                          "train.py is a single file")
            return
        if top == PREPARE_MODULE:
            if star:
                self.flag("prepare-names", "'from prepare import *' hides which names are used")
            for a in names:
                name, alias = a.evaluated_name, a.evaluated_alias
                if module != PREPARE_MODULE or name not in self.protected:
                    self.flag("prepare-names", f"'{name}' is not one of the names train.py may take from prepare "
                              f"({', '.join(sorted(self.protected))})")
                elif alias and alias != name:
                    self.flag("prepare-names", f"'from prepare import {name} as {alias}': aliasing prepare's "
                              "names hides their use")
            return
        why = module_problem(top, self.baseline)
        if why is None:
            why = next((r.why for r in (reference_problem(module, self.baseline),) if r), None)
        if why:
            self.flag("import-not-allowed", f"from {module} import ...: {why}")
            return
        if star:
            self.flag("import-not-allowed", f"'from {module} import *' hides which names are bound (and what "
                      "they are); import the names you use")
        for a in names:
            name = a.evaluated_name
            bound = a.evaluated_alias or name
            if bound in self.protected:
                self.flag("prepare-rebind", f"'from {module} import {name}' shadows prepare's {bound}")
            refusal = reference_problem(f"{module}.{name}", self.baseline)
            if refusal is not None:
                self.flag("import-not-allowed", f"from {module} import {name}: {refusal.why}")
            elif _is_dunder(name):
                self.flag("dunder-access", f"from {module} import {name}: dunder names reach the interpreter")

    # ------------------------------------------------------------------ bindings and assignment targets
    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._mark(target.target, "store")
            self._bind_target(target.target, node.value)
            self._class_dunder_target(target.target)
            self._field(target.target, node.value)
        if isinstance(node.value, cst.Lambda) and len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
            self.lambda_names[id(node.value)] = node.targets[0].target.value

    def _field(self, target: cst.BaseExpression, value: cst.BaseExpression | None) -> None:
        """Record `obj.attr = value` under `attr` (values of tuple targets are unknown)."""
        for node, _ in _target_names(target):
            if isinstance(node, cst.Attribute):
                known = value if node is target else None
                self.flow.fields.setdefault(node.attr.value, []).append((known, self.scope))
            elif isinstance(node, cst.Subscript):
                self.containers.append(self.site(node.value))

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._mark(node.target, "store")
        if node.value is not None:
            self._bind_target(node.target, node.value)
            self._class_dunder_target(node.target)
            self._field(node.target, node.value)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._mark(node.target, "store")
        if isinstance(node.target, cst.Name):
            self.bind(node.target, "aug", node.value, type(node.operator).__name__)
        else:
            self._field(node.target, None)

    def visit_While(self, node: cst.While) -> None:
        self.loops += 1
        self._value_ok(node.test)

    def visit_For(self, node: cst.For) -> None:
        self.loops += 1
        self._mark(node.target, "store")
        self._bind_iteration(node.target, node.iter)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._mark(node.target, "store")
        if isinstance(node.target, cst.Name):
            self.bind(node.target, "value", node.value)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self._mark(node.asname.name, "store")
            if isinstance(node.asname.name, cst.Name):
                self.bind(node.asname.name, "with", node.item)
            else:
                self._bind_target(node.asname.name, None)

    def visit_Del(self, node: cst.Del) -> None:
        self._mark(node.target, "del")
        for name, _ in _target_names(node.target):
            if isinstance(name, cst.Name):
                self.bind(name, "del", None)

    def visit_Global(self, node: cst.Global) -> None:
        for item in node.names:
            self.not_refs.add(id(item.name))
            self.scope.globals.add(item.name.value)
            self._protect(item.name, "global")

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        for item in node.names:
            self.not_refs.add(id(item.name))
            self.scope.nonlocals.add(item.name.value)
            self._protect(item.name, "nonlocal")

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
        if node.name is not None and isinstance(node.name.name, cst.Name):
            self.stores[id(node.name.name)] = "store"
            self._protect(node.name.name, "except ... as")
            self.bind(node.name.name, "unknown", None)

    def visit_ExceptStarHandler(self, node: cst.ExceptStarHandler) -> None:
        self.visit_ExceptHandler(node)

    def visit_Match(self, node: cst.Match) -> bool:
        self.walk(node.subject)
        self.match_subjects.append(node.subject)
        for case in node.cases:
            self.walk(case)
        self.match_subjects.pop()
        return False

    def _capture(self, name: cst.Name | None) -> None:
        """A capture holds the subject or a part of it: bound to the subject (parts of a prepare
        object are prepare's, parts of a literal are unknown)."""
        if name is not None:
            self.stores[id(name)] = "store"
            self._protect(name, "case pattern")
            subject = self.match_subjects[-1] if self.match_subjects else None
            self.bind(name, "value" if subject is not None else "unknown", subject)

    def visit_MatchAs(self, node: cst.MatchAs) -> None:
        self._capture(node.name)

    def visit_MatchStar(self, node: cst.MatchStar) -> None:
        self._capture(node.name)

    def visit_MatchMapping(self, node: cst.MatchMapping) -> None:
        self._capture(node.rest)

    def visit_MatchKeywordElement(self, node: cst.MatchKeywordElement) -> None:
        self.not_refs.add(id(node.key))   # an attribute name of the matched class

    def _class_dunder_target(self, target: cst.BaseExpression) -> None:
        if self.scope.kind == "class" and isinstance(target, cst.Name) and target.value in TORCH_OVERRIDE_DUNDERS:
            self.flag("torch-override", f"a class defining {target.value} intercepts torch functions on its "
                      "objects (inside prepare's evaluation too)")

    # ------------------------------------------------------------------ scopes: definitions
    def _params(self, parameters: cst.Parameters) -> tuple[list[cst.Param], list[cst.Param], list[cst.Param]]:
        positional = [*parameters.posonly_params, *parameters.params]
        star = [p for p in (parameters.star_arg, parameters.star_kwarg) if isinstance(p, cst.Param)]
        return positional, list(parameters.kwonly_params), star

    def _function(self, node: cst.FunctionDef | cst.Lambda, method: bool) -> Function:
        """Visit a def/lambda header in the enclosing scope; bind its parameters in a new scope."""
        positional, keyword_only, star = self._params(node.params)
        function = Function(node, None, self.scope, positional, keyword_only, method)
        scope = self.flow.new_scope(node, "function", self.scope)
        scope.function = function
        function.scope = scope
        for param in (*positional, *keyword_only, *star):
            self.names[param.name.value] += 1
            self.not_refs.add(id(param.name))
            self._protect(param.name, "parameter")
            if param.annotation is not None:
                self.walk(param.annotation)
            if param.default is not None:
                self.walk(param.default)
            self.flow.bind(scope, param.name.value, Binding("param", param, scope, function))
        return function

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.names[node.name.value] += 1
        self._protect(node.name, "def")
        self.bind(node.name, "def", node)
        if self.scope.kind == "class" and node.name.value in TORCH_OVERRIDE_DUNDERS:
            self.flag("torch-override", f"a class defining {node.name.value} intercepts torch functions on its "
                      "objects (inside prepare's evaluation too)")
        for decorator in node.decorators:
            self.walk(decorator)
        decorators = {dotted_name(d.decorator) for d in node.decorators}
        method = self.scope.kind == "class" and "staticmethod" not in decorators
        function = self._function(node, method)
        if self.scope.kind == "class":
            function.owner = self.scope.node.name.value
        if node.returns is not None:
            self.walk(node.returns)
        self.flow.add_function(function)
        self.definitions.setdefault(node.name.value, []).append(node)
        outer_scope, outer_def = self.scope, self.def_scope
        self.scope, self.def_scope = function.scope, node
        self.refs[node] = set()
        self.walk(node.body)
        self.scope, self.def_scope = outer_scope, outer_def
        function.returns_none = function.returns_none or not _ends_in_return(node.body)
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        function = self._function(node, False)
        # a lambda's callers: calls of the name it is assigned to, or calls of the lambda itself
        function.alias = self.lambda_names.get(id(node), f"<lambda {id(node)}>")
        self.flow.add_function(function)
        outer = self.scope
        self.scope = function.scope
        self.walk(node.body)
        self.scope = outer
        return False

    def visit_Return(self, node: cst.Return) -> None:
        scope = self.scope
        while scope is not None and scope.kind != "function":
            scope = scope.parent
        if scope is not None and scope.function is not None:
            if node.value is None:
                scope.function.returns_none = True
            else:
                scope.function.returns.append(node.value)

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self.names[node.name.value] += 1
        self._protect(node.name, "class")
        self.bind(node.name, "class", node)
        for part in (*node.decorators, *node.bases, *node.keywords):
            self.walk(part)
        self.classes.append(self.site(node))
        body = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
        self.methods[node] = [m for m in body if isinstance(m, cst.FunctionDef)]
        self.definitions.setdefault(node.name.value, []).append(node)
        outer_scope, outer_def = self.scope, self.def_scope
        self.scope, self.def_scope = self.flow.new_scope(node, "class", self.scope), node
        self.refs[node] = set()
        self.walk(node.body)
        self.scope, self.def_scope = outer_scope, outer_def
        return False

    # ------------------------------------------------------------------ scopes: comprehensions
    def _comprehension(self, node, parts) -> bool:
        for_in: cst.CompFor = node.for_in
        self.walk(for_in.iter)                        # the first iterable runs in the enclosing scope
        outer = self.scope
        self.scope = self.flow.new_scope(node, "comprehension", outer)
        self.loops += 1
        self._mark(for_in.target, "store")
        self._bind_iteration(for_in.target, for_in.iter)
        self.walk(for_in.target)
        for condition in for_in.ifs:
            self.walk(condition)
        if for_in.inner_for_in is not None:
            self.walk(for_in.inner_for_in)
        for part in parts:
            self.walk(part)
        self.loops -= 1
        self.scope = outer
        return False

    def visit_ListComp(self, node: cst.ListComp) -> bool:
        return self._comprehension(node, [node.elt])

    def visit_SetComp(self, node: cst.SetComp) -> bool:
        return self._comprehension(node, [node.elt])

    def visit_GeneratorExp(self, node: cst.GeneratorExp) -> bool:
        return self._comprehension(node, [node.elt])

    def visit_DictComp(self, node: cst.DictComp) -> bool:
        return self._comprehension(node, [node.key, node.value])

    def visit_CompFor(self, node: cst.CompFor) -> None:   # an inner `for` of a comprehension
        self._mark(node.target, "store")
        self._bind_iteration(node.target, node.iter)

    # ------------------------------------------------------------------ contexts set for children
    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None:
            self.not_refs.add(id(node.keyword))    # a parameter name, not a reference
            name = node.keyword.value
            if _is_dunder(name) and name in TORCH_OVERRIDE_DUNDERS:
                self.flag("torch-override", f"keyword {name}= names torch's override hook (dict()/type() turn "
                          "keywords into attributes)")
            elif _is_dunder(name) and name not in DUNDER_STRINGS_ALLOWED:
                self.flag("dunder-access", f"keyword {name}= names a dunder attribute (dict()/type() turn "
                          "keywords into attributes)")

    def _value_ok(self, *nodes) -> None:
        for node in nodes:
            if node is not None:
                self.value_ok.add(id(node))

    def visit_Comparison(self, node: cst.Comparison) -> None:
        self._value_ok(node.left, *(c.comparator for c in node.comparisons))

    def visit_If(self, node: cst.If) -> None:
        self._value_ok(node.test)

    def visit_IfExp(self, node: cst.IfExp) -> None:
        self._value_ok(node.test)

    def visit_BooleanOperation(self, node: cst.BooleanOperation) -> None:
        if id(node) in self.value_ok:    # `if triton and x:` tests truth; `(1 and os).system` is a value
            self._value_ok(node.left, node.right)

    def visit_UnaryOperation(self, node: cst.UnaryOperation) -> None:
        if isinstance(node.operator, cst.Not):
            self._value_ok(node.expression)

    def visit_Assert(self, node: cst.Assert) -> None:
        self._value_ok(node.test)

    def visit_Expr(self, node: cst.Expr) -> None:
        if isinstance(node.value, (cst.SimpleString, cst.ConcatenatedString)) and literal(node.value) is not None:
            self.docstrings.add(id(node.value))   # a bare string statement (docstring): inert

    # ------------------------------------------------------------------ names
    def visit_Name(self, node: cst.Name) -> None:
        key = id(node)
        if key in self.not_refs:
            return
        name = node.value
        how = self.stores.get(key)
        if how is not None:
            if name in self.protected:
                verb = "deletes" if how == "del" else "rebinds"
                self.flag("prepare-rebind", f"{verb} prepare's {name}; it must keep prepare's value")
            return
        self.refs[self.def_scope].add(name)   # called, or passed as a callback that may be called
        if key not in self.called:
            self.flow.name_uses.setdefault(name, []).append((node, self.scope))   # perhaps a function as a value
        if name in DUNDER_NAMES_REFUSED:
            self.flag("dynamic-access", f"'{name}' reaches the interpreter's internals")
        elif name in PREPARE_FUNCTIONS:
            if key not in self.called:
                self.flag("prepare-names", f"{name} may only be called directly, not passed around or aliased")
        elif name in DYNAMIC_BUILTINS or name in DIRECT_ONLY_BUILTINS:
            how = "call" if key in self.called else "ok" if key in self.value_ok else "value"
            self.builtin_uses.append(self.site(node, how))
        if key in self.inner or name not in self.aliases:
            return
        self.chains.append(self.site(node, self._context(key)))

    def _context(self, key: int) -> str:
        how = self.stores.get(key)
        if how is not None:
            return how
        return "call" if key in self.called else "ok" if key in self.value_ok else "value"

    # ------------------------------------------------------------------ attributes
    def visit_Attribute(self, node: cst.Attribute) -> None:
        attr = node.attr.value
        self.not_refs.add(id(node.attr))
        if id(node) not in self.called:
            self.flow.attribute_uses.add(attr)  # `obj.method` taken as a value (or a plain attribute)
        how = self.stores.get(id(node))
        if attr == "__dict__" and how is None:
            self.instance_dicts.append(self.site(node))     # fine on its own objects: judged later
        elif _is_dunder(attr):
            self._dunder_attribute(node, attr, how)
        elif attr in FRAME_ATTRS:
            self.flag("dynamic-access", f"'.{attr}' reaches frames or code objects (the interpreter's internals)")
        elif attr in ("ctypes", "_ctypes"):
            self.flag("dynamic-access", f"'.{attr}' leads to the ctypes module (native calls, raw memory)")
        elif attr == "py_impl":
            self.flag("torch-override", "'.py_impl' registers a Python kernel for a torch operator")
        elif attr in OPERATOR_OVERRIDE_ATTRS:
            self.operator_registrations.append(self.site(node))   # fine on its own custom ops
        if id(node) in self.inner:
            return
        current = node.value
        while isinstance(current, cst.Attribute):       # judge the chain once, as a whole
            self.inner.add(id(current))
            current = current.value
        if isinstance(current, cst.Name):
            self.inner.add(id(current))
            if current.value in self.aliases:
                self.chains.append(self.site(node, self._context(id(node))))
                return
        if attr in MUTATING_METHODS and id(node) in self.called:
            self.calls_on_containers(node)
        if attr in WRITE_METHODS and id(node) not in self.called:
            self.method_values.append(self.site(node))

    def calls_on_containers(self, node: cst.Attribute) -> None:
        """`x.update(...)` where x is not import-rooted: judged later (x may be prepare's object)."""
        self.mutations.append(self.site(node, "method"))

    def _dunder_attribute(self, node: cst.Attribute, attr: str, how: str | None) -> None:
        if attr in TORCH_OVERRIDE_DUNDERS:
            self.flag("torch-override", f"'.{attr}' intercepts torch functions (inside prepare's evaluation too)")
        elif attr not in DUNDER_ATTRS_ALLOWED:
            self.flag("dunder-access", f"'.{attr}' reaches the interpreter's internals (allowed dunders: "
                      f"{', '.join(sorted(DUNDER_ATTRS_ALLOWED - {'__class__'})[:6])}, ...)")
        elif how is not None and attr != "__init__":
            self.flag("dunder-access", f"assigning '.{attr}' changes what an object is")

    def visit_Subscript(self, node: cst.Subscript) -> None:
        self.value_ok.add(id(node.value))
        root = _root(node.value)
        if isinstance(root, cst.Name) and root.value in self.aliases:
            self.subscripts.append(self.site(node, self.stores.get(id(node), "read")))
        if self.stores.get(id(node)) is not None and isinstance(node.value, cst.Name) \
                and node.value.value in self.protected:
            self.flag("prepare-rebind", f"item assignment on prepare's {node.value.value}")

    # ------------------------------------------------------------------ calls
    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        self.called.add(id(func))
        if isinstance(func, cst.Lambda):
            self.flow.add_call(f"<lambda {id(func)}>", node, self.scope)
        if isinstance(func, cst.Attribute):
            self.refs[self.def_scope].add(func.attr.value)
            self.flow.add_call(func.attr.value, node, self.scope)
            if func.attr.value in MUTATING_METHODS:
                receiver = func.value
                if isinstance(receiver, cst.Name) and receiver.value in ("list", "dict", "set", "bytearray") \
                        and node.args:
                    receiver = node.args[0].value          # list.append(lst, x)
                self.containers.append(self.site(receiver))
        elif isinstance(func, cst.Name):
            self.flow.add_call(func.value, node, self.scope)
            if func.value == "evaluate_bpb":
                self.evaluating.add(self.def_scope)
                self.evaluate_calls.append((self.statement, self.loops > 0))
            if func.value in ("getattr", "hasattr", "setattr", "delattr", "vars", "dir") and node.args:
                self._value_ok(node.args[0].value)
            elif func.value in ("isinstance", "issubclass", "callable", "id", "print", "repr", "type"):
                self._value_ok(*(a.value for a in node.args))
        self.calls.append(self.site(node))

    # ------------------------------------------------------------------ strings
    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        self._string(as_text(literal(node)), node)

    def visit_ConcatenatedString(self, node: cst.ConcatenatedString) -> bool:
        value = as_text(literal(node))   # None when an f-string is part of it: then visit the parts
        if value is None:
            return True
        self._string(value, node)
        return False

    def visit_FormattedString(self, node: cst.FormattedString) -> None:
        pending = list(node.parts)
        while pending:
            part = pending.pop()
            if isinstance(part, cst.FormattedStringText):
                self._string(fstring_text(part, node.start), node)
            elif part.format_spec:
                pending.extend(part.format_spec)

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if isinstance(node.operator, cst.Add):       # "AUTO" + "RESEARCH" is one string
            self._string(constant_string(node), node)

    def _string(self, text: str | None, node: cst.CSTNode) -> None:
        if text is None or id(node) in self.docstrings:
            return
        marker = next((m for m in DATA_MARKERS if m in text), None)
        if marker is None and ("/" in text or text in DATA_PATH_COMPONENTS):
            marker = next((p for p in text.split("/") if p in DATA_PATH_COMPONENTS), None)
        if marker is not None:
            self.flag("val-split", f"string {text[:60]!r} names prepare's data or settings ({marker!r})")
        stripped = text.strip()
        if _is_dunder(stripped) and stripped.isidentifier():
            if stripped in TORCH_OVERRIDE_DUNDERS:
                self.flag("torch-override", f"string {stripped!r} names torch's override hook (getattr/setattr/"
                          "type() turn strings into attributes)")
            elif stripped not in DUNDER_STRINGS_ALLOWED:
                self.flag("dunder-access", f"string {stripped!r} names a dunder attribute (getattr/setattr/type() "
                          "turn strings into attributes)")

    # ------------------------------------------------------------------ annotations
    def visit_Annotation(self, node: cst.Annotation) -> None:
        """A quoted annotation is code that typing tools evaluate (typing.get_type_hints,
        functools.singledispatch.register): it may only be a type expression."""
        pending = [node.annotation]
        while pending:
            current = pending.pop()
            text = as_text(literal(current))
            if text is not None:
                problem = _annotation_problem(text)
                if problem:
                    self.flag("dynamic-access", f"the quoted annotation {text[:50]!r} {problem}")
            elif isinstance(current, cst.Subscript):
                pending.append(current.value)
                pending.extend(e.slice.value for e in current.slice if isinstance(e.slice, cst.Index))
            elif isinstance(current, cst.BinaryOperation):
                pending.extend((current.left, current.right))
            elif isinstance(current, (cst.Tuple, cst.List)):
                pending.extend(e.value for e in current.elements)


_TYPE_NODES = (ast.Expression, ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.List, ast.Constant, ast.Load,
               ast.BinOp, ast.BitOr)


def _annotation_problem(text: str) -> str | None:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return "does not parse as a type"
    for node in ast.walk(tree):
        if not isinstance(node, _TYPE_NODES):
            return f"contains {type(node).__name__}, not just a type: typing tools evaluate it"
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name is not None and (name.startswith("_")):
            return f"names {name!r}: typing tools evaluate it"
    return None


def _root(node: cst.CSTNode) -> cst.Name:
    while isinstance(node, cst.Attribute):
        node = node.value
    return node


def _ends_in_return(body) -> bool:
    """Does a function body end with `return x` or `raise` (so it never falls off the end)?"""
    statements = body.body if isinstance(body, cst.IndentedBlock) else ()
    if not statements:
        return False
    last = statements[-1]
    if isinstance(last, cst.SimpleStatementLine):
        return isinstance(last.body[-1], (cst.Return, cst.Raise))
    return False
