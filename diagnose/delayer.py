"""Delay and lose packets like `tc qdisc ... netem delay 300ms loss 5%`, from user space.

For kernels built without sch_netem (this lab's machine is one): iptables sends a host's
packets to an NFQUEUE, and this process gives each one its verdict after the delay, or
drops it. The netfilter queue protocol is spoken over a plain netlink socket, so nothing
needs building. Run it inside the namespace whose queue it serves:

    ip netns exec db python -m diagnose.delayer --queue 7 --delay-ms 300 --loss-pct 5

Shortcoming: one process and Python's timer resolution; fine for a few hundred packets a
second (a drill), not for benchmarking. The iptables rule should use --queue-bypass, so
that packets flow undelayed when this process is gone.
"""

from __future__ import annotations

import argparse
import heapq
import random
import select
import signal
import socket
import struct
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NF_DROP = 0
NF_ACCEPT = 1


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(msg: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg
    return struct.pack("=IHHII", 16 + len(body), kind, flags, 0, 0) + body


class Queue:
    """One bound netfilter queue."""

    def __init__(self, num: int) -> None:
        self.num = num
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        cmd = struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, 0)
        self._config(_attr(NFQA_CFG_CMD, cmd))
        # Metadata only: the verdict needs the packet's id, not its bytes.
        params = struct.pack("!IB", 0, NFQNL_COPY_META)
        self._config(_attr(NFQA_CFG_PARAMS, params))

    def _config(self, attrs: bytes) -> None:
        self.sock.send(_message(NFQNL_MSG_CONFIG, self.num, attrs, NLM_F_REQUEST | NLM_F_ACK))
        reply = self.sock.recv(4096)
        _len, kind = struct.unpack_from("=IH", reply)
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", reply, 16)
            if code:
                raise OSError(-code, f"netfilter queue {self.num}: config refused")

    def packets(self) -> list[int]:
        """The ids of the packets that arrived."""
        data = self.sock.recv(1 << 16)
        ids = []
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if length < 16:
                break
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                pos = offset + 20  # nlmsghdr + nfgenmsg
                while pos + 4 <= offset + length:
                    alen, atype = struct.unpack_from("=HH", data, pos)
                    if alen < 4:
                        break
                    if atype & 0x7FFF == NFQA_PACKET_HDR:
                        ids.append(struct.unpack_from("!I", data, pos + 4)[0])
                    pos += (alen + 3) & ~3
            offset += (length + 3) & ~3
        return ids

    def verdict(self, packet_id: int, verdict: int) -> None:
        attrs = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
        self.sock.send(_message(NFQNL_MSG_VERDICT, self.num, attrs))

    def close(self) -> None:
        try:
            self._config(_attr(NFQA_CFG_CMD, struct.pack("=BBH", NFQNL_CFG_CMD_UNBIND, 0, 0)))
        finally:
            self.sock.close()


def serve(num: int, delay: float, loss: float) -> None:
    queue = Queue(num)
    pending: list[tuple[float, int]] = []
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        while not stop:
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                _, pid = heapq.heappop(pending)
                queue.verdict(pid, NF_ACCEPT)
            wait = max(0.0, pending[0][0] - now) if pending else 0.5
            try:
                ready, _, _ = select.select([queue.sock], [], [], wait)
            except InterruptedError:
                continue
            if not ready:
                continue
            for pid in queue.packets():
                if random.random() * 100 < loss:
                    queue.verdict(pid, NF_DROP)
                else:
                    heapq.heappush(pending, (time.monotonic() + delay, pid))
    finally:
        for _, pid in pending:
            queue.verdict(pid, NF_ACCEPT)
        queue.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m diagnose.delayer", description=__doc__)
    p.add_argument("--queue", type=int, required=True, help="NFQUEUE number to serve")
    p.add_argument("--delay-ms", type=float, default=300.0)
    p.add_argument("--loss-pct", type=float, default=0.0)
    args = p.parse_args()
    serve(args.queue, args.delay_ms / 1000.0, args.loss_pct)


if __name__ == "__main__":
    main()
