"""Regenerate the webhook payload fixtures in this directory.

The shapes follow GitHub's documented webhook payloads (docs.github.com
"Webhook events and payloads", and the octokit/webhooks payload examples): every
field GitHub sends for these events, with one coherent, made-up world: the
organization ``binder-examples`` with the repository ``requirements``, a fork
by ``jdoe-contrib``, and the App ``binder-prebuild`` installed on the org.

    python tests/payloads/generate.py   # rewrites *.json next to this file
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

API = "https://api.github.com"
WEB = "https://github.com"

ORG = ("binder-examples", 25328476, "Organization")
MAINTAINER = ("octo-maintainer", 4231780, "User")
CONTRIBUTOR = ("jdoe-contrib", 73318224, "User")
REPO_NAME, REPO_ID, FORK_ID = "requirements", 89419368, 742918331
APP_ID, APP_SLUG, APP_NAME = 1042317, "binder-prebuild", "binder-prebuild"
INSTALLATION_ID = 52198374
HOOK_ID = 488217651


def sha(label: str) -> str:
    return hashlib.sha1(label.encode()).hexdigest()


def node_id(kind: str, number: int) -> str:
    # GitHub's legacy global ids: base64 of "<len>:<Type><id>"
    raw = f"0{len(kind)}:{kind}{number}"
    return base64.b64encode(raw.encode()).decode()


ZERO = "0" * 40
BASE_SHA = sha("main-1")
MAIN_SHA = sha("main-2")
PR_SHA_1 = sha("pr-7-1")
PR_SHA_2 = sha("pr-7-2")
FORK_SHA = sha("fork-pr-9")
MERGE_SHA = sha("merge-7")
TAG_SHA = sha("tag-v1.2.0")
FORCED_BEFORE = sha("force-old")
FORCED_AFTER = sha("force-new")
DELETED_SHA = sha("branch-old")


def user(login: str, uid: int, kind: str = "User") -> dict:
    u = f"{API}/users/{login}"
    return {
        "login": login, "id": uid, "node_id": node_id("Organization" if kind == "Organization" else "User", uid),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4", "gravatar_id": "",
        "url": u, "html_url": f"{WEB}/{login}",
        "followers_url": f"{u}/followers", "following_url": f"{u}/following{{/other_user}}",
        "gists_url": f"{u}/gists{{/gist_id}}", "starred_url": f"{u}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{u}/subscriptions", "organizations_url": f"{u}/orgs",
        "repos_url": f"{u}/repos", "events_url": f"{u}/events{{/privacy}}",
        "received_events_url": f"{u}/received_events", "type": kind, "user_view_type": "public",
        "site_admin": False,
    }


def push_user(login: str, uid: int, kind: str = "User") -> dict:
    """Push payloads add the account's name and email to the repository owner."""
    return {"name": login, "email": None if kind == "Organization" else f"{uid}+{login}@users.noreply.github.com",
            **user(login, uid, kind)}


def organization() -> dict:
    login, oid, _ = ORG
    o = f"{API}/orgs/{login}"
    return {
        "login": login, "id": oid, "node_id": node_id("Organization", oid), "url": o,
        "repos_url": f"{o}/repos", "events_url": f"{o}/events", "hooks_url": f"{o}/hooks",
        "issues_url": f"{o}/issues", "members_url": f"{o}/members{{/member}}",
        "public_members_url": f"{o}/public_members{{/member}}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{oid}?v=4",
        "description": "Example repositories for Binder",
    }


LICENSE = {"key": "bsd-3-clause", "name": 'BSD 3-Clause "New" or "Revised" License', "spdx_id": "BSD-3-Clause",
           "url": f"{API}/licenses/bsd-3-clause", "node_id": "MDc6TGljZW5zZTU="}


