"""meso-agentless: an agentless cluster resource manager (DRF over SSH and systemd)."""

__version__ = "0.1.0"
