-- queens.bc's peer: the number of solutions of the 12-queens puzzle, counted twice over,
-- with the same board (one cell per row) and the same helpers.
local board = {}
for r = 0, 31 do board[r] = 0 end

local function absdiff(a, b)
  local d = a - b
  if d < 0 then return -d end
  return d
end

local function safe(row, col)
  for r = 0, row - 1 do
    local c = board[r]
    if c == col then return 0 end
    if absdiff(c, col) == row - r then return 0 end
  end
  return 1
end

local function place(row, n)
  if not (row < n) then return 1 end
  local count = 0
  for col = 0, n - 1 do
    if safe(row, col) ~= 0 then
      board[row] = col
      count = count + place(row + 1, n)
    end
  end
  return count
end

local s = 0
for _ = 1, 2 do s = s + place(0, 12) end
print(s)
