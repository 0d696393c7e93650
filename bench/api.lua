-- wrk script for bench/api.py: each request carries a bearer token from a file (one per line,
-- taken in turn, so two lines alternate two tenants), optionally a JSON body; counts every
-- answer that is not 2xx, and prints the latency percentiles as one JSON line when done.
--
-- wrk -s bench/api.lua URL -- TOKENS_FILE METHOD [BODY_FILE]

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function read_file(path)
  local file = assert(io.open(path, "r"))
  local text = file:read("*a")
  file:close()
  return text
end

function init(args)
  tokens = {}
  for line in read_file(args[1]):gmatch("[^\r\n]+") do
    table.insert(tokens, line)
  end
  assert(#tokens > 0, "no tokens in " .. args[1])
  method = args[2]
  body = nil
  if args[3] then
    body = read_file(args[3])
  end
  turn = 0
  failures = 0
end

function request()
  turn = turn + 1
  local headers = {
    ["Authorization"] = "Bearer " .. tokens[(turn % #tokens) + 1],
    ["Accept"] = "application/json",
  }
  if body then
    headers["Content-Type"] = "application/json"
  end
  return wrk.format(method, nil, headers, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("failures")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, failed,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean
  ))
end
