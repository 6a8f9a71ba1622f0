"""A FastAPI host that embeds ``RuntimeContainer`` and leases agent runtimes per request."""
