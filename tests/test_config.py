"""Settings: the environment, a YAML config file that adds to it (the environment wins),
and clear errors for values we cannot use, from load_settings and from the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings

BINARY = str(Path(sys.executable).with_name("binder-prebuild"))


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_the_environment_wins_over_the_config_file(tmp_path):
    config = write(tmp_path / "c.yml", "REGISTRY_URL: http://file:5000\nMAX_CONCURRENT_BUILDS: 3\n"
                                       "IMAGE_PREFIX: from-file/\n")
    env = {"DATA_DIR": str(tmp_path), "REGISTRY_URL": "http://env:5000", "MAX_CONCURRENT_BUILDS": "5"}
    s = load_settings(env, config_file=config)
    assert s.registry_url == "http://env:5000" and s.max_concurrent_builds == 5  # the environment wins
    assert s.image_prefix == "from-file/"  # what the environment leaves unset, the file adds


def test_binder_prebuild_config_names_the_file_and_keys_are_case_insensitive(tmp_path):
    config = write(tmp_path / "c.yml", "build_timeout: 120\nLAUNCH_ALLOW: octo/a, octo/b\nBUILD_TAGS: 'yes'\n")
    s = load_settings({"DATA_DIR": str(tmp_path), "BINDER_PREBUILD_CONFIG": config})
    assert s.build_timeout == 120 and s.launch_allow == ("octo/a", "octo/b") and s.build_tags is True


def test_an_explicit_config_file_is_used_instead_of_binder_prebuild_config(tmp_path):
    named = write(tmp_path / "named.yml", "KUBE_NAMESPACE: from-env-var\n")
    given = write(tmp_path / "given.yml", "KUBE_NAMESPACE: from-flag\n")
    s = load_settings({"DATA_DIR": str(tmp_path), "BINDER_PREBUILD_CONFIG": named}, config_file=given)
    assert s.kube_namespace == "from-flag"


@pytest.mark.parametrize("env, config, message", [
    ({"BUILDER": "docker"}, None, "BUILDER must be 'kubernetes' or 'local', not 'docker'"),
    ({}, "BUILDER: nomad\n", "BUILDER must be 'kubernetes' or 'local', not 'nomad'"),
    ({"PORT": "eighty"}, None, "PORT: "),
    ({"BUILD_ON_LAUNCH": "maybe"}, None, "BUILD_ON_LAUNCH: not a boolean"),
    ({}, "- a\n- list\n", "must be a mapping"),
    ({}, "key: [unclosed\n", "cannot read config file"),
])
def test_unusable_values_are_a_config_error_that_names_them(tmp_path, env, config, message):
    path = write(tmp_path / "c.yml", config) if config is not None else None
    with pytest.raises(ConfigError) as info:
        load_settings({"DATA_DIR": str(tmp_path), **env}, config_file=path)
    assert message in str(info.value)


def test_a_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings({"DATA_DIR": str(tmp_path), "BINDER_PREBUILD_CONFIG": str(tmp_path / "nope.yml")})


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("BUILDER", "BINDER_PREBUILD_CONFIG", "PORT", "HOST") and not k.startswith("GITHUB_")}
    env.update(DATA_DIR=str(tmp_path / "data"), **extra)
    return env


@pytest.mark.parametrize("args, extra, file_text, message", [
    (["serve"], {"BUILDER": "nomad"}, None, "BUILDER must be 'kubernetes' or 'local', not 'nomad'"),
    (["serve", "--config", "{file}"], {}, "BUILDER: nomad\n", "not 'nomad'"),
    (["serve"], {"BINDER_PREBUILD_CONFIG": "{file}"}, "PORT: many\n", "PORT: "),
    (["build-pod", "octo/demo", "a" * 40], {"BUILDER": "nomad"}, None, "not 'nomad'"),
])
def test_the_cli_exits_2_with_the_reason_on_a_configuration_error(tmp_path, args, extra, file_text, message):
    file = write(tmp_path / "c.yml", file_text) if file_text is not None else ""
    argv = [a.replace("{file}", file) for a in args]
    env = cli_env(tmp_path, **{k: v.replace("{file}", file) for k, v in extra.items()})
    proc = subprocess.run([BINARY, *argv], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "binder-prebuild: configuration error:" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_cli_reads_its_config_file_and_the_environment_wins(tmp_path):
    """build-pod prints what the settings made: the file's namespace, the environment's registry."""
    file = write(tmp_path / "c.yml", "KUBE_NAMESPACE: from-file\nREGISTRY_URL: http://file.example:5000\n")
    env = cli_env(tmp_path, BINDER_PREBUILD_CONFIG=file, BUILDER="kubernetes",
                  REGISTRY_URL="http://env.example:5000")
    proc = subprocess.run([BINARY, "build-pod", "octo/demo", "a" * 40], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "namespace: from-file" in proc.stdout
    assert "env.example:5000" in proc.stdout and "file.example" not in proc.stdout
