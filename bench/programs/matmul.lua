-- matmul.bc's peer: C = A * B for 600x600 matrices in one table (A, then B, then C), loops
-- i-k-j, then the checksum sum of C[i][j] * ((i + j) % 7 + 1).
local n = 600
local mem = {}
for x = 0, 3 * n * n - 1 do mem[x] = 0 end
local b0, c0 = n * n, 2 * n * n
for i = 0, n - 1 do
  for j = 0, n - 1 do
    mem[i * n + j] = (i * j + 1) % 17
    mem[b0 + i * n + j] = (i + 2 * j) % 13
  end
end
for i = 0, n - 1 do
  for k = 0, n - 1 do
    local a = mem[i * n + k]
    local brow, crow = b0 + k * n, c0 + i * n
    for j = 0, n - 1 do
      mem[crow + j] = mem[crow + j] + a * mem[brow + j]
    end
  end
end
local s = 0
for i = 0, n - 1 do
  for j = 0, n - 1 do s = s + mem[c0 + i * n + j] * ((i + j) % 7 + 1) end
end
print(s)
