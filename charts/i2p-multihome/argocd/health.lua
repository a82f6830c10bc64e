-- Argo CD health check for multihome.i2p/MultihomedDestination. Install it in argocd-cm as
-- resource.customizations.health.multihome.i2p_MultihomedDestination (see the chart README).
-- Written for Lua 5.1 (Argo CD's gopher-lua) and tested with Lua 5.4.
--
--   Progressing  the operator has not reported on the current generation yet, or the
--                destination is still starting (routers connecting, tunnels building).
--   Degraded     Ready=False for a failure (e.g. KeysUnavailable), or Degraded=True because
--                a router failed (not Established, with a lastError).
--   Healthy      Ready=True for the current generation.
--
-- Degraded=True alone is not enough: it is also True while routers are still connecting or
-- building their first tunnels, and a destination that is merely starting must not fail a
-- sync that waits for health.

local hs = {}

-- Ready=False reasons that mean "not there yet" rather than "failed".
local progressing_reasons = { NotPublished = true }

local function condition(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function failed_routers(routers)
  local names = {}
  for _, r in ipairs(routers or {}) do
    if r.state ~= "Established" and r.lastError ~= nil and r.lastError ~= "" then
      table.insert(names, r.name)
    end
  end
  return names
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(status.conditions, "Ready")
local degraded = condition(status.conditions, "Degraded")

if ready ~= nil and ready.status == "False" and not progressing_reasons[ready.reason] then
  hs.status = "Degraded"
  hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
  return hs
end

if degraded ~= nil and degraded.status == "True" then
  local failed = failed_routers(status.routers)
  if #failed > 0 then
    hs.status = "Degraded"
    hs.message = "Routers failed: " .. table.concat(failed, ", ")
    if degraded.message ~= nil and degraded.message ~= "" then
      hs.message = hs.message .. " (" .. degraded.message .. ")"
    end
    return hs
  end
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end

hs.status = "Progressing"
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
else
  hs.message = "Waiting for the merged LeaseSet to be published"
end
return hs
