"""The pure core: resources, DRF, placement, offers. No SSH, no clock, no database in here."""
