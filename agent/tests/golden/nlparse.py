#!/usr/bin/env python3
"""Extracts TCA_OPTIONS payloads from an strace hex dump of tc's netlink traffic.

Usage: nlparse.py sent|dump HANDLE STRACE_OUTPUT
  sent: the last RTM_NEWQDISC/RTM_NEWTCLASS request tc sent (sendmsg, `-e write=all`);
  dump: the RTM_NEWQDISC/RTM_NEWTCLASS message with tcm_handle HANDLE (hex, e.g. fa170001)
        that the kernel answered to `tc qdisc show`/`tc class show` (recvmsg, `-e read=all`).
Prints "<kind> <hex of the TCA_OPTIONS payload>".
"""
import re
import struct
import sys

RTM_NEWQDISC, RTM_NEWTCLASS = 36, 40


def buffers(path, call):
    """Yields (syscall, bytes) for every hex-dumped buffer of `call` in the strace output."""
    current, data = None, bytearray()
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^\d+\s+(\w+)\(", line)
        if m:
            if current == call and data:
                yield bytes(data)
            current, data = m.group(1), bytearray()
            continue
        m = re.match(r"^ \| [0-9a-f]{5}  ((?:[0-9a-f]{2} {1,2}){1,16})", line)
        if m and current is not None:
            data.extend(bytes.fromhex(m.group(1).replace(" ", "")))
    if current == call and data:
        yield bytes(data)


def messages(buf):
    off = 0
    while off + 16 <= len(buf):
        length, mtype = struct.unpack_from("<IH", buf, off)
        if length < 16:
            break
        yield mtype, buf[off + 16: off + length]
        off += (length + 3) & ~3


def attrs(payload):
    off = 0
    while off + 4 <= len(payload):
        length, atype = struct.unpack_from("<HH", payload, off)
        if length < 4:
            break
        yield atype & 0x3FFF, payload[off + 4: off + length]
        off += (length + 3) & ~3


def options(msg):
    handle = struct.unpack_from("<I", msg, 8)[0]
    kind, opts = None, None
    for atype, value in attrs(msg[20:]):
        if atype == 1:
            kind = value.rstrip(b"\0").decode()
        elif atype == 2:
            opts = value
    return handle, kind, opts


def main():
    mode, handle, path = sys.argv[1], int(sys.argv[2], 16), sys.argv[3]
    call = "sendmsg" if mode == "sent" else "recvmsg"
    found = None
    for buf in buffers(path, call):
        for mtype, msg in messages(buf):
            if mtype not in (RTM_NEWQDISC, RTM_NEWTCLASS) or len(msg) < 20:
                continue
            h, kind, opts = options(msg)
            if opts is not None and (mode == "sent" or h == handle):
                found = (kind, opts)
    if found is None:
        sys.exit(f"no TCA_OPTIONS for handle {handle:08x} in {path}")
    print(found[0], found[1].hex())


if __name__ == "__main__":
    main()
