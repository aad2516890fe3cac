"""wrk as the load generator: a Lua script rotates paths, sets the key, counts bad and empty pages.

In a cursor walk each response's `next_cursor` is queued in its wrk thread and the next
request of that thread takes it, so the thread's connections walk the list page by page and
start over at the end. Each thread stops itself after its share of `max_requests`, so a run is
bounded by count as well as by `--duration`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from bench.api.results import LoadResult
from bench.api.scenarios import Scenario

_SCRIPT = r"""
local paths = {%(paths)s}
local headers = {%(headers)s}
local cursor_walk = %(cursor_walk)s
local expect_items = %(expect_items)s
local max_per_thread = %(max_per_thread)d
local threads = {}

function setup(thread)
  thread:set("offset", #threads * 7919)
  table.insert(threads, thread)
end

offset = 0
local issued = 0
-- Globals, so done() can read them from each thread with thread:get().
responses, non200, empty, distinct = 0, 0, 0, 0
local cursors = {}
local seen = {}

request = function()
  local path
  if cursor_walk then
    local cursor = table.remove(cursors)
    path = cursor and (paths[1] .. "&cursor=" .. cursor) or paths[1]
  else
    path = paths[((offset + issued) %% #paths) + 1]
  end
  issued = issued + 1
  return wrk.format("GET", path, headers)
end

response = function(status, hdrs, body)
  responses = responses + 1
  if status ~= 200 then
    non200 = non200 + 1
  elseif expect_items and string.find(body, '"items":[]', 1, true) then
    empty = empty + 1
  end
  if cursor_walk and status == 200 then
    local cursor = string.match(body, '"next_cursor":"([^"]+)"')
    if cursor then
      table.insert(cursors, cursor)
      if not seen[cursor] then seen[cursor] = true; distinct = distinct + 1 end
    end
  end
  if responses >= max_per_thread then wrk.thread:stop() end
end

done = function(summary, latency, requests)
  local totals = {non200 = 0, empty = 0, responses = 0, distinct = 0}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do totals[name] = totals[name] + thread:get(name) end
  end
  local e = summary.errors
  -- 200 evenly spaced quantiles, so runs of one scenario can be merged (results.merge). Each
  -- percentile() walks wrk's per-microsecond histogram from min to max, so keep the count small.
  local quantiles = {}
  for i = 0, 199 do quantiles[#quantiles + 1] = tostring(latency:percentile((i + 0.5) / 2)) end
  io.write('BENCH_QUANTILES ' .. table.concat(quantiles, ',') .. '\n')
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,' ..
    '"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"non200":%%d,"empty":%%d,' ..
    '"scripted_responses":%%d,"distinct":%%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    totals.non200, totals.empty, totals.responses, totals.distinct))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def script(scenario: Scenario, key: str, max_requests: int, threads: int) -> str:
    headers = {"Connection": "keep-alive"}
    if scenario.authenticated:
        headers["Authorization"] = f"Bearer {key}"
    return _SCRIPT % {
        "paths": ", ".join(_lua_string(p) for p in scenario.paths),
        "headers": ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()),
        "cursor_walk": "true" if scenario.cursor_walk else "false",
        "expect_items": "true" if scenario.expect_items else "false",
        "max_per_thread": max(1, max_requests // threads),
    }


def run(base_url: str, scenario: Scenario, key: str, *, concurrency: int, duration: float,
        threads: int, max_requests: int, work_dir: Path) -> LoadResult:
    threads = max(1, min(threads, concurrency))
    lua = work_dir / "wrk-scenario.lua"
    lua.write_text(script(scenario, key, max_requests, threads))
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
               "--latency", "-s", str(lua), base_url]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    quantiles = next(ln for ln in completed.stdout.splitlines() if ln.startswith("BENCH_QUANTILES "))
    quantiles_ms = [int(v) / 1000 for v in quantiles.removeprefix("BENCH_QUANTILES ").split(",")]
    socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    return LoadResult(
        scenario=scenario.name, generator="wrk", concurrency=concurrency,
        duration_s=data["duration_us"] / 1e6, responses=data["requests"],
        ok=data["requests"] - data["non200"], non_2xx=data["non200"], empty_pages=data["empty"],
        socket_errors=socket_errors,
        p50_ms=data["p50_us"] / 1000, p90_ms=data["p90_us"] / 1000, p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000, distinct_pages=data["distinct"], quantiles_ms=quantiles_ms)
