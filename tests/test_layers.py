"""The floors below the hub stand on their own: drivers/ and offline_queue/ never import hub/.

Every import statement is read from the source (module level, inside functions, and
``importlib.import_module("...")`` with a literal name), so a lazy import cannot hide.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOWER_FLOORS = ("drivers", "offline_queue")
FORBIDDEN = ("hub",)


def imported_modules(source: str):
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value


def upward_imports(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        for lineno, module in imported_modules(path.read_text(encoding="utf-8")):
            if module.split(".")[0] in FORBIDDEN:
                yield f"{path.relative_to(ROOT)}:{lineno}: imports {module}"


@pytest.mark.parametrize("package", LOWER_FLOORS)
def test_lower_floor_imports_nothing_from_hub(package):
    assert list(upward_imports(package)) == []


def test_the_check_sees_a_lazy_import(tmp_path):
    """The scanner itself: an import inside a function and an import_module call are found."""
    source = "def f():\n    from hub.clock import SystemClock\n    importlib.import_module('hub.events')\n"
    assert [m for _, m in imported_modules(source)] == ["hub.clock", "hub.events"]


def test_config_does_not_import_gpiozero():
    """Validating a configuration must not load gpiozero (it probes for GPIO hardware)."""
    import subprocess
    import sys
    code = "import sys, hub.config, hub.cli; sys.exit(1 if 'gpiozero' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
