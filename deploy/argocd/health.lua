-- Argo CD health check for dtrtrust.io/DTRTrust.
-- The one source: argocd-cm.yaml inlines this file (regenerate it with
-- `python3 deploy/argocd/generate.py`; tests/deploy checks they are identical).
--
-- Healthy      Ready is True, and both status.observedGeneration and the Ready
--              condition's observedGeneration are metadata.generation. This includes a
--              registry outage with an unchanged spec: the last good bundle stays on
--              every node, so Ready stays True; the message then names the failing
--              refresh (CAAvailable False) and the alert rules page if it lasts.
-- Progressing  no status yet, or a status for an older generation; or the only thing
--              not done is the nodes catching up (NodesSynced False, reason
--              Progressing) or a condition the operator cannot tell yet (Unknown).
-- Degraded     anything else that failed; the message is Ready's message, which names
--              the failing condition and says what to do.
local hs = {}

local function find(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status

if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the dtrtrust operator to report a status"
  return hs
end

if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the dtrtrust operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
  return hs
end

local message = ready.message or ""

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
  local ca = find(status.conditions, "CAAvailable")
  if ca ~= nil and ca.status == "False" then
    hs.message = message .. " CAAvailable: " .. tostring(ca.message or ca.reason)
  end
  return hs
end

-- Not Ready: a real failure in any condition makes it Degraded; the nodes still
-- syncing, or conditions not yet known, keep it Progressing.
local waiting = false
for _, c in ipairs(status.conditions) do
  if c.type ~= "Ready" then
    if c.status == "False" then
      if c.type == "NodesSynced" and c.reason == "Progressing" then
        waiting = true
      else
        hs.status = "Degraded"
        if message == "" then
          message = tostring(c.type) .. ": " .. tostring(c.message or c.reason)
        end
        hs.message = message
        return hs
      end
    elseif c.status ~= "True" then
      waiting = true
    end
  end
end

if ready.status == "False" and not waiting and ready.reason ~= "Progressing" then
  -- Ready failed on its own (an invalid spec: no other condition is computed).
  hs.status = "Degraded"
  hs.message = message
  return hs
end

hs.status = "Progressing"
hs.message = message
return hs
