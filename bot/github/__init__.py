"""GitHub: the App's identity and tokens (identity), the one retrying client (client),
installation tracking (installations) and the App Manifest registration flow (manifest)."""
