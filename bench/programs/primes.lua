-- primes.bc's peer: the count and the sum of the primes below 2,000,000 by trial division,
-- with the same is_prime and divides helpers.
local function divides(n, d) return n % d == 0 end

local function is_prime(n)
  if n < 2 then return false end
  if n < 4 then return true end
  if divides(n, 2) then return false end
  local d = 3
  while not (d * d > n) do
    if divides(n, d) then return false end
    d = d + 2
  end
  return true
end

local count, sum = 0, 0
for n = 0, 1999999 do
  if is_prime(n) then
    count = count + 1
    sum = sum + n
  end
end
print(count)
print(sum)