def repository(owner: tuple, rid: int, *, fork: bool = False, style: str = "event") -> dict:
    """A repository object. ``style``: 'event' (most events), 'push' (push payloads use
    timestamps and html urls), 'pr' (a pull request's head/base repo, with merge settings)."""
    login, oid, kind = owner
    full = f"{login}/{REPO_NAME}"
    r = f"{API}/repos/{full}"
    repo = {
        "id": rid, "node_id": node_id("Repository", rid), "name": REPO_NAME, "full_name": full, "private": False,
        "owner": push_user(login, oid, kind) if style == "push" else user(login, oid, kind),
        "html_url": f"{WEB}/{full}",
        "description": "Dependencies installed from requirements.txt" + (" (my fork)" if fork else ""),
        "fork": fork, "url": f"{WEB}/{full}" if style == "push" else r,
        "forks_url": f"{r}/forks", "keys_url": f"{r}/keys{{/key_id}}",
        "collaborators_url": f"{r}/collaborators{{/collaborator}}", "teams_url": f"{r}/teams",
        "hooks_url": f"{r}/hooks", "issue_events_url": f"{r}/issues/events{{/number}}", "events_url": f"{r}/events",
        "assignees_url": f"{r}/assignees{{/user}}", "branches_url": f"{r}/branches{{/branch}}",
        "tags_url": f"{r}/tags", "blobs_url": f"{r}/git/blobs{{/sha}}", "git_tags_url": f"{r}/git/tags{{/sha}}",
        "git_refs_url": f"{r}/git/refs{{/sha}}", "trees_url": f"{r}/git/trees{{/sha}}",
        "statuses_url": f"{r}/statuses/{{sha}}", "languages_url": f"{r}/languages",
        "stargazers_url": f"{r}/stargazers", "contributors_url": f"{r}/contributors",
        "subscribers_url": f"{r}/subscribers", "subscription_url": f"{r}/subscription",
        "commits_url": f"{r}/commits{{/sha}}", "git_commits_url": f"{r}/git/commits{{/sha}}",
        "comments_url": f"{r}/comments{{/number}}", "issue_comment_url": f"{r}/issues/comments{{/number}}",
        "contents_url": f"{r}/contents/{{+path}}", "compare_url": f"{r}/compare/{{base}}...{{head}}",
        "merges_url": f"{r}/merges", "archive_url": f"{r}/{{archive_format}}{{/ref}}",
        "downloads_url": f"{r}/downloads", "issues_url": f"{r}/issues{{/number}}",
        "pulls_url": f"{r}/pulls{{/number}}", "milestones_url": f"{r}/milestones{{/number}}",
        "notifications_url": f"{r}/notifications{{?since,all,participating}}",
        "labels_url": f"{r}/labels{{/name}}", "releases_url": f"{r}/releases{{/id}}",
        "deployments_url": f"{r}/deployments",
        "created_at": 1494512106 if style == "push" else "2017-05-11T14:15:06Z",
        "updated_at": "2024-09-30T08:12:44Z",
        "pushed_at": 1728375112 if style == "push" else "2024-10-08T08:11:52Z",
        "git_url": f"git://github.com/{full}.git", "ssh_url": f"git@github.com:{full}.git",
        "clone_url": f"{WEB}/{full}.git", "svn_url": f"{WEB}/{full}", "homepage": "https://mybinder.org",
        "size": 58, "stargazers_count": 0 if fork else 112, "watchers_count": 0 if fork else 112,
        "language": "Jupyter Notebook", "has_issues": not fork, "has_projects": True, "has_downloads": True,
        "has_wiki": not fork, "has_pages": False, "has_discussions": False, "forks_count": 0 if fork else 241,
        "mirror_url": None, "archived": False, "disabled": False, "open_issues_count": 0 if fork else 6,
        "license": LICENSE, "allow_forking": True, "is_template": False, "web_commit_signoff_required": False,
        "topics": [] if fork else ["binder", "jupyter", "reproducibility"], "visibility": "public",
        "forks": 0 if fork else 241, "open_issues": 0 if fork else 6, "watchers": 0 if fork else 112,
        "default_branch": "main",
    }
    if style == "push":
        repo["stargazers"] = repo["stargazers_count"]
        repo["master_branch"] = "main"
        if kind == "Organization":
            repo["organization"] = login
        repo["custom_properties"] = {}
    elif style == "pr":
        repo.update({
            "allow_squash_merge": True, "allow_merge_commit": True, "allow_rebase_merge": True,
            "allow_auto_merge": False, "delete_branch_on_merge": False, "allow_update_branch": False,
            "use_squash_pr_title_as_default": False, "squash_merge_commit_message": "COMMIT_MESSAGES",
            "squash_merge_commit_title": "COMMIT_OR_PR_TITLE", "merge_commit_message": "PR_TITLE",
            "merge_commit_title": "MERGE_MESSAGE",
        })
    else:
        repo["custom_properties"] = {}
    return repo


