-- POST /v1/predict with 100 random existing ids per request.
local users = tonumber(os.getenv("BENCH_USERS") or "1000")
math.randomseed(43)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local ids = {}
  for i = 1, 100 do ids[i] = string.format('"u%07d"', math.random(0, users - 1)) end
  return wrk.format(nil, "/v1/predict", nil, '{"entity_ids": [' .. table.concat(ids, ",") .. ']}')
end
