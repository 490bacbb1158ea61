-- mandel.bc's peer: Mandelbrot in 16.16 fixed point on a 500x500 grid, at most 2000 steps;
-- prints the total steps and the number of points that never escaped. An arithmetic shift
-- right by k is floor(v / 2^k), exact in both Lua 5.4 and LuaJIT (which has no `>>`) for
-- these magnitudes (well below 2^53).
local floor = math.floor

local function escape(cx, cy, max)
  local zx, zy, i = 0, 0, 0
  while true do
    local zx2, zy2 = floor(zx * zx / 65536), floor(zy * zy / 65536)
    if zx2 + zy2 > 262144 then break end
    zy = floor(zx * zy / 32768) + cy
    zx = zx2 - zy2 + cx
    i = i + 1
    if not (i < max) then break end
  end
  return i
end

local size, max = 500, 2000
local step = floor(163840 / size)
local total, inside = 0, 0
for y = 0, size - 1 do
  for x = 0, size - 1 do
    local n = escape(x * step - 131072, y * step - 81920, max)
    total = total + n
    if n == max then inside = inside + 1 end
  end
end
print(total)
print(inside)