def main_repo(style: str = "event") -> dict:
    return repository(ORG, REPO_ID, style=style)


def fork_repo(style: str = "event") -> dict:
    return repository(CONTRIBUTOR, FORK_ID, fork=True, style=style)


def installation_ref() -> dict:
    return {"id": INSTALLATION_ID, "node_id": node_id("IntegrationInstallation", INSTALLATION_ID)}


def sender(who: tuple = MAINTAINER) -> dict:
    return user(*who)


# ---------------------------------------------------------------- push

def commit(sha_: str, message: str, *, who: tuple = MAINTAINER, ts: str = "2024-10-08T10:11:49+02:00",
           added=(), modified=("requirements.txt",), removed=()) -> dict:
    login, uid, _ = who
    person = {"name": login.replace("-", " ").title(), "email": f"{uid}+{login}@users.noreply.github.com",
              "username": login}
    return {
        "id": sha_, "tree_id": sha("tree-" + sha_), "distinct": True, "message": message, "timestamp": ts,
        "url": f"{WEB}/{ORG[0]}/{REPO_NAME}/commit/{sha_}", "author": person,
        "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"}
        if who is MAINTAINER and "Merge" in message else person,
        "added": list(added), "removed": list(removed), "modified": list(modified),
    }


def push(ref: str, before: str, after: str, *, commits: list, head: dict | None, created=False,
         deleted=False, forced=False, base_ref=None, compare: str) -> dict:
    login, uid, _ = MAINTAINER
    return {
        "ref": ref, "before": before, "after": after,
        "repository": main_repo("push"),
        "pusher": {"name": login, "email": f"{uid}+{login}@users.noreply.github.com"},
        "organization": organization(), "sender": sender(), "installation": installation_ref(),
        "created": created, "deleted": deleted, "forced": forced, "base_ref": base_ref,
        "compare": f"{WEB}/{ORG[0]}/{REPO_NAME}/{compare}", "commits": commits, "head_commit": head,
    }


def push_branch() -> dict:
    c1 = commit(BASE_SHA, "Pin numpy below 2", ts="2024-10-08T10:09:02+02:00")
    c2 = commit(MAIN_SHA, "Add a matplotlib example notebook", ts="2024-10-08T10:11:49+02:00",
                added=("examples/plot.ipynb",), modified=("requirements.txt", "README.md"))
    return push("refs/heads/main", sha("main-0"), MAIN_SHA, commits=[c1, c2], head=c2,
                compare=f"compare/{sha('main-0')[:12]}...{MAIN_SHA[:12]}")


def push_tag() -> dict:
    head = commit(TAG_SHA, "Release 1.2.0", ts="2024-10-09T15:42:10+02:00", modified=("CHANGELOG.md",))
    return push("refs/tags/v1.2.0", ZERO, TAG_SHA, commits=[], head=head, created=True,
                base_ref="refs/heads/main", compare="compare/v1.2.0")


def push_deleted() -> dict:
    return push("refs/heads/try-conda", DELETED_SHA, ZERO, commits=[], head=None, deleted=True,
                compare=f"compare/{DELETED_SHA[:12]}...000000000000")


def push_forced() -> dict:
    c = commit(FORCED_AFTER, "Rewrite environment for Python 3.12", ts="2024-10-10T09:01:33+02:00",
               modified=("requirements.txt", "runtime.txt"))
    return push("refs/heads/py312", FORCED_BEFORE, FORCED_AFTER, commits=[c], head=c, forced=True,
                compare=f"compare/{FORCED_BEFORE[:12]}...{FORCED_AFTER[:12]}")


