"""The lab: real multi-host clusters on one machine (systemd-nspawn containers or QEMU guests)."""
