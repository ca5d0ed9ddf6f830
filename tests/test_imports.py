"""The package's import graph has no circles: arrows point down only (issue 11, ARCHITECTURE).

Every import statement of every module is an edge, functions' local imports included (they run
too, only later); `if TYPE_CHECKING:` blocks are left out, since they never run. The harness's
flat imports (`from _ek_runtime import ...`: the bundle puts harness/ on sys.path) resolve to the
module beside them. Importing a package's submodule also runs the package's __init__, but that
edge is implied by Python, not chosen by the code, so it is not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import edgekit

ROOT = Path(edgekit.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    mods = {}
    for f in sorted(ROOT.rglob("*.py")):
        parts = ["edgekit", *f.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Import nodes anywhere in the tree, minus those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
                # harness modules import each other flat (harness/ is sys.path[0] on the device)
                targets = [f"edgekit.harness.{t}" if package == "edgekit.harness" and
                           f"edgekit.harness.{t}" in mods else t for t in targets]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                elif package == "edgekit.harness" and f"edgekit.harness.{node.module}" in mods:
                    mod = f"edgekit.harness.{node.module}"
                else:
                    mod = node.module or ""
                # `from pkg import sub` imports the submodule; `from mod import name` the module
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods]
                targets = subs if subs and len(subs) == len(node.names) else [mod, *subs]
            for t in targets:
                # `import edgekit.a.b` names the deepest module of ours it reaches
                while t and t not in mods and "." in t:
                    t = t.rpartition(".")[0]
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_the_walker_sees_local_and_relative_imports():
    g = import_graph()
    assert "edgekit.errors" in g["edgekit.cli"]                  # module level, relative
    assert "edgekit.targets" in g["edgekit.cli"]                 # inside a function
    assert "edgekit.harness._ek_runtime" in g["edgekit.harness._ek_rt_openvino"]  # flat harness import
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    found = circles(import_graph())
    assert not found, "import circles (each a set of modules that import each other): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_shared_names_live_below_their_users():
    """The homes issue 11 gave the names that were passed around in circles: __version__,
    Check (below gate, regression, policy and the renderers), the transport registry (above the
    transports, whose shared base imports none of them)."""
    g = import_graph()
    assert not {m for m in g["edgekit.checks"] if m != "edgekit.errors"}       # checks imports nothing above it
    for user in ("edgekit.regression", "edgekit.trust.policy", "edgekit.report.markdown",
                 "edgekit.report.junit", "edgekit.report.html"):
        assert "edgekit.checks" in g[user] and "edgekit.gate" not in g[user], (user, g[user])
    assert not g["edgekit.devices.base"] & {"edgekit.devices.local", "edgekit.devices.ssh",
                                            "edgekit.devices.qemu", "edgekit.devices.transports"}
    assert "edgekit._version" in g["edgekit.results"] and "edgekit" not in g["edgekit.results"]
    assert "edgekit" not in g["edgekit.convert"] and "edgekit" not in g["edgekit.lm.convert"]
    from edgekit.checks import Check, GateResult
    from edgekit.gate import Check as GateCheck, GateResult as GateGateResult
    assert Check is GateCheck and GateResult is GateGateResult                # still importable from gate
