"""flowforge-coordinator: stores flows, runs and task states; publishes ready tasks."""
