"""lrtune: online learning-rate tuning as a service."""
