# Consul agent for ai-swarm on oracle. Rendered by swarm.
datacenter       = "homelab"
data_dir         = "/consul/data"
server           = true
bootstrap_expect = 1
# Inside the container; the host publishes the port on the node's address only.
client_addr      = "0.0.0.0"
advertise_addr   = "100.96.197.84"
node_name        = "oracle"
ui_config {
  enabled = true
}
# Plain HTTP: set consul.tls (and an https consul.addr) in the inventory to serve TLS.
ports {
  http = 8500
}