# ---------------------------------------------------------------- pull_request

LABEL = {"id": 6823118790, "node_id": "LA_kwDOBVRdGM8AAAABlq-ixg", "url": f"{API}/repos/{ORG[0]}/{REPO_NAME}/labels/enhancement",
         "name": "enhancement", "color": "a2eeef", "default": True, "description": "New feature or request"}


def pull_request(number: int, *, head_sha: str, head_ref: str, author: tuple, fork: bool, state: str = "open",
                 merged: bool = False, created="2024-10-08T09:30:12Z", updated="2024-10-08T09:30:12Z",
                 title: str, body: str | None, commits: int = 1) -> dict:
    full = f"{ORG[0]}/{REPO_NAME}"
    r = f"{API}/repos/{full}"
    pid = 2104459000 + number
    head_repo = fork_repo("pr") if fork else main_repo("pr")
    head_owner = CONTRIBUTOR if fork else ORG
    closed_at = "2024-10-09T11:02:40Z" if state == "closed" else None
    return {
        "url": f"{r}/pulls/{number}", "id": pid, "node_id": f"PR_kwDOBVRdGM59{pid % 100000000:08d}",
        "html_url": f"{WEB}/{full}/pull/{number}", "diff_url": f"{WEB}/{full}/pull/{number}.diff",
        "patch_url": f"{WEB}/{full}/pull/{number}.patch", "issue_url": f"{r}/issues/{number}",
        "number": number, "state": state, "locked": False, "title": title, "user": user(*author), "body": body,
        "created_at": created, "updated_at": updated if state == "open" else closed_at, "closed_at": closed_at,
        "merged_at": closed_at if merged else None,
        "merge_commit_sha": MERGE_SHA if state == "closed" or not fork else None,
        "assignee": None, "assignees": [], "requested_reviewers": [user(*MAINTAINER)] if fork else [],
        "requested_teams": [], "labels": [] if fork else [LABEL], "milestone": None, "draft": False,
        "commits_url": f"{r}/pulls/{number}/commits", "review_comments_url": f"{r}/pulls/{number}/comments",
        "review_comment_url": f"{r}/pulls/comments{{/number}}", "comments_url": f"{r}/issues/{number}/comments",
        "statuses_url": f"{r}/statuses/{head_sha}",
        "head": {"label": f"{head_owner[0]}:{head_ref}", "ref": head_ref, "sha": head_sha,
                 "user": user(*head_owner), "repo": head_repo},
        "base": {"label": f"{ORG[0]}:main", "ref": "main", "sha": MAIN_SHA, "user": user(*ORG),
                 "repo": main_repo("pr")},
        "_links": {
            "self": {"href": f"{r}/pulls/{number}"}, "html": {"href": f"{WEB}/{full}/pull/{number}"},
            "issue": {"href": f"{r}/issues/{number}"}, "comments": {"href": f"{r}/issues/{number}/comments"},
            "review_comments": {"href": f"{r}/pulls/{number}/comments"},
            "review_comment": {"href": f"{r}/pulls/comments{{/number}}"},
            "commits": {"href": f"{r}/pulls/{number}/commits"}, "statuses": {"href": f"{r}/statuses/{head_sha}"},
        },
        "author_association": "FIRST_TIME_CONTRIBUTOR" if fork else "MEMBER", "auto_merge": None,
        "active_lock_reason": None, "merged": merged, "mergeable": None if state == "open" else None,
        "rebaseable": None, "mergeable_state": "unknown",
        "merged_by": user(*MAINTAINER) if merged else None, "comments": 0, "review_comments": 0,
        "maintainer_can_modify": fork, "commits": commits, "additions": 12 * commits, "deletions": 3,
        "changed_files": 2,
    }


def pr_event(action: str, pr: dict, *, who: tuple = MAINTAINER, **extra) -> dict:
    return {"action": action, "number": pr["number"], "pull_request": pr, **extra, "repository": main_repo(),
            "organization": organization(), "sender": sender(who), "installation": installation_ref()}


