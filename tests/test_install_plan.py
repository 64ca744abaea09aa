"""The install script's package selection, as data (scripts/install_plan.py)."""
from __future__ import annotations

from scripts.install_plan import NEEDS, Machine, explain_apt_failure, plan

ALL = frozenset(n.command for n in NEEDS)


def test_node_that_bundles_npm_gets_no_debian_npm():
    # The machine kind we run on: NodeSource's nodejs (npm bundled), no Chromium, no Podman.
    machine = Machine(commands=ALL - {"chromium", "podman", "runc", "newuidmap", "docker-registry",
                                      "mmdebstrap"}, node_from_debian=False)
    result = plan(machine)
    assert "npm" not in result.packages and "nodejs" not in result.packages
    assert result.packages == ("podman", "runc", "uidmap", "docker-registry", "mmdebstrap", "chromium")
    assert result.problems == ()


def test_machine_without_node_gets_debian_nodejs_and_npm():
    machine = Machine(commands=ALL - {"node", "npm"})
    assert plan(machine).packages == ("nodejs", "npm")


def test_machine_with_everything_installs_nothing():
    result = plan(Machine(commands=ALL))
    assert result.packages == () and result.problems == ()


def test_foreign_node_without_npm_is_a_problem_not_an_apt_request():
    result = plan(Machine(commands=ALL - {"npm"}, node_from_debian=False))
    assert result.packages == ()
    assert result.problems and "npm" in result.problems[0]


def test_groups_limit_the_selection():
    bare = Machine(commands=frozenset({"python3"}))
    assert plan(bare, frozenset({"base"})).packages == ("git", "curl", "nodejs", "npm")
    assert "chromium" not in plan(bare, frozenset({"base", "engine"})).packages


def test_missing_venv_and_ca_bundle():
    machine = Machine(commands=ALL, python_venv=False, ca_bundle=False)
    assert plan(machine).packages == ("python3-venv", "ca-certificates")


APT_CONFLICT = """Reading package lists...
Building dependency tree...
Some packages could not be installed. This may mean that you have
requested an impossible situation or if you are using the unstable
distribution that some required packages have not yet been created
or been moved out of Incoming.
The following information may help to resolve the situation:

The following packages have unmet dependencies:
 npm : Depends: node-agent-base but it is not going to be installed
       Depends: node-archy but it is not going to be installed
E: Unable to correct problems, you have held broken packages.
"""


def test_apt_failure_names_the_conflicting_package_and_the_fix():
    msg = explain_apt_failure(APT_CONFLICT, ["npm", "podman", "chromium"])
    assert "apt refused npm" in msg
    assert "apt-get install -y --no-install-recommends podman chromium" in msg


def test_apt_failure_without_a_named_package_still_says_how_to_find_it():
    msg = explain_apt_failure("E: Unable to correct problems, you have held broken packages.",
                              ["chromium"])
    assert "apt-get install -s chromium" in msg
