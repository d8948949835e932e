#!/usr/bin/env python3
"""The layout's rules (README: Layout), checked on the sources and, given a build folder, on the
objects: dependencies go one way between areas, and no module depends on itself through others.

A module is a source file without its extension (src/ops/ops.c and src/ops/ops.h are module
ops/ops). It depends on another when it includes that module's header, or (objects) when its
object file uses a symbol the other defines: the second catches two files calling each other
through a header that belongs to neither.

Areas, and what each may depend on:
  base        common, rng: everything may use them
  ops         the ops and their kernels (src/ops/): base only
  core        the rest of src/: base, ops
  experiment  src/experiment/: base, ops, core
  bfs         src/bfs/: base, ops, core, experiment (its report uses the HTML machinery)
  interp      src/interp/: base, ops, core, experiment, bfs (its probes are validated on the BFS
              model, whose states bfs.h hands out; bfs never includes interp)
  main        src/main.c: anything
A private header (ops/backend.h, the ops' backend seam) is for its own area's files alone.
Usage: check_layers.py [--objects BUILD/obj]. Prints each violation and cycle; exits 1 if any.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")

BASE_MODULES = {"common", "rng"}
ALLOWED = {
    "base": {"base"},
    "ops": {"base", "ops"},
    "core": {"base", "ops", "core"},
    "experiment": {"base", "ops", "core", "experiment"},
    "bfs": {"base", "ops", "core", "experiment", "bfs"},
    "interp": {"base", "ops", "core", "experiment", "bfs", "interp"},
    "main": {"base", "ops", "core", "experiment", "bfs", "interp", "main"},
}
PRIVATE = {"ops/backend": "ops"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def area_of(module):
    if module == "main":
        return "main"
    if module in BASE_MODULES:
        return "base"
    if "/" in module:
        area = module.split("/", 1)[0]
        return area if area in ALLOWED else None
    return "core"


def source_files():
    for dirpath, _, names in os.walk(SRC):
        for name in sorted(names):
            if name.endswith((".c", ".h")):
                yield os.path.join(dirpath, name)


def module_of(path):
    return os.path.splitext(os.path.relpath(path, SRC))[0].replace(os.sep, "/")


def include_graph(problems):
    graph = {}
    for path in source_files():
        module = module_of(path)
        graph.setdefault(module, {})
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for name in INCLUDE.findall(text):
            # as the compiler looks: beside the including file, then in src/ (-Isrc)
            candidates = [os.path.join(os.path.dirname(path), name), os.path.join(SRC, name)]
            found = next((c for c in candidates if os.path.isfile(c)), None)
            if found is None:
                problems.append(f"{os.path.relpath(path, ROOT)}: includes \"{name}\", not a header of src/")
                continue
            target = module_of(found)
            if target in PRIVATE and area_of(module) != PRIVATE[target]:
                where = os.path.relpath(path, ROOT)
                problems.append(f"{where}: includes \"{name}\", private to src/{PRIVATE[target]}/")
            if target != module:
                graph[module].setdefault(target, f"{os.path.relpath(path, ROOT)} includes \"{name}\"")
    return graph


def symbol_graph(objects_dir):
    defined, used = {}, {}
    for dirpath, _, names in os.walk(objects_dir):
        for name in sorted(names):
            if not name.endswith(".o"):
                continue
            path = os.path.join(dirpath, name)
            module = os.path.splitext(os.path.relpath(path, objects_dir))[0].replace(os.sep, "/")
            if not os.path.isfile(os.path.join(SRC, module + ".c")):
                continue  # left over from an older layout
            out = subprocess.run(["nm", path], capture_output=True, text=True, check=True).stdout
            used[module] = set()
            for line in out.splitlines():
                fields = line.split()
                if len(fields) == 3 and fields[1] in "TDRBCVW":
                    defined[fields[2]] = module
                elif len(fields) == 2 and fields[0] == "U":
                    used[module].add(fields[1])
    graph = {}
    for module, symbols in used.items():
        graph[module] = {}
        for symbol in sorted(symbols):
            target = defined.get(symbol)
            if target and target != module:
                graph[module].setdefault(target, f"{module}.o uses {symbol}")
    return graph


def check_areas(graph, problems):
    for module, targets in sorted(graph.items()):
        area = area_of(module)
        if area is None:
            problems.append(f"src/{module}: not in any known area (add the folder to check_layers.py)")
            continue
        for target, why in sorted(targets.items()):
            target_area = area_of(target)
            if target_area not in ALLOWED[area]:
                problems.append(f"{area} may not depend on {target_area}: {why}")


def check_cycles(graph, problems, kind):
    # Tarjan's strongly connected components; a component of two or more modules is a cycle.
    index, low, stack, on_stack, counter = {}, {}, [], set(), [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                members = set(component)
                edges = [graph[a][b] for a in sorted(members) for b in sorted(graph.get(a, {})) if b in members]
                problems.append(f"{kind} cycle between {', '.join(sorted(members))}: " + "; ".join(edges))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)


def main(argv):
    objects_dir = None
    if len(argv) == 3 and argv[1] == "--objects":
        objects_dir = argv[2]
    elif len(argv) != 1:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    problems = []
    includes = include_graph(problems)
    check_areas(includes, problems)
    check_cycles(includes, problems, "include")
    checked = "includes"
    if objects_dir:
        symbols = symbol_graph(objects_dir)
        check_areas(symbols, problems)
        check_cycles(symbols, problems, "symbol")
        checked += " and symbols"
    for problem in problems:
        print("check_layers: " + problem)
    print(f"check_layers: {len(includes)} modules, {checked}: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
