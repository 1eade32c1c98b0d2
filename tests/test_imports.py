"""pyoco_jax imports point one way: no cycle among its modules, counting imports inside functions too.

A lazy import that dodges a cycle still couples the two modules both ways; this reads every module's
source with `ast` (nothing is imported), so such cycles fail here as well. Edges go to the module
named (`from pkg import mod` names `pkg.mod` when that is a module, else `pkg`); the implicit import
of a parent package's `__init__` is not an edge, so a package re-exporting its own modules is fine.
"""

import ast
from pathlib import Path

REPO = Path(__file__).parents[1]
ROOT = "pyoco_jax"
# Source folders and the package each installs as (setup.py maps configs/ to pyoco_jax.configs).
SOURCES = {REPO / "pyoco_jax": ROOT, REPO / "configs": f"{ROOT}.configs"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__.py)."""
    modules = {}
    for folder, package in SOURCES.items():
        for file in folder.rglob("*.py"):
            parts = file.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            modules[".".join((package, *parts))] = file
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is one of our modules (`import a.b.c` runs a.b.c)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> set[str | None]:
    """The modules one import statement runs: `from a import b` names a.b if that is a module, else a."""
    if isinstance(node, ast.Import):
        return {_resolve(alias.name, modules) for alias in node.names}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:  # Relative: up from this module's package.
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    names = (f"{base}.{alias.name}" for alias in node.names)
    return {name if name in modules else _resolve(base, modules) for name in names}


def import_graph() -> dict[str, set[str]]:
    """Module -> the pyoco_jax modules it imports anywhere in its source (top level or inside functions)."""
    modules = _modules()
    graph = {}
    for module, file in modules.items():
        tree = ast.parse(file.read_text(), filename=str(file))
        targets = set().union(*(_targets(n, module, file.name == "__init__.py", modules) for n in ast.walk(tree)))
        graph[module] = {t for t in targets if t and t != module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) through each strongly connected group of modules (Tarjan's algorithm)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, staying inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def test_the_graph_sees_top_level_relative_and_function_level_imports():
    graph = import_graph()
    assert "pyoco_jax.convert.diffusers" in graph["pyoco_jax.convert.pipeline"]  # top level
    assert "pyoco_jax.sample.run_sampler" in graph["pyoco_jax.cli.sample"]  # inside main()
    assert "pyoco_jax.diffusion.ddpm" in graph["pyoco_jax.diffusion"]  # a package's __init__
    assert "pyoco_jax.configs.sd15_latent" in graph["pyoco_jax.configs.tiny_latent"]  # configs/ as installed


def test_find_cycles_reports_the_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(find_cycles(graph)) == [["a", "b", "c", "a"], ["d", "e", "d"]]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles among pyoco_jax modules:\n" + "\n".join(" -> ".join(c) for c in cycles)
