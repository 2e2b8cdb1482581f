"""The controller's HTTP API (v1): FastAPI, one router per resource, a bearer token on all but
/v1/health."""
