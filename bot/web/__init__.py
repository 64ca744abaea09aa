"""The service's own pages and endpoints: setup and status (pages), health and metrics (health)."""
