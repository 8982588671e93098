# Vault server for ai-swarm on oracle. Rendered by swarm.
ui            = true
disable_mlock = false
api_addr      = "http://100.96.197.84:8200"

storage "file" {
  path = "/vault/file"
}

# Published on the node's address only (the tailnet in production); HAProxy does not front Vault.
listener "tcp" {
  address     = "0.0.0.0:8200"
  # Plain HTTP: set vault.tls (and an https vault.addr) in the inventory to serve TLS.
  tls_disable = true
}
