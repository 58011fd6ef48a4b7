"""The library stands alone: nothing under strategies/ or verifiers/ imports the command-line
package, so a notebook can do everything the CLI does without typer. Read from the source's own
syntax tree (not by grepping), so an import inside a function or a `from tts_cli import x` both count."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = ("strategies", "verifiers")


def _sources():
    for pkg in LIBRARY:
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    yield os.path.join(dirpath, f)


def _imported_modules(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__"
              and node.args and isinstance(node.args[0], ast.Constant)):
            yield str(node.args[0].value)


@pytest.mark.parametrize("path", sorted(_sources()), ids=lambda p: os.path.relpath(p, ROOT))
def test_library_never_imports_the_cli(path):
    bad = [m for m in _imported_modules(path) if m == "tts_cli" or m.startswith("tts_cli.")]
    assert not bad, f"{os.path.relpath(path, ROOT)} imports {bad}"


def test_importing_the_library_loads_no_cli_module():
    # a fresh interpreter: the modules a notebook would import, then what got loaded
    code = ("import sys, strategies.runner, strategies.models, strategies.jsonl, strategies.resume, "
            "strategies.datasets, strategies.aggregators.api, strategies.pruners.settings, verifiers; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tts_cli', 'typer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_version_comes_from_package_metadata():
    from importlib.metadata import version

    import strategies
    import tts_cli

    assert strategies.__version__ == version("tts-cli") == tts_cli.__version__
