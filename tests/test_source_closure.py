"""Cache keys follow the code a baseline imports, not only the file that defines it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from harness.source_closure import source_closure, source_digest


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``pkgx``: ``model`` imports ``pkgx.engine`` at the top and ``.features`` inside a
    function; ``engine`` imports ``pkgx.util``; ``unused`` is imported by nobody."""
    root = tmp_path / "pkgx"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "model.py").write_text("import json\nfrom pkgx.engine import fit\n\n"
                                   "def features():\n    from . import features\n    return features\n")
    (root / "engine.py").write_text("import pkgx.util\n\ndef fit():\n    return pkgx.util.ONE\n")
    (root / "util.py").write_text("ONE = 1\n")
    (root / "features.py").write_text("SCALE = 2\n")
    (root / "unused.py").write_text("X = 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield root
    for name in [m for m in sys.modules if m == "pkgx" or m.startswith("pkgx.")]:
        del sys.modules[name]


def test_closure_follows_direct_indirect_relative_and_lazy_imports(package: Path) -> None:
    closure = source_closure("pkgx.model", packages=("pkgx",))
    assert set(closure) == {"pkgx", "pkgx.model", "pkgx.engine", "pkgx.util", "pkgx.features"}
    assert closure["pkgx.util"] == package / "util.py"


@pytest.mark.parametrize("edited, changes", [("util.py", True), ("features.py", True), ("unused.py", False)])
def test_digest_changes_with_any_imported_file_and_only_those(package: Path, edited: str, changes: bool) -> None:
    before = source_digest("pkgx.model", packages=("pkgx",))
    path = package / edited
    path.write_text(path.read_text() + "# edited\n")
    assert (source_digest("pkgx.model", packages=("pkgx",)) != before) is changes


def test_unknown_module_has_no_digest() -> None:
    assert source_digest("no_such_module_anywhere") == "unknown"


def test_a_transfer_baselines_key_covers_the_embedding_extraction_it_calls() -> None:
    """The case that motivated it: the extraction lives in the harness, not in the baseline's file."""
    from baselines.registry import get_baseline

    closure = source_closure(get_baseline("efficientnet_lite0").__module__)
    assert {"harness.features.embeddings", "harness.training.engine", "baselines.transfer"} <= set(closure)


def test_relative_imports_climb_one_package_per_extra_dot(package: Path) -> None:
    (package / "sub").mkdir()
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "deep.py").write_text("from .. import util\nfrom ..engine import fit\n")
    importlib.invalidate_caches()
    closure = source_closure("pkgx.sub.deep", packages=("pkgx",))
    assert {"pkgx.util", "pkgx.engine", "pkgx.sub"} <= set(closure)
    assert "pkgx.sub.util" not in closure
