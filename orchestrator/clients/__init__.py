"""Clients of the fleet's services seen from the controller: Vault, Consul, the image registry."""
