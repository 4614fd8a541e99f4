"""The server package's public surface: what ``server`` exports, and that every module says what it is."""

from __future__ import annotations

import importlib
import pkgutil

import server


def test_public_names():
    assert sorted(server.__all__) == ["ServerConfig", "Token", "create_app", "load_config"]
    for name in server.__all__:
        assert getattr(server, name) is not None


def test_every_module_has_a_docstring_and_all():
    for info in pkgutil.walk_packages(server.__path__, "server."):
        module = importlib.import_module(info.name)
        assert (module.__doc__ or "").strip(), f"{info.name} has no docstring"
        if not info.ispkg:
            assert isinstance(getattr(module, "__all__", None), list), f"{info.name} has no __all__"
            for name in module.__all__:
                assert hasattr(module, name), f"{info.name}.__all__ names missing {name!r}"
