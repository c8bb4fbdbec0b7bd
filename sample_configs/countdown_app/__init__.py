"""The countdown sample's channel code (see ../countdown.yaml)."""
