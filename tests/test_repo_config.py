"""`.github/binder.yml` parsing: defaults, every key, and errors that name the key and the place."""
from __future__ import annotations

import pytest

from bot.prebuild.repo_config import DEFAULT, ConfigError, RepoConfig, branch_matches, parse_repo_config


@pytest.mark.parametrize("text", [None, "", "   \n", "# only a comment\n", b""])
def test_absent_or_empty_file_gives_defaults(text):
    cfg = parse_repo_config(text)
    assert cfg == DEFAULT
    assert (cfg.enabled, cfg.branches, cfg.pull_requests, cfg.forks, cfg.comment, cfg.urlpath, cfg.subdir) == (
        True, None, True, False, True, None, None)


def test_every_key_is_read():
    cfg = parse_repo_config(
        "enabled: false\n"
        "branches: [main, 'release/**', '!release/old']\n"
        "pull_requests: false\n"
        "forks: true\n"
        "comment: false\n"
        "urlpath: lab/tree/index.ipynb\n"
        "subdir: ./binder/\n"
    )
    assert cfg == RepoConfig(enabled=False, branches=("main", "release/**", "!release/old"), pull_requests=False,
                             forks=True, comment=False, urlpath="lab/tree/index.ipynb", subdir="binder")


def test_bytes_are_decoded_and_block_lists_work():
    cfg = parse_repo_config("branches:\n  - main\n  - dev\n".encode())
    assert cfg.branches == ("main", "dev")


def test_a_single_branch_string_is_a_one_item_list():
    assert parse_repo_config("branches: main").branches == ("main",)


@pytest.mark.parametrize("text,key,words,line,column", [
    ("enabled: yes please\n", "enabled", "must be true or false, not a string ('yes please')", 1, 10),
    ("comment: 1\n", "comment", "must be true or false, not a number (1)", 1, 10),
    ("forks: 'true'\n", "forks", "must be true or false, not a string ('true')", 1, 8),
    ("pull_requests:\n", "pull_requests", "must be true or false, not empty (null)", 1, 15),
    ("enabled: true\nbranches: {main: 1}\n", "branches", "must be a list of branch name patterns", 2, 11),
    ("branches: [main, 3]\n", "branches", "item 2 must be a non-empty branch name pattern", 1, 11),
    ("urlpath: [a]\n", "urlpath", "must be a string", 1, 10),
    ("subdir: ../outside\n", "subdir", "must be a relative path inside the repository", 1, 9),
    ("subdir: /etc\n", "subdir", "must be a relative path inside the repository", 1, 9),
    ("subdir: 5\n", "subdir", "must be a string", 1, 9),
])
def test_wrong_types_name_the_key_the_problem_and_the_place(text, key, words, line, column):
    with pytest.raises(ConfigError) as info:
        parse_repo_config(text)
    e = info.value
    assert e.key == key
    assert words in e.problem
    assert (e.line, e.column) == (line, column)
    assert f"`{key}`" in str(e) and f"line {line}" in str(e)


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError) as info:
        parse_repo_config("enabled: true\nbrnaches: [main]\n")
    assert info.value.key == "brnaches"
    assert "unknown setting" in info.value.problem and "`branches`" in info.value.problem
    assert info.value.line == 2


def test_unknown_key_without_a_close_match_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        parse_repo_config("image: python:3.12\n")
    assert "known settings: enabled, branches" in info.value.problem


def test_a_key_set_twice_is_an_error_not_a_silent_last_wins():
    with pytest.raises(ConfigError) as info:
        parse_repo_config("forks: true\nforks: false\n")
    assert info.value.key == "forks" and "twice" in info.value.problem and info.value.line == 2


@pytest.mark.parametrize("text,line,column", [
    ("enabled: [true\n", 2, 1),
    ("enabled: true\n  bad: indent\n", 2, 6),
    ("branches: [main]\n\tforks: true\n", 2, 1),
])
def test_yaml_syntax_errors_give_line_and_column(text, line, column):
    with pytest.raises(ConfigError) as info:
        parse_repo_config(text)
    assert info.value.key is None
    assert info.value.problem.startswith("YAML syntax error")
    assert (info.value.line, info.value.column) == (line, column)


@pytest.mark.parametrize("text,words", [
    ("- enabled\n", "must be a mapping of settings"),
    ("just words\n", "must be a mapping of settings"),
])
def test_the_file_must_be_a_mapping(text, words):
    with pytest.raises(ConfigError) as info:
        parse_repo_config(text)
    assert words in info.value.problem


def test_python_tags_are_refused_not_executed():
    with pytest.raises(ConfigError) as info:
        parse_repo_config("forks: !!python/object/apply:os.system ['true']\n")
    assert info.value.key == "forks"


def test_oversized_and_non_utf8_files_are_errors():
    with pytest.raises(ConfigError, match="larger than"):
        parse_repo_config(b"# " + b"x" * 70000)
    with pytest.raises(ConfigError, match="UTF-8"):
        parse_repo_config(b"enabled: \xff\n")


@pytest.mark.parametrize("branch,patterns,expected", [
    ("main", ("main",), True),
    ("dev", ("main",), False),
    ("release/1.0", ("release/*",), True),
    ("release/1.0/hotfix", ("release/*",), False),
    ("release/1.0/hotfix", ("release/**",), True),
    ("release/old", ("release/**", "!release/old"), False),
    ("release/old", ("release/**", "!release/old", "release/old"), True),
    ("feature-x", ("!main",), True),
    ("main", ("!main",), False),
    ("v1", ("v?",), True),
    ("v10", ("v?",), False),
    ("dev-a", ("dev-[ab]",), True),
    ("dev-c", ("dev-[ab]",), False),
    ("x", (), False),
])
def test_branch_patterns_follow_github_actions_rules(branch, patterns, expected):
    assert branch_matches(branch, patterns) is expected


def test_branch_allowed_defaults_to_every_branch():
    assert DEFAULT.branch_allowed("anything/at/all")
    assert not parse_repo_config("branches: []").branch_allowed("main")
