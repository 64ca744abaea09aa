"""On start: every check run and PR comment the store says is out of date is brought up to date.

What GitHub should show is derived from the store alone (build records, the PR
heads we followed, the status each check run was last sent with), never from the
previous process's memory: a crash, a stop that could not flush, or GitHub
failing the last edits leaves nothing saying something the store contradicts.
A build is BUILT in the store only once its image was confirmed, so this never
runs ahead of the registry either. Only what disagrees is sent.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bot.feedback.check_runs import sent_status
from bot.feedback.github_io import repo_key

if TYPE_CHECKING:
    from bot.feedback.reporter import Reporter
    from bot.store.builds import BuildRecord

log = logging.getLogger(__name__)

RESTORE_WINDOW = 7 * 24 * 3600.0  # builds and PRs older than this are left as they are
RESTORE_LIMIT = 5000  # newest build records read at start


@dataclasses.dataclass
class RestoreCounts:
    check_runs: int = 0  # sent again: they disagreed with the store
    prs: int = 0  # PR comments followed again (each is edited only if its text changes)


def newest_job_per_sha(records: Iterable["BuildRecord"]) -> dict[tuple[str, str], list["BuildRecord"]]:
    """Per (repository, sha): the records of its newest job, oldest first (what its check run reports)."""
    by_sha: dict[tuple[str, str], list[BuildRecord]] = {}
    for r in records:
        by_sha.setdefault((repo_key(r.owner, r.repo), r.sha), []).append(r)
    out = {}
    for key, recs in by_sha.items():
        newest = max(recs, key=lambda r: (r.created_at, r.attempt))
        out[key] = sorted((r for r in recs if r.job_id == newest.job_id), key=lambda r: (r.created_at, r.attempt))
    return out


async def restore(reporter: "Reporter", *, now: float | None = None) -> RestoreCounts:
    """Read the store and queue a send for every check run and comment that disagrees with it."""
    services = reporter.services
    since = (now if now is not None else time.time()) - RESTORE_WINDOW
    jobs = newest_job_per_sha(await services.builds.created_since(since, RESTORE_LIMIT))
    sent = await services.gh_state.check_runs_since(since - RESTORE_WINDOW)
    counts = RestoreCounts()

    # the PRs first: a build's state reaches only the comment of the PR whose head it is;
    # a head with no build record (a skip, a config error) leaves its comment as it is
    for row in await services.gh_state.followed_prs_since(since):
        owner, _, repo = row["full_name"].partition("/")
        if reporter.comments.restore(owner, repo, row["pr_number"], head_sha=row["head_sha"] or None,
                                     installation_id=row["installation_id"], branch=row["branch"],
                                     urlpath=row["urlpath"], comment=bool(row["comment"]),
                                     closed=bool(row["closed"]), merged=bool(row["merged"])):
            counts.prs += 1

    for (key, sha), records in jobs.items():
        lead = records[-1]
        st = reporter.restore_sha(lead.owner, lead.repo, sha, records)
        if st is None:
            continue  # live already (a re-attached build spoke first)
        reporter.comments.follow_build(st, adopt=False)
        view, _ = await reporter.checks.render(st)
        if view is None:
            continue
        want = sent_status(view.status.value, view.conclusion.value if view.conclusion else None)
        if sent.get((key, sha)) == want:
            continue
        log.info("build %s: check run on %s@%s should say %s, last sent %s: updating", lead.job_id,
                 f"{lead.owner}/{lead.repo}", sha[:12], want, sent.get((key, sha)))
        reporter.checks.schedule(st, urgent=True)
        counts.check_runs += 1
    if counts.check_runs or counts.prs:
        log.info("feedback: after the restart, %d check runs are being brought up to date and %d PR comments "
                 "checked", counts.check_runs, counts.prs)
    return counts
