-- Rendered by swarm for haproxy on oracle (roles/haproxy/hold.lua.j2).
-- A model request whose every instance is drained or down (the only one being replaced by a
-- rolling rollout) waits here, looking every 100 ms, for up to the queue timeout given as the
-- action's argument; past it the frontend answers 503 with Retry-After. A request for a
-- model with a usable instance does not wait at all.
core.register_action("hold_for_model", { "http-req" }, function(txn, timeout_ms)
    local backend = txn:get_var("txn.backend")
    if backend == nil then
        return
    end
    local limit = tonumber(timeout_ms) or 0
    local waited = 0
    while txn.f:nbsrv(backend) == 0 do
        if waited >= limit then
            txn:set_var("txn.held_out", true)
            return
        end
        core.msleep(100)
        waited = waited + 100
    end
    if waited > 0 then
        txn:set_var("txn.held_ms", waited)
    end
end, 1)
