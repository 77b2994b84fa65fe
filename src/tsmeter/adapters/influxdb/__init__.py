"""InfluxDB stores: line protocol shared by all, the v1 API (1.x, 2.x compat, 3.x)."""
