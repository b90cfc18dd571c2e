"""Where a value comes from: scopes, bindings and a small, bounded value-origin analysis.

Several rules need to know what a name can hold, not just how it is spelled: is `ckpt_dir` a path
inside the candidate's folder, is `step` a number, is `cls` a class torch exported, is `tok`
prepare's tokenizer, is `name` one of a few literal strings. The checker's visitor records every
binding (assignments, parameters, loop targets, imports, definitions, ...) per Python scope while
it walks the tree; after the walk, `Flow.origins` follows a name back to the expressions it can
be bound to: through assignments, a function's parameters to the arguments at its call sites,
loop targets to the elements of literal sequences, calls of the candidate's own functions to
their return values. Anything it cannot follow is UNKNOWN (None), and the rules treat UNKNOWN as
"could be anything". The analysis is bounded (depth and size) so a pathological file costs a few
milliseconds more, never a hang.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

MAX_DEPTH = 12        # names followed through at most this many bindings
MAX_LEAVES = 64       # origins collected per question


@dataclass(eq=False)
class Function:
    node: cst.FunctionDef | cst.Lambda
    scope: "Scope"                        # the function's own scope
    outer: "Scope"                        # where it is defined (defaults are evaluated there)
    positional: list[cst.Param]           # positional parameters in order
    keyword_only: list[cst.Param]
    method: bool                          # a plain method: attribute calls pass the instance first
    owner: str | None = None              # the class a method is defined in
    returns: list[cst.BaseExpression] = field(default_factory=list)
    returns_none: bool = False            # falls off the end or has a bare `return`
    alias: str | None = None              # a lambda's name: the variable it is assigned to, or its own key

    @property
    def name(self) -> str | None:
        return self.node.name.value if isinstance(self.node, cst.FunctionDef) else self.alias


@dataclass(eq=False)
class Scope:
    node: cst.CSTNode
    kind: str                             # "module" | "function" | "class" | "comprehension"
    parent: "Scope | None"
    function: Function | None = None
    bindings: dict[str, list["Binding"]] = field(default_factory=dict)
    globals: set[str] = field(default_factory=set)
    nonlocals: set[str] = field(default_factory=set)

    def module(self) -> "Scope":
        scope = self
        while scope.parent is not None:
            scope = scope.parent
        return scope


@dataclass(frozen=True, eq=False)
class Binding:
    kind: str          # value | aug | param | iter | unpack | with | import | def | class | unknown | del
    node: cst.CSTNode | None       # the bound expression (value, iterable, with item), def/class, param
    scope: Scope                   # where `node` is evaluated
    extra: object = None           # param: Function; iter: index path; aug: operator; import: dotted
    unconditional: bool = False    # a top-level module statement outside if/try/loops


@dataclass(frozen=True, eq=False)
class Leaf:
    """One expression a value can come from, with the scope it is evaluated in."""
    node: cst.CSTNode
    scope: Scope
    kind: str = "expr"             # expr | free | import | def | class | aug | numeric
    extra: object = None


class Flow:
    def __init__(self, module: cst.Module):
        self.module_scope = Scope(module, "module", None)
        self.calls: dict[str, list[tuple[cst.Call, Scope]]] = {}      # by the callee's simple name
        # Uses of a function other than calling it (its callers are then unknown): Names, resolved
        # per scope when asked; attribute names (`self.save` as a callback) for methods.
        self.name_uses: dict[str, list[tuple[cst.Name, "Scope"]]] = {}
        self.attribute_uses: set[str] = set()
        self.functions: dict[str, list[Function]] = {}
        self.scope_of: dict[int, Scope] = {}  # id(def/lambda/class node) -> its scope
        # Calls whose callee is known not to be the candidate's code (`torch.save(...)` is no call
        # of a method named save); set by the judge, which resolves imports per scope.
        self.foreign = lambda call, scope: False
        # Attribute stores by attribute name (`self.out = Path(...)`), whatever the object: fields are
        # followed by name, so a value stored in any object's `out` is a possible value of every `.out`.
        self.fields: dict[str, list[tuple[cst.CSTNode | None, "Scope"]]] = {}
        # ids of list/dict/set literals that are changed in place later (append, item assignment):
        # their elements are no longer what the literal says.
        self.mutated: set[int] = set()
        self._escapes: dict[int, bool] = {}
        self._sites: dict[str, list] = {}

    # ------------------------------------------------------------------ recording (during the visit)
    def new_scope(self, node: cst.CSTNode, kind: str, parent: Scope) -> Scope:
        scope = Scope(node, kind, parent)
        self.scope_of[id(node)] = scope
        return scope

    def bind(self, scope: Scope, name: str, binding: Binding) -> None:
        target = scope
        if name in scope.globals:
            target = scope.module()
        elif name in scope.nonlocals:
            target = self._enclosing_function(scope) or scope
        elif scope.kind == "comprehension" and binding.kind == "value":   # walrus binds outside
            while target.kind == "comprehension" and target.parent is not None:
                target = target.parent
        target.bindings.setdefault(name, []).append(binding)

    @staticmethod
    def _enclosing_function(scope: Scope) -> Scope | None:
        current = scope.parent
        while current is not None and current.kind != "function":
            current = current.parent
        return current

    def add_function(self, function: Function) -> None:
        if function.name is not None:
            self.functions.setdefault(function.name, []).append(function)

    def add_call(self, name: str, call: cst.Call, scope: Scope) -> None:
        self.calls.setdefault(name, []).append((call, scope))

    # ------------------------------------------------------------------ questions (after the visit)
    def lookup(self, scope: Scope, name: str) -> tuple[Scope, list[Binding]] | None:
        """The scope whose binding of `name` a use in `scope` sees (Python's rules: class bodies are
        invisible to nested functions; `global`/`nonlocal` redirect), and its bindings."""
        current, first = scope, True
        while current is not None:
            if name in current.globals:
                current = current.module()
            if current.kind != "class" or first:
                found = current.bindings.get(name)
                if found:
                    return current, found
            current, first = current.parent, False
        return None

    def origins(self, node: cst.CSTNode, scope: Scope) -> list[Leaf] | None:
        """The expressions `node` can evaluate to (None: unknown)."""
        return _Tracer(self).trace(node, scope)

    def escapes(self, function: Function) -> bool:
        """Is `function` used other than by calling it (passed, stored, returned)?"""
        cached = self._escapes.get(id(function))
        if cached is None:
            cached = self._escapes[id(function)] = self._find_escape(function)
        return cached

    def _find_escape(self, function: Function) -> bool:
        name = function.name
        if function.method and name in self.attribute_uses:
            return True
        for node, scope in self.name_uses.get(name, ()):
            found = self.lookup(scope, name)
            if found is not None and any(b.node is function.node for b in found[1]):
                return True
        return False

    def call_sites(self, name: str) -> list[tuple[cst.Call, "Scope"]]:
        """Calls that may be of the candidate's function `name` (calls of imports excluded)."""
        cached = self._sites.get(name)
        if cached is None:
            cached = self._sites[name] = [(c, s) for c, s in self.calls.get(name, ()) if not self.foreign(c, s)]
        return cached

    def returned(self, call: cst.Call, scope: Scope) -> list[Leaf] | None:
        """What a call of one of the candidate's own functions can return (None: unknown)."""
        return _Tracer(self).returned(call, scope)


