"""Call rules of the judgement for the environment, loading and processes (mixed into
sandbox/check_judge.py's Judge: `self.flag`, `self.site`, `self.values`, `self.flow`, `self.dotted`).
"""
from __future__ import annotations

import libcst as cst

from sandbox.check_policy import WORKER_KEYWORDS, env_key_problem
from sandbox.check_rules import Site
from sandbox.check_values import STAR, argument, constant_string, positional


class CallRules:
    def _torch_load(self, call: cst.Call) -> None:
        weights_only = argument(call, None, "weights_only")
        if len(positional(call)) > 2 or argument(call, None, "pickle_module") is not None \
                or any(a.star for a in call.args):
            self.flag("unsafe-deserialisation", "torch.load() with a pickle module or hidden arguments unpickles "
                      "arbitrary objects")
        elif not (isinstance(weights_only, cst.Name) and weights_only.value == "True"):
            self.flag("unsafe-deserialisation", "torch.load() without weights_only=True can unpickle arbitrary "
                      "objects (the default depends on the torch version and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD); "
                      "pass weights_only=True")

    def _numpy_load(self, call: cst.Call) -> None:
        allow = argument(call, 2, "allow_pickle")
        if allow is STAR or (allow is not None and not (isinstance(allow, cst.Name) and allow.value == "False")):
            self.flag("unsafe-deserialisation", "numpy.load() with allow_pickle unpickles arbitrary objects; "
                      "leave allow_pickle out (False)")

    def _dataloader(self, call: cst.Call) -> None:
        keywords = {a.keyword.value for a in call.args if a.keyword is not None}
        if keywords & WORKER_KEYWORDS or len(positional(call)) > 5 or any(a.star == "**" for a in call.args):
            self.flag("process-network", "DataLoader workers are separate processes; leave num_workers out "
                      "(0, the default, loads in this process)")

    def _timeit(self, name: str, call: cst.Call) -> None:
        for index, keyword in ((0, "stmt"), (1, "setup")):
            given = argument(call, index, keyword)
            if given is STAR or isinstance(given, cst.FormattedString) or \
                    (given is not None and self.values.strings(given, self.site.scope) is not None):
                self.flag("dynamic-access", f"{name}() compiles and runs the string it is given; time a "
                          "function instead (or use timeit.default_timer)")
                return

    def _env_read(self, name: str, call: cst.Call) -> None:
        key = argument(call, 0, "key")
        if key is STAR or key is None or self.values.strings(key, self.site.scope) is None:
            self.flag("environment", f"{name}() with a computed key; read the variables you need with literal names")

    def _env_write(self, name: str, call: cst.Call) -> None:
        keys: set[str] | None
        if name == "os.environ.update":
            keys = set()
            for a in call.args:
                if a.keyword is not None:
                    keys.add(a.keyword.value)
                else:
                    found = self._dict_keys(a.value) if not a.star else None
                    if found is None:
                        keys = None
                        break
                    keys |= found
        else:
            key = argument(call, 0, "key")
            keys = None if key in (None, STAR) else self.values.strings(key, self.site.scope)
        if keys is None:
            self.flag("environment", f"{name}() with computed keys; change only variables you name literally")
            return
        for key in sorted(keys):
            problem = env_key_problem(key)
            if problem:
                self.flag("environment", f"{name}() changes {problem}")

    def _dict_keys(self, node: cst.CSTNode) -> set[str] | None:
        """The literal keys of a dict literal (through names bound to one), None if unknown."""
        nodes = [node] if not isinstance(node, cst.Name) else \
            [leaf.node for leaf in self.flow.origins(node, self.site.scope) or [None] if leaf is not None
             and leaf.kind == "expr"] or [None]
        keys: set[str] = set()
        for candidate in nodes:
            if not isinstance(candidate, cst.Dict) or id(candidate) in self.flow.mutated or not all(
                    isinstance(e, cst.DictElement) and constant_string(e.key) is not None for e in candidate.elements):
                return None
            keys |= {constant_string(e.key) for e in candidate.elements}
        return keys

    def _subscript(self, site: Site) -> None:
        node: cst.Subscript = site.node
        if self.dotted(node.value, site.scope) not in ("os.environ", "os.environb"):
            return
        key = node.slice[0].slice if len(node.slice) == 1 else None
        keys = self.values.strings(key.value, site.scope) if isinstance(key, cst.Index) else None
        if keys is None:
            self.flag("environment", "os.environ with a computed key; use literal variable names")
            return
        if site.how in ("store", "del"):
            for k in sorted(keys):
                problem = env_key_problem(k)
                if problem:
                    verb = "deleting" if site.how == "del" else "setting"
                    self.flag("environment", f"{verb} os.environ[{k!r}] changes {problem}")

