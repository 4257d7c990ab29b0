-- Argo CD health check for callbacks.callback-router.dev/CallbackReceiver.
-- Install: argocd-cm resource.customizations.health.callbacks.callback-router.dev_CallbackReceiver
-- (docs/gitops/argocd-cm.yaml). Same reading as Flux's kstatus:
--   Healthy      Ready=True (the workload runs the current spec, every replica ready)
--   Degraded     Stalled=True: it cannot run as specified (Invalid: an unsupported spec;
--                ProgressDeadlineExceeded: a rollout that stopped progressing)
--   Progressing  not yet observed by the manager, or rolling out, scaling or draining
--                (Progressing=True: RollingOut, Draining with the pending count)
local hs = { status = "Progressing", message = "Waiting for the callback-router manager to observe the receiver" }
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
local progressing = conds["Progressing"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
if progressing ~= nil and progressing.status == "True" then
  hs.message = progressing.reason .. ": " .. progressing.message
elseif ready ~= nil then
  hs.message = ready.reason .. ": " .. ready.message
end
return hs
