-- wrk script for bench_lookup.sh: GET /devices/{id} for random ids of the benchmark's fleet.
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids + 1] = line end
local token = "Bearer " .. os.getenv("BENCH_TOKEN")
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/devices/" .. ids[math.random(#ids)], { ["Authorization"] = token })
end
