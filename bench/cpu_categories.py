#!/usr/bin/env python3
"""Sorts `perf script -F comm,ip,sym` samples into categories of work, per thread kind.

    perf script -i perf.data -F comm,ip,sym | python3 bench/cpu_categories.py \
        --per-request N --sample-us 500

Each sample is put in the first category whose rule matches its call stack: kernel work
by the system call or interrupt it serves (fdatasync, TCP send and receive, waiting in
epoll, wake-ups), user-space work by the leaf function's crate. Thread names lose their
index (`shard-0` and `shard-1` are both `shard`). With --per-request, each category is
also given in microseconds of CPU per request: samples x sample period / N requests.
User-space call stacks are often one frame deep (the release build has no frame
pointers), which is why user-space work is judged by its leaf.
"""

import argparse
import collections
import sys

# (category, any of these substrings in the stack). Kernel paths first: a system call's
# kernel stack names it, whatever user-space function made it.
STACK_RULES = [
    ("fdatasync", ("ext4_sync_file", "__x64_sys_fdatasync", "fdatasync")),
    ("TCP send (writev)", ("do_writev", "__GI___writev", "tcp_sendmsg")),
    ("TCP receive", ("__sys_recvfrom", "__libc_recv", "tcp_recvmsg")),
    ("idle wait (epoll_wait)", ("do_epoll_wait", "epoll_wait")),
    ("futex (thread hand-off)", ("futex_wait", "futex_wake", "do_futex")),
    ("log write(2)", ("ext4_buffered_write_iter", "ext4_file_write_iter")),
    ("wake-up write(2) (eventfd)", ("eventfd_write",)),
    ("interrupts", ("asm_common_interrupt", "asm_sysvec")),
    ("scheduler", ("finish_task_switch", "__schedule")),
]
# (category, any of these substrings in the leaf symbol), for user-space leaves.
LEAF_RULES = [
    ("boards (skip lists)", ("liveops_engine::board", "liveops_engine::skiplist")),
    ("engine (other)", ("liveops_engine",)),
    ("storage", ("liveops_storage", "crc32c")),
    ("net crate (routes, mesh)", ("liveops_net",)),
    ("HTTP (hyper, httparse)", ("hyper", "httparse")),
    ("tokio", ("tokio",)),
    ("JSON (serde_json)", ("serde_json", "serde_core")),
    ("HMAC (sha2)", ("sha2", "hmac")),
    ("malloc / free", ("malloc", "free", "_int_", "unlink_chunk")),
    ("memcpy / memmove", ("memmove", "memcpy", "memcmp")),
]


def thread_kind(comm):
    return comm.rsplit("-", 1)[0] if comm.rsplit("-", 1)[-1].isdigit() else comm


def categorize(stack):
    joined = " ".join(stack)
    for name, needles in STACK_RULES:
        if any(n in joined for n in needles):
            return name
    leaf = stack[0] if stack else ""
    for name, needles in LEAF_RULES:
        if any(n in leaf for n in needles):
            return name
    if leaf.startswith("[k]"):
        return "kernel (other)"
    return "other"


def samples(lines):
    comm, stack = None, []
    for line in lines:
        if not line.strip():
            if comm is not None:
                yield comm, stack
            comm, stack = None, []
        elif line[0] not in " \t":
            comm = line.split()[0]
        else:
            ip, _, symbol = line.strip().partition(" ")
            # Kernel addresses are the top half of the address space.
            kernel = len(ip) == 16 and ip[0] in "89abcdef"
            stack.append(("[k] " if kernel else "") + (symbol or ip))
    if comm is not None:
        yield comm, stack


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-request", type=int, help="requests in the recorded span")
    parser.add_argument("--sample-us", type=float, default=500.0,
                        help="sample period in microseconds (500 for perf -F 2000)")
    args = parser.parse_args()
    counts = collections.Counter()
    for comm, stack in samples(sys.stdin):
        counts[(thread_kind(comm), categorize(stack))] += 1
    total = sum(counts.values())
    if total == 0:
        sys.exit("no samples on standard input")
    print(f"{'thread':8} {'category':30} {'share':>6} {'us/request':>11}")
    for (kind, category), n in counts.most_common():
        if n / total < 0.005:
            continue
        per_request = (f"{n * args.sample_us / args.per_request:11.2f}"
                       if args.per_request else "")
        print(f"{kind:8} {category:30} {100 * n / total:5.1f}% {per_request}")
    if args.per_request:
        print(f"{'':8} {'all samples':30} {'100%':>6} "
              f"{total * args.sample_us / args.per_request:11.2f}")


if __name__ == "__main__":
    main()
