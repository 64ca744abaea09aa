"""Prometheus metrics, one registry per app (so tests can build many apps in one process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.deliveries = Counter(
            "binder_prebuild_deliveries_total", "Webhook deliveries by event and outcome",
            ["event", "outcome"], registry=r)
        self.ack_latency = Histogram(
            "binder_prebuild_webhook_ack_seconds", "Time to acknowledge a webhook delivery", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.queue_depth = Gauge(
            "binder_prebuild_delivery_queue_depth", "Deliveries accepted and not yet processed", registry=r)
        self.handler_failures = Counter(
            "binder_prebuild_handler_failures_total", "Handler runs that raised", ["event"], registry=r)
        self.builds = Counter(
            "binder_prebuild_builds_total", "Builds by outcome", ["outcome"], registry=r)
        self.builds_running = Gauge(
            "binder_prebuild_builds_running", "Builds running now", registry=r)
        self.builds_queued = Gauge(
            "binder_prebuild_builds_queued", "Builds waiting for a slot", registry=r)
        self.queue_wait = Histogram(
            "binder_prebuild_queue_wait_seconds", "Time a build waited in the queue for a slot, by priority",
            ["priority"], registry=r,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200))
        self.queue_length = Gauge(
            "binder_prebuild_queue_length", "Builds waiting for a slot, by installation (none: no App)",
            ["installation"], registry=r)
        self.build_duration = Histogram(
            "binder_prebuild_build_seconds", "Build duration", registry=r,
            buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600))
        self.launches = Counter(
            "binder_prebuild_launches_total", "Launches by outcome", ["outcome"], registry=r)
        self.launch_duration = Histogram(
            "binder_prebuild_launch_seconds", "Launch duration from request to ready", registry=r,
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300))
        self.servers_running = Gauge(
            "binder_prebuild_servers_running", "Servers running on the Hub (last count)", registry=r)
        self.github_requests = Counter(
            "binder_prebuild_github_requests_total", "GitHub API requests by status", ["status"], registry=r)
        self.github_held = Counter(
            "binder_prebuild_github_requests_held_total",
            "GitHub requests not sent because the identity's quota was used up until its reset", registry=r)
        self.redelivery_failed_found = Counter(
            "binder_prebuild_redelivery_failed_found_total",
            "Webhook deliveries found failed at GitHub and never received", registry=r)
        self.redelivery_requests = Counter(
            "binder_prebuild_redelivery_requests_total",
            "Redelivery requests sent to GitHub, by outcome", ["outcome"], registry=r)
        self.reconcile_submitted = Counter(
            "binder_prebuild_reconcile_submitted_total",
            "Branch and pull request heads a reconcile round found missing and submitted", ["kind"], registry=r)
        self.reconcile_rounds = Counter(
            "binder_prebuild_reconcile_rounds_total", "Reconcile rounds by outcome", ["outcome"], registry=r)
        self.store_pruned = Counter(
            "binder_prebuild_store_pruned_total", "Rows pruned from the store, by kind", ["kind"], registry=r)
