"""Webhook intake: the receiver (HTTP, verify, store), the writer (group commit)
and the dispatcher (drain the store, route through gidgethub)."""