PR7 = dict(number=7, head_ref="add-altair", author=MAINTAINER, fork=False,
           title="Add an Altair example", body="Adds altair to requirements.txt and a notebook using it.")


def pr_opened() -> dict:
    return pr_event("opened", pull_request(head_sha=PR_SHA_1, **PR7))


def pr_synchronize() -> dict:
    pr = pull_request(head_sha=PR_SHA_2, updated="2024-10-08T12:01:09Z", commits=2, **PR7)
    return pr_event("synchronize", pr, before=PR_SHA_1, after=PR_SHA_2)


def pr_reopened() -> dict:
    return pr_event("reopened", pull_request(head_sha=PR_SHA_2, updated="2024-10-09T08:15:00Z", commits=2, **PR7))


def pr_closed() -> dict:
    return pr_event("closed", pull_request(head_sha=PR_SHA_2, state="closed", merged=True, commits=2, **PR7))


def pr_opened_fork() -> dict:
    pr = pull_request(9, head_sha=FORK_SHA, head_ref="fix-typo", author=CONTRIBUTOR, fork=True,
                      title="Fix a typo in the README", body=None, created="2024-10-11T17:20:05Z",
                      updated="2024-10-11T17:20:05Z")
    return pr_event("opened", pr, who=CONTRIBUTOR)


# ---------------------------------------------------------------- installation

PERMISSIONS = {"checks": "write", "contents": "read", "metadata": "read", "pull_requests": "write",
               "statuses": "write"}
EVENTS = ["check_run", "issue_comment", "pull_request", "push", "repository"]


def installation(*, suspended: bool = False) -> dict:
    login, oid, kind = ORG
    return {
        "id": INSTALLATION_ID, "client_id": "Iv23liB1nd3rPr3bu1ld", "account": user(login, oid, kind),
        "repository_selection": "selected",
        "access_tokens_url": f"{API}/app/installations/{INSTALLATION_ID}/access_tokens",
        "repositories_url": f"{API}/installation/repositories",
        "html_url": f"{WEB}/organizations/{login}/settings/installations/{INSTALLATION_ID}",
        "app_id": APP_ID, "app_slug": APP_SLUG, "target_id": oid, "target_type": kind,
        "permissions": PERMISSIONS, "events": EVENTS,
        "created_at": "2024-10-01T09:12:33.000+02:00", "updated_at": "2024-10-07T16:40:02.000+02:00",
        "single_file_name": None, "has_multiple_single_files": False, "single_file_paths": [],
        "suspended_by": user(*MAINTAINER) if suspended else None,
        "suspended_at": "2024-10-12T10:00:00Z" if suspended else None,
    }


def short_repo(owner: str, name: str, rid: int) -> dict:
    return {"id": rid, "node_id": node_id("Repository", rid), "name": name, "full_name": f"{owner}/{name}",
            "private": False}


INSTALLED = [short_repo(ORG[0], REPO_NAME, REPO_ID), short_repo(ORG[0], "conda", 89419412)]


def installation_event(action: str, **kw) -> dict:
    out = {"action": action, "installation": installation(suspended=action == "suspend")}
    if action in ("created", "deleted"):
        out["repositories"] = INSTALLED
    out["requester"] = None
    out["sender"] = sender()
    return out


def installation_repositories(action: str) -> dict:
    changed = [short_repo(ORG[0], "julia-python", 109371548)]
    return {
        "action": action, "installation": installation(), "repository_selection": "selected",
        "repositories_added": changed if action == "added" else [],
        "repositories_removed": changed if action == "removed" else [],
        "requester": None, "sender": sender(),
    }


# ---------------------------------------------------------------- repository

