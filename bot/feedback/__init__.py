"""Feedback on GitHub: the `Binder` check run, the one PR comment, and `/binder` commands."""
