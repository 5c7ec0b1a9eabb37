"""The project source files a module's code depends on, for cache keys.

Why: a fold cached by a baseline must be refitted when any code that decides its
predictions changes, not only the file that defines the baseline. A baseline imports the
harness's feature extractors, training engine and embedding cache; a fix there (the
embedding extraction of 2026-12-08) changed results while the fold cache, keyed by the
baseline's own file, still handed back the old folds. The closure is read from the import
statements (``ast``, nothing is executed), top-level and inside functions, and follows
only modules of this project's packages: third-party code is covered by the provenance the
run records, not here.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

#: Packages whose modules are followed through their imports.
PROJECT_PACKAGES: tuple[str, ...] = ("harness", "baselines")


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


#: (file, module, mtime_ns, size) -> its imports: a run asks for several baselines whose
#: closures share most files; an edited file has another stat and is parsed again.
_PARSED: dict[tuple[str, str, int, int], frozenset[str]] = {}


def _imported_names(path: Path, module: str) -> frozenset[str]:
    stat = path.stat()
    key = (str(path), module, stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        _PARSED[key] = frozenset(_parse_imports(path, module))
    return _PARSED[key]


def _parse_imports(path: Path, module: str) -> set[str]:
    """Every module name ``path`` (module ``module``) imports, relative imports resolved;
    ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a submodule)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return set()
    package = module if _is_package(path) else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")  # each level past the first climbs one package
                base = ".".join(p for p in parts[: len(parts) - node.level + 1] if p)
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if base:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' ``__init__``."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def source_closure(module: str, packages: tuple[str, ...] = PROJECT_PACKAGES) -> dict[str, Path]:
    """``module`` and every module of ``packages`` it imports, directly or not: name ->
    source file. ``module`` itself is included even outside ``packages`` (a plugin)."""
    found: dict[str, Path] = {}
    pending = _with_parents(module)  # importing it runs its packages' __init__ too
    while pending:
        name = pending.pop()
        if name in found:
            continue
        path = _module_file(name)
        if path is None:
            continue
        found[name] = path
        for imported in _imported_names(path, name):
            if imported.split(".")[0] in packages:
                pending.extend(n for n in _with_parents(imported) if n not in found)
    return found


def source_digest(module: str, length: int = 16, packages: tuple[str, ...] = PROJECT_PACKAGES) -> str:
    """sha256 over the names and bytes of ``module``'s source closure (``length`` hex digits);
    ``"unknown"`` when the module's source cannot be found."""
    closure = source_closure(module, packages)
    if module not in closure:
        return "unknown"
    h = hashlib.sha256()
    for name in sorted(closure):
        h.update(name.encode() + b"\0" + closure[name].read_bytes() + b"\0")
    return h.hexdigest()[:length]
