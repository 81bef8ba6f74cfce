"""`relucut --help` and command registration stay light: no torch, onnx or matplotlib (issue 13, item 14)."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "onnx", "matplotlib", "sklearn", "ray")


def test_registering_every_command_imports_nothing_heavy():
    probe = ("import sys, relucut, relucut.cli.app as a; a._register(); "
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at start-up: {proc.stdout.strip()}"


@pytest.mark.parametrize("name", ["count", "ModelSpec", "reduce", "SNLConfig", "RelucutError"])
def test_public_names_resolve_on_first_use(name):
    import types

    import relucut

    value = getattr(relucut, name)
    assert not isinstance(value, types.ModuleType) and name in relucut.__all__


def test_importing_the_reduce_module_keeps_relucut_reduce_the_function():
    import relucut
    import relucut.reduce as imported  # noqa: F401  (binds the submodule the usual way)
    from relucut.reduce import ReduceResult  # noqa: F401

    assert callable(relucut.reduce) and relucut.reduce.__name__ == "reduce"


def test_every_option_of_every_command_has_help():
    import typer

    import relucut.cli.app as cli

    cli._register()
    group = typer.main.get_command(cli.app)
    missing = []

    def walk(command, path):
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option" and not (param.help or "").strip():
                missing.append(f"{path} {param.opts[0]}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(group, "relucut")
    assert not missing, missing
