-- Feast's own feature server: /get-online-features for the churn_v1 service, one entity.
local users = tonumber(os.getenv("BENCH_USERS") or "1000")
math.randomseed(44)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = string.format('{"feature_service": "churn_v1", "entities": {"user_id": ["u%07d"]}}',
    math.random(0, users - 1))
  return wrk.format(nil, "/get-online-features", nil, body)
end
