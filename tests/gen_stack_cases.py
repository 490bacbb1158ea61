"""Writes the wide-frame conformance cases (tests/conformance/wide_frames*.bc) into the current
folder: run it from tests/conformance. The .out files are what `jitvm run --tier interp` prints."""
W = 200

def wide_func(name="f", width=W):
    # f(n): width locals l_i = n + i; recurse on n-1; return sum of locals + f(n-1)
    out = [f"func {name}(n)"]
    out += [f"  local l{i}" for i in range(width)]
    for i in range(width):
        out += ["  load n", f"  push {i}", "  add", f"  store l{i}"]
    out += ["  load n", "  jz done", "  load n", "  push 1", "  sub", f"  call {name}"]
    for i in range(width):
        out += [f"  load l{i}", "  add"]
    out += ["  ret", "done:", "  push 0", "  ret", "end"]
    return out

def live_func(width=W):
    # g(n): l_i = mload(i) + n; mstore(i, mload(i)+1); r = g(n-1); sum (l_i - mload(i)) + r
    # the callee changes memory, so l_i cannot be recomputed after the call: it stays live
    out = ["func g(n)"]
    out += [f"  local l{i}" for i in range(width)]
    for i in range(width):
        out += [f"  push {i}", "  mload", "  load n", "  add", f"  store l{i}",
                f"  push {i}", f"  push {i}", "  mload", "  push 1", "  add", "  mstore"]
    out += ["  load n", "  jz done", "  load n", "  push 1", "  sub", "  call g"]
    for i in range(width):
        out += [f"  load l{i}", "  add", f"  push {i}", "  mload", "  sub"]
    out += ["  ret", "done:", "  push 0", "  ret", "end"]
    return out

def main(call, n):
    return ["func main()", f"  push {n}", f"  call {call}", "  print", "  push 0", "  ret", "end"]

def write(name, lines):
    open(name + ".bc", "w").write("\n".join(lines) + "\n")

hdr = lambda s: [f"; {l}" for l in s.split("\n")]
write("wide_frames", hdr("""Frames of 200 locals, 9,900 deep at the default --max-depth: native tiers must not
trap `stack overflow` where the interpreter does not (native frames are far larger than
interpreted ones). Generated; see tests/gen_stack_cases.py.""") + wide_func() + [""] + main("f", 9900))
write("wide_frames_raised", hdr("""Frames of 200 locals, 99,990 deep under --max-depth 100000.""") + wide_func() + [""] + main("f", 99990))
write("wide_frames_limit", hdr("""Frames of 200 locals one call deeper than --max-depth 9901 allows (main is depth 1, f(9900)
depth 2, f(0) depth 9902): every tier traps here, and only here.""") + wide_func() + [""] + main("f", 9900))
write("wide_frames_live", hdr("""Frames of 200 locals loaded from memory that each callee changes, so they stay live (in the
frame) across the call: 9,000 deep.""") + ["memory 256"] + live_func() + [""] + main("g", 9000))

def osr_func(width=W, iters=300000):
    out = ["func h(n)"]
    out += [f"  local l{i}" for i in range(width)]
    out += ["  local i", "  local s"]
    for i in range(width):
        out += ["  load n", f"  push {i}", "  add", f"  store l{i}"]
    out += ["  load n", "  jnz rec", "loop:", "  load s", "  load i", "  add", "  store s",
            "  load i", "  push 1", "  add", "  dup", "  store i", f"  push {iters}", "  lt",
            "  jnz loop", "  load s", "  ret", "rec:", "  load n", "  push 1", "  sub", "  call h"]
    for i in range(width):
        out += [f"  load l{i}", "  add"]
    out += ["  ret", "end"]
    return out

write("wide_frames_osr", hdr("""Frames of 200 locals 9,900 deep, then a hot loop at the bottom: tiering enters it by
on-stack replacement deep in the recursion (or keeps it interpreted where the native stack
is short); every tier prints the same.""") + osr_func() + [""] + main("h", 9900))

threads = ["func worker(n)", "  load n", "  call f", "  ret", "end", "",
           "func main()", "  local k", "  local total"]
T = 16
for k in range(T):
    threads += ["  push 3000", "  spawn worker"]
for k in range(T):
    threads += ["  join", "  load total", "  add", "  store total"]
threads += ["  load total", "  print", "  push 0", "  ret", "end"]
write("wide_frames_threads", hdr("""Sixteen threads, each recursing 3,000 deep through frames of 200 locals.""") + wide_func() + [""] + threads)
