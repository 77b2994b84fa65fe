"""Recording and reading usage: the Meter facade, intake (validation of records) and queries."""
