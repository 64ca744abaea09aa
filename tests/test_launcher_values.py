"""k8s/jupyterhub-values.yaml: the Zero to JupyterHub values that run the launcher's Hub side.

The spawner mixin is embedded verbatim; to refresh the copy after editing
launcher/spawner.py: ``.venv/bin/python tests/test_launcher_values.py --update``.
"""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "k8s" / "jupyterhub-values.yaml"
SPAWNER = ROOT / "launcher" / "spawner.py"
MARKER = "      stringData: |\n"
INDENT = " " * 8


def embed(values_text: str, spawner_text: str) -> str:
    """The values text with the block after ``stringData: |`` replaced by the spawner source."""
    head, rest = values_text.split(MARKER, 1)
    lines = rest.splitlines(keepends=True)
    i = 0
    while i < len(lines) and (lines[i].startswith(INDENT) or not lines[i].strip()):
        i += 1
    while i > 0 and not lines[i - 1].strip():
        i -= 1
    body = "".join(INDENT + line if line.strip() else line for line in spawner_text.splitlines(keepends=True))
    return head + MARKER + body + "".join(lines[i:])


def load() -> dict:
    return yaml.safe_load(VALUES.read_text())


def test_embedded_spawner_is_launcher_spawner_verbatim():
    values = load()
    embedded = values["hub"]["extraFiles"]["binder-prebuild-spawner"]["stringData"]
    assert embedded == SPAWNER.read_text(), "run: .venv/bin/python tests/test_launcher_values.py --update"


def test_embedded_spawner_needs_only_what_the_hub_image_has(tmp_path):
    tree = ast.parse(SPAWNER.read_text())
    modules = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    modules |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert modules <= {"__future__", "os", "re", "tornado", "traitlets"}, modules
    # and it imports on its own, from the mounted path, as the extraConfig does
    mounted = tmp_path / "binder_prebuild_spawner.py"
    mounted.write_text(load()["hub"]["extraFiles"]["binder-prebuild-spawner"]["stringData"])
    spec = importlib.util.spec_from_file_location("binder_prebuild_spawner", mounted)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.BinderSpawnerMixin.__name__ == "BinderSpawnerMixin"


def test_extra_config_makes_a_kubespawner_with_the_mixin():
    hub = load()["hub"]
    code = hub["extraConfig"]["binder-prebuild-spawner"]
    compile(code, "extraConfig", "exec")
    assert "/usr/local/etc/binder-prebuild" in code
    assert hub["extraFiles"]["binder-prebuild-spawner"]["mountPath"] == \
        "/usr/local/etc/binder-prebuild/binder_prebuild_spawner.py"
    assert "class BinderKubeSpawner(BinderSpawnerMixin, KubeSpawner)" in code
    assert "c.JupyterHub.spawner_class = BinderKubeSpawner" in code
    assert hub["config"]["BinderSpawnerMixin"]["image_prefix"].endswith("/")
    # the origin allowed to use the servers (thebe): a trait of the mixin, passed through as config
    assert "cors_allow_origin" in hub["config"]["BinderSpawnerMixin"]
    from launcher.spawner import BinderSpawnerMixin

    assert "cors_allow_origin" in BinderSpawnerMixin.class_trait_names(config=True)


def test_service_role_named_servers_and_culling():
    from launcher.spawner import SERVICE_SCOPES

    values = load()
    hub = values["hub"]
    assert "binder-prebuild" in hub["services"]
    role = hub["loadRoles"]["binder-prebuild"]
    assert role["scopes"] == SERVICE_SCOPES and role["services"] == ["binder-prebuild"]
    assert hub["allowNamedServers"] is True
    assert hub["config"]["JupyterHub"]["authenticator_class"] == "null"
    cull = values["cull"]
    assert cull["enabled"] is True and cull["timeout"] == 600 and cull["users"] is True
    assert values["singleuser"]["storage"]["type"] == "none"


def update() -> None:
    VALUES.write_text(embed(VALUES.read_text(), SPAWNER.read_text()))


if __name__ == "__main__":
    if "--update" in sys.argv:
        update()
        print(f"updated {VALUES}")
