-- Argo CD health check for quaytag.dev/RepositoryTag, installed through argocd-cm.yaml.
-- The Ready reasons and their transient flags come from operator/quay_tag_operator/reasons.py;
-- tests/deploy/test_argocd_health.py fails when this list and that file disagree.

-- Ready=False reasons that clear without a person: Quay is down or slow, or the image is not pushed yet.
local transient = {
  ManifestNotFound = true,
  RateLimited = true,
  QuayUnavailable = true,
  InvalidQuayResponse = true,
}

local hs = {}

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: the operator writes nothing to Quay"
  return hs
end

local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end
if obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end
if ready == nil or ready.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
  return hs
end

local message = tostring(ready.reason) .. ": " .. tostring(ready.message)
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" and not transient[ready.reason] then
  hs.status = "Degraded"
else
  -- A transient reason, or Ready=Unknown.
  hs.status = "Progressing"
end
hs.message = message
return hs
