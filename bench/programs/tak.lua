-- tak.bc's peer: s = sum of tak(26 + i % 3, 16, 8) for i < 30.
local function tak(x, y, z)
  if not (y < x) then return z end
  return tak(tak(x - 1, y, z), tak(y - 1, z, x), tak(z - 1, x, y))
end

local s = 0
for i = 0, 29 do s = s + tak(26 + i % 3, 16, 8) end
print(s)
