-- Argo CD health check for kubetune.dev/FineTuneJob and kubetune.dev/FineTuneSweep (docs/gitops.md):
-- both report phase, message, observedGeneration and the Ready and Stalled conditions.
-- Argo CD runs it with `obj` set to the object and reads the returned table's status and message.
-- Only the base and table libraries are used: a custom health check gets no string library.
local hs = { status = "Progressing", message = "" }

local function condition(status, type_)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.message = "waiting for the operator to report a status"
  return hs
end

-- A status computed from an older spec says nothing about the current one.
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration < generation then
  hs.message = "waiting for the operator to observe generation " .. generation
  return hs
end

local phase = status.phase
local stalled = condition(status, "Stalled")
local ready = condition(status, "Ready")

if phase == "Failed" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  hs.message = status.message or (stalled ~= nil and stalled.message) or "failed"
  return hs
end
if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = status.message or "spec.suspend is true"
  return hs
end
if phase == "Succeeded" or (ready ~= nil and ready.status == "True") then
  hs.status = "Healthy"
  hs.message = status.message or "succeeded"
  return hs
end

-- Pending, Queued, Training, Exporting, a sweep's Running, or a phase this check does not know yet.
hs.message = status.message or phase or ""
local progress = status.progress
if phase == "Training" and progress ~= nil and progress.step ~= nil and progress.totalSteps ~= nil then
  hs.message = hs.message .. " (step " .. progress.step .. "/" .. progress.totalSteps .. ")"
end
return hs