def repository_event(action: str) -> dict:
    """GitHub's ``repository`` event: the repository object as it is after the change, and
    ``changes`` for a rename, a transfer and an edit (docs: "repository" webhook payloads)."""
    repo = main_repo()
    out: dict = {"action": action}
    if action == "privatized":
        repo.update(private=True, visibility="private")
    elif action == "renamed":
        out["changes"] = {"repository": {"name": {"from": "requirements-old"}}}
    elif action == "transferred":
        out["changes"] = {"owner": {"from": {"user": user(*MAINTAINER)}}}
    elif action == "edited":
        out["changes"] = {"default_branch": {"from": "master"}}
    out.update({"repository": repo, "organization": organization(), "sender": sender(),
                "installation": installation_ref()})
    return out


# ---------------------------------------------------------------- check_run, issue_comment, ping

def app_object() -> dict:
    return {
        "id": APP_ID, "client_id": "Iv23liB1nd3rPr3bu1ld", "slug": APP_SLUG,
        "node_id": node_id("Integration", APP_ID), "owner": user(*ORG), "name": APP_NAME,
        "description": "Prebuilds Binder images for pushes and pull requests",
        "external_url": "https://binder-prebuild.example.org", "html_url": f"{WEB}/apps/{APP_SLUG}",
        "created_at": "2024-09-30T12:00:00Z", "updated_at": "2024-10-01T09:00:00Z",
        "permissions": PERMISSIONS, "events": EVENTS,
    }


def check_run_rerequested() -> dict:
    full = f"{ORG[0]}/{REPO_NAME}"
    r = f"{API}/repos/{full}"
    run_id, suite_id = 31285548301, 29144087255
    pr_ref = {"url": f"{r}/pulls/7", "id": 2104459007, "number": 7,
              "head": {"ref": "add-altair", "sha": PR_SHA_2, "repo": {"id": REPO_ID, "url": r, "name": REPO_NAME}},
              "base": {"ref": "main", "sha": MAIN_SHA, "repo": {"id": REPO_ID, "url": r, "name": REPO_NAME}}}
    return {
        "action": "rerequested",
        "check_run": {
            "id": run_id, "name": "Binder", "node_id": f"CR_kwDOBVRdGM8AAAAH{run_id % 10**8:08d}",
            "head_sha": PR_SHA_2, "external_id": "", "url": f"{r}/check-runs/{run_id}",
            "html_url": f"{WEB}/{full}/runs/{run_id}",
            "details_url": f"https://binder-prebuild.example.org/v2/gh/{full}/{PR_SHA_2}",
            "status": "completed", "conclusion": "failure", "started_at": "2024-10-08T12:01:15Z",
            "completed_at": "2024-10-08T12:04:51Z",
            "output": {"title": "Build failed", "summary": "repo2docker exited with status 1",
                       "text": None, "annotations_count": 0, "annotations_url": f"{r}/check-runs/{run_id}/annotations"},
            "check_suite": {
                "id": suite_id, "node_id": f"CS_kwDOBVRdGM8AAAAG{suite_id % 10**8:08d}", "head_branch": "add-altair",
                "head_sha": PR_SHA_2, "status": "queued", "conclusion": None, "url": f"{r}/check-suites/{suite_id}",
                "before": PR_SHA_1, "after": PR_SHA_2, "pull_requests": [pr_ref], "app": app_object(),
                "created_at": "2024-10-08T12:01:10Z", "updated_at": "2024-10-08T12:09:30Z",
            },
            "app": app_object(), "pull_requests": [pr_ref],
        },
        "repository": main_repo(), "organization": organization(), "sender": sender(),
        "installation": installation_ref(),
    }


