-- atomics.bc's peer. Lua has no threads, so this runs the four workers one after another
-- (plain adds stand in for the atomic ones): the same work and the same output, but no
-- contention, so its time is not comparable with the threaded .bc and C versions.
local cells, workers, n = 8, 4, 20000000
local mem = {}
for c = 0, cells - 1 do mem[c] = 0 end

local function worker(w)
  local mine = 0
  for i = 0, n - 1 do
    local d = i % 3 + 1
    local c = (i + w) % cells
    mem[c] = mem[c] + d
    mine = mine + d
  end
  return mine
end

local joined, total = 0, 0
for w = 0, workers - 1 do joined = joined + worker(w) end
for c = 0, cells - 1 do total = total + mem[c] end
print(joined)
print(total)
