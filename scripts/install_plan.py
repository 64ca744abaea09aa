"""Which Debian packages a machine still needs, decided command by command.

Runs with the system python3 and the standard library only (it runs before the
virtualenv exists). The decision is a pure function over what is present, so it
is tested as data; the CLI below only gathers facts from the machine.

Rule: a package is asked for only when the command it provides is missing. Above
all, never ask apt for Debian's `npm` beside a Node.js that came from elsewhere
(NodeSource and others bundle npm in their `nodejs` package, and Debian's `npm`
then conflicts with it: "held broken packages").
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Need:
    """One command the project runs, and the Debian package that provides it."""

    command: str
    package: str
    group: str  # base, engine or browser
    why: str


NEEDS: tuple[Need, ...] = (
    Need("git", "git", "base", "clones and test repositories"),
    Need("python3", "python3", "base", "the service"),
    Need("curl", "curl", "base", "health checks in scripts"),
    Need("node", "nodejs", "base", "configurable-http-proxy for JupyterHub, thebe-core in tests"),
    Need("npm", "npm", "base", "installs configurable-http-proxy and thebe-core"),
    Need("podman", "podman", "engine", "the local container engine"),
    Need("runc", "runc", "engine", "the OCI runtime Podman uses here"),
    Need("newuidmap", "uidmap", "engine", "Podman's user namespaces"),
    Need("docker-registry", "docker-registry", "engine", "the local image registry"),
    Need("mmdebstrap", "mmdebstrap", "engine", "the offline base image"),
    Need("chromium", "chromium", "browser", "browser tests of the pages"),
)


@dataclass(frozen=True)
class Machine:
    """Facts about a machine: which commands exist, and where its Node.js came from."""

    commands: frozenset[str]
    python_venv: bool = True  # `import venv, ensurepip` works for python3
    ca_bundle: bool = True  # /etc/ssl/certs/ca-certificates.crt exists
    node_from_debian: bool = True  # /usr/bin/node belongs to Debian's nodejs (not NodeSource)


@dataclass(frozen=True)
class Plan:
    packages: tuple[str, ...]
    problems: tuple[str, ...]  # what apt cannot fix; printed, and the install stops


def plan(machine: Machine, groups: frozenset[str] = frozenset({"base", "engine", "browser"})) -> Plan:
    """The Debian packages to install for `groups` on `machine` (pure)."""
    packages: list[str] = []
    problems: list[str] = []
    for need in NEEDS:
        if need.group not in groups or need.command in machine.commands:
            continue
        if need.command == "npm" and "node" in machine.commands and not machine.node_from_debian:
            # Debian's npm depends on Debian's nodejs: apt would have to replace this Node.js.
            problems.append(
                "npm is missing beside a Node.js that is not Debian's; Debian's npm cannot be "
                "installed next to it. Install npm with that Node.js's own means "
                "(for instance: corepack enable npm) and run this again.")
            continue
        packages.append(need.package)
    if not machine.python_venv and "python3" in machine.commands:
        packages.append("python3-venv")
    if not machine.ca_bundle:
        packages.append("ca-certificates")
    return Plan(tuple(dict.fromkeys(packages)), tuple(problems))


_UNMET = re.compile(r"^\s*(\S+)\s*:\s*(Depends|Breaks|Conflicts|PreDepends)\s*:?\s*(.*)$")


def explain_apt_failure(output: str, asked: list[str]) -> str:
    """Name the package apt could not install and the one command that fixes it (pure).

    apt says "The following packages have unmet dependencies:" then lines like
    " npm : Depends: node-agent-base but it is not going to be installed".
    """
    culprits: list[str] = []
    details: list[str] = []
    for line in output.splitlines():
        m = _UNMET.match(line)
        if m and m.group(1) in asked:
            culprits.append(m.group(1))
            details.append(line.strip())
    if not culprits:
        if "held broken packages" in output or "unmet dependencies" in output.lower():
            return ("apt could not install " + " ".join(asked) + ": a package conflicts with one "
                    "already installed. Run `apt-get install -s " + " ".join(asked) + "` to see which.")
        last = [ln for ln in output.splitlines() if ln.strip()][-3:]
        return "apt failed to install " + " ".join(asked) + ": " + " / ".join(last)
    culprit = culprits[0]
    rest = [p for p in asked if p not in culprits]
    msg = [f"apt refused {culprit}: {details[0]}"]
    if culprit == "npm":
        msg.append("This Node.js was not installed from Debian and already brings npm, or it "
                   "lacks npm: install npm with that Node.js's own means, not apt.")
    if rest:
        msg.append("To install the rest: apt-get install -y --no-install-recommends " + " ".join(rest))
    else:
        msg.append(f"Fix or remove what blocks {culprit}, then run this again.")
    return "\n".join(msg)


def _node_from_debian() -> bool:
    node = shutil.which("node")
    if not node:
        return True
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Maintainer}", "nodejs"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "debian" in out.lower()


def _has_venv() -> bool:
    try:
        return subprocess.run(["python3", "-c", "import venv, ensurepip"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def observe() -> Machine:
    """Facts read off this machine (the only I/O here)."""
    cmds = frozenset(n.command for n in NEEDS if shutil.which(n.command))
    return Machine(commands=cmds, python_venv=_has_venv(),
                   ca_bundle=os.path.exists("/etc/ssl/certs/ca-certificates.crt"),
                   node_from_debian=_node_from_debian())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("plan", help="print the packages to install, one a line")
    pl.add_argument("--groups", default="base,engine,browser")
    ex = sub.add_parser("explain", help="explain apt's failure output (stdin)")
    ex.add_argument("packages", nargs="*")
    args = p.parse_args(argv)
    if args.cmd == "plan":
        result = plan(observe(), frozenset(g for g in args.groups.split(",") if g))
        for problem in result.problems:
            print("install: " + problem, file=sys.stderr)
        print("\n".join(result.packages))
        return 3 if result.problems else 0
    print(explain_apt_failure(sys.stdin.read(), args.packages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
