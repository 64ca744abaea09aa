"""Prebuild decisions: which pushes and pull requests become builds, and the per-repo config."""
