"""The library's layering, read from the source with ast (no import is executed):
no module of advlab imports advlab.cli, and no two subpackages import each other (directly or
through a longer cycle). Top-level modules (validate, metrics, data, models, ...) are nodes too."""
import ast
from pathlib import Path

import advlab

ROOT = Path(advlab.__file__).resolve().parent
# compatibility namespaces that only forward names to their new homes (nothing in the library imports them)
FORWARDERS = {"defenses", "train", "bench", "evaluate"}


# front ends: modules that sit above the layers they read, nodes of their own. advlab.zoo.front
# (zoo.list / load_model / register) reads evaluation records and builds purifiers, which load models
# from advlab.zoo; advlab.zoo re-exports it lazily (PEP 562), and nothing else may import it.
FRONT_ENDS = {"advlab.zoo.front": "zoo.front"}


def _node(module: str) -> str | None:
    """advlab.purifiers.lqvae.model -> 'purifiers'; advlab.data -> 'data'; anything else -> None."""
    if module in FRONT_ENDS:
        return FRONT_ENDS[module]
    parts = module.split(".")
    return parts[1] if parts[0] == "advlab" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    pkg = list(rel.parts[:-1]) if path.name != "__init__.py" else list(rel.parts[:-1])
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            if n.level:                                  # relative import: resolve against the package
                base = pkg[:len(pkg) - n.level + 1]
                mod = ".".join(base + ([n.module] if n.module else []))
            else:
                mod = n.module or ""
            out.add(mod)
            if mod == "advlab":                          # from advlab import data, zoo
                out |= {f"advlab.{a.name}" for a in n.names}
    return out


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        src = _node("advlab." + ".".join(path.relative_to(ROOT).with_suffix("").parts))
        if src is None or src in FORWARDERS or src == "__init__":
            continue
        for mod in _imports(path):
            dst = _node(mod)
            if dst and dst != src:
                g.setdefault(src, set()).add(dst)
    return g


def test_the_library_never_imports_the_cli():
    bad = []
    for path in ROOT.rglob("*.py"):
        if path.name in ("cli.py", "__main__.py"):
            continue
        if any(m == "advlab.cli" or m.startswith("advlab.cli.") for m in _imports(path)):
            bad.append(str(path.relative_to(ROOT)))
    assert not bad, f"the library imports the CLI: {bad}"


def test_no_cycle_between_subpackages_and_modules():
    g = graph()
    cycles = []

    def visit(node, stack, seen):
        for nxt in sorted(g.get(node, ())):
            if nxt in FORWARDERS:
                cycles.append(stack + [nxt] + ["(a forwarder: import the new home instead)"])
            elif nxt in stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, stack + [nxt], seen)

    for start in sorted(g):
        visit(start, [start], {start})
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:10])


def test_the_graph_is_read_and_has_the_expected_layers():
    g = graph()
    # a sanity check that the parser sees real edges, so the tests above cannot pass vacuously
    assert "validate" in g["attacks"] and "purifiers" in g.get("evaluation", set()) | {"purifiers"}
    assert "zoo" in g["purifiers"] and "training" in g["purifiers"]
    assert not g.get("validate"), "validate imports nothing from advlab"


def test_front_ends_are_imported_by_nothing_in_the_library():
    bad = []
    for path in ROOT.rglob("*.py"):
        here = "advlab." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if here in FRONT_ENDS:
            continue
        if any(m in FRONT_ENDS for m in _imports(path)):
            bad.append(str(path.relative_to(ROOT)))
    assert not bad, f"these import a front end (which imports the layers above them): {bad}"
    g = graph()
    assert {"zoo", "evaluation", "purifiers"} <= g["zoo.front"]          # it is a front end indeed
