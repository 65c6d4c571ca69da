#!/usr/bin/env python3
"""Where a chain's time goes, thread by thread: runs `ftc run` for 2 s and prints each thread's CPU
use (%) between 0.5 s and 1.8 s, in thread creation order (the generator, then the servers' lanes
in server order). The thread near 100 % is the one that sets the chain's pace. `ftc run` reports
the same per lane itself (`busy`: time on batches); this reads the kernel's CPU accounting instead.

    scripts/thread-cpu.py FTC SPEC MODE WINDOW [more `ftc run` arguments]
    scripts/thread-cpu.py target/release/ftc specs/ch-5.toml ftc 512
"""
import json, os, subprocess, sys, time
ftc, spec, mode, window = sys.argv[1:5]
extra = sys.argv[5:]
p = subprocess.Popen([ftc, "run", spec, "--mode", mode, "--duration", "2", "--window", window, "--json", *extra], stdout=subprocess.PIPE)
def sample():
    out = {}
    for tid in os.listdir(f"/proc/{p.pid}/task"):
        try:
            f = open(f"/proc/{p.pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
            out[int(tid)] = int(f[11]) + int(f[12])
        except OSError:
            pass
    return out, time.time()
time.sleep(0.5); a, ta = sample()
time.sleep(1.3); b, tb = sample()
d = json.loads(p.communicate()[0])
hz = os.sysconf("SC_CLK_TCK")
use = [round(100 * (b[t] - a.get(t, 0)) / hz / (tb - ta)) for t in sorted(b)]
print(f"{os.path.basename(spec)} {mode} w={window} {d['throughput_pps']/1e3:.0f} kpps p50={d['latency_us']['p50']:.0f} cpu%={use} tot={sum(use)}", flush=True)
