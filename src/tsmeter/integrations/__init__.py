"""Integrations with the outside world: notifications (SMTP, webhooks) and the PostHog mirror and
reader."""
