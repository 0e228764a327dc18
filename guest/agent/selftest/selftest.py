# In-guest check of the agent's exec path on the real guest kernel: starts
# `/init --serve-unix` (not PID 1) with the real cgroup root and speaks the
# protocol (postcard encoded by hand, see guest/PROTOCOL.md). Run by run.sh
# until the vsock device lets host tests reach the agent itself. Prints one
# `SELFTEST PASS|FAIL name info` line per check, then `SELFTEST DONE`.
import os, socket, struct, subprocess

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7f; n >>= 7
        if n: out.append(b | 0x80)
        else: out.append(b); return bytes(out)
def zz(n): return varint((n << 1) ^ (n >> 63))
def s(x): x = x.encode(); return varint(len(x)) + x
def opt(v, enc): return b'\x00' if v is None else b'\x01' + enc(v)
def frame(p): return struct.pack('<I', len(p)) + p

class R:
    def __init__(self, b): self.b, self.i = b, 0
    def byte(self): v = self.b[self.i]; self.i += 1; return v
    def var(self):
        n = sh = 0
        while True:
            b = self.byte(); n |= (b & 0x7f) << sh; sh += 7
            if not b & 0x80: return n
    def zz(self): v = self.var(); return (v >> 1) ^ -(v & 1)
    def bytes_(self): n = self.var(); v = self.b[self.i:self.i+n]; self.i += n; return v
    def opt(self, f): return f() if self.byte() else None

def recv(sock):
    def exact(n):
        d = b''
        while len(d) < n:
            c = sock.recv(n - len(d))
            if not c: raise EOFError
            d += c
        return d
    n = struct.unpack('<I', exact(4))[0]
    return exact(n)

def connect(path):
    c = socket.socket(socket.AF_UNIX); c.connect(path)
    c.sendall(frame(b'EMBV' + varint(1) + s('py') + varint(0) + b'\x00\x00\x00' + s('')))
    hello = recv(c)
    return c, hello

def exec_(c, argv, timeout_ms=None, mem=None, pids=None, cpu=None, user=None):
    p = varint(2) + varint(len(argv)) + b''.join(s(a) for a in argv) + varint(0) + b'\x00' + varint(0)
    p += opt(timeout_ms, varint) + opt(mem, varint) + opt(pids, varint)
    p += opt(cpu, lambda q: varint(q[0]) + varint(q[1])) + opt(user, lambda u: varint(u[0]) + varint(u[1]))
    p += b'\x00'
    c.sendall(frame(p))
    out, err = b'', b''
    while True:
        r = R(recv(c)); tag = r.var()
        if tag == 2: r.var()
        elif tag == 3:
            st = r.var(); d = r.bytes_()
            if st == 0: out += d
            else: err += d
        elif tag == 5:
            code = r.opt(r.zz); sig = r.opt(r.zz)
            to, oom, tr = r.byte(), r.byte(), r.byte()
            u, sy, w = r.var(), r.var(), r.var(); le = r.byte()
            return dict(code=code, signal=sig, timed_out=to, oom=oom, truncated=tr, user_us=u, sys_us=sy, wall_us=w, enforced=le, out=out, err=err)
        elif tag == 9:
            k = r.var(); m = r.bytes_().decode()
            return dict(error=k, message=m)
        else: raise Exception('tag %d' % tag)

def check(name, ok, info):
    print('SELFTEST %s %s %s' % ('PASS' if ok else 'FAIL', name, info), flush=True)

sockp = '/tmp/agent.sock'
# --guest: PID 1's set-up (agent moved to /sys/fs/cgroup/agent, the sandbox
# user and its home, a Sync that sets the clock).
agent = subprocess.Popen(['/init', '--serve-unix', sockp, '--guest'], stderr=subprocess.PIPE)
while b'serving on' not in agent.stderr.readline(): pass
c, hello = connect(sockp)
print('hello', hello, flush=True)
print('controllers', open('/sys/fs/cgroup/cgroup.controllers').read().strip(), flush=True)
check('hello-caps', hello.endswith(b'\x01\x01\x01\x00'), hello)
check('agent-cgroup', open('/proc/%d/cgroup' % agent.pid).read().strip() == '0::/agent', open('/proc/%d/cgroup' % agent.pid).read())
# Sync: entropy + clock (2030-01-01T00:00:00Z).
c.sendall(frame(varint(0) + varint(32) + os.urandom(32) + zz(1893456000) + varint(0)))
r = R(recv(c))
check('sync', (r.var(), r.byte(), r.byte()) == (0, 1, 1), r.b)
r = exec_(c, ['sh', '-c', 'id -u; id -g; echo $HOME; pwd; whoami; date +%Y; cat /proc/self/cgroup'])
check('user+cgroup', r.get('out', b'').startswith(b'1000\n1000\n/home/user\n/home/user\nuser\n2030\n') and b'0::/embervm/exec-' in r['out'], r)
r = exec_(c, ['python3', '-c', 'b = []\nwhile True: b.append(bytearray(1<<20))'], mem=32<<20, timeout_ms=20000)
check('oom', r.get('oom') == 1 and r.get('signal') == 9 and r.get('enforced') == 1, r)
r = exec_(c, ['sh', '-c', 'i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done 2>/dev/null; echo started $i'], pids=20, timeout_ms=20000)
check('pids', r.get('code') is not None and r.get('enforced') == 1, r)
r = exec_(c, ['sh', '-c', 'f(){ f|f& }; f; sleep 5'], pids=50, timeout_ms=3000)
check('forkbomb', r.get('timed_out') == 1 and r.get('signal') == 9, r)
r = exec_(c, ['sh', '-c', 'setsid sleep 100 & sleep 100'], timeout_ms=500)
check('timeout-tree', r.get('timed_out') == 1, r)
ps = subprocess.run(['ps'], capture_output=True).stdout.decode()
check('no-sleep-left', 'sleep 100' not in ps, ps.count('sleep'))
r = exec_(c, ['python3', '-c', 'import time\nt=time.time()\nwhile time.time()-t<1: pass'], cpu=(20000, 100000), timeout_ms=20000)
# 20 % of a CPU: the CPU time is at most about a fifth of the wall time.
check('cpu-quota', (r.get('user_us', 0) + r.get('sys_us', 0)) < 0.3 * r.get('wall_us', 1) and r.get('enforced') == 1, r)
r = exec_(c, ['echo', 'alive'])
check('agent-alive', r.get('out') == b'alive\n', r)
left = [d for d in os.listdir('/sys/fs/cgroup/embervm') if d.startswith('exec-')]
check('cgroups-removed', left == [], left)
print('SELFTEST DONE', flush=True)
