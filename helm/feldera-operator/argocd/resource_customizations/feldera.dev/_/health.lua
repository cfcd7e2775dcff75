-- Argo CD health of the feldera.dev resources (FelderaPipeline, FelderaInstance), read from the
-- conditions the Feldera operator writes: Ready, Synced, Reconciling and Stalled, each with
-- observedGeneration (kstatus conventions; the reasons are the operator's fixed catalogue).
-- Written for Argo CD's default sandbox: base, table and a safe os only, no string library.
local hs = {}

-- Program changes that wait for a person: approval of a bootstrap, or a stop (Manual updates).
local waiting_for_a_person = { AwaitingApproval = true, UpdatePending = true }

local function condition(ctype)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == ctype then
        return c
      end
    end
  end
  return nil
end

local function describe(c)
  if c == nil then
    return ""
  end
  if c.message ~= nil and c.message ~= "" then
    if c.reason ~= nil and c.reason ~= "" then
      return c.reason .. ": " .. c.message
    end
    return c.message
  end
  return c.reason or ""
end

local function active_connectors()
  local active, all = 0, 0
  for _, direction in ipairs({ "inputs", "outputs" }) do
    if obj.status[direction] ~= nil then
      for _, connector in ipairs(obj.status[direction]) do
        all = all + 1
        if connector.active == true then
          active = active + 1
        end
      end
    end
  end
  return active .. "/" .. all .. " connectors active"
end

-- A stale status says nothing about the current spec.
local generation = obj.metadata.generation or 0
if obj.status == nil or obj.status.observedGeneration == nil
    or obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local ready = condition("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. generation
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  -- Paused as declared is what was asked for: Healthy (Suspended would hold up sync waves).
  if obj.kind == "FelderaPipeline" and obj.spec ~= nil and obj.spec.stopped ~= true
      and obj.spec.paused == true then
    hs.message = "paused as declared, " .. active_connectors()
  else
    hs.message = describe(ready)
  end
  return hs
end

local stalled = condition("Stalled")
for _, c in ipairs({ ready, stalled }) do
  if c ~= nil and waiting_for_a_person[c.reason] then
    hs.status = "Suspended"
    hs.message = describe(c)
    return hs
  end
end

-- The SQL does not compile: the running program stays, but the declared one cannot run.
if ready.reason == "ProgramError" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  hs.message = describe(ready)
  if hs.message == "" then
    hs.message = describe(stalled)
  end
  return hs
end

-- Compiling, starting, updating, or Feldera unreachable and retried.
hs.status = "Progressing"
hs.message = describe(ready)
return hs
