"""Importing user modules by dotted name or file path, and spotting package-name clashes."""

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

from protocol.errors import FlowForgeError

OUR_PACKAGES = ("flowforge", "protocol", "coordinator", "agent", "tui")


class LoadError(FlowForgeError):
    """A user module could not be imported; the message says which and why."""


def _module_name_for(path: Path) -> tuple[Path, str]:
    """The sys.path root and dotted name of a .py file, following __init__.py upwards."""
    path = path.resolve()
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").is_file():
        parts.append(root.name)
        root = root.parent
    return root, ".".join(reversed(parts))


def check_clashes(root: Path) -> None:
    """Refuse a project dir holding its own package named like one of ours."""
    ours_root = Path(__file__).resolve().parent.parent  # our packages are installed side by side
    for name in OUR_PACKAGES:
        theirs = root / name
        if not (theirs.is_dir() or theirs.with_suffix(".py").is_file()):
            continue
        if theirs.is_dir() and theirs.resolve() == ours_root / name:
            continue
        raise LoadError(
            f"your project has its own '{name}' ({theirs}), which clashes with FlowForge's "
            f"top-level package '{name}'; rename yours (for example to 'myproject_{name}')"
        )


def _add_path(root: Path) -> None:
    check_clashes(root)
    text = str(root)
    if text not in sys.path:
        sys.path.insert(0, text)


def import_target(target: str) -> ModuleType:
    """Import ``pkg.module`` (from the current directory too) or ``path/to/file.py``."""
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise LoadError(f"cannot import {target!r}: no such file")
        root, name = _module_name_for(path)
    else:
        root, name = Path.cwd(), target
    _add_path(root)
    try:
        return importlib.import_module(name)
    except FlowForgeError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise LoadError(f"cannot import {target!r}: no module named {exc.name!r}") from None
        raise LoadError(f"cannot import {target!r}: {exc}") from exc
    except Exception as exc:
        raise LoadError(f"cannot import {target!r}: {type(exc).__name__}: {exc}") from exc
