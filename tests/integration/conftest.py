"""Integration tests run against the lab; its fixtures (`lab`, `lab_inventory`, `deployed`) live in
tests/conftest.py, shared with the fault suite (tests/reliability)."""
