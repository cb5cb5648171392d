"""lrtune service: FastAPI routes, stores, leases and auth over the tuner."""
