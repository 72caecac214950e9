"""The read side: the REST API, its documents and the dashboard page."""
