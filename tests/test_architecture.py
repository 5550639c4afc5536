"""The layout is the data flow (docs/architecture.md): imports run one way, down the ranks
below, with no cycle; the doc names every package and module there is, and no more; no
module grows past 400 lines without saying why at its top."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 400

# Each module's rank, by its name under pnbridge (the longest dotted prefix listed wins; ""
# is pnbridge itself). A module may import only modules of its own rank or a lower one.
RANKS = {
    # the foundation: data types, JSON, errors, retry timing, logging, metrics, readiness,
    # the shipped files; and the report vocabulary (field names, route templates) and the
    # typed-table converter, which the config compiles and checks with. What a check finds
    # (ops.findings) stands on the config's paths.
    "model": 0, "jsontext": 0, "errors": 0, "retry": 0, "ops.log": 0, "ops.metrics": 0,
    "ops.readiness": 0, "ops.sdnotify": 0, "ops.shipped": 0, "ingest.fields": 0,
    "ingest.routes": 0, "config.typed": 0,
    "ops.activity": 0,  # the per-minute counters the metrics hold
    "ops.instance": 0,  # this instance's name, which the config checks
    "config": 1, "ops.findings": 1,
    "storage": 2,
    "delivery": 3, "access": 3,
    # the use cases, over storage, delivery and access; running and reload load plugins
    "ingest": 4, "push": 4, "ops": 4, "config.running": 4, "config.reload": 4,
    "": 5,  # the public plugin API
    "plugins": 6, "http": 6, "agi": 6, "console": 6,  # the built-in plugins; the adapters
    "server": 7,  # the composition root
    "cli": 8, "__main__": 8,  # ``pnbridge serve`` starts the server
}

# Imports the ranks do not allow, each with its reason.
ALLOWED = {
    # plugin discovery loads the built-in plugins as it loads any other (entry points, the
    # plugins directories): the plugins then import the public API
    ("delivery.discovery", "plugins"),
}


def modules() -> dict[str, Path]:
    """Every module of the installed package, by its name under pnbridge."""
    found = {}
    for folder, prefix in (("daemon", ()), ("plugins", ("plugins",))):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = (*prefix, *path.relative_to(ROOT / folder).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """The pnbridge modules ``name`` imports (anywhere in it: at the top, in a function,
    for type checking only), with the line."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").split(".")[0] == "pnbridge":
                target = node.module.removeprefix("pnbridge").lstrip(".")
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}".lstrip(".")
                found.append((sub if sub in known else target, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name.removeprefix("pnbridge").lstrip("."), node.lineno)
                      for a in node.names if a.name.split(".")[0] == "pnbridge"]
    return [(target, line) for target, line in found if target != name]


def rank(name: str) -> int | None:
    parts = name.split(".") if name else []
    while parts:
        if ".".join(parts) in RANKS:
            return RANKS[".".join(parts)]
        parts.pop()
    return RANKS[""] if not name else None


def full(name: str) -> str:
    return f"pnbridge.{name}" if name else "pnbridge"


