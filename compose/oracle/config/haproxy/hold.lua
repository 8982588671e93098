-- Rendered by swarm for haproxy on oracle (roles/haproxy/hold.lua.j2).
-- A model request whose every instance is out of service waits here while one of them is
-- being replaced — drained by swarm's rolling rollout (its only instance, or all at once
-- after a failure) — looking every 100 ms, for up to the queue timeout given as the action's
-- argument; past it, or at once when no instance is drained (they are down: an outage, not a
-- swap), the frontend answers 503 with Retry-After, and a client or LiteLLM can go elsewhere.
-- A request for a model with a usable instance does not wait at all.

local function swapping(backend)
    local proxy = core.backends[backend]
    if proxy == nil then
        return false
    end
    for _, server in pairs(proxy.servers) do
        local draining = server:is_draining()  -- 1/0 in HAProxy 2.6 (0 is true in Lua), a boolean later
        if draining == true or draining == 1 then
            return true
        end
    end
    return false
end

core.register_action("hold_for_model", { "http-req" }, function(txn, timeout_ms)
    local backend = txn:get_var("txn.backend")
    if backend == nil then
        return
    end
    local limit = tonumber(timeout_ms) or 0
    local waited = 0
    while txn.f:nbsrv(backend) == 0 do
        if waited >= limit or not swapping(backend) then
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
