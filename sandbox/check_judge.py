"""The judgement after the walk: what needs the whole file to decide.

Which `open` is the builtin and which a parameter named `open`; where each write lands (a
helper's path parameter is judged by its call sites); whether `cls.forward = f` patches the
candidate's own class or one torch exported; whether `setattr(obj, name, v)` can set a dunder;
which keys the environment is read and written with. sandbox/check_rules.py records the sites,
this module turns them into findings.
"""
from __future__ import annotations

import libcst as cst

from sandbox.check_calls import CallRules
from sandbox.check_files import FileRules
from sandbox.check_paths import PathReader
from sandbox.check_policy import (ALWAYS_WRITES, DATALOADERS, DIRECT_ONLY_BUILTINS, DUNDER_ATTRS_ALLOWED,
                                  DYNAMIC_BUILTINS, ENV_READS, ENV_WHOLE, ENV_WRITES, FD_READERS, FD_WRITERS,
                                  KERNEL_REPOSITORIES, LISTERS, MUTATING_METHODS, OPENERS, PATH_CLASSES, PATH_WRITERS,
                                  PREPARE_FUNCTIONS, PREPARE_MODULE, SAFE_LOADERS, TEMPFILES, TORCH_LIBRARY_CALLS,
                                  TORCH_NAMESPACES, TORCH_OVERRIDE_DUNDERS, TRAINING_PACKAGES, VAL_SPLITS,
                                  WRITE_METHODS, reference_problem, switch_allowed)
from sandbox.check_rules import Finding, Site, Walker
from sandbox.check_values import STAR, Values, argument, constant_string, positional

_CLASS_OF = "<the class of an object>"
_TENSOR_CLASSES = frozenset({"torch.Tensor", "torch.nn.Parameter", "torch.nn.parameter.Parameter", "torch.nn.Buffer",
                             "torch.nn.parameter.Buffer", "torch.TensorBase", "torch.masked.MaskedTensor"})
_METACLASSES = frozenset({"abc.ABCMeta", "enum.EnumMeta", "enum.EnumType"})


def value_problem(dotted: str) -> tuple[str, str] | None:
    """(rule, why) when the import-rooted callable `dotted` must be called directly, not passed on
    (an alias or a callback would hide its arguments from the checker)."""
    if dotted in ("torch.load", "torch.serialization.load", "numpy.load", "yaml.load", "yaml.load_all"):
        return "unsafe-deserialisation", "call it directly so the checker sees how it loads"
    if dotted in OPENERS or dotted in PATH_WRITERS or dotted in TEMPFILES or dotted in ALWAYS_WRITES \
            or dotted in FD_WRITERS or dotted == "os.open":
        return "file-write", "call it directly so the checker sees where it writes"
    if dotted in ("timeit.timeit", "timeit.repeat", "timeit.Timer", "operator.attrgetter", "operator.methodcaller"):
        return "dynamic-access", "call it directly so the checker sees what it runs"
    if dotted in ENV_WRITES or dotted in ENV_READS or dotted in ENV_WHOLE or dotted in (
            "os.environ.update", "os.environ.__setitem__"):
        return "environment", "call it directly so the checker sees which variables it reads or changes"
    if dotted in DATALOADERS:
        return "process-network", "call it directly so the checker sees whether it starts worker processes"
    return None


def _root_name(node: cst.CSTNode) -> cst.Name | None:
    while isinstance(node, (cst.Attribute, cst.Subscript, cst.Call)):
        node = node.func if isinstance(node, cst.Call) else node.value
    return node if isinstance(node, cst.Name) else None


def _chain_has_class_of(node: cst.CSTNode) -> bool:
    """Does an attribute chain go through `type(x)` or `x.__class__` (a class of unknown origin)?"""
    while isinstance(node, (cst.Attribute, cst.Subscript, cst.Call)):
        if isinstance(node, cst.Attribute) and node.attr.value == "__class__":
            return True
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value == "type" \
                and len(node.args) == 1:
            return True
        node = node.func if isinstance(node, cst.Call) else node.value
    return False


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


