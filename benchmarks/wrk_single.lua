-- GET /v1/predict/{id} over random existing users; USERS is injected by the harness.
local users = tonumber(os.getenv("BENCH_USERS") or "1000")
math.randomseed(42)
request = function()
  return wrk.format("GET", string.format("/v1/predict/u%07d", math.random(0, users - 1)))
end
