-- ack.bc's peer: the sum of four calls ack(3, 10).
local function ack(m, n)
  if m == 0 then return n + 1 end
  if n == 0 then return ack(m - 1, 1) end
  return ack(m - 1, ack(m, n - 1))
end

local s = 0
for _ = 1, 4 do s = s + ack(3, 10) end
print(s)
