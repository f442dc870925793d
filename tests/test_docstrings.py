"""Every public module, function and class of the library says what it is (a docstring)."""
import importlib
import inspect
import pkgutil

import advlab


def test_public_objects_have_docstrings():
    missing = []
    for m in pkgutil.walk_packages(advlab.__path__, "advlab."):
        if m.name.endswith("__main__"):
            continue
        mod = importlib.import_module(m.name)
        if not inspect.getdoc(mod):
            missing.append(m.name)
        for name, obj in vars(mod).items():
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", None) == m.name and not (obj.__doc__ or "").strip():
                missing.append(f"{m.name}.{name}")
    assert not missing, f"{len(missing)} public objects without a docstring: {missing}"