class Judge(FileRules, CallRules):
    """Turns the walk's sites into findings. The name questions (is this the builtin, an import,
    prepare's object, a class of torch's?) live here; the rules for files and for the environment,
    loading and processes are mixed in from sandbox/check_files.py and sandbox/check_calls.py."""

    def __init__(self, walker: Walker):
        self.w = walker
        self.flow = walker.flow
        self.values = Values(walker.flow, self.dotted)
        self.paths = PathReader(walker.flow, self.values, self.dotted)
        self.found: list[Finding] = []
        self.site: Site | None = None
        walker.flow.foreign = lambda call, scope: self.dotted(call.func, scope) is not None

    def run(self) -> list[Finding]:
        self._mark_mutated_containers()
        for site in self.w.method_values:
            self.site = site
            self._method_value(site.node.attr.value, site.node.value)
        for site in self.w.instance_dicts:
            self.site = site
            self._instance_dict(site.node)
        for site in self.w.operator_registrations:
            self.site = site
            rooted = self.rooted(site.node.value, site.scope)
            if rooted is not None:
                self.flag("torch-override", f"'.{site.node.attr.value}' on {rooted} registers a kernel for a torch "
                          "operator")
        for site in self.w.builtin_uses:
            self.site = site
            self._builtin_use(site)
        for site in self.w.calls:
            self.site = site
            self._call(site.node)
        for site in self.w.mutations:
            self.site = site
            self._mutation(site)
        for site in self.w.chains:
            self.site = site
            self._chain(site)
        for site in self.w.classes:
            self.site = site
            self._class(site.node)
        for site in self.w.subscripts:
            self.site = site
            self._subscript(site)
        return self.found

    def _mark_mutated_containers(self) -> None:
        """Literals changed in place (`lst.append(x)`, `d[k] = v`, through any name or parameter
        bound to them) no longer tell what they hold."""
        for site in self.w.containers:
            root = site.node
            while isinstance(root, (cst.Attribute, cst.Subscript)):
                root = root.value
            stack = [leaf.node for leaf in (self.flow.origins(root, site.scope) or ()) if leaf.kind == "expr"] \
                if isinstance(root, cst.Name) else [root]
            while stack:
                node = stack.pop()
                if isinstance(node, (cst.List, cst.Tuple, cst.Set, cst.Dict)) and id(node) not in self.flow.mutated:
                    self.flow.mutated.add(id(node))
                    stack.extend(e.value for e in node.elements if not isinstance(e, cst.StarredDictElement))

    def _instance_dict(self, node: cst.Attribute) -> None:
        """`x.__dict__`: an instance's own attributes are the candidate's business; a module's,
        a class's or prepare's object's namespace is not."""
        receiver = node.value
        if self.prepare_object(receiver, self.site.scope):
            self.flag("prepare-rebind", f"{self.code(node)} exposes prepare's object for changing")
        elif not self.instance(receiver, self.site.scope):
            self.flag("dunder-access", f"'{self.code(node)}': the namespace of a module, class or unknown object "
                      "(only an instance's own __dict__ is fine)")

    def instance(self, node: cst.CSTNode, scope, depth: int = 0) -> bool:
        """Is `node` provably an instance (not a class or module): `self` in a method, or what a
        class (not a function of unknown result) returns when called?"""
        if depth > 6 or self.rooted(node, scope) is not None:
            return False
        if isinstance(node, cst.Call):
            func = node.func
            if isinstance(func, cst.Name) and func.value in ("type", "getattr", "vars", "super"):
                return False
            if self.dotted(func, scope) is not None:
                return True                                # a library's constructor or factory
            leaves = (self.flow.origins(func, scope) or []) if isinstance(func, cst.Name) else []
            if leaves and all(leaf.kind == "class" for leaf in leaves):
                return True
            if isinstance(func, cst.Attribute) and func.attr.value not in self.flow.functions \
                    and self.instance(func.value, scope, depth + 1):
                return True                                # model.to(device), model.get_submodule(name)
            returned = self.flow.returned(node, scope)
            return bool(returned) and all(leaf.kind == "expr" and self.instance(leaf.node, leaf.scope, depth + 1)
                                          for leaf in returned)
        if not isinstance(node, cst.Name):
            return False
        found = self.flow.lookup(scope, node.value)
        if found is not None and all(b.kind == "param" for b in found[1]):
            function = found[1][0].extra
            decorators = {d.decorator.value for d in getattr(function.node, "decorators", ())
                          if isinstance(d.decorator, cst.Name)}
            return bool(function.method and function.positional and function.positional[0] is found[1][0].node
                        and function.name not in ("__new__", "__init_subclass__", "__class_getitem__")
                        and "classmethod" not in decorators)
        leaves = self.flow.origins(node, scope)
        return bool(leaves) and all(leaf.kind == "expr" and self.instance(leaf.node, leaf.scope, depth + 1)
                                    for leaf in leaves)

    def flag(self, rule: str, message: str) -> None:
        self.found.append(Finding(rule, message, self.site.statement))

    def code(self, node: cst.CSTNode) -> str:
        return self.w.code(node)

    # ------------------------------------------------------------------ names
    def is_builtin(self, name: str, site: Site) -> bool:
        """Does `name` at `site` refer to the builtin? A local binding (a parameter named compile)
        shadows it; a module-level one only when it is unconditional and comes first."""
        found = self.flow.lookup(site.scope, name)
        if found is None:
            return True
        owner, bindings = found
        if owner.kind != "module":
            return False
        if any(b.kind == "del" for b in bindings):
            return True
        in_function = self._in_function(site.scope)
        return not any(b.unconditional >= 0 and (in_function or b.unconditional < site.top) for b in bindings)

    @staticmethod
    def _in_function(scope) -> bool:
        while scope is not None:
            if scope.kind == "function":
                return True
            scope = scope.parent
        return False

    def _builtin_use(self, site: Site) -> None:
        name = site.node.value
        if not self.is_builtin(name, site):
            return
        if name in DYNAMIC_BUILTINS:
            self.flag("dynamic-access", f"'{name}' runs code or exposes namespaces dynamically")
        elif site.how == "value" and name in DIRECT_ONLY_BUILTINS:
            rule = "file-write" if name == "open" else "dynamic-access"
            self.flag(rule, f"the builtin '{name}' passed around as a value: call it directly so the checker "
                      "sees what it is applied to")

    def callee(self, func: cst.CSTNode, site: Site) -> str | None:
        """The dotted name a call's function stands for ('open' for the builtin), or None for the
        candidate's own functions and anything unknown."""
        if isinstance(func, cst.Attribute) and func.attr.value == "__call__":
            return self.callee(func.value, site)          # f.__call__(...) is f(...)
        if isinstance(func, cst.Name):
            alias = self.alias(func.value, site.scope)
            if alias is not None:
                return alias
            return func.value if self.is_builtin(func.value, site) else None
        return self.dotted(func, site.scope)

    def alias(self, name: str, scope) -> str | None:
        """The dotted name an import bound `name` to, as seen from `scope` (None: not an import there)."""
        if name not in self.w.aliases:
            return None
        found = self.flow.lookup(scope, name)
        if found is None:
            return None
        imports = [b.extra for b in found[1] if b.kind == "import"]
        return imports[-1] if imports else None

    def dotted(self, node: cst.CSTNode, scope) -> str | None:
        """`np.save` -> 'numpy.save' through the imports in scope; None unless rooted at an import."""
        if isinstance(node, cst.Name):
            return self.alias(node.value, scope)
        if isinstance(node, cst.Attribute):
            base = self.dotted(node.value, scope)
            return f"{base}.{node.attr.value}" if base else None
        return None

    def rooted(self, node: cst.CSTNode, scope, depth: int = 0) -> str | None:
        """The import-rooted name a value stands for (a module, class or function from an import,
        directly or through names bound to it), _CLASS_OF for `type(x)`; None otherwise."""
        dotted = self.dotted(node, scope)
        if dotted is not None:
            return dotted
        if _chain_has_class_of(node):
            return _CLASS_OF
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value == "getattr" \
                and len(node.args) >= 2 and depth < 4:
            base = self.rooted(node.args[0].value, scope, depth + 1)
            names = self.values.strings(node.args[1].value, scope)
            if base is not None:
                return f"{base}.{sorted(names)[0]}" if names else base
        if isinstance(node, cst.Attribute) and depth < 4:
            base = self.rooted(node.value, scope, depth + 1)
            if base:
                return f"{base}.{node.attr.value}"
            for value, owner in self.flow.fields.get(node.attr.value, ()):   # h.T = torch.Tensor
                found = self.rooted(value, owner, depth + 1) if value is not None else None
                if found is not None:
                    return found
            return None
        if isinstance(node, cst.Call) and depth < 4:
            for leaf in self.flow.returned(node, scope) or ():
                found = self.rooted(leaf.node, leaf.scope, depth + 1) if leaf.kind == "expr" else None
                if found is not None:
                    return found
            return None
        if not isinstance(node, cst.Name) or depth >= 4:
            return None
        leaves = self.flow.origins(node, scope) or []
        for leaf in leaves:
            if leaf.kind == "import":
                return leaf.extra
            if leaf.kind == "expr" and not isinstance(leaf.node, cst.Name):
                found = self.rooted(leaf.node, leaf.scope, depth + 1)
                if found is not None:
                    return found
        return None

    def prepare_object(self, node: cst.CSTNode, scope, depth: int = 0) -> bool:
        """Is this prepare's name, an object prepare made (tokenizer, clock, loader) or part of one,
        directly or through names, containers, attributes, getattr and calls?"""
        if depth > 6:
            return False
        if isinstance(node, cst.Name):
            if (self.alias(node.value, scope) or "").startswith(PREPARE_MODULE + "."):
                return True
            return any(self._prepare_leaf(leaf, depth) for leaf in self.flow.origins(node, scope) or ())
        if isinstance(node, cst.Attribute):
            if self.prepare_object(node.value, scope, depth + 1):
                return True
            return any(value is not None and self.prepare_object(value, owner, depth + 1)   # h.tok = tokenizer
                       for value, owner in self.flow.fields.get(node.attr.value, ()))
        if isinstance(node, cst.Subscript):
            return self.prepare_object(node.value, scope, depth + 1)
        if isinstance(node, cst.Call):
            if isinstance(node.func, cst.Name) and node.func.value == "getattr" and node.args:
                return self.prepare_object(node.args[0].value, scope, depth + 1)
            if self.prepare_object(node.func, scope, depth + 1):
                return True
            return any(self._prepare_leaf(leaf, depth + 1) for leaf in self.flow.returned(node, scope) or ())
        if isinstance(node, (cst.List, cst.Tuple, cst.Set)):
            return any(self.prepare_object(e.value, scope, depth + 1) for e in node.elements)
        if isinstance(node, cst.Dict):
            return any(isinstance(e, cst.DictElement) and self.prepare_object(e.value, scope, depth + 1)
                       for e in node.elements)
        return False

    def _prepare_leaf(self, leaf, depth: int) -> bool:
        if leaf.kind == "import":
            return str(leaf.extra).startswith(PREPARE_MODULE + ".")
        if leaf.kind == "expr" and not isinstance(leaf.node, cst.Name):
            return self.prepare_object(leaf.node, leaf.scope, depth + 1)
        return False

    # ------------------------------------------------------------------ calls
    def _call(self, call: cst.Call) -> None:
        site = self.site
        name = self.callee(call.func, site)
        if name is None:
            if isinstance(call.func, cst.Attribute):
                self._method(call)
            return
        if name in ("getattr", "hasattr", "setattr", "delattr"):
            self._attribute_call(name, call)
        elif name == "vars":
            self._vars(call)
        elif name == "type" and len(call.args) == 3:
            self._namespace(call, call.args[2].value, "type()")
            self._bases(call.args[0].value, call.args[1].value, self.site.scope, "type()")
        elif name == "dataclasses.make_dataclass":
            namespace = argument(call, None, "namespace")
            if namespace is not None:
                self._namespace(call, namespace, "make_dataclass()")
        elif name == "prepare.make_dataloader":
            self._split(call)
        elif name in TORCH_LIBRARY_CALLS:
            self._torch_library(name, call)
        if name in OPENERS:
            self._opener(name, call)
        elif name == "os.open":
            flags = argument(call, 1, "flags")
            path = argument(call, 0, "path")
            if path is not None and (flags is STAR or flags is None
                                     or self.dotted(flags, self.site.scope) != "os.O_RDONLY"):
                self._write_at(path, "os.open() with write flags")
            elif path not in (None, STAR):
                self._read_at(path, "os.open()")
        elif name.startswith(PATH_CLASSES) and name.rsplit(".", 1)[0] in PATH_CLASSES:
            self._path_method(name.rsplit(".", 1)[1], argument(call, 0, "self"), call, offset=1)
        elif name == "kernels.get_kernel":
            repo = argument(call, 0, "repo_id")
            repos = self.values.strings(repo, self.site.scope) if repo not in (None, STAR) else None
            allowed = KERNEL_REPOSITORIES | self.w.baseline.strings
            if repos is None or not repos <= allowed:
                self.flag("process-network", "kernels.get_kernel() downloads and loads native code from the hub: "
                          f"only the baseline's repositories ({', '.join(sorted(KERNEL_REPOSITORIES))})")
        if name in PATH_WRITERS:
            self._writer(name, call)
        if name in TEMPFILES:
            self._tempfile(name, call)
        if name == "logging.basicConfig":
            filename = argument(call, None, "filename")
            if filename is not None:
                self._write_at(filename, "logging.basicConfig(filename=...)")
        if name in ALWAYS_WRITES:
            self.flag("file-write", f"{name}() writes archive members wherever their names point")
        if name in LISTERS:
            self._listing(name, call, LISTERS[name])
        if name in FD_WRITERS or name in FD_READERS:
            self._descriptor(name, call)
        if name in ("torch.load", "torch.serialization.load"):
            self._torch_load(call)
        elif name in ("numpy.load", "numpy.lib.npyio.load"):
            self._numpy_load(call)
        elif name in ("yaml.load", "yaml.load_all"):
            loader = argument(call, 1, "Loader")
            if loader is STAR or loader is None or self.dotted(loader, self.site.scope) not in SAFE_LOADERS:
                self.flag("unsafe-deserialisation", f"{name}() without Loader=yaml.SafeLoader constructs arbitrary "
                          "objects; use yaml.safe_load")
        elif name in DATALOADERS:
            self._dataloader(call)
        elif name in ("timeit.timeit", "timeit.repeat", "timeit.Timer"):
            self._timeit(name, call)
        elif name in ("operator.attrgetter", "operator.methodcaller"):
            self._attrgetter(name, call)
        elif name in ENV_READS:
            self._env_read(name, call)
        elif name in ENV_WRITES or name == "os.environ.update":
            self._env_write(name, call)
        elif name in ENV_WHOLE:
            self.flag("environment", f"{name}() reads or changes the whole environment; use literal keys")

    # ------------------------------------------------------------------ dynamic code
    def _attrgetter(self, name: str, call: cst.Call) -> None:
        arguments = positional(call)[:1] if name.endswith("methodcaller") else positional(call)
        for arg in arguments:
            names = None if arg.star else self.values.strings(arg.value, self.site.scope)
            if names is None:
                self.flag("dynamic-access", f"{name}() with a computed attribute name")
                return
            for text in names:
                for part in text.split("."):
                    self._attribute_name(part, name + "()")
                    if part in WRITE_METHODS:
                        self.flag("file-write", f"{name}() of .{part}: call it directly so the checker sees where "
                                  "it writes")

    def _attribute_name(self, name: str, what: str) -> None:
        if _is_dunder(name) and name in TORCH_OVERRIDE_DUNDERS:
            self.flag("torch-override", f"{what} names {name}")
        elif _is_dunder(name) and name not in DUNDER_ATTRS_ALLOWED:
            self.flag("dunder-access", f"{what} names the dunder attribute {name}")

    def _namespace(self, call: cst.Call, namespace: cst.CSTNode, what: str) -> None:
        if not isinstance(namespace, cst.Dict) or not all(
                isinstance(e, cst.DictElement) and constant_string(e.key) is not None for e in namespace.elements):
            self.flag("dynamic-access", f"{what} builds a class from a namespace the checker cannot read; "
                      "write a class statement")

    def _torch_library(self, name: str, call: cst.Call) -> None:
        """A custom operator in the candidate's own namespace is research; anything registered for
        torch's namespaces (aten, prims, ...) replaces code prepare's evaluation runs."""
        first = argument(call, 0, "qualname" if not name.endswith("Library") else "ns")
        names = self.values.strings(first, self.site.scope) if first not in (None, STAR) else None
        if names is None:
            self.flag("torch-override", f"{name}() with a computed operator name: only operators of a namespace of "
                      "your own can be checked")
            return
        for text in names:
            namespace = text.split("::", 1)[0]
            if namespace.startswith(TORCH_NAMESPACES) or not namespace:
                self.flag("torch-override", f"{name}({text!r}) registers for torch's own namespace '{namespace}': "
                          "it replaces what prepare's evaluation runs; use a namespace of your own")
                return

    def _split(self, call: cst.Call) -> None:
        split = argument(call, 3, "split")
        if split is STAR:
            self.flag("val-split", "make_dataloader called with *args/**kwargs: its split must be visible")
            return
        splits = self.values.strings(split, self.site.scope) if split is not None else {"train"}
        if splits != {"train"}:
            shown = sorted(splits & VAL_SPLITS)[0] if splits and splits & VAL_SPLITS else self.code(split)
            self.flag("val-split", f"make_dataloader(..., {shown}): training data must come from the split "
                      "\"train\"; only evaluate_bpb reads the validation split")

    # ------------------------------------------------------------------ reflection builtins
    def _attribute_call(self, fn: str, call: cst.Call) -> None:
        given = positional(call)
        if len(given) < 2:
            return
        target_arg, name_arg = given[0], given[1]
        if target_arg.star or name_arg.star:
            self.flag("dynamic-access", f"{fn}() with *args hides its object and attribute")
            return
        scope = self.site.scope
        target, attribute = target_arg.value, name_arg.value
        names = self.values.strings(attribute, scope)
        rooted = self.rooted(target, scope)
        prepared = self.prepare_object(target, scope)
        if fn in ("setattr", "delattr"):
            if names and any(_is_dunder(n) for n in names):
                self.flag("dunder-access", f"{fn}() of the dunder attribute {sorted(n for n in names if _is_dunder(n))[0]} "
                          "changes what an object is")
            if prepared:
                self.flag("prepare-rebind", f"{fn}({self.code(target)}, ...) changes prepare's object")
            elif rooted is not None:
                if not names or not all(switch_allowed(f"{rooted}.{n}") for n in names):
                    self.flag("monkeypatch", f"{fn}({self.code(target)}, ...) patches {rooted} (imported code "
                              "that prepare's evaluation may run too); call your own function instead")
            elif names is None and not self._public_name(attribute, scope) and not self.instance(target, scope):
                self.flag("dynamic-access", f"{fn}() with a computed attribute name on {self.code(target)}, which "
                          "may be a class (a dunder set there changes how torch treats its objects); give the name "
                          "a literal prefix (f'act_{{name}}') or use a dict")
            return
        if rooted is not None or prepared:
            if names is None:
                self.flag("dynamic-access", f"{fn}({self.code(target)}, {self.code(attribute)}): computed attribute "
                          "names on modules and prepare's objects hide what is used; use a literal name")
                return
            if isinstance(target, cst.Name) and target.value in PREPARE_FUNCTIONS:
                self.flag("dynamic-access", f"{fn}({target.value}, ...) reaches into prepare's function object")
            if rooted is not None and rooted != _CLASS_OF:
                for text in names:
                    dotted = f"{rooted}.{text}"
                    refusal = reference_problem(dotted, self.w.baseline)
                    if refusal is not None:
                        self.flag(refusal.rule, f"{fn}({self.code(target)}, {text!r}): {refusal.why}")
                    elif fn == "getattr" and value_problem(dotted):
                        rule, why = value_problem(dotted)
                        self.flag(rule, f"getattr({self.code(target)}, {text!r}) takes {dotted} as a value: {why}")
        elif fn == "getattr" and names is None and not self._public_name(attribute, scope):
            self.flag("dynamic-access", f"getattr() with a computed attribute name that could be a dunder "
                      "(__class__, __init__, ... lead to prepare's globals); give it a literal prefix "
                      "(f'mask_{{w}}') or use a dict")
        elif fn == "getattr" and names:
            for text in sorted(names & WRITE_METHODS):
                self._method_value(text, target)

    def _public_name(self, node: cst.CSTNode, scope) -> bool:
        """A computed attribute name that cannot be a dunder: a literal prefix other than '_', literal
        strings, or the names torch's named_children()/named_modules() loops yield (and pieces of them)."""
        if isinstance(node, cst.Name):
            leaves = self.flow.origins(node, scope)
            if leaves and all(self._attribute_name_leaf(leaf) for leaf in leaves):
                return True
        if isinstance(node, cst.FormattedString) and node.parts:
            first = node.parts[0]
            return isinstance(first, cst.FormattedStringText) and bool(first.value) and not first.value.startswith("_")
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add):
            head = self.values.strings(node.left, scope)
            return bool(head) and all(h and not h.startswith("_") for h in head)
        names = self.values.strings(node, scope)
        return bool(names) and all(not n.startswith("_") for n in names)

    def _attribute_name_leaf(self, leaf) -> bool:
        if leaf.kind == "attrname":
            return True
        if leaf.kind == "unpack":      # parent, child = full.rsplit(".", 1)
            return self._attribute_name_leaf(type(leaf)(leaf.node, leaf.scope))
        if leaf.kind != "expr":
            return False
        names = self.values.strings(leaf.node, leaf.scope)
        if names is not None:
            return all(not n.startswith("_") for n in names)
        # `parent, child = full.rsplit(".", 1)` with `full` from named_modules(): still a registered name
        node = leaf.node
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) \
                and node.func.attr.value in ("rsplit", "split", "partition", "rpartition") \
                and isinstance(node.func.value, cst.Name):
            return self._public_name(node.func.value, leaf.scope)
        if isinstance(node, cst.Subscript):
            return self._attribute_name_leaf(type(leaf)(node.value, leaf.scope))
        return False

    def _vars(self, call: cst.Call) -> None:
        given = positional(call)
        if not given:
            self.flag("dynamic-access", "vars() without an argument exposes the current namespace")
            return
        target = given[0].value
        if self.prepare_object(target, self.site.scope):
            self.flag("prepare-rebind", f"vars({self.code(target)}) exposes prepare's object for changing")
        elif self.rooted(target, self.site.scope) is not None:
            self.flag("dynamic-access", f"vars({self.code(target)}) exposes a module's or an imported class's "
                      "namespace")

    # ------------------------------------------------------------------ references to imported names
    def _chain(self, site: Site) -> None:
        """A Name or attribute chain rooted at a name some import binds (`torch.hub.load`, `F`)."""
        node, how = site.node, site.how
        dotted = self.dotted(node, site.scope)
        if dotted is None:    # the name is a local variable here, not the import
            if isinstance(node, cst.Attribute) and how == "call" and node.attr.value in MUTATING_METHODS:
                self._mutation(Site(node, site.scope, site.statement, site.top, "method"))
            return
        if dotted in ("os.environ", "os.environb"):
            if how == "value":
                self.flag("environment", "os.environ used as a whole (enumerated, copied or passed on); read "
                          "the variables you need with literal keys")
            return
        if dotted.startswith(PREPARE_MODULE + "."):
            parts = dotted.split(".")
            if len(parts) > 2 and parts[1] in PREPARE_FUNCTIONS:
                self.flag("dynamic-access", f"{self.code(node)} reaches into prepare's function object")
            return
        refusal = reference_problem(dotted, self.w.baseline)
        if refusal is not None:
            self.flag(refusal.rule, f"{self.code(node)}: {refusal.why}")
            return
        if dotted.endswith(".__file__"):
            self.flag("dunder-access", f"{self.code(node)}: where an installed module lives (the Python "
                      "installation's source is the cpu presets' training and validation text)")
            return
        if isinstance(node, cst.Attribute) and how == "call" and node.attr.value in MUTATING_METHODS \
                and isinstance(node.value, cst.Attribute) and dotted.split(".")[0] not in TRAINING_PACKAGES \
                and self.dotted(node.value, site.scope) not in ("os.environ", "os.environb"):
            # warnings.filters.clear(), gc.callbacks.append(...): a standard-library module's
            # registry changed in place (torch's `add`/`update` are operators, not containers)
            self.flag("monkeypatch", f"{self.code(node)}(...) changes a module's state in place")
        if how != "value":
            return
        if dotted in self.w.modules:
            self.flag("dynamic-access", f"the module '{self.code(node)}' used as a value: its attributes escape "
                      "the checker's view; use them directly (getattr with a literal name is fine)")
            return
        problem = value_problem(dotted)
        if problem:
            self.flag(problem[0], f"'{self.code(node)}' passed around as a value: {problem[1]}")

    def _bases(self, name_node, bases_node, scope, what: str) -> None:
        """type(name, bases, ns): the bases are judged as a class statement's are."""
        if not isinstance(bases_node, (cst.Tuple, cst.List)) or \
                any(isinstance(e, cst.StarredElement) for e in bases_node.elements):
            self.flag("dynamic-access", f"{what} with computed base classes")
            return
        label = constant_string(name_node) or "<computed>"
        for element in bases_node.elements:
            self._base(label, element.value, scope)

    def _base(self, name: str, base: cst.CSTNode, scope) -> None:
        target = self.rooted(base, scope) or ""
        if target.startswith(PREPARE_MODULE + ".") or self.prepare_object(base, scope):
            self.flag("prepare-rebind", f"class {name}({self.code(base)}) subclasses prepare's object; a subclass "
                      "passed back to prepare changes what it computes")
        elif target in _TENSOR_CLASSES or (target.startswith("torch.") and
                                           target.rsplit(".", 1)[-1].endswith(("Tensor", "Parameter", "Buffer"))):
            self.flag("torch-override", f"class {name}({self.code(base)}): tensor subclasses change how torch (and "
                      "prepare's evaluation) computes on their values")
        elif target in _METACLASSES or (isinstance(base, cst.Name) and base.value == "type"
                                        and self.is_builtin("type", self.site)):
            self.flag("dynamic-access", f"class {name} is a metaclass: it builds classes from computed namespaces")

    def _class(self, node: cst.ClassDef) -> None:
        scope = self.site.scope
        for base in node.bases:
            if base.keyword is None and not base.star:
                self._base(node.name.value, base.value, scope)
        for keyword in node.keywords:
            if keyword.keyword is not None and keyword.keyword.value == "metaclass" \
                    and self.dotted(keyword.value, scope) != "abc.ABCMeta":
                self.flag("dynamic-access", f"class {node.name.value}(metaclass={self.code(keyword.value)}): a custom "
                          "metaclass builds the class from a computed namespace")

    # ------------------------------------------------------------------ assignments to attributes
    def _mutation(self, site: Site) -> None:
        target = site.node
        if site.how == "method":
            receiver = target.value
            if self.prepare_object(receiver, site.scope):
                self.flag("prepare-rebind", f"{self.code(target)}(...) changes prepare's object in place")
            return
        verb = "deleting" if site.how == "del" else "assigning"
        base = target.value
        if isinstance(target, cst.Subscript) and self.dotted(base, site.scope) in ("os.environ", "os.environb"):
            return
        dotted = self.dotted(target if isinstance(target, cst.Attribute) else base, site.scope)
        if dotted is not None:
            if dotted.startswith(PREPARE_MODULE + "."):
                self.flag("prepare-rebind", f"{verb} {self.code(target)} changes prepare's object")
            elif isinstance(target, cst.Attribute) and switch_allowed(dotted):
                return
            else:
                self.flag("monkeypatch", f"{verb} {dotted} patches imported code (prepare's evaluation may run it "
                          "too); call your own function from the model instead")
            return
        if _chain_has_class_of(base):
            self.flag("monkeypatch", f"{verb} {self.code(target)} patches a class reached through type()/__class__")
            return
        if isinstance(base, (cst.Call, cst.Attribute)) and not isinstance(_root_name(base), type(None)) \
                and self.alias(_root_name(base).value, site.scope) is None:
            rooted = self.rooted(base, site.scope)
            if rooted is not None:
                self.flag("monkeypatch", f"{verb} {self.code(target)} patches {rooted}; call your own function "
                          "from the model instead")
                return
        if self.prepare_object(base, site.scope):
            self.flag("prepare-rebind", f"{verb} {self.code(target)} changes prepare's object")
            return
        through = base
        while isinstance(through, (cst.Attribute, cst.Subscript)):
            through = through.value
        if isinstance(through, cst.Name) and self.alias(through.value, site.scope) is not None:
            # logging.root.handlers[0].baseFilename = ...: a module's object reached through an index
            self.flag("monkeypatch", f"{verb} {self.code(target)} patches an object that belongs to the "
                      f"imported {self.alias(through.value, site.scope)}")
            return
        root = _root_name(base)
        if root is not None and self.alias(root.value, site.scope) is None:
            rooted = self.rooted(root, site.scope)
            if rooted is not None:
                self.flag("monkeypatch", f"{verb} {self.code(target)} patches {rooted} (through the name "
                          f"{root.value!r}); call your own function from the model instead")
