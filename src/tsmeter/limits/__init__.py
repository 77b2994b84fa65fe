"""Limits on usage: thresholds, the monitor that opens and resolves alerts, and quotas."""
