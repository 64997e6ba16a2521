"""A journal of STEPS gate steps with PROBES probes each, as a run of a long runbook writes it:
    python3 benches/big_journal.py STEPS PROBES OUT (prints the number of events)."""
import sys
steps=int(sys.argv[1]); probes=int(sys.argv[2]); out=sys.argv[3]
ts="2026-12-03T13:00:00.000Z"
L=[]
L.append('{"event":"run_started","run_id":"ab12cd34","mode":"run","runbook":"big","path":"big.yaml","sha256":"00","budget":360000.0,"steps":%d,"phases":1,"resumed_from":null,"first_step":1,"targets":[],"ts":"%s"}'%(steps,ts))
L.append('{"event":"phase_started","phase":1,"name":"All","window_start":0.0,"window_end":360000.0,"at":0.0,"ts":"%s"}'%ts)
at=0.0
for step in range(1,steps+1):
    L.append('{"event":"step_started","step":%d,"phase":1,"name":"s%d","kind":"start","target":"lab","mutates":true,"command":null,"timeout":60.0,"at":%s,"ts":"%s"}'%(step,step,repr(at),ts))
    for i in range(probes):
        at+=0.5
        ok='true' if i+1==probes else 'false'
        L.append('{"event":"gate_probe","step":%d,"at":%s,"ok":%s,"detail":"refused","ts":"%s"}'%(step,repr(at),ok,ts))
    L.append('{"event":"step_finished","step":%d,"phase":1,"name":"s%d","outcome":"passed","exit":0,"duration":1.0,"at":%s,"reason":null,"stdout":null,"stderr":null,"ts":"%s"}'%(step,step,repr(at),ts))
L.append('{"event":"phase_finished","phase":1,"name":"All","started":0.0,"at":%s,"window_start":0.0,"window_end":360000.0,"result":"passed","ts":"%s"}'%(repr(at),ts))
L.append('{"event":"run_finished","outcome":"success","exit_code":0,"at":%s,"budget":360000.0,"failed_step":null,"message":"ok","resume":null,"ts":"%s"}'%(repr(at),ts))
open(out,'w').write("\n".join(L)+"\n")
print(len(L))
