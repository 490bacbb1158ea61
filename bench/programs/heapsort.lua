-- heapsort.bc's peer: heapsort of 1,000,000 Park-Miller numbers (seed 42, each mod 1,000,000)
-- through the same less and swap helpers, a check that the array is in order, and the
-- checksum s = (s * 31 + a[i]) mod 1,000,000,007. Every intermediate value stays below 2^53,
-- so LuaJIT's doubles compute the same as Lua 5.4's integers.
local n = 1000000
local mem = {}

local function less(i, j) return mem[i] < mem[j] end

local function swap(i, j)
  mem[i], mem[j] = mem[j], mem[i]
end

local function sift(root, e)
  while true do
    local child = root * 2 + 1
    if child >= e then return end
    if child + 1 < e and less(child, child + 1) then child = child + 1 end
    if not less(root, child) then return end
    swap(root, child)
    root = child
  end
end

local function heapsort(count)
  local i = math.floor(count / 2)
  while i ~= 0 do
    i = i - 1
    sift(i, count)
  end
  local e = count
  while not (e <= 1) do
    e = e - 1
    swap(0, e)
    sift(0, e)
  end
end

local x, s = 42, 0
for i = 0, n - 1 do
  x = x * 16807 % 2147483647
  mem[i] = x % 1000000
end
heapsort(n)
for i = 1, n - 1 do assert(not less(i, i - 1)) end
for i = 0, n - 1 do s = (s * 31 + mem[i]) % 1000000007 end
print(s)
