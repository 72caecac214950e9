"""What a monitor reads: /api/health/ and the Prometheus /metrics."""
