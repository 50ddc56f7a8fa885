"""flowforge-dashboard: the Textual terminal dashboard (arrives with its own issue)."""
