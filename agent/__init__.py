"""flowforge-agent: pulls tasks for its queues and runs registered Python functions."""