def issue_comment_on_pr() -> dict:
    full = f"{ORG[0]}/{REPO_NAME}"
    r = f"{API}/repos/{full}"
    comment_id, issue_id = 2401873311, 2574012207
    reactions = lambda url: {"url": url, "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0,  # noqa: E731
                             "confused": 0, "heart": 0, "rocket": 0, "eyes": 0}
    return {
        "action": "created",
        "issue": {
            "url": f"{r}/issues/7", "repository_url": r, "labels_url": f"{r}/issues/7/labels{{/name}}",
            "comments_url": f"{r}/issues/7/comments", "events_url": f"{r}/issues/7/events",
            "html_url": f"{WEB}/{full}/pull/7", "id": issue_id, "node_id": f"PR_kwDOBVRdGM59{issue_id % 10**8:08d}",
            "number": 7, "title": "Add an Altair example", "user": user(*MAINTAINER), "labels": [LABEL],
            "state": "open", "locked": False, "assignee": None, "assignees": [], "milestone": None,
            "comments": 2, "created_at": "2024-10-08T09:30:12Z", "updated_at": "2024-10-08T12:20:41Z",
            "closed_at": None, "author_association": "MEMBER", "active_lock_reason": None, "draft": False,
            "pull_request": {"url": f"{r}/pulls/7", "html_url": f"{WEB}/{full}/pull/7",
                             "diff_url": f"{WEB}/{full}/pull/7.diff", "patch_url": f"{WEB}/{full}/pull/7.patch",
                             "merged_at": None},
            "body": "Adds altair to requirements.txt and a notebook using it.",
            "reactions": reactions(f"{r}/issues/7/reactions"), "timeline_url": f"{r}/issues/7/timeline",
            "performed_via_github_app": None, "state_reason": None,
        },
        "comment": {
            "url": f"{r}/issues/comments/{comment_id}", "html_url": f"{WEB}/{full}/pull/7#issuecomment-{comment_id}",
            "issue_url": f"{r}/issues/7", "id": comment_id, "node_id": f"IC_kwDOBVRdGM6PKn{comment_id % 10**8:08d}",
            "user": user(*MAINTAINER), "created_at": "2024-10-08T12:20:41Z", "updated_at": "2024-10-08T12:20:41Z",
            "author_association": "MEMBER", "body": "/binder rebuild",
            "reactions": reactions(f"{r}/issues/comments/{comment_id}/reactions"), "performed_via_github_app": None,
        },
        "repository": main_repo(), "organization": organization(), "sender": sender(),
        "installation": installation_ref(),
    }


def ping() -> dict:
    """The ping GitHub sends when an App's webhook is created (an App hook: no repository)."""
    return {
        "zen": "Design for failure.", "hook_id": HOOK_ID,
        "hook": {
            "type": "App", "id": HOOK_ID, "name": "web", "active": True, "events": EVENTS,
            "config": {"content_type": "json", "insecure_ssl": "0",
                       "url": "https://binder-prebuild.example.org/webhooks/github"},
            "updated_at": "2024-09-30T12:00:00Z", "created_at": "2024-09-30T12:00:00Z", "app_id": APP_ID,
            "deliveries_url": f"{API}/app/hook/deliveries",
        },
    }


FIXTURES = {
    "ping": ping,
    "push.branch": push_branch,
    "push.tag": push_tag,
    "push.deleted": push_deleted,
    "push.forced": push_forced,
    "pull_request.opened": pr_opened,
    "pull_request.synchronize": pr_synchronize,
    "pull_request.reopened": pr_reopened,
    "pull_request.closed": pr_closed,
    "pull_request.opened.fork": pr_opened_fork,
    "installation.created": lambda: installation_event("created"),
    "installation.deleted": lambda: installation_event("deleted"),
    "installation.suspend": lambda: installation_event("suspend"),
    "installation.unsuspend": lambda: installation_event("unsuspend"),
    "installation_repositories.added": lambda: installation_repositories("added"),
    "installation_repositories.removed": lambda: installation_repositories("removed"),
    "check_run.rerequested": check_run_rerequested,
    "issue_comment.created": issue_comment_on_pr,
    "repository.privatized": lambda: repository_event("privatized"),
    "repository.publicized": lambda: repository_event("publicized"),
    "repository.renamed": lambda: repository_event("renamed"),
    "repository.transferred": lambda: repository_event("transferred"),
    "repository.deleted": lambda: repository_event("deleted"),
    "repository.edited": lambda: repository_event("edited"),
}


def main() -> None:
    here = Path(__file__).parent
    for name, make in FIXTURES.items():
        (here / f"{name}.json").write_text(json.dumps(make(), indent=2) + "\n")
    print(f"wrote {len(FIXTURES)} payloads to {here}")


if __name__ == "__main__":
    main()
