"""Provisioning: hub keys, the node tree, enrolment, accounts, and the demo network."""
