"""Loading and validating the project: inventory, playbook, roles (typed, frozen, path-qualified errors)."""
