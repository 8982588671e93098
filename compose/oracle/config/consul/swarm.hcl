# Consul agent for ai-swarm on oracle. Rendered by swarm.
datacenter       = "homelab"
data_dir         = "/consul/data"
server           = true
bootstrap_expect = 1
client_addr      = "0.0.0.0"
advertise_addr   = "100.96.197.84"
node_name        = "oracle"
ui_config {
  enabled = true
}
ports {
  http = 8500
}
