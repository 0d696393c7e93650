-- wrk script for bench/webhooks.py: each thread sends its own share of the pre-signed
-- deliveries (one per line: signature header, a tab, the body), each one once, then repeats
-- from its first (answered as duplicates; the benchmark sizes the file so it never does).
local threads_started = 0

function setup(thread)
  thread:set("id", threads_started)
  threads_started = threads_started + 1
end

function init(args)
  local file, count = args[1], tonumber(args[2])
  deliveries = {}
  local index = 0
  for line in io.lines(file) do
    if index % count == id then
      local signature, body = line:match("^([^\t]+)\t(.*)$")
      deliveries[#deliveries + 1] = { signature, body }
    end
    index = index + 1
  end
  position = 0
end

function request()
  position = position % #deliveries + 1
  local delivery = deliveries[position]
  return wrk.format("POST", "/webhooks/psp", {
    ["Content-Type"] = "application/json",
    ["Stripe-Signature"] = delivery[1],
  }, delivery[2])
end

function done(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
