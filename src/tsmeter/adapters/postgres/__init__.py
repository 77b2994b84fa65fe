"""The shared state store on PostgreSQL: what the hosts of a fleet must agree on (metric
definitions, thresholds, alerts, notification deliveries, job leases, the id ledger), behind
the same ports as the embedded SQLite state. Needs the ``postgres`` extra."""