def graph() -> dict[str, list[tuple[str, int]]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_rank():
    unranked = [full(name) for name in modules() if rank(name) is None]
    assert not unranked, f"add to RANKS in tests/test_architecture.py: {unranked}"


def test_imports_run_down_the_flow():
    known = modules()
    upward = sorted({
        f"{known[name].relative_to(ROOT)}:{line}: {full(name)} (rank {rank(name)}) imports "
        f"{full(target)} (rank {rank(target)})"
        for name, targets in graph().items() for target, line in targets
        if (rank(target) or 0) > (rank(name) or 0) and (name, target) not in ALLOWED
    })
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = {name: sorted({t for t, _ in targets}) for name, targets in graph().items()}
    cycles, done, path = [], set(), []

    def visit(name: str) -> None:
        if name in path:
            cycles.append(" -> ".join(full(n) for n in [*path[path.index(name):], name]))
            return
        if name in done:
            return
        path.append(name)
        for target in edges.get(name, []):
            visit(target)
        path.pop()
        done.add(name)

    for name in edges:
        visit(name)
    assert not cycles, "\n".join(cycles)


def documented() -> set[str]:
    """The modules and packages docs/architecture.md names in its tree of daemon/ and
    plugins/ (the fenced block under "## The packages"), as paths."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"^## The packages\n.*?^```\n(.*?)^```", text, re.S | re.M)
    assert block, 'docs/architecture.md has no tree under "## The packages"'
    names, stack = set(), []
    for line in block[1].splitlines():
        entry = line.split()[0] if line.strip() else ""
        if not entry:
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        del stack[depth:]
        path = "/".join([*stack, entry.rstrip("/")])
        names.add(path)
        if entry.endswith("/"):
            stack.append(entry.rstrip("/"))
    return names


def test_the_architecture_doc_names_every_module_and_only_those():
    files = [p.relative_to(ROOT) for f in ("daemon", "plugins") for p in (ROOT / f).rglob("*.py")]
    # a package is named as its directory, and its __init__.py too when it holds more than a
    # docstring
    there = {str(p.parent) for p in files if p.name == "__init__.py"}
    there |= {str(p) for p in files if p.name != "__init__.py" or len(
        ast.parse((ROOT / p).read_text()).body) > 1}
    named = documented()
    # directories of data files (the console's templates and static files) may be named too
    there |= {p for p in named if (ROOT / p).is_dir() and not any((ROOT / p).glob("*.py"))}
    assert not there - named, f"docs/architecture.md does not name: {sorted(there - named)}"
    assert not named - there, f"docs/architecture.md names what is not there: {sorted(named - there)}"


def test_no_module_over_400_lines_without_a_reason():
    long = []
    for folder in ("daemon", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            lines = path.read_text().count("\n")
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            if lines > LIMIT and not re.search(r"^Over 400 lines:", doc, re.M):
                long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, ("split these, or say why at the top of the module docstring in a line "
                      f"starting 'Over 400 lines:': {long}")


def test_every_package_is_in_the_wheel():
    listed = set(re.findall(r'"(pnbridge[\w.]*)"', (ROOT / "pyproject.toml").read_text()))
    packages = {"pnbridge" + (f".{name}" if name else "") for name, path in modules().items()
                if path.name == "__init__.py"}
    assert not packages - listed, f"add to [tool.setuptools] packages: {packages - listed}"


def test_every_path_the_architecture_doc_gives_exists():
    """The flow, the import rules and where to add things name real modules and files (a
    path under daemon/, or from the top of the checkout)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    text = re.sub(r"^## The packages\n.*?^```\n.*?^```", "", text, flags=re.S | re.M)
    paths = set(re.findall(r"(?<![\w/.-])((?:[a-z_-]+/)+[a-z_-]*(?:\.py|\.md|\.toml)?)(?![\w/])",
                           text))
    missing = sorted(p for p in paths if not any(
        c.exists() for c in (ROOT / p, ROOT / "daemon" / p, ROOT / "daemon" / f"{p}.py")))
    assert len(paths) > 20 and not missing, f"docs/architecture.md names: {missing}"


def test_the_architecture_doc_gives_the_ranks_the_test_checks():
    text = (ROOT / "docs" / "architecture.md").read_text()
    documented = {
        ("" if name == "pnbridge" else name): int(rank)
        for rank, names in re.findall(r"^\| (\d+) \| (.*?) \|", text, re.M)
        for name in re.findall(r"`([\w.]+)`", names) if name != "__init__.py"
    }
    assert documented == RANKS


def test_all_sql_is_in_storage():
    """Only storage/ speaks to the database: no SQL, connection or sqlite-utils elsewhere."""
    sql = re.compile(r"\.execute(?:many)?\(|\.conn\b|sqlite_utils|\b(?:SELECT|INSERT|UPDATE "
                     r"\w+ SET|DELETE FROM|CREATE TABLE)\b")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for folder in ("daemon", "plugins") for path in sorted((ROOT / folder).rglob("*.py"))
             if "storage" not in path.relative_to(ROOT / folder).parts
             for number, line in enumerate(path.read_text().splitlines(), 1) if sql.search(line)]
    assert not found, "\n".join(found)


def test_only_storage_knows_the_engine():
    """No module outside storage/ imports sqlite3 or sqlite_utils: the store turns the engine's
    errors into StoreError (errors.py), so a second engine's are caught where SQLite's are."""
    engines = {"sqlite3", "sqlite_utils"}
    found = []
    for name, path in sorted(modules().items()):
        if name.split(".")[0] == "storage":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: {full(name)} imports {n}"
                      for n in names if n.split(".")[0] in engines]
    assert not found, "\n".join(found)
