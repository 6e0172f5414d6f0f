#!/usr/bin/env python3
"""A cgroup v2 with a BPF program on inet egress that passes every packet, for tests.

  cgroup-bpf.py add <dir> <pid>...   make cgroup <dir>, attach the program, move the PIDs into it
  cgroup-bpf.py del <dir>            move what is left to the parent, remove <dir> (and the program)

The program changes nothing: it only makes a cgroup BPF egress program be there, as systemd's
IPAddressDeny= or a container runtime's would be (tunnel GSO's auto mode holds back for it).
"""
import ctypes
import os
import struct
import sys

SYS_BPF = 321  # x86_64
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_SKB = 8
BPF_CGROUP_INET_EGRESS = 1

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    rc = libc.syscall(SYS_BPF, cmd, buf, 128)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return rc


def add(d, pids):
    os.makedirs(d, exist_ok=True)
    # r0 = 1 (pass); exit
    insns = struct.pack("<BBhi", 0xB7, 0, 0, 1) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("<IIQQIIQII", BPF_PROG_TYPE_CGROUP_SKB, 2, ctypes.addressof(code), ctypes.addressof(lic), 0, 0, 0, 0, 0)
    prog = bpf(BPF_PROG_LOAD, attr)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    bpf(BPF_PROG_ATTACH, struct.pack("<IIII", fd, prog, BPF_CGROUP_INET_EGRESS, 0))
    os.close(fd)
    os.close(prog)  # the cgroup holds it
    for pid in pids:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(pid)


def delete(d):
    if not os.path.isdir(d):
        return
    with open(os.path.join(d, "cgroup.procs")) as f:
        left = f.read().split()
    for pid in left:
        try:
            with open(os.path.join(os.path.dirname(d), "cgroup.procs"), "w") as f:
                f.write(pid)
        except OSError:
            pass  # gone meanwhile
    os.rmdir(d)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "add":
        add(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 3 and sys.argv[1] == "del":
        delete(sys.argv[2])
    else:
        sys.exit("usage: cgroup-bpf.py add <dir> <pid>... | del <dir>")
