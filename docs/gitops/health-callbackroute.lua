-- Argo CD health check for callbacks.callback-router.dev/CallbackRoute.
-- Install: argocd-cm resource.customizations.health.callbacks.callback-router.dev_CallbackRoute
-- (docs/gitops/argocd-cm.yaml). Same reading as Flux's kstatus:
--   Healthy      Ready=True (the route is in its receiver's routing table)
--   Degraded     Stalled=True: refused for a reason waiting cannot fix (Invalid,
--                NotAllowedByApp, RefNotPermitted, Conflict); the message says which
--   Progressing  not yet observed by the manager, or Ready=False while it waits for an
--                object GitOps may apply later (AppNotFound, BackendNotFound, AppNotReady)
local hs = { status = "Progressing", message = "Waiting for the callback-router manager to observe the route" }
if obj.status == nil or obj.status.observedGeneration == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the callback-router manager to observe generation " .. obj.metadata.generation
  return hs
end
local conds = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conds[c.type] = c
  end
end
local stalled = conds["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. stalled.message
  return hs
end
local ready = conds["Ready"]
if ready == nil then
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  local unknown = conds["UnknownCommands"]
  if unknown ~= nil and unknown.status == "True" then
    hs.message = hs.message .. "; " .. unknown.message
  end
  return hs
end
local why = ready
for _, t in ipairs({ "Accepted", "ResolvedRefs" }) do
  if conds[t] ~= nil and conds[t].status ~= "True" then
    why = conds[t]
    break
  end
end
hs.message = why.reason .. ": " .. why.message
return hs