class _Tracer:
    """One bounded origin question (its own budget and cycle guard)."""

    def __init__(self, flow: Flow):
        self.flow = flow
        self.leaves = 0
        self.active: set[tuple[int, str]] = set()

    def trace(self, node: cst.CSTNode, scope: Scope, depth: int = 0) -> list[Leaf] | None:
        if depth > MAX_DEPTH or self.leaves > MAX_LEAVES:
            return None
        if isinstance(node, cst.Name):
            return self._name(node, scope, depth)
        if isinstance(node, cst.NamedExpr):
            return self.trace(node.value, scope, depth + 1)
        self.leaves += 1
        return [Leaf(node, scope)]

    def _name(self, node: cst.Name, scope: Scope, depth: int) -> list[Leaf] | None:
        found = self.flow.lookup(scope, node.value)
        if found is None:
            self.leaves += 1
            return [Leaf(node, scope, "free")]
        owner, bindings = found
        key = (id(owner), node.value)
        if key in self.active:
            return None   # a name defined through itself (x = x + 1): follow no further
        self.active.add(key)
        try:
            out: list[Leaf] = []
            for binding in bindings:
                leaves = self._binding(binding, node, depth + 1)
                if leaves is None:
                    return None
                out += leaves
            return out
        finally:
            self.active.discard(key)

    def _binding(self, b: Binding, name: cst.Name, depth: int) -> list[Leaf] | None:
        if b.kind in ("value", "with"):
            return self.trace(b.node, b.scope, depth)
        if b.kind == "param":
            return self._parameter(b, depth)
        if b.kind == "iter":
            return self._iterated(b.node, b.scope, b.extra, depth)
        if b.kind in ("import", "def", "class", "aug", "unpack"):
            self.leaves += 1
            return [Leaf(b.node if b.node is not None else name, b.scope, b.kind, b.extra)]
        if b.kind == "del":
            return []
        return None

    # ------------------------------------------------------------------ parameters
    def _parameter(self, b: Binding, depth: int) -> list[Leaf] | None:
        function: Function = b.extra
        param: cst.Param = b.node
        if param.star in ("*", "**") or function.name is None or self.flow.escapes(function):
            return None
        out: list[Leaf] = []
        if param.default is not None:
            leaves = self.trace(param.default, function.outer, depth)
            if leaves is None:
                return None
            out += leaves
        if function.name == "__init__" and function.owner:   # Class(...) calls __init__ with the instance first
            sites = [(c, s) for c, s in self.flow.call_sites(function.owner) if isinstance(c.func, cst.Name)]
            implicit_instance = True
        elif function.name.startswith("__"):
            return None       # other dunder methods are called by the interpreter, from anywhere
        else:
            sites = self.flow.call_sites(function.name)
            implicit_instance = False
        if not sites and param.default is None:
            return None
        name = param.name.value
        for call, call_scope in sites:
            argument = _argument_for(function, param, name, call, implicit_instance)
            if argument is _STARRED:
                return None
            if argument is not None:
                leaves = self.trace(argument, call_scope, depth)
                if leaves is None:
                    return None
                out += leaves
        return out

    # ------------------------------------------------------------------ loop targets
    def _iterated(self, iterable: cst.CSTNode, scope: Scope, path: tuple[int, ...], depth: int) -> list[Leaf] | None:
        """Values a loop target at index `path` inside the iterated items can take."""
        if depth > MAX_DEPTH:
            return None
        if id(iterable) in self.flow.mutated:
            return None
        if isinstance(iterable, (cst.List, cst.Tuple, cst.Set)):
            if any(isinstance(e, cst.StarredElement) for e in iterable.elements):
                return None
            return self._elements([e.value for e in iterable.elements], scope, path, depth)
        if isinstance(iterable, cst.Dict):
            keys = [e.key for e in iterable.elements if isinstance(e, cst.DictElement)]
            return self._elements(keys if len(keys) == len(iterable.elements) else None, scope, path, depth)
        if isinstance(iterable, cst.Call):
            func = iterable.func
            args = [a for a in iterable.args]
            if any(a.star for a in args):
                return None
            if isinstance(func, cst.Name) and func.value == "range" and not path:
                self.leaves += 1
                return [Leaf(iterable, scope, "numeric")]
            if isinstance(func, cst.Name) and func.value == "enumerate" and path and args:
                if path[0] == 0:
                    self.leaves += 1
                    return [Leaf(iterable, scope, "numeric")]
                return self._iterated(args[0].value, scope, path[1:], depth + 1) if path[0] == 1 else None
            if isinstance(func, cst.Name) and func.value in ("zip", "reversed", "sorted", "list", "tuple", "iter",
                                                             "set") and args:
                if func.value != "zip":
                    return self._iterated(args[0].value, scope, path, depth + 1)
                if path and path[0] < len(args):
                    return self._iterated(args[path[0]].value, scope, path[1:], depth + 1)
                return None
            if isinstance(func, cst.Attribute) and func.attr.value in ("items", "keys", "values") and not args:
                return self._dict_view(func.value, scope, func.attr.value, path, depth)
            if isinstance(func, cst.Attribute) and func.attr.value in _NAMED_ITERATORS and path[:1] == (0,):
                # the names torch's named_children()/named_modules()/... yield: attribute names the
                # module registered (never an existing dunder: add_module refuses those)
                self.leaves += 1
                return [Leaf(iterable, scope, "attrname")]
            return None
        if isinstance(iterable, cst.Name):
            leaves = self.trace(iterable, scope, depth + 1)
            if leaves is None:
                return None
            out: list[Leaf] = []
            for leaf in leaves:
                if leaf.kind != "expr":
                    return None
                sub = self._iterated(leaf.node, leaf.scope, path, depth + 1)
                if sub is None:
                    return None
                out += sub
            return out
        return None

    def _elements(self, elements, scope: Scope, path: tuple[int, ...], depth: int) -> list[Leaf] | None:
        if elements is None:
            return None
        out: list[Leaf] = []
        for element in elements:
            if path:
                if not isinstance(element, (cst.Tuple, cst.List)) or len(element.elements) <= path[0] \
                        or any(isinstance(e, cst.StarredElement) for e in element.elements):
                    return None
                leaves = self._elements([element.elements[path[0]].value], scope, path[1:], depth)
            else:
                leaves = self.trace(element, scope, depth + 1)
            if leaves is None:
                return None
            out += leaves
        return out

    def _dict_view(self, node: cst.CSTNode, scope: Scope, view: str, path: tuple[int, ...], depth: int):
        leaves = self.trace(node, scope, depth + 1)
        if leaves is None:
            return None
        out: list[Leaf] = []
        for leaf in leaves:
            if leaf.kind != "expr" or not isinstance(leaf.node, cst.Dict) or id(leaf.node) in self.flow.mutated \
                    or not all(isinstance(e, cst.DictElement) for e in leaf.node.elements):
                return None
            keys = [e.key for e in leaf.node.elements]
            values = [e.value for e in leaf.node.elements]
            if view == "items":
                if not path or path[0] not in (0, 1):
                    return None
                chosen, rest = (keys if path[0] == 0 else values), path[1:]
            else:
                chosen, rest = (keys if view == "keys" else values), path
            sub = self._elements(chosen, leaf.scope, rest, depth + 1)
            if sub is None:
                return None
            out += sub
        return out

    # ------------------------------------------------------------------ return values
    def returned(self, call: cst.Call, scope: Scope, depth: int = 0) -> list[Leaf] | None:
        func = call.func
        name = func.value if isinstance(func, cst.Name) else func.attr.value if isinstance(func, cst.Attribute) else None
        functions = self.flow.functions.get(name) if name else None
        if not functions:
            return None
        if isinstance(func, cst.Name):
            found = self.flow.lookup(scope, name)
            if found is None or any(b.kind not in ("def", "value") for b in found[1]):
                return None
        out: list[Leaf] = []
        for function in functions:
            if function.returns_none:
                return None   # `None` is not a path, a number or a class: nothing to conclude from
            for value in function.returns:
                leaves = self.trace(value, function.scope, depth + 1)
                if leaves is None:
                    return None
                out += leaves
        return out


_STARRED = object()
_NAMED_ITERATORS = frozenset({"named_children", "named_modules", "named_parameters", "named_buffers"})


def _argument_for(function: Function, param: cst.Param, name: str, call: cst.Call, implicit_instance: bool = False):
    """The argument expression `call` passes for `param` (None: not passed; _STARRED: hidden)."""
    positional = [a for a in call.args if a.keyword is None and not a.star]
    if any(a.star for a in call.args):
        return _STARRED
    for a in call.args:
        if a.keyword is not None and a.keyword.value == name:
            return a.value
    if param in function.positional:
        index = function.positional.index(param)
        if function.method and (implicit_instance or isinstance(call.func, cst.Attribute)):
            index -= 1
        if 0 <= index < len(positional):
            return positional[index].value
    return None
