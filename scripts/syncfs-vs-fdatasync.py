#!/usr/bin/env python3
"""Baseline for the shard's shared syncfs (engine/src/group_sync.rs): what N dirty files
cost to make durable with one fdatasync each (serially, and from 8 threads at once, as
io_uring workers would) against one syncfs of the file system.

Usage: scripts/syncfs-vs-fdatasync.py DIR   (DIR on the file system to measure; the
script creates 256 files of 1 MiB there and removes them afterwards)
Prints the median of 5 runs per case, in milliseconds.
"""
import ctypes
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

libc = ctypes.CDLL(None, use_errno=True)
root = os.path.join(sys.argv[1], "syncfs-vs-fdatasync")
os.makedirs(root, exist_ok=True)
FILES, SIZE, PAGE = 256, 1 << 20, 4096
fds = []
for i in range(FILES):
    fd = os.open(os.path.join(root, f"f{i}"), os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"\0" * SIZE, 0)  # written, allocated blocks: later writes are overwrites
    fds.append(fd)
os.sync()
pool = ThreadPoolExecutor(8)
page = 0


def dirty(n):
    """One new 4 KiB page in each of the first n files."""
    global page
    page = (page + 1) % (SIZE // PAGE)
    for fd in fds[:n]:
        os.pwrite(fd, bytes([page % 251 + 1]) * PAGE, page * PAGE)


def timed(n, sync):
    runs = []
    for _ in range(5):
        dirty(n)
        t = time.perf_counter()
        sync(n)
        runs.append((time.perf_counter() - t) * 1e3)
    return statistics.median(runs)


def syncfs(_n):
    if libc.syncfs(fds[0]) != 0:
        raise OSError(ctypes.get_errno(), "syncfs")


print("files  fdatasync-serial-ms  fdatasync-8-threads-ms  syncfs-ms")
for n in (1, 4, 16, 64, 256):
    serial = timed(n, lambda n: [os.fdatasync(fd) for fd in fds[:n]])
    parallel = timed(n, lambda n: list(pool.map(os.fdatasync, fds[:n])))
    print(f"{n:5d}  {serial:19.2f}  {parallel:22.2f}  {timed(n, syncfs):9.2f}")
for fd in fds:
    os.close(fd)
shutil.rmtree(root)
