"""Scheduled jobs (aggregation, threshold evaluation, deliveries) and the scheduler that runs
them."""
