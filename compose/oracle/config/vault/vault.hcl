# Vault server for ai-swarm on oracle. Rendered by swarm.
ui            = true
disable_mlock = false
api_addr      = "http://100.96.197.84:8200"

storage "file" {
  path = "/vault/file"
}

# Served on the tailnet only; HAProxy does not front Vault.
listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = true
}
