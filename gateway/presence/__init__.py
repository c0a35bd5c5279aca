"""Presence: which users are online, away or offline, aggregated over their devices."""
