"""Development tools: generators of committed files (Grafana dashboards)."""
